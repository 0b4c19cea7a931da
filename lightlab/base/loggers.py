"""The TensorBoard logger of conf/logger/tensorboard.yaml, and the TensorBoard loggers of a trainer (what every
picture, histogram and HPARAMS writer writes to)."""
from pytorch_lightning.loggers import TensorBoardLogger as LightningTensorBoardLogger


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's, with the `epoch` it adds to every logged step filed as `train/epoch`: TensorBoard sorts scalar
    groups by name, and a group of its own named `epoch` opened the SCALARS tab above the test/train/val curves."""

    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics({("train/epoch" if name == "epoch" else name): value for name, value in metrics.items()},
                            step)


def tensorboard_loggers(trainer) -> list:
    return [logger for logger in trainer.loggers if isinstance(logger, LightningTensorBoardLogger)]
