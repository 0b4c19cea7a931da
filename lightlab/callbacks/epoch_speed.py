"""Epoch time and throughput as TensorBoard scalars: `train/epoch_seconds` and `train/samples_per_second`.

The clock runs from the first training batch to the end of the last one, so validation and checkpointing are not
in it; samples are counted from each batch's labels (its last element). Under DDP each process counts its own
share and the logged throughput is their sum.
"""
import time

import pytorch_lightning as pl


class EpochSpeed(pl.Callback):
    # A fit resumed mid-epoch (lightlab/callbacks/preemption.py) enters the epoch without on_train_epoch_start: it
    # measures the batches it trains.
    started: float | None = None
    samples = 0

    def on_train_epoch_start(self, trainer, module) -> None:
        self.started, self.samples = None, 0

    def on_train_batch_start(self, trainer, module, batch, batch_index) -> None:
        if self.started is None:
            self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self.ended = time.perf_counter()
        if isinstance(batch, (tuple, list)):
            self.samples += len(batch[-1])

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.started is None:
            return
        seconds = self.ended - self.started
        module.log("train/epoch_seconds", seconds, sync_dist=True, reduce_fx="max")
        if self.samples:
            module.log("train/samples_per_second", self.samples / seconds, sync_dist=True, reduce_fx="sum")
