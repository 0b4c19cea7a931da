"""Runs that get killed: SIGTERM mid-epoch and the same command again, SIGKILL in the middle of a checkpoint save.
Real `python run.py` processes on tiny CIFAR-format data: a CNN with dropout, shuffled batches, crop + flip."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, run_cli, write_cifar10


def command(data: Path, logs: Path, *extra: str) -> list[str]:
    return ["data=cifar10", "model=cnn", "model.channels=[4,8]", "model.pool_after=[true,true]", "model.head_width=16",
            "model.dropout=0.3", "data.crop_padding=2", "data.horizontal_flip=true", f"paths.data_dir={data}",
            f"paths.log_dir={logs}", "data.val_size=64", "data.batch_size=32", "data.eval_batch_size=64",
            "data.download=false", "trainer.max_epochs=3", "trainer.log_every_n_steps=1", "trainer.deterministic=true",
            "print_config=false", "+callbacks.pause._target_=tests.slow_epochs.PauseBeforeEpoch",
            "+callbacks.pause.seconds=1.5", *extra]


def start(arguments: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", *arguments], cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.02)


def step_losses(run_dir: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))  # every event file of the folder: the killed run's and the resumed one's
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("train/loss_step")]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def sigterm_then_resume(tmp_path: Path, *extra: str,
                        kill: bool = False) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """An uninterrupted run, and the same run stopped early in epoch 2 and then run again: by SIGTERM (a checkpoint
    after epoch 2's first step), or with kill=True by SIGKILL before that step (the epoch boundary's last.ckpt)."""
    data = write_cifar10(tmp_path / "data", per_batch=64) and tmp_path / "data"
    logs = tmp_path / "logs"
    reference = run_cli(*command(data, logs, "run_name=uninterrupted", *extra))
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = logs / "cifar10_cnn" / "interrupted"
    arguments = command(data, logs, "run_name=interrupted", *extra)
    process = start(arguments, tmp_path / "killed.log")
    wait_for(run_dir / "pausing_before_epoch_1", process, tmp_path / "killed.log")
    if kill:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    else:
        process.send_signal(signal.SIGTERM)  # in the pause: Lightning stops after the epoch's first step
        assert process.wait(timeout=120) == 143, (tmp_path / "killed.log").read_text()[-3000:]
        assert "stopped by signal 15: checkpoint" in (tmp_path / "killed.log").read_text()
    steps = 8 if kill else 8 + 1  # 8 steps an epoch
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == steps
    resumed = run_cli(*arguments)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing the interrupted job from {run_dir / 'checkpoints' / 'last.ckpt'}" in resumed.stdout
    return logs / "cifar10_cnn" / "uninterrupted", run_dir, resumed


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm_mid_epoch", "sigkill_at_epoch_boundary"])
def test_stopped_and_the_same_command_again_give_the_uninterrupted_run_bit_for_bit(tmp_path, kill):
    reference, resumed, _ = sigterm_then_resume(tmp_path, kill=kill)
    losses = step_losses(resumed)
    assert [step for step, _ in losses] == list(range(24))  # 3 epochs of 8 steps: none missing, none twice
    assert losses == step_losses(reference)
    expected = weights(reference)
    assert all(torch.equal(value, expected[name]) for name, value in weights(resumed).items())
    summary = json.loads((resumed / "metrics.json").read_text())["metrics"]
    assert summary["test/acc"] == json.loads((reference / "metrics.json").read_text())["metrics"]["test/acc"]
    # Third time: the run is complete, nothing runs, and there is still one folder.
    again = run_cli(*command(tmp_path / "data", tmp_path / "logs", "run_name=interrupted"))
    assert again.returncode == 0 and "completed in an earlier run of this command, not run again" in again.stdout
    assert sorted(p.name for p in (tmp_path / "logs" / "cifar10_cnn").iterdir()) == ["interrupted", "uninterrupted"]


def test_without_the_random_state_the_resumed_run_drifts(tmp_path):
    """The same interruption with RNG restore off: dropout and augmentation draw differently after the resume, so
    the test above can fail."""
    reference, resumed, _ = sigterm_then_resume(tmp_path, "callbacks.random_state=null")
    losses, expected = step_losses(resumed), step_losses(reference)
    assert losses[:9] == expected[:9]  # before the interruption: the same run
    assert losses[9:] != expected[9:]
    assert any(not torch.equal(value, weights(reference)[name]) for name, value in weights(resumed).items())


def test_sigkill_while_last_ckpt_is_replaced_leaves_the_previous_one_loadable(tmp_path):
    data = write_cifar10(tmp_path / "data", per_batch=64) and tmp_path / "data"
    run_dir = tmp_path / "logs" / "cifar10_cnn" / "killed"
    arguments = command(data, tmp_path / "logs", "run_name=killed", "callbacks.pause.seconds=0",
                        "trainer.plugins=[{_target_:tests.slow_epochs.SlowCheckpointIO,seconds:30}]")
    process = start(arguments, tmp_path / "killed.log")
    wait_for(run_dir / "checkpoints" / "saving_last.ckpt", process, tmp_path / "killed.log")  # epoch 2's save
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 8  # epoch 1's, whole
    assert (run_dir / "checkpoints" / ".last.ckpt.partial").is_file()  # what the kill left: never read


def test_a_failing_save_keeps_the_previous_checkpoint_and_names_the_file(tmp_path, monkeypatch):
    import errno

    from lightlab.base.errors import UserError
    from lightlab.callbacks.atomic_checkpoints import AtomicCheckpointIO

    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"epoch": 1}, path)

    def disk_full(obj, file, *args, **kwargs):
        Path(file).write_bytes(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match=r"could not write the checkpoint .*last.ckpt \(No space left on device\)\. "
                                        r"The previous last.ckpt, if any, is intact"):
        AtomicCheckpointIO().save_checkpoint({"epoch": 2}, path)
    assert torch.load(path, weights_only=True) == {"epoch": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # the partial file is gone


# Lightning reads each rank's own SIGTERM flag at the end of an epoch: a signal that reaches one rank before that check
# and the other after it (a scheduler's signal lands in each process at its own moment) stopped one rank alone and hung
# the job. "rank_1_alone" makes that deterministic: rank 1 signals itself at the end of epoch 0, rank 0 is not told.
# "one_process": trainer=ddp with a single device (one GPU) has no rank to agree with; Lightning's own handling stays.
@pytest.mark.parametrize("who", ["every_process_in_the_pause", "rank_1_alone_at_the_epoch_end", "one_process"])
def test_sigterm_under_ddp_stops_both_processes_with_a_checkpoint_and_the_rerun_finishes(tmp_path, who):
    from tests.conftest import quick_overrides, write_tiny_mnist

    data = write_tiny_mnist(tmp_path / "data", train=320)
    arguments = ["trainer=ddp_cpu", *quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=3", "run_name=ddp",
                 "print_config=false", "+callbacks.pause._target_=tests.slow_epochs.PauseBeforeEpoch",
                 "+callbacks.pause.seconds=3"]
    if who == "rank_1_alone_at_the_epoch_end":  # the rerun (the same command) starts at epoch 1: no signal then
        arguments += ["+callbacks.signal._target_=tests.slow_epochs.SignalOneRank", "+callbacks.signal.rank=1",
                      "+callbacks.signal.epoch=0"]
    if who == "one_process":
        arguments.append("trainer.devices=1")
    run_dir = tmp_path / "logs" / "mnist_mlp" / "ddp"
    process = start(arguments, tmp_path / "killed.log")
    if who in ("every_process_in_the_pause", "one_process"):
        wait_for(run_dir / "pausing_before_epoch_1", process, tmp_path / "killed.log", seconds=180)
        os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: every process of the job
    try:
        assert process.wait(timeout=120) == 143, (tmp_path / "killed.log").read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):  # a hung job: its ranks must not outlive the test
            os.killpg(process.pid, signal.SIGKILL)
    # 256 training images, 32 a step on each of 2 processes: 4 steps an epoch. The processes agree on the signal before
    # a step, so they stop before epoch 1's first step. One process (8 steps an epoch) stops as a single-device run
    # does: after the step during which it noticed the signal, epoch 1's first.
    step = 9 if who == "one_process" else 4
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    resumed = run_cli(*arguments)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["status"] == "completed"
    assert [step for step, _ in step_losses(run_dir)] == sorted({step for step, _ in step_losses(run_dir)})


def test_a_nan_loss_stops_the_run_at_its_step_and_no_checkpoint_holds_nan(tmp_path):
    from tests.conftest import quick_overrides, write_tiny_mnist

    data = write_tiny_mnist(tmp_path / "data")
    run_dir = tmp_path / "logs" / "mnist_mlp" / "poisoned"
    poison = ["+callbacks.poison._target_=tests.slow_epochs.PoisonBatchAtStep", "+callbacks.poison.step=10"]
    result = run_cli(*quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=3", "run_name=poisoned",
                     "print_config=false", *poison)  # 6 steps an epoch: the 5th batch of the 2nd epoch
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: the training loss is nan at step 10 (epoch 1, batch 4); the run stops here." in result.stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "failed"
    checkpoints = sorted((run_dir / "checkpoints").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["epoch000.ckpt", "last.ckpt"]  # epoch 1 never finished
    for checkpoint in checkpoints:
        state = torch.load(checkpoint, weights_only=True)
        assert state["global_step"] == 6 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_a_nan_batch_can_be_skipped_instead(tmp_path):
    from tests.conftest import quick_overrides, write_tiny_mnist

    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli(*quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=3", "run_name=skipped",
                     "print_config=false", "+callbacks.poison._target_=tests.slow_epochs.PoisonBatchAtStep",
                     "+callbacks.poison.step=10", "callbacks.stop_on_non_finite_loss.max_skipped_batches=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the training loss is nan at step 10 (epoch 1, batch 4): batch skipped (1 of at most" in result.stderr
    state = torch.load(tmp_path / "logs" / "mnist_mlp" / "skipped" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 18 and all(torch.isfinite(v).all() for v in state["state_dict"].values())


def learning_rates(run_dir: Path) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("train/lr-Adam")]


def test_a_plateau_whose_patience_runs_out_across_the_interruption_lowers_the_lr_at_the_same_epoch(tmp_path):
    from tests.conftest import quick_overrides, write_tiny_mnist

    data = write_tiny_mnist(tmp_path / "data")
    # threshold 10: no epoch counts as an improvement, so with patience 1 the lr halves after epochs 2 and 4 (1-based).
    settings = [*quick_overrides(data, tmp_path / "logs"), "trainer.max_epochs=4", "scheduler=plateau",
                "scheduler.scheduler.threshold=10", "print_config=false",
                "+callbacks.pause._target_=tests.slow_epochs.PauseBeforeEpoch", "+callbacks.pause.seconds=1.5"]
    reference = run_cli(*settings, "run_name=uninterrupted")
    assert reference.returncode == 0, reference.stderr[-3000:]
    process = start([*settings, "run_name=interrupted"], tmp_path / "killed.log")
    wait_for(tmp_path / "logs" / "mnist_mlp" / "interrupted" / "pausing_before_epoch_1", process,
             tmp_path / "killed.log")
    process.send_signal(signal.SIGTERM)  # one epoch without improvement done: patience is half spent
    assert process.wait(timeout=120) == 143
    resumed = run_cli(*settings, "run_name=interrupted")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = learning_rates(tmp_path / "logs" / "mnist_mlp" / "uninterrupted")
    # Epoch 1 sets the best; epochs 2 and 3 are not improvements; patience 1: the lr halves after the 3rd epoch.
    assert [lr for _, lr in expected] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
    assert learning_rates(tmp_path / "logs" / "mnist_mlp" / "interrupted") == expected


def test_resuming_with_other_optimizer_settings_names_them_and_the_checkpoints_state_wins(tmp_path):
    from tests.conftest import quick_overrides, write_tiny_mnist

    data = write_tiny_mnist(tmp_path / "data")
    settings = [*quick_overrides(data, tmp_path / "logs"), "print_config=false", "scheduler=none"]
    first = run_cli(*settings, "trainer.max_epochs=1", "run_name=first")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "logs" / "mnist_mlp" / "first" / "checkpoints" / "last.ckpt"
    resumed = run_cli(*settings, "trainer.max_epochs=2", f"ckpt_path={checkpoint}", "optimizer.lr=0.1",
                      "run_name=continued")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "these settings of this command do not apply: optimizer.lr: 0.001 -> 0.1" in resumed.stderr
    # The second epoch trained at the checkpoint's learning rate, not at 0.1.
    rates = [lr for _, lr in learning_rates(tmp_path / "logs" / "mnist_mlp" / "continued")]
    assert rates and rates == pytest.approx([1e-3] * len(rates))
    # The same run_name with other settings is refused rather than continued with a mix.
    before = {path: path.read_bytes() for path in checkpoint.parent.parent.rglob("*") if path.is_file()}
    other = run_cli(*settings, "trainer.max_epochs=1", "run_name=first", "optimizer.lr=0.1")
    assert other.returncode == 2 and "holds a run of another command" in other.stderr
    assert {path: path.read_bytes() for path in checkpoint.parent.parent.rglob("*") if path.is_file()} == before
