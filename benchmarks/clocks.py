"""Callbacks that time the framework from inside, for the benchmark scripts."""
import time

import pytorch_lightning as pl

from lightlab.callbacks.epoch_speed import EpochSpeed


class EpochClock(EpochSpeed):
    """The default callbacks' epoch clock (first batch start to last batch end: no validation, no checkpoint),
    keeping every epoch's seconds where the benchmark can read them after train() returns; and the time between
    one epoch's last training batch and the next one's first, less the validation batches in between: what the
    framework spends between epochs (loop set-up, epoch-end logging, checkpoint writing, images, progress bar)."""

    # Class-level: the benchmark has no handle on the trainer's callbacks.
    epoch_seconds: list[float] = []
    between_epochs_seconds: list[float] = []
    # benchmarks.epoch_time.paired_epochs: (epoch) -> an iterator that runs one hand-written training batch per
    # next() and returns its seconds; one runs after each framework batch, outside the framework's time
    hand_steps = None
    paired_seconds: list[float] = []  # the hand-written epochs' seconds
    # From one epoch's first training batch to the next one's, less the hand-written work in between: the whole
    # epoch, validation, checkpoints and epoch-end work included (benchmarks/epoch_with_validation.py)
    full_epoch_seconds: list[float] = []

    steps = None
    hand_inside = hand_seconds_in_gap = previous_hand_inside = 0.0
    previous_end: float | None = None
    previous_start: float | None = None
    validation_start: float | None = None
    validation_seconds = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        if EpochClock.hand_steps is not None:
            self.steps = EpochClock.hand_steps(trainer.current_epoch)
        self.hand_inside = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.started is None and self.previous_end is not None:
            now = time.perf_counter()
            gap = now - self.previous_end - self.validation_seconds - self.hand_seconds_in_gap
            EpochClock.between_epochs_seconds.append(gap)
            EpochClock.full_epoch_seconds.append(now - self.previous_start - self.previous_hand_inside
                                                 - self.hand_seconds_in_gap)
            self.validation_start, self.validation_seconds, self.hand_seconds_in_gap = None, 0.0, 0.0
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_epoch_end(self, trainer, pl_module):
        EpochClock.epoch_seconds.append(self.ended - self.started - self.hand_inside)
        self.previous_start, self.previous_end = self.started, self.ended  # (Lightning validates before this hook)
        self.previous_hand_inside = self.hand_inside

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # the epoch's clock stops first
        if self.steps is None:
            return
        seconds = next(self.steps)
        if batch_idx + 1 == trainer.num_training_batches:  # after the clock's last stop: in the gap
            EpochClock.paired_seconds.append(self.hand_inside + seconds)
            self.hand_seconds_in_gap, self.steps = seconds, None
        else:
            self.hand_inside += seconds

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and self.validation_start is None:
            self.validation_start = time.perf_counter()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.validation_seconds = time.perf_counter() - self.validation_start


class FirstStepClock(pl.Callback):
    """Prints the wall-clock time at which the first training step ends (its optimizer step done), then ends the
    run."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        print(f"FIRST_STEP_AT {time.time():.6f}", flush=True)
        trainer.should_stop = True
