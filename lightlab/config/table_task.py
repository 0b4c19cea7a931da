"""data=table leaves the task's own keys `auto`: they are settled here, once the target column says what the task is.

    python run.py data=table data.path=houses.csv data.target=price

conf/data/table.yaml sets `data.task`, `lightning_module._target_`, `loss`, `monitor` and `monitor_mode` to auto. Before
the config is checked (and before any folder is made), the task is read from the target column (the rule:
datamodules/table_columns.py, infer_task) or, in mode=test/predict/export, from the checkpoint's fitted
preprocessing; then each key still `auto` gets the task's choice below. A key set on the command line or by an
experiment is not auto, and is kept.
"""
from omegaconf import DictConfig, OmegaConf, open_dict

from lightlab.base.errors import UserError
from lightlab.base.project import CONFIG_DIR

AUTO = "auto"
TASKS = {  # the task -> its module, loss (a conf/loss option) and monitored metric
    "classification": ("lightning_modules.tasks.classification.ClassificationModule", "cross_entropy", "val/acc"),
    "regression": ("lightning_modules.tasks.regression.RegressionModule", "mse", "val/rmse"),
}
LARGER_IS_BETTER = ("acc", "auroc", "f1", "r2")  # metric names (after the stage) a monitor maximises


def reads_table(cfg: DictConfig) -> bool:
    return str(cfg.data.get("_target_", "")).endswith("TableDataModule")


def settle_task(cfg: DictConfig) -> None:
    """Fill in the `auto` keys of a table run's config, in place (nothing to do for other data)."""
    if not reads_table(cfg) or OmegaConf.missing_keys(cfg.data):  # unset keys: check_config names them
        return
    task = cfg.data.task
    if task == AUTO:
        task = checkpoint_task(cfg.ckpt_path) if cfg.mode != "train" else file_task(cfg.data)
    module, loss, monitor = TASKS[task]
    with open_dict(cfg):
        cfg.data.task = task
        if cfg.lightning_module._target_ == AUTO:
            cfg.lightning_module._target_ = module
        if cfg.loss.get("_target_") == AUTO:
            cfg.loss = OmegaConf.load(CONFIG_DIR / "loss" / f"{loss}.yaml")
        if cfg.monitor == AUTO:
            cfg.monitor = monitor
        if cfg.monitor_mode == AUTO:
            cfg.monitor_mode = "max" if cfg.monitor.rpartition("/")[2] in LARGER_IS_BETTER else "min"


def file_task(data: DictConfig) -> str:
    from datamodules.table import TableDataModule
    from lightlab.config.checks import check_section

    check_section(data, "data")  # a wrong key or type is named before the DataModule is built to read the file
    settings = OmegaConf.to_container(data, resolve=True)
    settings.pop("_target_")
    return TableDataModule(**settings).training_frames()[1]


def checkpoint_task(ckpt_path: str) -> str:
    import torch  # (here: run.py imports this module, and `python run.py --help` needs no torch)

    from datamodules.table import TableDataModule

    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True).get(TableDataModule.__qualname__)
    except Exception as error:
        raise UserError(f"ckpt_path={ckpt_path}: not a readable checkpoint ({error}).") from None
    if not state:
        raise UserError(f"ckpt_path={ckpt_path}: its run read a table (data=table) but the checkpoint holds no "
                        f"fitted preprocessing. Use a checkpoint that run wrote (its checkpoints/ folder).")
    return state["task"]
