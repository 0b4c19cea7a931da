"""The TensorBoard logger of conf/logger/tensorboard.yaml, and the TensorBoard loggers of a trainer (what every
picture, histogram and HPARAMS writer writes to)."""
from pytorch_lightning.loggers import TensorBoardLogger as LightningTensorBoardLogger


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's, with what Lightning logs outside the stages filed under train/: the `epoch` it adds to every
    logged step (as train/epoch) and the learning-rate monitor's `lr-<optimizer>` (as train/lr-<optimizer>).
    TensorBoard orders scalar groups by name, so groups of their own opened SCALARS above the test/train/val curves."""

    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics({in_train_group(name): value for name, value in metrics.items()}, step)


def in_train_group(name: str) -> str:
    return "train/epoch" if name == "epoch" else f"train/{name}" if name.startswith("lr-") else name


def tensorboard_loggers(trainer) -> list:
    return [logger for logger in trainer.loggers if isinstance(logger, LightningTensorBoardLogger)]
