"""A NaN or infinite training loss stops the run at the step it appears, naming that step.

Left alone, one non-finite loss turns every weight into NaN through the optimizer step, and the run goes on for
hours writing NaN metrics and checkpoints. Stopping at once keeps what was good: checkpoints are written only at
the end of finished epochs (and a NaN monitored metric never counts as an improvement, so never becomes the best
checkpoint), so `last.ckpt` and the best checkpoint hold the weights from before the step, and a resume can never
pick up the NaN weights. The check reads the loss back every `check_every_n_steps` steps: nothing on a CPU, a
synchronisation with the device on a GPU (set it higher there if that shows in the step time).
"""
import pytorch_lightning as pl
import torch

from lightlab.errors import UserError


class StopOnNonFiniteLoss(pl.Callback):
    def __init__(self, check_every_n_steps: int = 1):
        if check_every_n_steps < 1:
            raise UserError(f"callbacks.stop_on_non_finite_loss.check_every_n_steps={check_every_n_steps}: give a "
                            f"number of steps >= 1, or switch the check off with callbacks.stop_on_non_finite_loss=null.")
        self.check_every_n_steps = check_every_n_steps

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = trainer.global_step - 1  # the optimizer step this batch's loss went into (0-based, as logged)
        if loss is None or step % self.check_every_n_steps or bool(torch.isfinite(loss.detach())):
            return
        last = f"{trainer.default_root_dir}/checkpoints/last.ckpt"
        raise UserError(
            f"the training loss is {float(loss)} at step {step} (epoch {trainer.current_epoch}, batch {batch_index}); "
            f"the run stops here. The checkpoints hold the weights from before it ({last}, after the last finished "
            f"epoch). Usual fixes: a lower optimizer.lr, trainer.gradient_clip_val=1.0, a warmup "
            f"(scheduler=warmup_cosine), or trainer.precision=32-true if it ran in 16-bit; debug=anomaly finds the "
            f"operation that made it.")
