"""Shared test helpers: tiny datasets written in the real file formats, and runs of the real run.py."""
import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = Path(os.environ.get("DATA_DIR", ROOT.parent / "shared" / "data"))


def write_idx(path: Path, values: torch.Tensor, compress: bool = True) -> Path:
    """Write a uint8 tensor as an IDX file (big-endian header: 0, 0, 0x08, ndim, then each dimension)."""
    header = bytes([0, 0, 0x08, values.dim()]) + b"".join(d.to_bytes(4, "big") for d in values.shape)
    payload = header + values.to(torch.uint8).contiguous().numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def write_tiny_mnist(data_dir: Path, folder: str = "MNIST", train: int = 256, test: int = 64) -> Path:
    """A learnable MNIST-format dataset: the label is written into the image as a bright band, plus noise."""
    generator = torch.Generator().manual_seed(0)
    raw = data_dir / folder / "raw"
    for prefix, count in (("train", train), ("t10k", test)):
        labels = torch.randint(0, 10, (count,), generator=generator)
        images = torch.randint(0, 60, (count, 28, 28), generator=generator)
        for index, label in enumerate(labels):
            images[index, 2 * label: 2 * label + 3, :] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return data_dir


def write_cifar_batch(path: Path, count: int, label_key: str = "labels", classes: int = 10, seed: int = 0) -> dict:
    """One CIFAR python-pickle batch file: a dict with uint8 `data` (N x 3072, channel-major) and labels."""
    generator = np.random.default_rng(seed)
    batch = {"batch_label": "synthetic", "data": generator.integers(0, 256, (count, 3072), dtype=np.uint8),
             label_key: generator.integers(0, classes, count).tolist(), "filenames": [f"{i}.png" for i in range(count)]}
    if label_key == "fine_labels":
        batch["coarse_labels"] = [label // 5 for label in batch[label_key]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return batch


def write_cifar10(root: Path, per_batch: int = 20) -> list[dict]:
    """CIFAR-10's folder: data_batch_1..5 and test_batch, `per_batch` random images each."""
    return [write_cifar_batch(root / "cifar-10-batches-py" / name, per_batch, seed=i)
            for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])]


def write_cifar100(root: Path, count: int = 30) -> None:
    for name in ("train", "test"):
        write_cifar_batch(root / "cifar-100-python" / name, count, label_key="fine_labels", classes=100)


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return write_tiny_mnist(tmp_path / "data")


def quick_overrides(data_dir: Path, log_dir: Path) -> list[str]:
    """A run of a few seconds on tiny data: small network, two short epochs."""
    return [f"paths.data_dir={data_dir}", f"paths.log_dir={log_dir}", "data.val_size=64", "data.batch_size=32",
            "data.eval_batch_size=64", "data.download=false", "model.hidden_dims=[32]", "trainer.max_epochs=2",
            "trainer.log_every_n_steps=2"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python run.py <args>` in a fresh process, from the repository root, as a user runs it."""
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def require_real_data(folder: str) -> Path:
    """The real dataset folder; in CI (CI=true) its absence is a failure, elsewhere a skip."""
    path = REAL_DATA / folder / "raw"
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data missing in CI: {path} (set DATA_DIR)")
        pytest.skip(f"real data not found at {path} (set DATA_DIR)")
    return REAL_DATA
