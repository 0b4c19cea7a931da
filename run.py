"""Train, test and summarise one run:  python run.py [group=option ...] [key=value ...]

compose (Hydra, conf/) -> check the config -> build data, model, callbacks, loggers, trainer
-> fit -> test the best checkpoint -> print a summary -> return the monitored metric (for sweepers).
With mode=test, predict or export and ckpt_path=…, a trained checkpoint is used instead of training one.
"""
import hydra
from omegaconf import DictConfig

from lightlab.config.checks import check_config
from lightlab.config.table_task import settle_task
from lightlab.run.folders import register_resolvers

register_resolvers()  # before Hydra composes: hydra.run.dir uses ${run_dir:...}


def build(cfg: DictConfig, with_trainer: bool = True):
    """Datamodule, LightningModule and Trainer from the config. Only what the network's shape needs is read here (a
    text dataset's vocabulary, a table's fitted columns: from the checkpoint in mode=test/predict/export); images
    are read when training starts."""
    import functools

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lightlab.base.objects import build as build_from_config  # our errors, not Hydra's wrapper

    # Plain dicts and lists, never DictConfig, reach the constructors: hparams (and so checkpoints) stay plain.
    make = functools.partial(instantiate, _convert_="all")
    datamodule = build_from_config(cfg.data, "data")
    if cfg.mode != "train":
        restore_data_state(datamodule, cfg.ckpt_path)
    # Not recursive: the module receives its network, loss and optimizer as config and builds them itself.
    module = build_from_config(cfg.lightning_module, "lightning_module", **datamodule.network_inputs(),
                               _recursive_=False)
    # null: switched off; no _target_: an experiment's settings for a callback that callbacks=<option> does not have
    if not with_trainer:  # mode=export: the network alone (a GPU run's trainer settings need no GPU here)
        return datamodule, module, None
    callbacks = [build_from_config(callback, f"callbacks.{name}") for name, callback in cfg.callbacks.items()
                 if callback and "_target_" in callback]
    loggers = [make(logger) for logger in cfg.logger.values()]
    if not loggers:  # logger=none: nothing for the learning-rate monitor to write to (Lightning refuses it)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer = make(cfg.trainer, callbacks=callbacks, **({"logger": loggers} if loggers else {}))
    return datamodule, module, trainer


def restore_data_state(datamodule, ckpt_path: str) -> None:
    """What the data fitted in training (a vocabulary, a table's preprocessing), from the checkpoint."""
    import torch

    state = torch.load(ckpt_path, map_location="cpu", weights_only=True).get(type(datamodule).__qualname__)
    if state and hasattr(datamodule, "load_state_dict"):
        datamodule.load_state_dict(state)


def train(cfg: DictConfig) -> dict:
    """Everything a run does, given a composed config; returns the run's final metrics."""
    settle_task(cfg)  # data=table: the task's keys left `auto`, from the target column
    check_config(cfg)  # before the slow imports: a typo fails in about a second
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lightlab.callbacks.finetuning import load_network_weights
    from lightlab.config.checkpoint_checks import check_resume_checkpoint
    from lightlab.run.record import finish_run, start_run
    from lightlab.run.tensorboard_summary import record_run

    pl.seed_everything(cfg.seed, workers=True)
    run_dir = start_run(cfg)
    datamodule, module, trainer = build(cfg)
    if cfg.init_from:
        load_network_weights(module, cfg.init_from)
    if cfg.ckpt_path:  # before Lightning's loader: a wrong file is named, changed optimizer settings are too
        check_resume_checkpoint(cfg, module)
    instantiate(cfg.lr_finder).run(trainer, module, datamodule, run_dir, resuming=cfg.ckpt_path is not None)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best_checkpoint = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    if checkpoint and checkpoint.best_model_score is not None and checkpoint.monitor == cfg.monitor:
        metrics[f"best_{cfg.monitor}"] = float(checkpoint.best_model_score)
    if cfg.test_after_fit and not trainer.interrupted:
        # The best checkpoint, not the last weights; runs without checkpoints test what they end with.
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best_checkpoint, verbose=False,
                                    weights_only=True)
        metrics.update({name: float(value) for name, value in test_metrics[0].items()})

    record_run(trainer, cfg, metrics)  # TensorBoard: the config as text, settings and results in HPARAMS
    return finish_run(cfg, run_dir, metrics, best_checkpoint=best_checkpoint)


def use_checkpoint(cfg: DictConfig) -> dict:
    """mode=test, predict or export: cfg.ckpt_path's network with its run's config (main() swapped it in); nothing
    trains. The results go to this command's folder inside that run (lightlab/run/checkpoint_modes.py)."""
    settle_task(cfg)
    check_config(cfg)
    import pytorch_lightning as pl

    from lightlab.run import checkpoint_modes
    from lightlab.run.record import finish_run, start_run

    pl.seed_everything(cfg.seed, workers=True)
    run_dir = start_run(cfg)
    datamodule, module, trainer = build(cfg, with_trainer=cfg.mode != "export")
    if cfg.mode == "test":  # Lightning's own restore: weights, the data's state, weight averaging's choice
        results = trainer.test(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, verbose=False, weights_only=True)
        metrics = {name: float(value) for name, value in results[0].items()}
    elif cfg.mode == "predict":
        metrics = checkpoint_modes.write_predictions(trainer, module, datamodule, cfg, run_dir)
    else:
        metrics = checkpoint_modes.export(module, datamodule, cfg, run_dir)
    return finish_run(cfg, run_dir, metrics, checkpoint=cfg.ckpt_path)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """The config was checked before Hydra made this run's folder (lightlab/run/job.py, CheckBeforeWriting). The Job
    knows what this process is (a run, a named run, a sweep job, a DDP rank, a checkpoint mode) and turns the
    outcome into an exit code: 0 done, 1 crash, 2 bad input, 130/143 interrupted with a checkpoint (README)."""
    from lightlab.run.job import Job

    return Job(cfg).run(train, use_checkpoint)  # what sweepers optimise: the monitored metric


if __name__ == "__main__":
    import gc
    import sys

    from lightlab.lightning_internals.hydra_mode import compose_once
    from lightlab.run.compose import checkpoint_command_line

    compose_once()  # Hydra would compose the config once more just to read hydra.mode, which nothing here sets
    # Start-up builds ~0.6M objects that live as long as the process (torch, Lightning); the collector scanning them
    # again and again as they arrive took ~0.6 s of a 3 s start. Job.run freezes them and turns it back on (a sweep
    # turns it back on at its start: lightlab/run/job.py).
    gc.disable()
    sys.argv[1:] = checkpoint_command_line(sys.argv[1:])  # keys of the checkpoint's config (data.predict_path=…)
    main()
