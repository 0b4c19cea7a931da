"""A callback for tests that must stop a run in the middle: every training epoch after the first starts with a pause.

Before pausing it leaves `pausing_before_epoch_<n>` in the run folder. Epoch n-1's checkpoints are written by then
(Lightning saves them at the end of the epoch, after every other callback's epoch-end hook), so a test that waits
for that file and then kills the run kills it in the pause, never in the middle of a save.
"""
import time
from pathlib import Path

import pytorch_lightning as pl


class PauseBeforeEpoch(pl.Callback):
    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch > 0:
            Path(trainer.default_root_dir, f"pausing_before_epoch_{trainer.current_epoch}").touch()
            time.sleep(self.seconds)
