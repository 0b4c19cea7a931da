"""`python run.py` as a user runs it, in fresh processes: training, outputs, checkpoints, errors, real data."""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, quick_overrides, require_real_data, run_cli, write_tiny_mnist


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One quick run on tiny synthetic MNIST files, shared by the tests that inspect its outputs."""
    base = tmp_path_factory.mktemp("run")
    data = write_tiny_mnist(base / "data")
    result = run_cli(*quick_overrides(data, base / "logs"), "run_name=tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    return base / "logs", base / "logs" / "mnist_mlp" / "tiny", result


def test_summary_names_metrics_checkpoint_run_dir_and_tensorboard_command(tiny_run):
    log_dir, run_dir, result = tiny_run
    assert "test/acc" in result.stdout and "best_val/acc" in result.stdout
    assert f"run directory:   {run_dir}" in result.stdout
    assert f"tensorboard --logdir {log_dir}" in result.stdout
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["best_checkpoint"].startswith(str(run_dir / "checkpoints"))
    assert summary["metrics"]["test/acc"] > 0.5  # the tiny set is learnable: chance is 0.1


def test_the_console_shows_no_preventable_warning_and_the_real_training_rate(tiny_run):
    _, _, result = tiny_run
    console = result.stdout + result.stderr
    # Python's and Lightning's warning formats: "<file>.py:<line>: [Category: ]message"
    assert [line for line in console.splitlines() if re.search(r"\.py:\d+: |Warning\b", line)] == []
    assert "Tip:" not in console  # Lightning's advertisement for its cloud logger
    epoch_rates = [float(rate) for rate in re.findall(r"Epoch \d.* (\d+\.\d+)it/s", console)]
    assert epoch_rates and min(epoch_rates) > 0  # the bar is redrawn once per epoch: it read 0.00it/s


def test_run_directory_holds_resolved_config_and_overrides(tiny_run):
    _, run_dir, _ = tiny_run
    config = (run_dir / "config.yaml").read_text()
    assert "${" not in config and "hidden_dims:\n  - 32\n" in config
    assert "model.hidden_dims=[32]" in (run_dir / ".hydra" / "overrides.yaml").read_text()


def test_event_files_hold_every_stage_and_the_learning_rate(tiny_run):
    _, run_dir, _ = tiny_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "train/loss_step", "val/loss", "val/acc", "test/loss", "test/acc",
            "train/lr-Adam"} <= tags
    assert len(events.Scalars("val/acc")) == 2  # one per epoch
    assert "hp_metric" not in tags


def test_checkpoints_load_weights_only_and_in_a_fresh_process(tiny_run):
    _, run_dir, _ = tiny_run
    for checkpoint in (run_dir / "checkpoints").glob("*.ckpt"):
        loaded = torch.load(checkpoint, weights_only=True)
        assert loaded["hyper_parameters"]["net"]["hidden_dims"] == [32]
    script = ("import sys, torch; from lightning_modules.tasks.classification import ClassificationModule as M; "
              "m = M.load_from_checkpoint(sys.argv[1]); print(tuple(m(torch.zeros(3, 1, 28, 28)).shape))")
    result = subprocess.run([sys.executable, "-c", script, str(run_dir / "checkpoints" / "last.ckpt")],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(3, 10)")


def test_seed_zero_is_a_seed_and_runs_repeat_exactly(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    scores = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        result = run_cli(*quick_overrides(data, tmp_path / "logs"), f"seed={seed}", f"run_name={name}",
                         "trainer.max_epochs=1", "callbacks=none", "logger=none", "test_after_fit=false")
        assert result.returncode == 0, result.stderr[-2000:]
        scores[name] = json.loads((tmp_path / "logs/mnist_mlp" / name / "metrics.json").read_text())["metrics"]
    assert scores["a"] == scores["b"]
    assert scores["a"]["train/loss"] != scores["c"]["train/loss"]


def test_unknown_key_fails_fast_naming_it(tmp_path):
    started = time.monotonic()
    result = run_cli("trainer.max_epoch=3", f"paths.log_dir={tmp_path}")
    assert result.returncode != 0
    assert ("Could not override 'trainer.max_epoch'" in result.stderr
            and "Key 'max_epoch' is not in struct" in result.stderr)
    result = run_cli("+model.widths=[3]", f"paths.log_dir={tmp_path}", "paths.data_dir=/nonexistent")
    assert result.returncode == 2
    assert "'model.widths' is not a parameter of lightning_modules.networks.mlp.MLP" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_missing_data_directory_says_what_and_where(tmp_path):
    result = run_cli(f"paths.data_dir={tmp_path}/absent", f"paths.log_dir={tmp_path}/logs", "data.download=false")
    assert result.returncode == 2
    assert "MNIST files not found: expected train-images-idx3-ubyte.gz" in result.stderr
    assert f"{tmp_path}/absent/MNIST/raw" in result.stderr and "DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_download_says_what_was_tried(tmp_path):
    result = run_cli(f"paths.data_dir={tmp_path}/absent", f"paths.log_dir={tmp_path}/logs",
                     f"data.mirrors=[{(tmp_path / 'empty-mirror').as_uri()}/]")
    assert result.returncode == 2
    assert "downloading them failed" in result.stderr and "empty-mirror" in result.stderr


def test_corrupt_gzip_is_named(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    images = data / "MNIST/raw/train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:200])
    result = run_cli(*quick_overrides(data, tmp_path / "logs"))
    assert result.returncode == 2
    assert f"{images} is truncated or corrupt" in result.stderr


@pytest.mark.data
@pytest.mark.parametrize("data,minimum", [("mnist", 0.98), ("fashion_mnist", 0.88)])
def test_default_mlp_on_real_data(data, minimum, tmp_path):
    """The README's promise: `python run.py` reaches >=98% on real MNIST; data=fashion_mnist >=88%."""
    real = require_real_data("MNIST" if data == "mnist" else "FashionMNIST")
    started = time.monotonic()
    result = run_cli(f"data={data}", f"paths.log_dir={tmp_path}", env={"DATA_DIR": str(real)})
    wall = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = next(Path(tmp_path).glob("*/run_001"))
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    print(f"{data}: test/acc={metrics['test/acc']:.4f} wall={wall:.1f}s")
    assert metrics["test/acc"] >= minimum


def test_multirun_gives_every_job_its_own_directory(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli("-m", "optimizer=adam,sgd", *quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=1")
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = sorted((tmp_path / "logs" / "mnist_mlp" / "multirun_001").glob("*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1"]
    optimizers = [(p.parent / "config.yaml").read_text().split("optimizer:\n  _target_: ")[1].split("\n")[0]
                  for p in jobs]
    assert optimizers == ["torch.optim.Adam", "torch.optim.SGD"]
