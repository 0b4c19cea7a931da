"""The real config tree, composed with Hydra's compose API: every option of every group, and its checks."""
import multiprocessing
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lightlab.compose import CONFIG_DIR, compose_config
from lightlab.config_checks import check_config
from lightlab.errors import UserError
from lightlab.run_directory import numbered_dir
from run import build

GROUP_OPTIONS = sorted((group.name, option.stem) for group in CONFIG_DIR.iterdir() if group.is_dir()
                       for option in group.glob("*.yaml"))


def test_every_group_has_options():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"data", "model", "optimizer", "scheduler", "loss", "trainer", "logger", "callbacks", "experiment",
            "debug", "paths", "hydra"} <= groups


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_checks_and_builds(group, option, tmp_path, tiny_data):
    cfg = compose_config([f"{group}={option}", f"paths.data_dir={tiny_data}"], output_dir=str(tmp_path))
    check_config(cfg)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        cfg.trainer.accelerator = "cpu"  # composed and checked as written; built on the CPU this machine has
    datamodule, module, trainer = build(cfg)  # run.py's own build, for real (constructors read no data)
    assert module(torch.zeros(2, *datamodule.input_shape)).shape == (2, datamodule.num_classes)
    optimizers = module.configure_optimizers()
    if cfg.scheduler:  # Lightning's scheduler settings come from config, not code
        settings = optimizers["lr_scheduler"]
        assert {k: v for k, v in settings.items() if k != "scheduler"} == {
            k: v for k, v in cfg.scheduler.items() if k != "scheduler"}
        assert type(settings["scheduler"]).__name__ == cfg.scheduler.scheduler._target_.rsplit(".", 1)[1]
    assert trainer.max_epochs == cfg.trainer.max_epochs or cfg.trainer.fast_dev_run


def test_plateau_scheduler_settings_reach_lightning(tmp_path):
    cfg = compose_config(["scheduler=plateau", "monitor=val/loss", "monitor_mode=min", "scheduler.frequency=2",
                          "scheduler.scheduler.patience=4"], output_dir=str(tmp_path))
    module = instantiate(cfg.lightning_module, input_shape=[1, 28, 28], num_classes=10, _recursive_=False,
                         _convert_="all")
    settings = module.configure_optimizers()["lr_scheduler"]
    assert (settings["monitor"], settings["interval"], settings["frequency"]) == ("val/loss", "epoch", 2)
    plateau = settings["scheduler"]
    assert isinstance(plateau, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (plateau.mode, plateau.patience) == ("min", 4)


@pytest.mark.parametrize("override,message", [
    ("+model.hiden_dims=[8]", r"'model.hiden_dims' is not a parameter of lightning_modules.mlp.MLP \(it accepts: "
                              r"input_shape, num_classes, hidden_dims"),
    ("trainer.max_epochs=abc", r"'trainer.max_epochs' is 'abc' \(str\) but pytorch_lightning.Trainer expects int"),
    ("model.activation=relux", r"'model.activation' is 'relux' .* expects one of 'relu', 'gelu'"),
    ("model.hidden_dims=[8,x]", r"'model.hidden_dims' is \[8, 'x'\] .* expects list of int"),
    ("model.dropout=high", r"'model.dropout' is 'high' \(str\) but lightning_modules.mlp.MLP expects float"),
    ("data.batch_size=???", r"config value\(s\) not set: data.batch_size"),
    ("optimizer._target_=torch.optim.Adamm", r"optimizer._target_: cannot import 'torch.optim.Adamm'"),
    ("seed=zero", r"'seed' is 'zero' \(str\) but the run settings expect int"),
    ("test_after_fit=maybe", r"'test_after_fit' is 'maybe' \(str\) but the run settings expect bool"),
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
