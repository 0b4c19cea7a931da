"""Whose folder a single run writes into, and what a refused run removes: only what it made, only before results."""
from pathlib import Path

import pytest
from omegaconf import open_dict

from lightlab.base.errors import UserError
from lightlab.config.checks import check_config
from lightlab.run.compose import compose_config
from lightlab.run.folders import FolderPlan, first_missing, plan_folder, remove_refused_run


def started(folder: Path, *extra: str) -> Path:
    """A folder as a run leaves it before any result (Hydra's record and log, config, provenance), plus `extra`."""
    from lightlab.sweeps.summary import before_the_job

    folder.mkdir(parents=True)
    for name in (*before_the_job(), "config.yaml", "provenance.json", *extra):  # (Hydra's names as it has them)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    return folder


def test_a_refused_numbered_run_removes_its_folder_and_the_empty_ones_it_made_and_nothing_else(tmp_path):
    assert first_missing(tmp_path / "logs" / "mnist_mlp") == tmp_path / "logs"
    plan = FolderPlan(numbered=True, new=tmp_path / "logs")  # logs/ did not exist when the run started
    refused = started(tmp_path / "logs" / "mnist_mlp" / "run_001")
    assert remove_refused_run(refused, plan) and not (tmp_path / "logs").exists()
    # Another run started beside it meanwhile: its folder, and so logs/, stay.
    refused = started(tmp_path / "logs" / "mnist_mlp" / "run_001")
    other = started(tmp_path / "logs" / "cifar10_cnn" / "run_001", "checkpoints/last.ckpt")
    assert remove_refused_run(refused, plan)
    assert not refused.exists() and (other / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("result", ["checkpoints/last.ckpt", "lr_finder.json", "predictions.csv", "forecast.csv"])
def test_a_run_with_any_result_is_kept_to_be_marked_failed(tmp_path, result):
    folder = started(tmp_path / "logs" / "run_001", result)  # e.g. a NaN loss in epoch 0: events written
    assert not remove_refused_run(folder, FolderPlan(numbered=True, new=None))
    assert (folder / result).is_file()


def test_the_hparams_yaml_of_a_refused_run_is_no_result(tmp_path):
    # Lightning's TensorBoard logger writes it when any run ends: also a mode=predict refused by its input file.
    folder = started(tmp_path / "logs" / "run_001", "hparams.yaml")
    assert remove_refused_run(folder, FolderPlan(numbered=True, new=None)) and not folder.exists()


def test_an_event_file_without_any_summary_is_not_a_result(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    folder = started(tmp_path / "logs" / "run_001")
    SummaryWriter(str(folder)).close()  # what a callback's setup leaves when the data then fails to load
    assert remove_refused_run(folder, FolderPlan(numbered=True, new=None)) and not folder.exists()
    folder = started(tmp_path / "logs" / "run_002")
    with SummaryWriter(str(folder)) as writer:
        writer.add_scalar("train/loss", 1.0, 0)
    assert not remove_refused_run(folder, FolderPlan(numbered=True, new=None)) and folder.exists()


def test_a_folder_that_existed_before_the_run_is_never_removed(tmp_path):
    mine = started(tmp_path / "results")  # hydra.run.dir=results, or a named run's folder from an earlier attempt
    assert not remove_refused_run(mine, FolderPlan(named=True, new=None))
    assert (mine / "config.yaml").is_file()
    new = started(tmp_path / "fresh" / "deep")
    assert remove_refused_run(new, FolderPlan(named=True, new=tmp_path / "fresh")) and not (tmp_path / "fresh").exists()


def hydra_config(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    from lightlab.base.project import CONFIG_DIR
    from lightlab.run.folders import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        config = compose("config", overrides=[f"paths.log_dir={tmp_path / 'logs'}", *overrides],
                         return_hydra_config=True)
    task = config.copy()
    with open_dict(task):
        del task["hydra"]
    return config, task


@pytest.mark.parametrize("overrides, named", [
    ([], False),
    (["run_name=long"], True),
    (["mode=predict", "ckpt_path=x.ckpt"], False),  # <mode>_NNN inside the checkpoint's run
    (["mode=predict", "ckpt_path=x.ckpt", "run_name=predicted"], True),  # a stable folder: may hold earlier results
])
def test_the_plan_tells_a_numbered_folder_from_one_the_user_named(tmp_path, overrides, named):
    from hydra.core.hydra_config import HydraConfig

    config, task = hydra_config(tmp_path, *overrides)
    HydraConfig.instance().set_config(config)
    plan = plan_folder(config, task)
    assert (plan.named, plan.numbered) == (named, not named)
    assert not (tmp_path / "logs").exists()  # planning made no folder (a numbered one is made when resolved)


def test_an_explicit_hydra_run_dir_is_a_named_folder(tmp_path):
    from hydra.core.hydra_config import HydraConfig

    config, task = hydra_config(tmp_path)
    config.hydra.run.dir = str(tmp_path / "mine")  # as hydra.run.dir=… on the command line sets it
    HydraConfig.instance().set_config(config)
    assert plan_folder(config, task) == FolderPlan(named=True, new=tmp_path / "mine")


def test_a_gpu_run_is_refused_without_a_gpu_but_its_network_exports_anywhere(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="trainer.accelerator=gpu, but no GPU was found"):
        check_config(compose_config(["trainer=gpu"], output_dir=str(tmp_path)))
    check_config(compose_config(["trainer=gpu", "mode=export", "ckpt_path=x.ckpt"], output_dir=str(tmp_path)))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # Lightning's "gpu" is MPS on a Mac
    check_config(compose_config(["trainer=gpu"], output_dir=str(tmp_path)))


@pytest.mark.parametrize("name, suggestion", [("../../escape", "escape"), ("a..b", "a.b"), (" ", "my_run"),
                                              ("runs/long", "runs_long")])
def test_a_run_name_that_is_a_path_is_refused_with_a_name_that_would_do(tmp_path, name, suggestion):
    with pytest.raises(UserError, match=f"Set e.g. `run_name={suggestion}`"):
        check_config(compose_config([f"run_name='{name}'"], output_dir=str(tmp_path)))
