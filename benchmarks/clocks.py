"""Callbacks that time the framework from inside, for the benchmark scripts."""
import time

import pytorch_lightning as pl

from lightlab.epoch_speed import EpochSpeed


class EpochClock(EpochSpeed):
    """The default callbacks' epoch clock (first batch start to last batch end: no validation, no checkpoint),
    keeping every epoch's seconds where the benchmark can read them after train() returns."""

    epoch_seconds: list[float] = []  # class-level: the benchmark has no handle on the trainer's callbacks

    def on_train_epoch_end(self, trainer, pl_module):
        EpochClock.epoch_seconds.append(self.ended - self.started)


class FirstStepClock(pl.Callback):
    """Prints the wall-clock time at which the first training step starts, then ends the run."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        print(f"FIRST_STEP_AT {time.time():.6f}", flush=True)
        trainer.should_stop = True
