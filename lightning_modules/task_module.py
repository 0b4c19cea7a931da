"""What every task module (classification, metric learning, multi-task) shares: the network built from
config, the optimizer and schedules built from config, and the checks that need a running trainer."""
import torch
from hydra.utils import instantiate

from lightlab.fast_loop import FastHooksModule
from lightning_modules.optimization import (build_lr_schedulers, build_optimizer, check_monitored_metrics,
                                            check_optimizer_fits_trainer)


class TaskModule(FastHooksModule):
    def build_network(self, config: dict, compile: bool, **shape) -> torch.nn.Module:
        network = instantiate(config, **shape, _convert_="all")
        if compile:
            # In place (nn.Module.compile), so parameter names, and checkpoints, stay those of the bare network.
            network.compile()
        return network

    def configure_optimizers(self):
        # The whole module's parameters: the network's ("net.…") and any the loss learns ("loss.…").
        optimizer = build_optimizer(self, self.hparams.optimizer, self.hparams.get("parameter_groups"))
        check_optimizer_fits_trainer(optimizer, self.trainer)
        if not self.hparams.scheduler:
            return optimizer
        return [optimizer], build_lr_schedulers(optimizer, self.hparams.scheduler, self.trainer)

    def first_call_for_batch(self, batch_index: int) -> bool:
        """False when an optimizer that re-evaluates the loss (LBFGS calls its closure up to max_iter
        times a step) runs training_step again on the same batch: epoch statistics count each batch once."""
        key = (self.current_epoch, batch_index)
        first, self._last_batch = key != getattr(self, "_last_batch", None), key
        return first

    def log_step_loss(self, loss: torch.Tensor) -> None:
        # Only on the steps the logger writes (every trainer.log_every_n_steps): a self.log call costs a
        # sizeable share of a small model's step.
        if self.trainer._logger_connector.should_update_logs:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)

    def validation_step(self, batch, batch_index: int) -> None:
        self.evaluate(batch, "val")

    def test_step(self, batch, batch_index: int) -> None:
        self.evaluate(batch, "test")

    def evaluate(self, batch, stage: str) -> None:
        """Compute and log the `stage` ("val" or "test") metrics of one batch."""
        raise NotImplementedError

    def log_train_epoch_metrics(self) -> None:
        raise NotImplementedError

    def epoch_mean(self, summed: torch.Tensor) -> torch.Tensor:
        """A per-batch quantity summed over the training epoch, as its mean over the epoch's batches."""
        return summed / max(self.trainer.num_training_batches, 1)

    def on_train_epoch_end(self) -> None:
        self.log_train_epoch_metrics()
        validated = self.trainer.limit_val_batches != 0 and (
            (self.current_epoch + 1) % (self.trainer.check_val_every_n_epoch or 1) == 0)
        if validated and not self.trainer.sanity_checking:
            check_monitored_metrics(self.trainer)
