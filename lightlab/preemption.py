"""Preemption: SIGTERM (a cluster taking the machine back) or Ctrl-C during training ends the run with a checkpoint.

Lightning notices SIGTERM in its signal handler and raises SIGTERMException after the current step (under DDP every
process does, at the same step); Ctrl-C arrives as KeyboardInterrupt. Either way Lightning calls the callbacks'
`on_exception`: this one writes `checkpoints/last.ckpt` there (atomically, conf/trainer/default.yaml's plugin), and
Lightning then flushes and closes the loggers. run.py exits with 128 + the signal's number (143 for SIGTERM, 130 for
Ctrl-C), the shell's convention for "ended by this signal", which no error of ours uses; re-running the same command
(with run_name=…, or a sweep's sweep_name=…) continues from the checkpoint.
"""
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

SIGNALS = {SIGTERMException: signal.SIGTERM, KeyboardInterrupt: signal.SIGINT}
stopped: dict = {}  # {"signal": ..., "checkpoint": ...} once this process has stopped for a signal


class CheckpointOnSignal(pl.Callback):
    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        received = next((number for kind, number in SIGNALS.items() if isinstance(exception, kind)), None)
        if received is None or trainer.state.fn != TrainerFn.FITTING:
            return
        # Ctrl-C reaches one process only: under DDP the others would wait for it in the save's barrier forever.
        if received == signal.SIGINT and trainer.world_size > 1:
            stopped.update(signal=received, checkpoint=None)
            return
        trainer.save_checkpoint(self.path)
        stopped.update(signal=received, checkpoint=str(self.path))


def exit_code() -> int | None:
    """128 + the signal's number when training stopped for one, else None."""
    return 128 + stopped["signal"] if stopped else None


def report_stop(resumable_by_rerun: bool) -> int:
    """Says where the checkpoint is and how to continue; returns the exit code."""
    how = ("re-run the same command" if resumable_by_rerun else
           f"python run.py <the same overrides> ckpt_path={stopped['checkpoint']}")
    print(f"stopped by signal {stopped['signal']}: checkpoint {stopped['checkpoint']}; to continue: {how}",
          file=sys.stderr)
    return exit_code()
