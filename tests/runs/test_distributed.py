"""trainer=ddp_cpu: two real processes over gloo, alone and inside a Hydra multirun."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import quick_overrides, run_cli, write_tiny_mnist

# 256 training images: 4 steps of 64 for one process, 4 steps of 32 on each of two processes.
SETUP = ["model.dropout=0", "trainer.max_epochs=2", "optimizer.lr=0.003", "data.eval_batch_size=32"]


def ranks_started(job_dir) -> bool:
    log = job_dir / "rank_1.log"
    return log.is_file() and "GLOBAL_RANK: 1, MEMBER: 2/2" in log.read_text()


def test_ddp_on_two_cpu_processes_trains_like_one_process_at_twice_the_batch(tmp_path):
    data = write_tiny_mnist(tmp_path / "data", train=320)
    common = [*quick_overrides(data, tmp_path / "logs"), *SETUP]
    ddp = run_cli("trainer=ddp_cpu", *common, "data.batch_size=32", "run_name=ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_cli(*common, "data.batch_size=64", "run_name=single")
    assert single.returncode == 0, single.stderr[-3000:]

    runs = tmp_path / "logs" / "mnist_mlp"
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "single"]  # the second rank made no folder of its own
    assert ranks_started(runs / "ddp")
    # Checkpoints are written once, by rank 0: the best epoch's and last.ckpt.
    written = sorted(p.name for p in (runs / "ddp" / "checkpoints").iterdir())
    assert written == sorted(p.name for p in (runs / "single" / "checkpoints").iterdir())
    assert len(written) == 2 and "last.ckpt" in written
    weights = [torch.load(runs / name / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for name in ("ddp", "single")]
    for key in weights[1]:  # averaged gradients of two half-batches = the gradient of the whole batch
        torch.testing.assert_close(weights[0][key], weights[1][key], atol=1e-5, rtol=1e-4)
    metrics = [json.loads((runs / name / "metrics.json").read_text())["metrics"] for name in ("ddp", "single")]
    # Validation and test shards are disjoint halves; accuracy is synced over both processes.
    for name in ("val/acc", "test/acc", "test/loss", "train/loss"):
        assert metrics[0][name] == pytest.approx(metrics[1][name], abs=1e-4), name


def test_ddp_inside_a_multirun_runs_every_job_on_two_processes_and_a_failing_job_ends_alone(tmp_path):
    data = write_tiny_mnist(tmp_path / "data", train=320)
    result = run_cli("-m", "trainer=ddp_cpu", "optimizer.lr=0.01,-1,0.003", *quick_overrides(data, tmp_path / "logs"),
                     "trainer.max_epochs=1")
    assert result.returncode == 1, result.stderr[-3000:]  # one job failed; the sweep itself went on to the end
    sweep = tmp_path / "logs" / "mnist_mlp" / "multirun_001"
    statuses = [json.loads((sweep / str(job) / "status.json").read_text()) for job in range(3)]
    assert [s["status"] for s in statuses] == ["completed", "failed", "completed"]
    assert "'optimizer.lr' is -1: must be at least 0" in statuses[1]["error"]
    for job, lr in ((0, 0.01), (2, 0.003)):
        assert ranks_started(sweep / str(job)), f"job {job} did not start its second rank"
        assert OmegaConf.load(sweep / str(job) / "config.yaml").optimizer.lr == lr
    # Only the sweep's job folders: no rank started a sweep of its own.
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    assert [p.name for p in sweep.parent.iterdir()] == ["multirun_001"]
