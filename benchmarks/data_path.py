"""The data path alone, MNIST training split, batch 128: batches per second of

  - our batch iterator (datamodules/tensor_batches.py: one gather from the uint8 tensor a batch, then the
    DataModule's batched scaling),
  - torch's DataLoader over a TensorDataset of the same uint8 tensors (per-index fetch + collate, then the same
    batched scaling),
  - the pattern most users come from, torchvision's MNIST with ToTensor + Normalize: __getitem__ makes a PIL
    image of one sample, converts it to a float tensor in [0, 1] and normalises it; DataLoader's default collate
    stacks the batch.

All three shuffle, run in the main process (num_workers=0) and yield float (B, 1, 28, 28) images and labels.

    python benchmarks/data_path.py [--data-dir ../shared/data] [--batches 200]
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra.utils import instantiate  # noqa: E402

from lightlab.run.compose import compose_config  # noqa: E402


class PerSampleTransform(Dataset):
    """torchvision.datasets.MNIST's __getitem__ with transforms.Compose([ToTensor(), Normalize(mean, std)]), written
    out (torchvision is not a dependency): the same steps per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index].numpy())  # torchvision's MNIST hands out PIL images
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).unsqueeze(0).float().div(255)  # ToTensor
        return (tensor - self.mean) / self.std, int(self.labels[index])  # Normalize


def batches_per_second(batches, count: int, scale=None) -> float:
    """Batches a second over the first `count` batches of one pass (the timer starts after the first batch:
    iterator set-up is paid once an epoch, not per batch)."""
    iterator = iter(batches)
    next(iterator)
    start = time.perf_counter()
    for _, batch in zip(range(count), iterator):
        if scale is not None:
            batch = scale(batch)
    return count / (time.perf_counter() - start)


def measure(data_dir: str, batches: int = 200, repeats: int = 5, batch_size: int = 128,
            overrides: list[str] = ()) -> dict[str, list[float]]:
    cfg = compose_config([f"paths.data_dir={data_dir}", f"data.batch_size={batch_size}", *overrides],
                         output_dir=tempfile.gettempdir())
    datamodule = instantiate(cfg.data, _convert_="all")  # conf/data/mnist.yaml, as a run builds it
    datamodule.setup("fit")
    images, labels = datamodule.splits["fit"]
    batches = max(1, min(batches, len(labels) // batch_size - 1))  # the first batch is not timed
    scale = lambda batch: datamodule.on_after_batch_transfer(batch, 0)  # noqa: E731
    paths = {
        "our batch iterator": lambda: batches_per_second(datamodule.train_dataloader(), batches, scale),
        "DataLoader(TensorDataset)": lambda: batches_per_second(
            DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=True), batches, scale),
        "DataLoader, per-sample transform": lambda: batches_per_second(
            DataLoader(PerSampleTransform(images, labels, datamodule.mean, datamodule.std),
                       batch_size=batch_size, shuffle=True), batches),
    }
    results = {name: [] for name in paths}
    for _ in range(repeats):  # alternating, like the epoch benchmarks
        for name, run in paths.items():
            results[name].append(run())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    results = measure(args.data_dir, args.batches)
    ours = statistics.median(results["our batch iterator"])
    for name, values in results.items():
        print(f"{name:36s} {statistics.median(values):10.0f} batches/s  "
              f"({ours / statistics.median(values):6.1f}x slower than ours)")


if __name__ == "__main__":
    main()
