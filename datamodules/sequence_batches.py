"""Batches of padded token-id sequences, optionally bucketed by length.

A split is three tensors: ids (N, longest) padded with 0, lengths (N,), labels (N,). A batch is
(ids[index, :longest in batch], lengths[index], labels[index]): it is trimmed to its own longest sequence,
so a batch of short sentences costs a short recurrent pass.

Bucketing (on by default) makes batches of similar lengths: each epoch's shuffled order is cut into pools of
`pool_batches` batches, each pool is sorted by length and cut into batches, and the batches are shuffled
among themselves. Padding nearly vanishes while every epoch still sees different batch compositions.
"""
import torch

from datamodules.tensor_batches import EpochOrder, ResumableBatches


class SequenceBatches(ResumableBatches):
    def __init__(self, tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor], batch_size: int, shuffle: bool,
                 seed: int = 0, bucketing: bool = True, pool_batches: int = 50, drop_last: bool = False,
                 shard: tuple[int, int] = (0, 1)):
        self.ids, self.lengths, self.labels = tensors
        self.batch_size, self.bucketing, self.pool_batches, self.drop_last = (
            batch_size, bucketing, pool_batches, drop_last)
        self.sampler = EpochOrder(len(self.ids), shuffle, seed, shard)  # Lightning calls sampler.set_epoch each epoch
        self.batch_sampler = None

    def __len__(self) -> int:
        full, rest = divmod(self.sampler.size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def batch_indices(self) -> list[torch.Tensor]:
        order = self.sampler.indices()
        if order is None:
            order = torch.arange(self.sampler.size)
        if not self.bucketing:
            batches = list(order.split(self.batch_size))
        else:  # evaluation order does not matter: the whole split is one pool
            pool_size = self.batch_size * self.pool_batches if self.sampler.shuffle else len(order)
            batches = []
            for pool in order.split(pool_size):  # stable: equal lengths keep the shuffled order
                pool = pool[torch.argsort(self.lengths[pool], descending=True, stable=True)]
                batches += list(pool.split(self.batch_size))
        if self.drop_last and len(batches[-1]) < self.batch_size:
            batches.pop()  # the only partial batch is the last one cut
        if self.bucketing and self.sampler.shuffle:  # pools sorted longest first: shuffle the batches themselves
            batches = [batches[i] for i in torch.randperm(len(batches), generator=self.sampler.generator(1))]
        return batches

    def __iter__(self):
        skip = self.take_skip()
        for index in self.batch_indices()[skip:]:
            lengths = self.lengths[index]
            yield self.ids[index, :int(lengths.max())], lengths, self.labels[index]
