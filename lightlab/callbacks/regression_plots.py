"""A regression's test, as two TensorBoard pictures: test/predicted_vs_actual (a scatter of every test row, with the
diagonal where they would be equal) and test/residuals (a histogram of predicted - actual), in the target's units.

Drawn from what RegressionModule.test_step returns anyway ((predicted, actual) per row); other modules are left alone.
Under DDP, process 0 draws the rows it evaluated.
"""
import pytorch_lightning as pl
import torch

from lightlab.base.loggers import tensorboard_loggers
from lightlab.base.ranks import is_rank_zero
from lightning_modules.tasks.regression import RegressionModule


class RegressionPlots(pl.Callback):
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.rows: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer, module) -> None:
        self.rows = []

    def on_test_batch_end(self, trainer, module, outputs, batch, batch_index, dataloader_index=0) -> None:
        if self.enabled and isinstance(module, RegressionModule):
            self.rows.append(outputs.cpu())

    def on_test_epoch_end(self, trainer, module) -> None:
        loggers = tensorboard_loggers(trainer)
        if not self.rows or not loggers or not is_rank_zero(trainer):
            return
        import matplotlib

        matplotlib.use("Agg")  # files only, whatever the user's display
        from matplotlib import pyplot

        predicted, actual = torch.cat(self.rows).double().T.numpy()
        target = trainer.datamodule.hparams.get("target", "target") if trainer.datamodule else "target"
        scatter, axes = pyplot.subplots(figsize=(5, 5))
        axes.scatter(actual, predicted, s=6, alpha=0.5)
        low, high = min(actual.min(), predicted.min()), max(actual.max(), predicted.max())
        axes.plot([low, high], [low, high], color="black", linewidth=1)
        axes.set(xlabel=f"actual {target}", ylabel=f"predicted {target}", title=f"test: {len(actual)} rows")
        histogram, axes = pyplot.subplots(figsize=(5, 3.5))
        axes.hist(predicted - actual, bins=40)
        axes.set(xlabel=f"predicted - actual {target}", ylabel="rows", title="test residuals")
        for logger in loggers:
            logger.experiment.add_figure("test/predicted_vs_actual", scatter, global_step=trainer.global_step,
                                         close=False)
            logger.experiment.add_figure("test/residuals", histogram, global_step=trainer.global_step, close=False)
        pyplot.close(scatter)
        pyplot.close(histogram)
