"""The exit policy of lightlab/run/job.py, from outside: 0 done, 1 crash (traceback, failure.txt, status.json),
2 bad input with nothing written (no run folder, not even Hydra's, also when the job found it). 130/143 (signals)
are in tests/reliability/test_resume.py."""
import json
from pathlib import Path

import pytest

from tests.conftest import quick_overrides, run_cli, write_tiny_mnist


@pytest.fixture
def common(tmp_path) -> list[str]:
    return [*quick_overrides(write_tiny_mnist(tmp_path / "data"), tmp_path / "logs"), "print_config=false"]


@pytest.mark.parametrize("arguments,message", [
    (["trainer.max_epochs=abc"], "'trainer.max_epochs' is 'abc' (str)"),
    (["seed=zero"], "'seed' is 'zero' (str) but the run settings expect int"),
    (["mode=test", "ckpt_path=nowhere.ckpt"], "ckpt_path=nowhere.ckpt: no such file"),
    (["mode=export"], "mode=export uses a trained checkpoint: add ckpt_path="),
    (["run_name=../escape"], "'run_name' is '../escape': a run name is one folder name inside"),
    (["data.val_size=256"], "data.val_size=256 must be between 1 and 255"),  # found in the job, once data is read
    (["trainer=gpu"], "trainer.accelerator=gpu, but no GPU was found"),  # (CUDA_VISIBLE_DEVICES="" below)
    (["-m", "sweep_name=../x"], "'sweep_name' is '../x': a sweep name is one folder name inside"),
])
def test_bad_input_exits_2_before_any_folder_is_made(common, tmp_path, arguments, message):
    flags = [a for a in arguments if a.startswith("-")]  # (-m before the overrides)
    result = run_cli(*flags, *common, *[a for a in arguments if a not in flags], env={"CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # no run folder, no .hydra/, no run.log


def test_a_crash_exits_1_with_the_traceback_and_failure_txt(common, tmp_path):
    result = run_cli(*common, "+callbacks.crash._target_=tests.slow_epochs.CrashInEpoch", "run_name=crashed")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "RuntimeError: a bug in a callback" in result.stderr
    folder = tmp_path / "logs" / "mnist_mlp" / "crashed"
    assert "RuntimeError: a bug in a callback" in (folder / "failure.txt").read_text()
    unnamed = run_cli(*common, "+callbacks.crash._target_=tests.slow_epochs.CrashInEpoch")
    assert unnamed.returncode == 1
    assert "RuntimeError" in (tmp_path / "logs" / "mnist_mlp" / "run_001" / "failure.txt").read_text()
    status = json.loads((tmp_path / "logs" / "mnist_mlp" / "run_001" / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == "RuntimeError: a bug in a callback"


def contents(folder: Path) -> dict[Path, bytes | None]:
    return {path: path.read_bytes() if path.is_file() else None for path in folder.rglob("*")}


def test_an_explicit_folder_is_its_commands_run_and_refused_to_any_other(common, tmp_path):
    folder = tmp_path / "mine"
    first = run_cli(*common, "trainer.max_epochs=1", f"hydra.run.dir={folder}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = contents(folder)
    other = run_cli(*common, "trainer.max_epochs=3", f"hydra.run.dir={folder}")
    assert other.returncode == 2, other.stderr[-2000:]
    assert f"error: {folder} holds a run of another command" in other.stderr
    assert "trainer.max_epochs=1 there, trainer.max_epochs=3 now" in other.stderr
    assert "re-run its own command" in other.stderr and "another run_name=" in other.stderr
    assert contents(folder) == before  # no second event file, no new checkpoint beside the old, no new .hydra
    again = run_cli(f"hydra.run.dir={folder}", "trainer.max_epochs=1", *reversed(common))  # (any order)
    assert again.returncode == 0 and "completed in an earlier run of this command, not run again" in again.stdout
    hydra_record = folder / ".hydra"  # Hydra rewrites its record with the command as typed this time
    assert {p: c for p, c in contents(folder).items() if hydra_record not in p.parents} == {
        p: c for p, c in before.items() if hydra_record not in p.parents}
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine\n")
    refused = run_cli(*common, f"hydra.run.dir={foreign}")
    assert refused.returncode == 2 and f"{foreign} already holds files" in refused.stderr
    assert contents(foreign) == {foreign / "todo.txt": b"mine\n"}


def test_a_finished_run_exits_0_and_a_named_one_run_again_is_not_rerun(common, tmp_path):
    first = run_cli(*common, "run_name=done")
    assert first.returncode == 0, first.stderr[-2000:]
    status = tmp_path / "logs" / "mnist_mlp" / "done" / "status.json"
    recorded = status.read_bytes()
    again = run_cli(*common, "run_name=done")
    assert again.returncode == 0 and "completed in an earlier run of this command, not run again" in again.stdout
    assert status.read_bytes() == recorded  # its record (wall time, finish time) is the run's, not this command's
