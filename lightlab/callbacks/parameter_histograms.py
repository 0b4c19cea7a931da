"""Weight and gradient histograms in TensorBoard's HISTOGRAMS and DISTRIBUTIONS tabs, every `every_n_epochs` epochs.

`weights/<parameter>`: each parameter at the end of every N-th training epoch; `gradients/<parameter>`: its gradient
at that epoch's first optimizer step, as backward left it (unscaled from mixed precision, before clipping; under DDP
already averaged over the processes). Names are the module's (`net.features.0.weight`, `loss.log_vars`); the step
is trainer.global_step. 0 switches it off; between the chosen epochs a step costs one attribute check.
"""
import pytorch_lightning as pl
import torch

from lightlab.base.errors import UserError
from lightlab.base.loggers import tensorboard_loggers
from lightlab.base.ranks import is_rank_zero


class ParameterHistograms(pl.Callback):
    def __init__(self, every_n_epochs: int = 0):
        if every_n_epochs < 0:
            raise UserError(f"callbacks.parameter_histograms.every_n_epochs={every_n_epochs}: give the epochs between "
                            f"histograms (1: every epoch), or 0 for none.")
        self.every_n_epochs = every_n_epochs
        self.gradients_due = False
        # (a hook the fast dispatch leaves out: lightlab/lightning_internals/hook_dispatch.py, `_defines`)
        self.idle_hooks = () if every_n_epochs else ("on_before_optimizer_step",)

    def due(self, trainer) -> bool:
        """This epoch is one of every N, and there is a TensorBoard to write to (process 0 writes)."""
        return (self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0
                and is_rank_zero(trainer) and bool(tensorboard_loggers(trainer)))

    def on_train_epoch_start(self, trainer, module) -> None:
        self.gradients_due = self.due(trainer)

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if self.gradients_due:
            self.gradients_due = False  # one step's gradients an epoch: the first
            self.write(trainer, "gradients", {name: parameter.grad for name, parameter in module.named_parameters()
                                              if parameter.grad is not None})

    def on_train_epoch_end(self, trainer, module) -> None:
        if self.due(trainer):
            self.write(trainer, "weights", dict(module.named_parameters()))

    def write(self, trainer, kind: str, tensors: dict[str, torch.Tensor]) -> None:
        loggers = tensorboard_loggers(trainer)
        for name, tensor in tensors.items():
            values = tensor.detach()
            if values.is_sparse:  # sparse embedding gradients: the rows the batch touched
                values = values.coalesce().values()
            values = values.float().flatten()  # (numpy, which bins them, has no bfloat16)
            values = values[values.isfinite()].cpu()  # a NaN or inf would make the bins' range undefined
            if len(values):
                for logger in loggers:
                    logger.experiment.add_histogram(f"{kind}/{name}", values, global_step=trainer.global_step)
