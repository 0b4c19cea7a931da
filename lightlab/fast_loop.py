"""What keeps Lightning's per-step overhead small enough for small models.

Measured on the 2-core CPU (MNIST, batch 128): a hand-written step of the 784-512-256-128-10 MLP takes
~4.3 ms, and stock Lightning adds ~0.7 ms to each. The three pieces here remove the parts of that which
do no work (see benchmarks/epoch_time.py for the ratio they buy).
"""
import contextlib

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.profilers import PassThroughProfiler

_NOTHING = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    """Lightning wraps ~50 calls per step in `profiler.profile(name)`; with no profiler each still builds
    and runs a generator-based context manager. Returning one shared null context makes them free."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NOTHING


class FastHooksModule(pl.LightningModule):
    """Lightning sets `_current_fx_name` around every hook call (~50 times a step); nn.Module.__setattr__
    checks each value against parameters, buffers and submodules first. A hook name is none of those."""

    def __setattr__(self, name, value):
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class StepRichProgressBar(RichProgressBar):
    """RichProgressBar redraws and re-reads every logged metric (a device sync on GPU) after every step;
    this one does so at the end of each epoch, and every `refresh_every_n_steps` steps when that is set."""

    def __init__(self, refresh_every_n_steps: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.refresh_every_n_steps = refresh_every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = batch_idx + 1
        every_n = self.refresh_every_n_steps
        if done == trainer.num_training_batches or (every_n and done % every_n == 0):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
