"""The progress bar of conf/callbacks/default.yaml: Lightning's Rich bar, redrawn once per epoch."""
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.callbacks.progress.rich_progress import ProcessingSpeedColumn
from rich.text import Text

from lightlab.lightning_internals.dependency_waits import prompt_progress_stop


class AverageSpeedColumn(ProcessingSpeedColumn):
    """Steps per second since the bar's task started: completed / elapsed. Lightning's column shows rich's moving
    estimate, which needs two updates less than 30 s apart, so a bar updated once per epoch read `0.00it/s`."""

    def render(self, task) -> Text:
        seconds = task.finished_time or task.elapsed  # finished: its own time, not the time since (validation)
        return Text(f"{task.completed / seconds:.2f}it/s" if seconds else "", style=self.style)


class StepRichProgressBar(RichProgressBar):
    """RichProgressBar redraws and re-reads every logged metric (a device sync on GPU) after every step;
    this one does so at the end of each epoch, and every `refresh_every_n_steps` steps when that is set."""

    def __init__(self, refresh_every_n_steps: int | None = None, **kwargs):
        # Lightning's bar starts a thread that wakes `refresh_rate` times a second (100 by default) to redraw.
        # Each wake-up takes the GIL and a core from the training step: on 2 cores the same torch ops ran ~40%
        # slower inside fit() than outside it. Once a second is enough for a bar redrawn at most every N steps.
        kwargs.setdefault("refresh_rate", 1)
        prompt_progress_stop()  # and the thread stops at once at the end of each stage, not after its 1-s sleep
        super().__init__(**kwargs)
        self.refresh_every_n_steps = refresh_every_n_steps

    def configure_columns(self, trainer) -> list:
        return [AverageSpeedColumn(column.style) if isinstance(column, ProcessingSpeedColumn) else column
                for column in super().configure_columns(trainer)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = batch_idx + 1
        every_n = self.refresh_every_n_steps
        if done == trainer.num_training_batches or (every_n and done % every_n == 0):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
