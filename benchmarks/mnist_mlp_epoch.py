"""One MNIST training epoch of the MLP (784-512-256-128-10, batch 128, Adam): framework vs a hand-written loop.

    python benchmarks/mnist_mlp_epoch.py [--repeats 5] [--data-dir ../shared/data]

Both sides run in this one process, alternating, on the same in-memory uint8 tensors, with the same network
class, initial weights, optimizer settings and batch order rule. The framework side is run.py's own `train(cfg)`
(default callbacks on: checkpointing, progress bar, TensorBoard); its epoch is timed from the first training
batch's start to the last one's end, so validation, checkpoint writing and set-up are excluded (they are
reported separately as the whole fit() wall time). Prints a table and writes benchmarks/results/mnist_mlp_epoch.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from benchmarks.clocks import EpochClock  # noqa: E402
from datamodules.mnist import MNISTDataModule  # noqa: E402
from lightlab.compose import compose_config  # noqa: E402
from run import train  # noqa: E402

EPOCHS = 2  # the first epoch also pays one-time costs (first-call caches, allocations); the second is steady state
OVERRIDES = [f"trainer.max_epochs={EPOCHS}", "test_after_fit=false", "scheduler=none"]


def framework_epochs(data_dir: str) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = compose_config(OVERRIDES + [f"paths.data_dir={data_dir}",
                                          "+callbacks.epoch_clock._target_=benchmarks.clocks.EpochClock"],
                             output_dir=output_dir)
        started = time.perf_counter()
        train(cfg)
        return EpochClock.epoch_seconds[-EPOCHS:], time.perf_counter() - started


def hand_written_epochs(cfg, images: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """The loop a careful user writes by hand: permutation, slice, scale on the fly, forward, backward, step."""
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model, input_shape=[1, 28, 28], num_classes=10, _convert_="all")
    optimizer = instantiate(cfg.optimizer, params=net.parameters(), _convert_="all")
    loss_function = torch.nn.CrossEntropyLoss()
    batch_size = cfg.data.batch_size
    net.train()
    seconds = []
    for epoch in range(EPOCHS):
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(epoch))
        correct = torch.zeros((), dtype=torch.long)
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            index = order[first:first + batch_size]
            x = images[index].unsqueeze(1).float()
            x = x.sub_(255 * MNISTDataModule.mean).mul_(1 / (255 * MNISTDataModule.std))
            y = labels[index]
            logits = net(x)
            loss = loss_function(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            correct += (logits.argmax(1) == y).sum()
        correct.item()
        seconds.append(time.perf_counter() - start)
    return seconds


def startup_seconds(data_dir: str) -> tuple[float, float]:
    """Process start -> first training step of `python run.py`, and `python run.py --help`."""
    env = {**os.environ, "DATA_DIR": data_dir}
    with tempfile.TemporaryDirectory() as log_dir:
        started = time.time()
        output = subprocess.run(
            [sys.executable, "run.py", f"paths.log_dir={log_dir}", "test_after_fit=false", "callbacks=none",
             "logger=none", "+callbacks.first_step_clock._target_=benchmarks.clocks.FirstStepClock"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
        first_step = float(output.split("FIRST_STEP_AT ")[1].split()[0]) - started
    started = time.perf_counter()
    subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, check=True)
    return first_step, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()

    cfg = compose_config(OVERRIDES + [f"paths.data_dir={args.data_dir}"], output_dir=tempfile.gettempdir())
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    images, labels = datamodule.splits["fit"]

    framework, fit_walls, hand = [], [], []
    for repeat in range(args.repeats):  # alternate A/B so drifts in machine speed hit both alike
        epoch_times, fit_wall = framework_epochs(args.data_dir)
        framework.append(epoch_times)
        fit_walls.append(fit_wall)
        hand.append(hand_written_epochs(cfg, images, labels))
    first_step, help_time = startup_seconds(args.data_dir)

    def column(table, epoch):
        return [times[epoch] for times in table]

    rows = []
    for epoch, label in enumerate(["1st epoch", "2nd epoch"]):
        rows += [(f"hand-written loop, {label} (s)", column(hand, epoch)),
                 (f"framework, {label} (s)", column(framework, epoch)),
                 (f"ratio framework / hand, {label}",
                  [f / h for f, h in zip(column(framework, epoch), column(hand, epoch))])]
    rows.append((f"framework fit(), {EPOCHS} epochs incl. validation, checkpoints (s)", fit_walls))
    print(f"\nMNIST MLP 784-512-256-128-10, batch 128, Adam(fused), {len(images)} images, "
          f"{torch.get_num_threads()} threads, {args.repeats} alternating repeats")
    print(f"{'':60s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for name, values in rows:
        print(f"{name:60s} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")
    print(f"{'start-up: process start to first training step (s)':60s} {first_step:8.3f}")
    print(f"{'python run.py --help (s)':60s} {help_time:8.3f}")

    results = {name: {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v} for name, v in rows}
    results.update({"startup_to_first_step_s": first_step, "help_s": help_time, "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "pytorch_lightning": pl.__version__})
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "mnist_mlp_epoch.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
