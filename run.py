"""Train, test and summarise one run:  python run.py [group=option ...] [key=value ...]

compose (Hydra, conf/) -> check the config -> build data, model, callbacks, loggers, trainer
-> fit -> test the best checkpoint -> print a summary -> return the monitored metric (for sweepers).
"""
import json
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from lightlab.config_checks import check_config
from lightlab.errors import UserError
from lightlab.run_directory import register_resolvers

register_resolvers()  # before Hydra composes: hydra.run.dir uses ${numbered_dir:...}


def build(cfg: DictConfig):
    """Datamodule, LightningModule and Trainer from the config. Only a text dataset's vocabulary is read
    here (the network's embedding needs its size); images are read when training starts."""
    import functools

    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from lightning_modules.optimization import build as build_from_config  # our errors, not Hydra's wrapper

    # Plain dicts and lists, never DictConfig, reach the constructors: hparams (and so checkpoints) stay plain.
    make = functools.partial(instantiate, _convert_="all")
    datamodule = build_from_config(cfg.data, "data")
    # Not recursive: the module receives its network, loss and optimizer as config and builds them itself.
    module = build_from_config(cfg.lightning_module, "lightning_module", **datamodule.network_inputs(),
                               _recursive_=False)
    callbacks = [make(callback) for callback in cfg.callbacks.values() if callback]  # null: switched off
    loggers = [make(logger) for logger in cfg.logger.values()]
    if not loggers:  # logger=none: nothing for the learning-rate monitor to write to (Lightning refuses it)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    trainer = make(cfg.trainer, callbacks=callbacks, **({"logger": loggers} if loggers else {}))
    return datamodule, module, trainer


def train(cfg: DictConfig) -> dict:
    """Everything a run does, given a composed config; returns the run's final metrics."""
    check_config(cfg)  # before the slow imports: a typo fails in about a second
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.utilities import rank_zero_only

    from lightlab.finetuning import load_network_weights
    from lightlab.tensorboard_summary import record_run

    pl.seed_everything(cfg.seed, workers=True)
    run_dir = Path(cfg.paths.output_dir)
    main_process = rank_zero_only.rank == 0  # DDP's other ranks write nothing of their own
    if main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    datamodule, module, trainer = build(cfg)
    if cfg.init_from:
        load_network_weights(module, cfg.init_from)
    instantiate(cfg.lr_finder).run(trainer, module, datamodule, run_dir, resuming=cfg.ckpt_path is not None)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best_checkpoint = checkpoint.best_model_path if checkpoint and checkpoint.best_model_path else None
    if checkpoint and checkpoint.best_model_score is not None and checkpoint.monitor == cfg.monitor:
        metrics[f"best_{cfg.monitor}"] = float(checkpoint.best_model_score)
    if cfg.test_after_fit and not trainer.interrupted:
        # The best checkpoint, not the last weights; runs without checkpoints test what they end with.
        test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best_checkpoint, verbose=False)
        metrics.update({name: float(value) for name, value in test_metrics[0].items()})

    record_run(trainer, cfg, metrics)  # TensorBoard: the config as text, settings and results in HPARAMS
    summary = {"run_dir": str(run_dir), "best_checkpoint": best_checkpoint, "metrics": metrics,
               "torch_threads": torch.get_num_threads()}
    if main_process:
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        print_summary(cfg, summary)
    return summary


def print_summary(cfg: DictConfig, summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{cfg.experiment_name}: final metrics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(summary["metrics"].items()):
        table.add_row(name, f"{value:.4f}")
    console = Console(soft_wrap=True)  # paths stay on one line (copyable) whatever the terminal's width
    console.print(table)
    console.print(f"best checkpoint: {summary['best_checkpoint'] or '(none: checkpointing is off)'}")
    console.print(f"run directory:   {summary['run_dir']}")
    console.print(f"view it:         tensorboard --logdir {cfg.paths.log_dir}")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lightlab.sweep_summary import objective, record_outcome, resume_job

    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    overrides, started = HydraConfig.get().overrides.task, time.monotonic()
    try:
        earlier = resume_job(cfg, overrides) if in_sweep else None  # a re-run sweep skips its completed jobs
        if earlier is not None:
            return objective(earlier["metrics"], cfg.monitor)
        metrics = train(cfg)["metrics"]
    except Exception as error:
        if in_sweep:  # recorded in the job's folder; the sweep goes on and exits non-zero at its end
            print(f"error: {error}", file=sys.stderr)
            record_outcome(Path(cfg.paths.output_dir), overrides, time.monotonic() - started, error)
            return None
        if os.environ.get("LIGHTLAB_RANK_OF_JOB"):  # a DDP rank of a job: rank 0 reports it (lightlab/distributed.py)
            print(f"error in rank {os.environ.get('LOCAL_RANK')}: {error}", file=sys.stderr)
            return None
        if isinstance(error, UserError):
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        raise
    finally:
        if os.environ.get("LOCAL_RANK") == "0":  # this job started DDP ranks: end them before the next job
            from lightlab.distributed import end_ranks
            end_ranks()
    if in_sweep:
        record_outcome(Path(cfg.paths.output_dir), overrides, time.monotonic() - started)
    return objective(metrics, cfg.monitor)  # what sweepers optimise


if __name__ == "__main__":
    main()
