"""The real config tree, composed with Hydra's compose API: every option of every group, and its checks."""
import multiprocessing
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lightlab.base.errors import UserError
from lightlab.config.checks import check_config
from lightlab.config.table_task import settle_task
from lightlab.lightning_internals.ddp_launch import JobDDPStrategy
from lightlab.run.compose import CONFIG_DIR, compose_config
from lightlab.run.folders import numbered_dir
from run import build
from tests.conftest import (
    options_reading_token_ids,
    write_cifar10,
    write_cifar100,
    write_tiny_mnist,
    write_tiny_series,
    write_tiny_tables,
    write_tiny_text,
)

GROUP_OPTIONS = sorted((group.name, option.stem) for group in CONFIG_DIR.iterdir() if group.is_dir()
                       for option in group.glob("*.yaml") if not option.name.startswith("_"))  # _x: shared parts

READS_TOKEN_IDS = {group: options_reading_token_ids(group)[0] for group in ("model", "data")}
# Options that only work with a table (and tables' own data and experiment options), and what they train on here.
TABLE_OPTIONS = {("data", "table"), ("model", "tabular_mlp"), ("loss", "auto"), ("experiment", "ames_price"),
                 ("experiment", "churn")}
SERIES_OPTIONS = {("data", "time_series"), ("model", "forecast_mlp"), ("model", "forecast_linear"),
                  ("model", "forecast_lstm"), ("model", "forecast_gru"), ("experiment", "elecdemand_dayahead"),
                  ("experiment", "sunspots")}


def test_every_group_has_options():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"data", "model", "optimizer", "scheduler", "loss", "trainer", "logger", "callbacks", "experiment",
            "debug", "paths", "hydra"} <= groups


# Options that are refused with the default model, by design; they are tested with a model that fits.
NEEDS_OTHER_MODEL = {("optimizer", "sparse_adam"): "has none"}


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_checks_builds_and_trains(group, option, tmp_path, tiny_data):
    """Each option for real: composed, checked, built by run.py's own build(), then two training steps
    and a validation batch, after which the monitored metric must have been logged."""
    write_tiny_mnist(tiny_data, "FashionMNIST")
    write_cifar10(tiny_data, per_batch=64)
    write_cifar100(tiny_data, count=320)
    write_tiny_text(tiny_data, train=1200)  # mr and sms_spam hold out 1,000 test texts
    write_tiny_tables(tiny_data)
    # A text dataset needs a sequence model and the other way round (known from their _target_); tables likewise.
    partner = {"data": ["model=lstm"], "model": ["data=sst2"]}.get(group, []) if (
        option in READS_TOKEN_IDS.get(group, [])) else []
    data = ["data.val_size=64"]
    if (group, option) in TABLE_OPTIONS:
        data = [] if group == "experiment" else ["data.path=table.csv", "data.target=y"]
        partner = [] if group in ("data", "experiment") else ["data=table"]
    if (group, option) in SERIES_OPTIONS:
        write_tiny_series(tiny_data)
        data = [] if group == "experiment" else ["data.path=series.csv", "data.target=y", "data.horizon=6"]
        partner = [] if group in ("data", "experiment") else ["data=time_series"]
    cfg = compose_config([f"{group}={option}", *partner, f"paths.data_dir={tiny_data}",
                          f"paths.cache_dir={tmp_path / 'cache'}", *data,
                          "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
                          "trainer.num_sanity_val_steps=0"], output_dir=str(tmp_path))
    settle_task(cfg)  # data=table's `auto` keys (a no-op for other data)
    if OmegaConf.missing_keys(cfg):  # options that need a value from the user say so by name
        with pytest.raises(UserError, match="not set: " + ", ".join(sorted(OmegaConf.missing_keys(cfg)))):
            check_config(cfg)
        return
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        with pytest.raises(UserError, match="trainer.accelerator=gpu, but no GPU was found"):
            check_config(cfg)  # refused as written on this machine; checked and trained on its CPU below
        cfg.trainer.accelerator = "cpu"
        cfg.trainer.precision = "bf16-mixed"
        if "strategy" in cfg.trainer:
            cfg.trainer.devices, cfg.trainer.strategy.process_group_backend = 2, "gloo"
    check_config(cfg)
    datamodule, module, trainer = build(cfg)
    if "strategy" in cfg.trainer:  # several processes: they train for real in tests/runs/test_distributed.py
        assert isinstance(trainer.strategy, JobDDPStrategy) and trainer.num_devices == cfg.trainer.devices
        assert trainer.strategy.process_group_backend == cfg.trainer.strategy.process_group_backend
        assert any(type(p).__name__ == "TorchSyncBatchNorm" for p in [trainer.strategy._layer_sync]) == bool(
            cfg.trainer.sync_batchnorm)
        return
    if (group, option) in NEEDS_OTHER_MODEL:
        with pytest.raises(UserError, match=NEEDS_OTHER_MODEL[group, option]):
            trainer.fit(module, datamodule=datamodule)
        return
    trainer.fit(module, datamodule=datamodule)
    if cfg.trainer.check_val_every_n_epoch == 1 and not cfg.trainer.fast_dev_run:
        assert torch.isfinite(trainer.callback_metrics[cfg.monitor])
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    if cfg.scheduler:  # Lightning's scheduler settings come from config, not code
        settings = trainer.lr_scheduler_configs[-1]
        assert (settings.interval, settings.frequency) == (cfg.scheduler.interval, cfg.scheduler.frequency)
        target = cfg.scheduler.scheduler._target_.rsplit(".", 1)[1]
        assert type(settings.scheduler).__name__ == target or target == "lambda_schedule"


@pytest.mark.parametrize("override,message", [
    ("+model.hiden_dims=[8]", r"'model.hiden_dims' is not a parameter of lightning_modules.networks.mlp.MLP "
                              r"\(it accepts: input_shape, num_classes, hidden_dims"),
    ("trainer.max_epochs=abc", r"'trainer.max_epochs' is 'abc' \(str\) but pytorch_lightning.Trainer expects int"),
    ("model.activation=relux", r"'model.activation' is 'relux' .* expects one of 'relu', 'gelu'"),
    ("model.hidden_dims=[8,x]", r"'model.hidden_dims' is \[8, 'x'\] .* expects list of int"),
    ("model.dropout=high", r"'model.dropout' is 'high' \(str\) but lightning_modules.networks.mlp.MLP expects float"),
    ("data.batch_size=???", r"config value\(s\) not set: data.batch_size"),
    ("optimizer._target_=torch.optim.Adamm", r"optimizer._target_: cannot import 'torch.optim.Adamm'"),
    ("seed=zero", r"'seed' is 'zero' \(str\) but the run settings expect int"),
    ("test_after_fit=maybe", r"'test_after_fit' is 'maybe' \(str\) but the run settings expect bool"),
    ("mode=evaluate", r"'mode' is 'evaluate' \(str\) but the run settings expect one of 'train', 'test', 'predict', "
                      r"'export'"),
])
def test_config_mistakes_are_named(override, message, tmp_path):
    cfg = compose_config([override], output_dir=str(tmp_path))
    with pytest.raises(UserError, match=message):
        check_config(cfg)


def test_run_directories_are_numbered_and_named(tmp_path):
    parent = str(tmp_path / "logs" / "exp")
    numbered_dir.cache_clear()
    first = numbered_dir(parent, "run")
    numbered_dir.cache_clear()
    second = numbered_dir(parent, "run")
    assert (Path(first).name, Path(second).name) == ("run_001", "run_002")
    assert numbered_dir(parent, "run", "baseline") == str(Path(parent) / "baseline")


def _claim(parent, queue):
    queue.put(numbered_dir(parent, "run"))


def test_runs_started_at_the_same_moment_get_different_directories(tmp_path):
    parent = str(tmp_path / "logs")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    processes = [context.Process(target=_claim, args=(parent, queue)) for _ in range(8)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    claimed = [queue.get() for _ in processes]
    assert len(set(claimed)) == 8
    assert sorted(Path(c).name for c in claimed) == [f"run_{i:03d}" for i in range(1, 9)]
