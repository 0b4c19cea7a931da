"""A forecaster's test, as two TensorBoard pictures, in the target's units:
test/mae_by_step  the MAE at each step ahead, beside the seasonal-naive forecast's on the same targets;
test/forecasts    a few test windows: the end of their history, the actual future, the forecast and the naive one.

Drawn once testing ends, from the scores ForecastModule keeps and a forward pass over a few test windows; other
modules are left alone. Under DDP, process 0 draws.
"""
import pytorch_lightning as pl
import torch

from lightlab.base.loggers import tensorboard_loggers
from lightlab.base.ranks import is_rank_zero
from lightning_modules.tasks.forecasting import ForecastModule


class ForecastPlots(pl.Callback):
    def __init__(self, examples: int = 4):
        self.examples = examples

    def on_test_end(self, trainer, module) -> None:
        loggers = tensorboard_loggers(trainer)
        if (not self.examples or not isinstance(module, ForecastModule) or "test" not in module.scores
                or not loggers or not is_rank_zero(trainer)):
            return
        import matplotlib

        matplotlib.use("Agg")  # files only, whatever the user's display
        from matplotlib import pyplot

        datamodule = trainer.datamodule
        target = ", ".join(datamodule.targets)
        scores = module.scores["test"]
        steps = range(1, len(scores["mae_by_step"]) + 1)
        by_step, axes = pyplot.subplots(figsize=(6, 3.5))
        axes.plot(steps, scores["mae_by_step"].numpy(), marker=".", label=f"forecast (MAE {scores['mae']:.4g})")
        axes.plot(steps, scores["naive_mae_by_step"].numpy(), marker=".", color="grey",
                  label=f"naive (MAE {scores['naive_mae']:.4g})")
        axes.set(xlabel="step ahead", ylabel=f"MAE of {target}", title="test: error by step ahead", ylim=(0, None))
        axes.legend()
        examples = self.example_windows(module, datamodule.splits["test"])
        for logger in loggers:
            logger.experiment.add_figure("test/mae_by_step", by_step, global_step=trainer.global_step)
            logger.experiment.add_figure("test/forecasts", examples, global_step=trainer.global_step)

    def example_windows(self, module: ForecastModule, tensors: tuple[torch.Tensor, ...]):
        from matplotlib import pyplot

        windows, seasons, mask = tensors
        # Windows with the most targets in the test period: all of them, unless it is shorter than the horizon.
        scored = mask.sum(dim=1)
        whole = (scored == scored.max()).nonzero().squeeze(1)
        chosen = whole[torch.linspace(0, len(whole) - 1, min(self.examples, len(whole))).long()]
        batch = tuple(t[chosen].to(module.device) for t in (windows, seasons, mask))
        with torch.no_grad():
            forecast, actual, naive = (t[..., 0].cpu() for t in module.forecast(batch))  # the first target
        actual = actual.masked_fill(~batch[2].cpu(), float("nan"))  # (targets outside the period: not shown)
        history = module.original_units(batch[0][:, 0, :module.lookback].unsqueeze(2))[..., 0].cpu()
        shown = min(history.shape[1], 2 * forecast.shape[1])  # the history's end: two horizons
        figure, grid = pyplot.subplots(len(chosen), 1, figsize=(7, 2.2 * len(chosen)), squeeze=False)
        for row, axes in enumerate(grid[:, 0]):
            past, future = range(-shown + 1, 1), range(1, forecast.shape[1] + 1)
            axes.plot(past, history[row, -shown:].numpy(), color="black", linewidth=1, label="history")
            axes.plot(future, actual[row].numpy(), color="black", linestyle="--", linewidth=1, label="actual")
            axes.plot(future, naive[row].numpy(), color="grey", linewidth=1, label="naive")
            axes.plot(future, forecast[row].numpy(), color="tab:blue", linewidth=1.5, label="forecast")
            axes.set_ylabel(f"window {int(chosen[row])}")
        grid[0, 0].legend(loc="upper left", fontsize="small", ncol=4)
        grid[-1, 0].set_xlabel("steps from the window's last known value")
        return figure
