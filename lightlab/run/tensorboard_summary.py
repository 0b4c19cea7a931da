"""What a finished run adds to its TensorBoard events: the resolved config as text, and its row in the HPARAMS tab.

Lightning writes an HPARAMS session when training starts, before any result exists (with a placeholder
hp_metric = -1, which conf/logger/tensorboard.yaml switches off). `record_run` writes the session once the run
has finished, with the flattened config and the final metrics (best monitored value, last validation, test), so
the HPARAMS table and parallel-coordinates view compare the runs and sweep jobs under a log folder.
"""
from omegaconf import DictConfig, OmegaConf

from lightlab.base.loggers import tensorboard_loggers
from lightlab.base.ranks import is_rank_zero
from lightlab.lightning_internals.trainer_state import event_file_writer

# The config that says what was trained; paths, loggers, callbacks and the module's copies of the groups say not.
REGISTERED = ("seed", "data", "model", "optimizer", "scheduler", "loss", "trainer", "parameter_groups", "compile",
              "channels_last", "monitor")


def flat_settings(cfg: DictConfig) -> dict[str, str | float | int | bool]:
    """{"model": "mlp", "optimizer.lr": 0.001, "model.hidden_dims": "[512, 256]", ...}: the chosen option of each
    config group, then every setting; TensorBoard takes numbers, strings and booleans, so lists and None become text."""
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    settings = {group: str(option) for group, option in choices.items() if not group.startswith("hydra")}
    tree = OmegaConf.to_container(cfg, resolve=True)

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                if not key.startswith("_"):  # _target_, _partial_: how, not what
                    walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            settings[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    for key in REGISTERED:
        if key in tree:
            walk(key, tree[key])
    return settings


def record_run(trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Into each TensorBoard logger's run: the config (TEXT tab) and the HPARAMS session, whose results are also
    scalars `hparams/<metric>`."""
    from torch.utils.tensorboard.summary import hparams

    if not is_rank_zero(trainer):  # DDP: rank 0 writes the events
        return
    results = {f"hparams/{name}": value for name, value in metrics.items()}
    settings = flat_settings(cfg)
    for logger in tensorboard_loggers(trainer):  # (not logger.log_hyperparams: it would also rewrite hparams.yaml)
        logger.experiment.add_text("config", f"```yaml\n{OmegaConf.to_yaml(cfg, resolve=True)}```",
                                   global_step=trainer.global_step)  # markdown: a code block keeps the indents
        logger.log_metrics(results, step=trainer.global_step)
        writer = event_file_writer(logger)  # the run's own event file, not a new sub-run
        for summary in hparams(settings, results):
            writer.add_summary(summary, trainer.global_step)
        # close, not flush: the writer was reopened for these events after the trainer's own close, and an
        # open one keeps a thread and a file handle for as long as the process lives (a sweep's many runs).
        logger.experiment.close()
