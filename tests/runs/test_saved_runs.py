"""Runs saved by an earlier layout keep working: their configs and checkpoints name classes by old paths."""
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_cli, write_tiny_mnist

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "layout_before_issue_21"
# What the run printed when it was trained, before the move (tests/fixtures/layout_before_issue_21/README.md).
EXPECTED = {"test/acc": 0.578125, "test/loss": 1.9590368270874023}


def test_a_checkpoint_written_before_the_move_evaluates_to_its_own_test_numbers(tmp_path):
    logs = tmp_path / "logs"
    shutil.copytree(FIXTURE / "mnist_mlp", logs / "mnist_mlp")  # mode=test writes beside the checkpoint
    data = write_tiny_mnist(tmp_path / "data")
    checkpoint = logs / "mnist_mlp" / "fixture" / "checkpoints" / "epoch000.ckpt"
    result = run_cli("mode=test", f"ckpt_path={checkpoint}", f"paths.data_dir={data}", "print_config=false")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = next((logs / "mnist_mlp" / "fixture").glob("test_*"))
    metrics = json.loads((evaluation / "metrics.json").read_text())["metrics"]
    assert metrics["test/acc"] == EXPECTED["test/acc"]
    assert metrics["test/loss"] == pytest.approx(EXPECTED["test/loss"], abs=1e-6)
