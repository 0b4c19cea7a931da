"""The LightningModule for regression (tables): one number per row, any network, loss (mse, l1, huber) and optimizer.

The network learns the standardised target (with data.target_transform=log: of log y), which keeps the loss's scale
the same for prices and for probabilities; `target_scaling` (fitted on the training split, plain data in hparams)
turns its output back. Metrics are in the target's original units, as a user reads them: rmse, mae and r2; with a
transform also rmse_<transform>, in the units the task is often judged in (Ames: RMSE of log price).
"""
import torch
from hydra.utils import instantiate
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from lightning_modules.tasks.task_module import TaskModule


class RegressionModule(TaskModule):
    def __init__(self, net: dict, optimizer: dict, loss: dict, input_shape: list[int], target_scaling: dict,
                 scheduler: dict | None = None, parameter_groups: dict | None = None, compile: bool = False,
                 channels_last: bool = False, cardinalities: list[int] | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.net = self.build_network(net, compile, channels_last, input_shape=list(input_shape), num_classes=1,
                                      **self.data_shape(None, cardinalities))
        self.loss = instantiate(loss, _convert_="all")
        self.transform = target_scaling["transform"]
        self.mean, self.std = target_scaling["mean"], target_scaling["std"]

        def metrics() -> MetricCollection:
            scores = {"rmse": MeanSquaredError(squared=False), "mae": MeanAbsoluteError(), "r2": R2Score()}
            if self.transform:
                scores[f"rmse_{self.transform}"] = MeanSquaredError(squared=False)
            return MetricCollection(scores)
        # (Keys are `<stage>_metrics`: a bare stage name could clash with nn.Module attributes.)
        self.metrics = torch.nn.ModuleDict({f"{stage}_metrics": metrics() for stage in ("val", "test")})
        self.register_epoch_sum("train_loss_sum")
        # Training metrics from running sums, one add a step (a torchmetrics update per metric would cost a share
        # of a small network's step): rows, squared error, absolute error, sum y, sum y^2, squared transformed error.
        self.register_epoch_sum("train_sums", 6)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """The network's output: the standardised (transformed) target, shape (batch,)."""
        return self.net(*inputs).squeeze(1)

    def transformed(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled.float() * self.std + self.mean

    def original_units(self, scaled: torch.Tensor) -> torch.Tensor:
        """Predictions (or targets) in the target's own units: the standardisation and the transform undone."""
        values = self.transformed(scaled)
        return values.exp() if self.transform == "log" else values

    def update_metrics(self, stage: str, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Updates the stage's metrics; returns (predicted, actual) in original units, shape (batch, 2)."""
        metrics = self.metrics[f"{stage}_metrics"]
        predicted, actual = self.original_units(outputs), self.original_units(targets)
        for name in ("rmse", "mae", "r2"):
            metrics[name].update(predicted, actual)
        if self.transform:
            metrics[f"rmse_{self.transform}"].update(self.transformed(outputs), self.transformed(targets))
        return torch.stack([predicted, actual], dim=1)

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        *inputs, targets = batch
        outputs = self(*inputs)
        loss = self.loss(outputs, targets)
        if self.first_call_for_batch(batch_index):
            outputs = outputs.detach()
            predicted, actual = self.original_units(outputs), self.original_units(targets)
            error = predicted - actual
            self.train_sums.add_(torch.stack([
                torch.ones_like(error).sum(), error.square().sum(), error.abs().sum(), actual.sum(),
                actual.square().sum(), (self.transformed(outputs) - self.transformed(targets)).square().sum()]))
            self.train_loss_sum.add_(loss.detach())
        self.log_step_loss(loss)
        return loss

    def log_metrics(self, stage: str) -> None:
        metrics = self.metrics[f"{stage}_metrics"]
        self.log_dict({f"{stage}/{name}": metric for name, metric in metrics.items()}, on_epoch=True)

    def log_train_epoch_metrics(self) -> None:
        self.log("train/loss", self.epoch_mean(self.train_loss_sum), sync_dist=True)
        # Under DDP, the sums of all processes (scores of the summed rows, not a mean of per-process scores).
        sums = self.trainer.strategy.reduce(self.train_sums.clone(), reduce_op="sum")
        rows, squared, absolute, total, total_squared, squared_transformed = sums
        rows = rows.clamp(min=1)
        variance_sum = (total_squared - total.square() / rows).clamp(min=1e-12)  # sum of (y - mean y)^2
        scores = {"rmse": (squared / rows).sqrt(), "mae": absolute / rows, "r2": 1 - squared / variance_sum}
        if self.transform:
            scores[f"rmse_{self.transform}"] = (squared_transformed / rows).sqrt()
        self.log_dict({f"train/{name}": value for name, value in scores.items()}, sync_dist=True)  # (equal already)
        self.train_loss_sum.zero_()
        self.train_sums.zero_()

    def evaluate(self, batch, stage: str) -> torch.Tensor:
        """Logs the stage's metrics; returns (predicted, actual) in original units, shape (batch, 2)."""
        *inputs, targets = batch
        outputs = self(*inputs)
        self.log(f"{stage}/loss", self.loss(outputs, targets), on_epoch=True, batch_size=len(targets), sync_dist=True)
        rows = self.update_metrics(stage, outputs, targets)
        self.log_metrics(stage)
        return rows.detach()

    def predict_step(self, batch, batch_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(predictions, targets) in original units: mode=predict's rows (targets NaN where the file has none)."""
        *inputs, targets = batch
        return self.original_units(self(*inputs)), self.original_units(targets)
