"""What a finished run adds to its TensorBoard events: the resolved config as text, and its row in the HPARAMS tab.

Lightning writes an HPARAMS session when training starts, before any result exists (with a placeholder
hp_metric = -1, which conf/logger/tensorboard.yaml switches off). `record_run` writes the session once the run has
finished. Its columns are few on purpose: what the command set (a sweep's swept keys among them), then a core set
(CORE); the whole config is the TEXT entry `config`. No experiment summary is written: without one TensorBoard
builds the table from the runs it finds, puts the settings whose values differ between them first, and takes the
metrics from the runs' own scalars (the last value of each: test/acc, val/acc_best, ...), so results are not
repeated as extra scalar groups.
"""
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightlab.base.loggers import tensorboard_loggers
from lightlab.base.ranks import is_rank_zero
from lightlab.lightning_internals.trainer_state import event_file_writer

# Shown for every run: a config group's key is the option chosen for it (model: mlp), a dotted key its value.
CORE = ("model", "data", "optimizer", "optimizer.lr", "data.batch_size", "trainer.max_epochs", "seed")
# Keys of a command line that say where or how to run, not what is trained.
NOT_SETTINGS = ("paths", "run_name", "sweep_name", "print_config", "ckpt_path", "mode", "logger", "hydra",
                "predict_input", "experiment_name", "callbacks.progress_bar", "callbacks.model_summary")


def shown(value) -> str | float | int:
    """A value as HPARAMS shows it: numbers as numbers; true/false, null and lists as text (TensorBoard's writer
    would store a bool as the number 0 or 1)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float, str)):
        return value
    return str(OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value)


def hparams_columns(cfg: DictConfig, overrides: list[str], choices: dict) -> dict[str, str | float | int]:
    """{"optimizer.lr": 0.003, "model": "mlp", ...}: the command's overridden keys in its order, then CORE."""
    keys = [override.partition("=")[0].lstrip("+~") for override in overrides]
    keys = [key for key in keys if not any(key == other or key.startswith(other + ".") for other in NOT_SETTINGS)]
    columns = {}
    for key in dict.fromkeys([*keys, *CORE]):
        if key in choices and choices[key] == "auto":  # loss=auto (data=table): the loss it became
            columns[key] = str(OmegaConf.select(cfg, f"{key}._target_", default="auto")).rpartition(".")[2]
        elif key in choices:  # a config group (model=mlp_bn) or experiment=...: the option's name
            columns[key] = shown(choices[key])
        elif (value := OmegaConf.select(cfg, key, default=None)) is not None or key in CORE:
            columns[key] = shown(value)
    return columns


def record_run(trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Into each TensorBoard logger's run: the config (TEXT tab), the best monitored value as a scalar
    (`val/acc_best` for monitor=val/acc), and the HPARAMS session."""
    from hydra.core.hydra_config import HydraConfig
    from torch.utils.tensorboard.summary import hparams

    if not is_rank_zero(trainer):  # DDP: rank 0 writes the events
        return
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    overrides = list(hydra.overrides.task) if hydra else []
    choices = {group: option for group, option in (hydra.runtime.choices if hydra else {}).items()
               if not group.startswith("hydra") and option is not None}
    _, session_start, session_end = hparams(hparams_columns(cfg, overrides, choices), {})  # (no experiment summary)
    best = {f"{cfg.monitor}_best": metrics[f"best_{cfg.monitor}"]} if f"best_{cfg.monitor}" in metrics else {}
    for logger in tensorboard_loggers(trainer):  # (not logger.log_hyperparams: it would also rewrite hparams.yaml)
        logger.experiment.add_text("config", f"```yaml\n{OmegaConf.to_yaml(cfg, resolve=True)}```",
                                   global_step=trainer.global_step)  # markdown: a code block keeps the indents
        if best:
            logger.log_metrics(best, step=trainer.global_step)
        writer = event_file_writer(logger)  # the run's own event file, not a new sub-run
        for summary in (session_start, session_end):
            writer.add_summary(summary, trainer.global_step)
        # close, not flush: the writer was reopened for these events after the trainer's own close, and an
        # open one keeps a thread and a file handle for as long as the process lives (a sweep's many runs).
        logger.experiment.close()
