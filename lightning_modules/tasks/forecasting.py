"""The LightningModule for forecasting (series): `horizon` steps of each target from a window's history.

A batch is a gather of windows (batch, features, lookback + horizon) from datamodules/time_series.py: the targets'
rows first, then the covariates'. The network learns the standardised targets; `target_scaling` (fitted on the
training period, plain data in hparams) turns its output back into the target's units, in which every metric is
reported: mae and rmse over all windows and steps of the split, and beside them the seasonal-naive forecast's MAE on
exactly the same targets (the value one `season` earlier; the last value for season null), and mase = mae /
naive_mae: below 1, the network beats the forecast it must beat. (Hyndman's MASE scales by the in-sample naive MAE;
this ratio is the out-of-sample one, the question a user asks of a test period.)
"""
import torch
from hydra.utils import instantiate
from torchmetrics import Metric

from lightning_modules.tasks.task_module import TaskModule


class ForecastErrors(Metric):
    """Sums of absolute and squared errors per horizon step, of the forecast and of the naive forecast: summed over
    processes under DDP, so the scores are those of all targets, not a mean of per-process scores."""
    full_state_update = False

    def __init__(self, horizon: int):
        super().__init__()
        for name in ("absolute", "squared", "naive_absolute", "count"):
            self.add_state(name, torch.zeros(horizon, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, forecast: torch.Tensor, actual: torch.Tensor, naive: torch.Tensor, mask: torch.Tensor) -> None:
        """(batch, horizon, targets) each, in the target's units; mask (batch, horizon): the targets scored."""
        weight = mask.unsqueeze(2).double()
        error = (forecast.double() - actual.double()) * weight
        self.absolute += error.abs().sum(dim=(0, 2))
        self.squared += error.square().sum(dim=(0, 2))
        self.naive_absolute += ((naive.double() - actual.double()).abs() * weight).sum(dim=(0, 2))
        self.count += weight.sum(dim=(0, 2)) * forecast.shape[2]

    def compute(self) -> dict[str, torch.Tensor]:
        count = self.count.sum().clamp(min=1)
        mae, naive_mae = self.absolute.sum() / count, self.naive_absolute.sum() / count
        steps = self.count.clamp(min=1)
        return {"mae": mae, "rmse": (self.squared.sum() / count).sqrt(), "naive_mae": naive_mae,
                "mase": mae / naive_mae, "mae_by_step": self.absolute / steps,
                "naive_mae_by_step": self.naive_absolute / steps}


class ForecastModule(TaskModule):
    # window: {lookback, horizon, targets, covariates}, the network's shape (one dict: the DataModule's own lookback
    # may be null, and Lightning refuses two hparams of one name with different values).
    def __init__(self, net: dict, optimizer: dict, loss: dict, window: dict, target_scaling: dict,
                 season: int | None = None, scheduler: dict | None = None, parameter_groups: dict | None = None,
                 compile: bool = False, channels_last: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.lookback, self.horizon, self.targets = window["lookback"], window["horizon"], window["targets"]
        self.net = self.build_network(net, compile, channels_last, **window)
        self.loss = instantiate(loss, _convert_="all")
        self.register_buffer("target_mean", torch.tensor(target_scaling["mean"]), persistent=False)
        self.register_buffer("target_std", torch.tensor(target_scaling["std"]), persistent=False)
        self.metrics = torch.nn.ModuleDict({f"{stage}_metrics": ForecastErrors(self.horizon)
                                            for stage in ("val", "test")})
        self.scores: dict[str, dict[str, torch.Tensor]] = {}  # each stage's last scores (lightlab/callbacks reads)
        self.register_epoch_sum("train_loss_sum")
        self.register_epoch_sum("train_sums", 2)  # targets, absolute error in the target's units

    def parts(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of windows as (history (batch, lookback, features), future covariates (batch, horizon,
        covariates), targets (batch, horizon, targets)): views, no copy."""
        lookback, targets = self.lookback, self.targets
        return (windows[:, :, :lookback].transpose(1, 2), windows[:, targets:, lookback:].transpose(1, 2),
                windows[:, :targets, lookback:].transpose(1, 2))

    def forward(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        return self.net(history, future)

    def original_units(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled.float() * self.target_std + self.target_mean

    def naive(self, seasons: torch.Tensor) -> torch.Tensor:
        """The seasonal-naive forecast (batch, horizon, targets) from the `season` steps up to each origin: step h
        repeats the value one season before it."""
        period = seasons.shape[2]
        steps = torch.arange(self.horizon, device=seasons.device) % period
        return self.original_units(seasons[:, :, steps].transpose(1, 2))

    def training_step(self, batch, batch_index: int) -> torch.Tensor:
        history, future, targets = self.parts(batch[0])
        outputs = self(history, future)
        loss = self.loss(outputs, targets)
        if self.first_call_for_batch(batch_index):
            error = (outputs.detach() - targets) * self.target_std
            self.train_sums.add_(torch.stack([torch.tensor(error.numel(), device=error.device), error.abs().sum()]))
            self.train_loss_sum.add_(loss.detach())
        self.log_step_loss(loss)
        return loss

    def log_train_epoch_metrics(self) -> None:
        self.log("train/loss", self.epoch_mean(self.train_loss_sum), sync_dist=True)
        count, absolute = self.trainer.strategy.reduce(self.train_sums.clone(), reduce_op="sum")
        self.log("train/mae", absolute / count.clamp(min=1), sync_dist=True)  # (equal on every process already)
        self.train_loss_sum.zero_()
        self.train_sums.zero_()

    def forecast(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(forecast, actual, naive) of a validation or test batch, in the target's units."""
        windows, seasons, _ = batch
        history, future, targets = self.parts(windows)
        return self.original_units(self(history, future)), self.original_units(targets), self.naive(seasons)

    def evaluate(self, batch, stage: str) -> None:
        windows, seasons, mask = batch
        history, future, targets = self.parts(windows)
        outputs = self(history, future)
        self.log(f"{stage}/loss", self.loss(outputs[mask], targets[mask]), on_epoch=True,
                 batch_size=int(mask.sum()), sync_dist=True)
        self.metrics[f"{stage}_metrics"].update(self.original_units(outputs), self.original_units(targets),
                                                self.naive(seasons), mask)

    def log_scores(self, stage: str) -> None:
        metric = self.metrics[f"{stage}_metrics"]
        self.scores[stage] = {name: value.detach().cpu() for name, value in metric.compute().items()}
        metric.reset()
        self.log_dict({f"{stage}/{name}": value.float() for name, value in self.scores[stage].items()
                       if value.dim() == 0})

    def on_validation_epoch_end(self) -> None:
        self.log_scores("val")

    def on_test_epoch_end(self) -> None:
        self.log_scores("test")

    def predict_step(self, batch, batch_index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(forecast, actual, mask) in the target's units: the test period's windows (actual where scored), or the
        window after a file's history (actual NaN: the future is not known)."""
        if len(batch) == 3:
            forecast, actual, _ = self.forecast(batch)
            return forecast, actual, batch[2]
        history, future, _ = self.parts(batch[0])
        forecast = self.original_units(self(history, future))
        return forecast, torch.full_like(forecast, float("nan")), torch.ones(forecast.shape[:2], dtype=torch.bool)
