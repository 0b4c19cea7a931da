"""Callbacks that time the framework from inside, for the benchmark scripts."""
import time

import pytorch_lightning as pl


class EpochClock(pl.Callback):
    """Times an epoch's training batches, first batch start to last batch end (no validation, no checkpoint)."""

    epoch_seconds: list[float] = []  # class-level: the benchmark reads it after train() returns

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        EpochClock.epoch_seconds.append(self.end - self.start)


class FirstStepClock(pl.Callback):
    """Prints the wall-clock time at which the first training step starts, then ends the run."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        print(f"FIRST_STEP_AT {time.time():.6f}", flush=True)
        trainer.should_stop = True
