"""Batches sliced from whole-split tensors: the replacement for Dataset + DataLoader + collate.

A split lives in memory as one tensor per field (uint8 images, int64 labels). A batch is
`tensor[indices]` for a slice of the epoch's order, so one step costs one gather, not
`batch_size` calls to `__getitem__` plus a collate. Scaling and augmentation happen later, batched,
on the device (see the DataModule's `on_after_batch_transfer`).
"""
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch

from lightlab.base.errors import UserError


class EpochOrder:
    """The order of samples in one epoch: a permutation that depends only on (seed, epoch).

    Lightning calls `set_epoch` on `loader.sampler` before every epoch, with the number of epochs
    already done, which a resumed run restores from its checkpoint; so a resumed run sees the same
    order an uninterrupted one would, without storing any generator state.

    Under DDP every process draws the same permutation and takes every `world_size`-th sample from
    position `rank`: a step of N processes at batch B sees the samples one process at batch N*B would.
    Training shards are cut to equal length (every process must take the same number of steps; at most
    N-1 samples an epoch are left out, different ones each epoch); evaluation shards keep every sample.
    """

    def __init__(self, size: int, shuffle: bool, seed: int, shard: tuple[int, int] = (0, 1)):
        self.full_size, self.shuffle, self.seed, self.epoch = size, shuffle, seed, 0
        self.rank, self.world_size = shard
        self.size = size // self.world_size if shuffle else len(range(self.rank, size, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> torch.Tensor | None:
        """This process's samples in the epoch's order, or None for all of them in the natural order (batches
        are then zero-copy views)."""
        if self.world_size == 1:
            return torch.randperm(self.size, generator=self.generator()) if self.shuffle else None
        order = (torch.randperm(self.full_size, generator=self.generator()) if self.shuffle
                 else torch.arange(self.full_size))
        return order[self.rank::self.world_size][:self.size]

    def generator(self, *stream: int) -> torch.Generator:
        """A generator that depends only on (seed, epoch, *stream): each stream is another independent draw."""
        # SeedSequence mixes its inputs into one well-spread 64-bit seed; seed + epoch would make
        # seed=1/epoch=0 and seed=0/epoch=1 share an order.
        mixed = int(np.random.SeedSequence([self.seed, self.epoch, *stream]).generate_state(1, np.uint64)[0])
        return torch.Generator().manual_seed(mixed & 0x7FFF_FFFF_FFFF_FFFF)


def check_batch_sizes(batch_size: int, eval_batch_size: int) -> None:
    """Before any data is read: a batch of 0 (or fewer) samples would fail only when the first epoch starts."""
    for key, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value < 1:
            raise UserError(f"data.{key}={value}: a batch holds at least one sample. Set data.{key} to a positive "
                            f"number (e.g. data.{key}=128).")


def process_shard(datamodule) -> tuple[int, int]:
    """(rank, number of processes) of this process under DDP; (0, 1) otherwise."""
    trainer = datamodule.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


def batches_done_this_epoch(datamodule) -> Callable[[], int]:
    """For a training loader's `batches_done`: the training batches the trainer has run in this epoch, 0 once the
    epoch's last one has (limit_train_batches: the epoch can end before the loader does)."""
    def done() -> int:
        trainer = datamodule.trainer
        # processed, not completed: a checkpoint written in on_train_batch_end comes after the batch was trained
        # and before Lightning counts it completed.
        processed = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return processed if processed < trainer.num_training_batches else 0
    return done


class ResumableBatches:
    """Lightning puts a training loader's `state_dict()` in every checkpoint and hands it back on resume (the
    `_Stateful` protocol). A run resumed from a mid-epoch checkpoint (SIGTERM, lightlab/callbacks/preemption.py) then
    goes on with the batch after the last one trained, in the same epoch order, instead of restarting the epoch's
    data."""

    batches_done: Callable[[], int] | None = None  # set on training loaders (batches_done_this_epoch)
    skip = 0  # batches of the resumed epoch already trained before the checkpoint

    def state_dict(self) -> dict:
        return {"batches_done": self.batches_done() if self.batches_done else 0}

    def load_state_dict(self, state_dict: dict) -> None:
        done = state_dict.get("batches_done", 0)
        self.skip = done if done < len(self) else 0  # a whole epoch done: the next one starts at its beginning

    def take_skip(self) -> int:
        skip, self.skip = self.skip, 0
        return skip


class TensorBatches(ResumableBatches):
    """An iterable of batches `(field[indices] for field in tensors)` that Lightning accepts as a dataloader."""

    def __init__(self, tensors: tuple[torch.Tensor, ...], batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, shard: tuple[int, int] = (0, 1)):
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"all tensors of a split need the same length, got {sorted(sizes)}")
        self.tensors, self.batch_size, self.drop_last = tensors, batch_size, drop_last
        self.sampler = EpochOrder(sizes.pop(), shuffle, seed, shard)
        self.batch_sampler = None  # DataLoader's attribute when a sampler is set; Lightning reads both

    def __len__(self) -> int:
        full, rest = divmod(self.sampler.size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self):
        order = self.sampler.indices()
        for start in range(self.take_skip() * self.batch_size, len(self) * self.batch_size, self.batch_size):
            window = slice(start, start + self.batch_size)
            if order is None:
                yield tuple(t[window] for t in self.tensors)
            else:  # index_select: ~5x faster than t[index] on a uint8 image tensor on the CPU (same gather)
                index = order[window]
                yield tuple(t.index_select(0, index) for t in self.tensors)


def transfer_unless_there(datamodule: pl.LightningDataModule, batch, device: torch.device, dataloader_idx: int):
    """Our DataModules' `transfer_batch_to_device`. Lightning's default walks the batch with apply_to_collection and
    calls .to() on every tensor, every step, also when the batch is already there (the CPU): ~10 us a step, ~0.3%
    of the MLP's. (On the DataModule, not the LightningModule: Lightning warns when the module overrides it.)"""
    if isinstance(batch, (tuple, list)) and all(isinstance(x, torch.Tensor) and x.device == device for x in batch):
        return batch
    return pl.LightningDataModule.transfer_batch_to_device(datamodule, batch, device, dataloader_idx)


class SplitTensors(pl.LightningDataModule):
    """A DataModule whose `splits` ("fit", "validate", "test") are tuples of equal-length tensors (a table's rows, a
    series' windows): its loaders slice them (hparams: batch_size, eval_batch_size, shuffle_seed, drop_last)."""

    splits: dict[str, tuple[torch.Tensor, ...]]

    transfer_batch_to_device = transfer_unless_there

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> TensorBatches:
        return TensorBatches(self.splits[split], batch_size, shuffle, seed=self.hparams.shuffle_seed,
                             drop_last=self.hparams.drop_last and shuffle, shard=process_shard(self))

    def train_dataloader(self) -> TensorBatches:
        loader = self._batches("fit", self.hparams.batch_size, True)
        loader.batches_done = batches_done_this_epoch(self)
        return loader

    def val_dataloader(self) -> TensorBatches:
        return self._batches("validate", self.hparams.eval_batch_size, False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.hparams.eval_batch_size, False)
