"""The TensorBoard loggers of a trainer: what every picture, histogram and HPARAMS writer writes to."""


def tensorboard_loggers(trainer) -> list:
    from pytorch_lightning.loggers import TensorBoardLogger

    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
