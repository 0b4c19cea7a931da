"""Preemption: SIGTERM (a cluster taking the machine back) or Ctrl-C during training ends the run with a checkpoint.

Lightning notices SIGTERM in its signal handler and raises SIGTERMException after the current step (under DDP every
process does, at the same step); during training this callback makes Ctrl-C do the same. Lightning then calls the
callbacks' `on_exception`: this one writes `checkpoints/last.ckpt` there (atomically, conf/trainer/default.yaml's
plugin), and Lightning flushes and closes the loggers. run.py exits with 128 + the signal's number (143 for SIGTERM,
130 for Ctrl-C), the shell's convention for "ended by this signal", which no error of ours uses; re-running the same
command (with run_name=…, or a sweep's sweep_name=…) continues from the checkpoint.
"""
import functools
import signal
import sys
import threading
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightlab.lightning_internals.trainer_state import epoch_finished, lr_finder_running, stop_after_this_step

stopped: dict = {}  # {"signal": ..., "checkpoint": ...} once this process has stopped for a signal
received: dict = {}  # {"signal": SIGINT} when Ctrl-C, not SIGTERM, set Lightning's stop flag


class CheckpointOnSignal(pl.Callback):
    def __init__(self, dirpath: str, filename: str = "last"):
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.previous_handler = None

    def on_train_start(self, trainer, module) -> None:
        # Ctrl-C as SIGTERM: a flag that stops the run after the current step. Python's KeyboardInterrupt can land
        # inside an optimizer step, and a checkpoint of that would be half an update. A second Ctrl-C stops at once.
        if threading.current_thread() is threading.main_thread():
            self.previous_handler = signal.signal(signal.SIGINT, functools.partial(self.interrupt, trainer))

    def interrupt(self, trainer, signum, frame) -> None:
        signal.signal(signal.SIGINT, self.previous_handler)
        received["signal"] = signal.SIGINT
        stop_after_this_step(trainer)
        print("\nCtrl-C: stopping after this step, with a checkpoint (Ctrl-C again: at once, without one)",
              file=sys.stderr)

    def on_train_epoch_end(self, trainer, module) -> None:
        # A fit resumed from a mid-epoch checkpoint ends that epoch with Lightning's `restarting` flag still up, and
        # Lightning then skips ReduceLROnPlateau's step (it assumes the monitored metrics died with the process). This
        # epoch validated again, so the step is taken here, at the epoch where the uninterrupted run took it.
        loop = trainer.fit_loop
        if loop.restarting and epoch_finished(loop):
            loop.epoch_loop.update_lr_schedulers("epoch", update_plateau_schedulers=True)

    def teardown(self, trainer, module, stage: str) -> None:
        if self.previous_handler is not None:
            signal.signal(signal.SIGINT, self.previous_handler)
            self.previous_handler = None

    def on_exception(self, trainer, module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            number = received.get("signal", signal.SIGTERM)
        elif isinstance(exception, KeyboardInterrupt):
            number = signal.SIGINT
        else:
            return
        # A checkpoint only between two training steps of the fit itself: not during validation (weight averaging
        # has its averaged weights swapped in), not in the learning-rate finder's trial fit, not after a second
        # Ctrl-C (anywhere, maybe inside a step). Otherwise the last epoch's last.ckpt is what a resume starts from.
        between_steps = (isinstance(exception, SIGTERMException) and trainer.state.fn == TrainerFn.FITTING
                         and not (trainer.validating or trainer.sanity_checking)
                         and not lr_finder_running(trainer))
        if between_steps:
            trainer.save_checkpoint(self.path)
        stopped.update(signal=number, checkpoint=str(self.path) if self.path.is_file() else None)


def exit_code() -> int | None:
    """128 + the signal's number when training stopped for one, else None."""
    return 128 + stopped["signal"] if stopped else None


def report_stop(resumable_by_rerun: bool) -> int:
    """Says where the checkpoint is and how to continue; returns the exit code."""
    if stopped["checkpoint"] is None:
        print(f"stopped by signal {stopped['signal']} before any checkpoint was written: run the command again",
              file=sys.stderr)
        return exit_code()
    how = ("re-run the same command" if resumable_by_rerun else
           f"python run.py <the same overrides> ckpt_path={stopped['checkpoint']}")
    print(f"stopped by signal {stopped['signal']}: checkpoint {stopped['checkpoint']}; to continue: {how}",
          file=sys.stderr)
    return exit_code()
