"""What every task module (classification, metric learning, multi-task) shares: the network built from
config, the optimizer and schedules built from config, and the checks that need a running trainer."""
import inspect

import torch
from hydra.utils import instantiate

from lightlab.base.errors import UserError
from lightlab.base.objects import locate

# (installed on import: the lean batch, hook_dispatch's paths, and logged values that stay where they are)
from lightlab.lightning_internals import lean_epoch, logged_values  # noqa: F401
from lightlab.lightning_internals.hook_dispatch import FastHooksModule
from lightlab.lightning_internals.trainer_state import ddp_leaves_alone, logs_this_step
from lightning_modules.optimization import (
    build_lr_schedulers,
    build_optimizer,
    check_monitored_metrics,
    check_optimizer_fits_trainer,
)


def inputs_to_channels_last(network: torch.nn.Module, inputs: tuple) -> tuple:
    return tuple(x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.dim() == 4
                 else x for x in inputs)


class TaskModule(FastHooksModule):
    plain_attributes = FastHooksModule.plain_attributes | {"_last_batch"}

    @staticmethod
    def data_shape(vocabulary_size: int | None, cardinalities: list[int] | None) -> dict:
        """What the data adds to a network's inputs: text its vocabulary's size (the embedding's rows), tables the
        categories per categorical column; images nothing."""
        if vocabulary_size is not None:
            return {"vocabulary_size": vocabulary_size}
        return {} if cardinalities is None else {"cardinalities": list(cardinalities)}

    def build_network(self, config: dict, compile: bool, channels_last: bool = False, **shape) -> torch.nn.Module:
        parameters = inspect.signature(locate(config["_target_"])).parameters

        def kind(names) -> str:  # what the inputs are, by the shape arguments the data gives or the network takes
            return next((kind for name, kind in (("vocabulary_size", "token ids"), ("cardinalities", "table rows"),
                                                 ("lookback", "series windows")) if name in names), "images")
        data, reads = kind(shape), kind(parameters)
        if data != reads:
            models = {"images": "model=mlp, cnn, resnet18 or fast_cifar", "token ids": "model=rnn, lstm, gru or "
                      "bilstm_attention", "table rows": "model=tabular_mlp",
                      "series windows": "model=forecast_mlp, forecast_linear, forecast_lstm or forecast_gru"}
            raise UserError(f"model {config['_target_']} reads {reads}, but this data gives {data}. Choose a model "
                            f"for {data} ({models[data]}), or data for this model.")
        network = instantiate(config, **shape, _convert_="all")
        # The bare network's whole constructor call, as plain data: lightlab/run/export.py rebuilds it (without
        # the compile wrapper or channels_last hooks added below) and a deployment needs nothing else.
        self.network_config = {**config, **shape}
        if channels_last:
            # NHWC: what tensor cores (and oneDNN on CPU) read fastest. Weights convert once here, image
            # batches as they enter the network; a module that moves to a device keeps the layout.
            network.to(memory_format=torch.channels_last)
            network.register_forward_pre_hook(inputs_to_channels_last)
        if compile:
            # In place (nn.Module.compile), so parameter names, and checkpoints, stay those of the bare network.
            network.compile()
        return network

    def setup(self, stage: str) -> None:
        # A network whose first layer is computed from the data (FastCIFARNet's whitening) gets it here:
        # before a resumed run's checkpoint is restored (which then overwrites it), after the data is set up.
        initialize = getattr(self.net, "initialize_from_data", None)
        if stage == "fit" and initialize is not None and self.trainer.datamodule is not None:
            initialize(self.trainer.datamodule.training_sample(5000))

    def configure_optimizers(self):
        # The whole module's parameters: the network's ("net.…") and any the loss learns ("loss.…").
        optimizer = build_optimizer(self, self.hparams.optimizer, self.hparams.get("parameter_groups"))
        check_optimizer_fits_trainer(optimizer, self.trainer)
        if not self.hparams.scheduler:
            return optimizer
        return [optimizer], build_lr_schedulers(optimizer, self.hparams.scheduler, self.trainer)

    def register_epoch_sum(self, name: str, size: int | tuple = ()) -> None:
        """A running sum over this process's training batches (a buffer: it follows the module's device; it is
        synced over processes when logged). DDP must not broadcast it, or every rank would hold rank 0's sum."""
        self.register_buffer(name, torch.zeros(size), persistent=False)
        ddp_leaves_alone(self, name)

    def first_call_for_batch(self, batch_index: int) -> bool:
        """False when an optimizer that re-evaluates the loss (LBFGS calls its closure up to max_iter
        times a step) runs training_step again on the same batch: epoch statistics count each batch once."""
        key = (self.current_epoch, batch_index)
        first, self._last_batch = key != getattr(self, "_last_batch", None), key
        return first

    def log_step_loss(self, loss: torch.Tensor) -> None:
        # Only on the steps the logger writes (every trainer.log_every_n_steps): a self.log call costs a
        # sizeable share of a small model's step.
        if logs_this_step(self.trainer):
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)

    # What evaluate returns reaches callbacks as `outputs` (lightlab/callbacks/evaluation_images.py draws from it).
    def validation_step(self, batch, batch_index: int) -> torch.Tensor | None:
        return self.evaluate(batch, "val")

    def test_step(self, batch, batch_index: int) -> torch.Tensor | None:
        return self.evaluate(batch, "test")

    def evaluate(self, batch, stage: str) -> torch.Tensor | None:
        """Compute and log the `stage` ("val" or "test") metrics of one batch; return its class scores
        (batch, classes), detached, where the task has them, else None."""
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
