"""benchmarks/gpu_check.py cannot rot: its --smoke mode runs every measurement on the CPU with tiny data, and without
a GPU the real mode refuses with a message."""
import math
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, write_cifar10, write_tiny_mnist


def test_the_smoke_mode_runs_every_row(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    write_cifar10(data, per_batch=64)
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--data-dir", str(data)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = result.stdout.split("lightlab GPU check: CPU (--smoke)")[1].splitlines()[2:]
    names = [line[:58].strip() for line in table]
    assert names == ["MNIST MLP 784-512-256-128-10, epoch (s)", "ResNet-18 CIFAR-10, 2 batches of 16, fp32 (s)",
                     "ResNet-18, bf16 autocast (s)", "ResNet-18, channels_last (s)",
                     "ResNet-18, bf16 + channels_last (s)",
                     "ResNet-18, bf16 + channels_last + torch.compile (s)",
                     "cifar10_speedrun: whole python run.py (s)", "cifar10_speedrun: test accuracy",
                     "cifar10_speedrun: training images/s", "GPU memory peak, in-process runs (GiB)"]
    assert table[5].split()[-3:] == ["skipped", "in", "--smoke"]
    first = [float(line[58:].split()[0]) for line in table[:5]]
    assert all(math.isfinite(value) and value > 0 for value in first)
    assert all(math.isfinite(float(line.split()[-3])) for line in table[:2])  # hand-written epochs ran too


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_without_a_gpu_the_real_mode_refuses():
    result = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: no CUDA GPU is visible to torch")
