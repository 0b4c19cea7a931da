"""Slow moments for tests that must stop a run in the middle: a pause before every training epoch after the first, and
a checkpoint save that takes its time.

Before pausing it leaves `pausing_before_epoch_<n>` in the run folder. Epoch n-1's checkpoints are written by then
(Lightning saves them at the end of the epoch, after every other callback's epoch-end hook), so a test that waits
for that file and then kills the run kills it in the pause, never in the middle of a save.
"""
import os
import signal
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from lightlab.base.files import write_atomically
from lightlab.callbacks.atomic_checkpoints import AtomicCheckpointIO


class PauseBeforeEpoch(pl.Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch > 0:
            Path(trainer.default_root_dir, f"pausing_before_epoch_{trainer.current_epoch}").touch()
            time.sleep(self.seconds)


class SlowCheckpointIO(AtomicCheckpointIO):
    """Checkpoint saves that hold for `seconds` once the file is written but before it is renamed into place, when
    the checkpoint being replaced already exists (so a test can kill a run in the middle of replacing last.ckpt).
    It leaves `saving_<name>` in the folder first."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        path = Path(path)
        if not path.is_file():
            return super().save_checkpoint(checkpoint, path, storage_options)

        def slow_write(partial: Path) -> None:
            torch.save(checkpoint, partial)
            (path.parent / f"saving_{path.name}").touch()
            time.sleep(self.seconds)

        write_atomically(path, slow_write)


class PoisonBatchAtStep(pl.Callback):
    """Fills the inputs of the batch of optimizer step `step` with NaN: that batch's loss is NaN, the others are not."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_index) -> None:
        if trainer.global_step == self.step:
            batch[0].fill_(float("nan"))


class CrashInEpoch(pl.Callback):
    """A bug of the kind lightlab cannot foresee: an exception that is not a UserError, in the middle of training."""

    def on_train_epoch_start(self, trainer, module) -> None:
        raise RuntimeError("a bug in a callback")


class SignalOneRank(pl.Callback):
    """SIGTERM to this process alone when rank `rank` ends epoch `epoch`: before Lightning's own end-of-epoch check of
    its flag, which the other rank, not signalled, passes without stopping."""

    def __init__(self, rank: int, epoch: int):
        self.rank, self.epoch = rank, epoch

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.global_rank == self.rank and trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)
