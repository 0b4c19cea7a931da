"""A NaN or infinite training loss stops the run at the step it appears, naming that step.

Left alone, one non-finite loss turns every weight into NaN through the optimizer step, and the run goes on for
hours writing NaN metrics and checkpoints. Stopping at once keeps what was good: checkpoints are written only at
the end of finished epochs (and a NaN monitored metric never counts as an improvement, so never becomes the best
checkpoint), so `last.ckpt` and the best checkpoint hold the weights from before the step, and a resume can never
pick up the NaN weights. With `max_skipped_batches=N` up to N such batches are skipped instead (no optimizer step
for them: their parameters get no gradient), each with a warning. The check reads the loss back every
`check_every_n_steps` steps: nothing on a CPU, a synchronisation with the device on a GPU (set it higher there if
that shows in the step time).
"""
import math

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from lightlab.base.errors import UserError


class StopOnNonFiniteLoss(pl.Callback):
    def __init__(self, check_every_n_steps: int = 1, max_skipped_batches: int = 0):
        for key, value, least in (("check_every_n_steps", check_every_n_steps, 1),
                                  ("max_skipped_batches", max_skipped_batches, 0)):
            if value < least:
                raise UserError(f"callbacks.stop_on_non_finite_loss.{key}={value}: it must be at least {least} (switch "
                                f"the check off with callbacks.stop_on_non_finite_loss=null).")
        self.check_every_n_steps, self.max_skipped_batches = check_every_n_steps, max_skipped_batches
        self.skipped, self.skip_this_step = 0, False
        # Nothing is ever skipped without max_skipped_batches: a hook the fast dispatch leaves out every step
        # (lightlab/lightning_internals/hook_dispatch.py, `_defines`).
        self.idle_hooks = () if max_skipped_batches else ("on_before_optimizer_step",)

    def on_before_backward(self, trainer, module, loss) -> None:
        # Before backward and the optimizer step: a stop here leaves the weights as they were before this batch.
        # (trainer.global_step walks Lightning's progress objects: ~8 us, read only when it decides something)
        if self.check_every_n_steps > 1 and trainer.global_step % self.check_every_n_steps:
            return
        if math.isfinite(loss.item()):
            return
        step = trainer.global_step  # the optimizer step this batch's loss goes into (0-based, as logged)
        where = f"step {step} (epoch {trainer.current_epoch}, batch {trainer.fit_loop.epoch_loop.batch_idx})"
        if self.skipped < self.max_skipped_batches:
            self.skipped += 1
            self.skip_this_step = True
            rank_zero_warn(f"the training loss is {float(loss)} at {where}: batch skipped ({self.skipped} of at most "
                           f"callbacks.stop_on_non_finite_loss.max_skipped_batches={self.max_skipped_batches})")
            return
        last = f"{trainer.default_root_dir}/checkpoints/last.ckpt"
        raise UserError(
            f"the training loss is {float(loss)} at {where}; the run stops here"
            f"{f', after skipping {self.skipped} such batches' if self.skipped else ''}. The checkpoints hold the "
            f"weights from before it ({last}, after the last finished epoch). Usual fixes: a lower optimizer.lr, "
            f"trainer.gradient_clip_val=1.0, a warmup (scheduler=warmup_cosine), or trainer.precision=32-true if it "
            f"ran in 16-bit; debug=anomaly finds the operation that made it; callbacks.stop_on_non_finite_loss."
            f"max_skipped_batches=N skips up to N such batches instead.")

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if self.skip_this_step:  # a parameter without a gradient is left alone by every torch optimizer
            self.skip_this_step = False
            optimizer.zero_grad(set_to_none=True)
