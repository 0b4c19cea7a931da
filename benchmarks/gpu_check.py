"""One command on a CUDA machine: how lightlab trains on its GPU, as one table (about 5-8 minutes on one GPU).

    python benchmarks/gpu_check.py --data-dir <folder with MNIST/raw/ and cifar-10-batches-py/>
    python benchmarks/gpu_check.py --smoke --data-dir <tiny data>     # on the CPU, in a minute: every row still runs

Rows: the device; a steady training epoch through the framework (run.py's train(), default callbacks) against a
hand-written loop whose data lies on the GPU the whole time (benchmarks/epoch_time.py, same network, weights,
optimizer and batches), for the MNIST MLP and ResNet-18 on CIFAR-10 (--batches batches an epoch); ResNet-18's
framework epoch with bf16 autocast, channels_last and torch.compile each off and on; the `cifar10_speedrun`
experiment's whole `python run.py` (wall time, test accuracy against its 93.5% target, training images/s); and the
GPU memory peak of the in-process runs. Without CUDA it refuses (exit 2), unless --smoke.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from benchmarks.epoch_time import HandWritten, Workload, composed, framework_epochs  # noqa: E402
from lightlab.base.errors import UserError  # noqa: E402

SPEEDRUN_TARGET = 0.935  # conf/experiment/cifar10_speedrun.yaml: ~93.5-94% after 10 epochs


def steady_epoch(workload: Workload, data_dir: str, *variant: str) -> float:
    """Seconds of the framework's second training epoch (the first pays one-time costs: allocations, compilation)."""
    return framework_epochs(workload, data_dir, *variant)[0][-1]


def hand_written_epoch(workload: Workload, data_dir: str, device: str) -> float:
    cfg = composed(workload, data_dir, tempfile.gettempdir())
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    return HandWritten(cfg, datamodule, device).epochs(workload.batches)[-1]


def speedrun(data_dir: str, extra: list[str]) -> dict:
    """The cifar10_speedrun experiment as a user runs it: wall seconds, test accuracy, training images/s."""
    with tempfile.TemporaryDirectory() as logs:
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "run.py", "experiment=cifar10_speedrun", f"paths.data_dir={data_dir}",
                                 f"paths.log_dir={logs}", "print_config=false", *extra], cwd=ROOT,
                                capture_output=True, text=True)
        wall = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"cifar10_speedrun failed:\n{result.stderr[-3000:]}")
        metrics = json.loads(next(Path(logs).rglob("metrics.json")).read_text())["metrics"]
    return {"wall": wall, "accuracy": metrics["test/acc"], "images_per_second": metrics["train/samples_per_second"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--batches", type=int, default=100, help="ResNet-18 training batches an epoch")
    parser.add_argument("--smoke", action="store_true", help="on the CPU with tiny data: every row runs, no number "
                                                             "means anything")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA GPU is visible to torch (torch.cuda.is_available() is False). Run this on a machine "
              "with one, or add --smoke to check on the CPU that every measurement runs.", file=sys.stderr)
        raise SystemExit(2)
    device = "cpu" if args.smoke else "cuda"
    # Smoke: the CPU, 2 batches an epoch, the tiny data's validation split, no downloads.
    on_device = (["trainer.accelerator=cpu", "trainer.precision=32-true", "data.val_size=64", "data.download=false"]
                 if args.smoke else ["trainer.accelerator=gpu", "trainer.devices=1"])
    batches = 2 if args.smoke else args.batches
    mlp = Workload("MNIST MLP", on_device, batches=2 if args.smoke else None)
    resnet = Workload("CIFAR-10 ResNet-18", ["experiment=cifar10_resnet18", *on_device, "channels_last=false",
                                             *(["data.batch_size=16"] if args.smoke else [])], batches=batches)
    rows = []  # (measurement, framework, hand-written)
    started = time.perf_counter()
    if not args.smoke:
        torch.cuda.reset_peak_memory_stats()
    for name, workload in (("MNIST MLP 784-512-256-128-10, epoch (s)", mlp),
                           (f"ResNet-18 CIFAR-10, {batches} batches of {16 if args.smoke else 128}, fp32 (s)",
                            resnet)):
        rows.append((name, steady_epoch(workload, args.data_dir), hand_written_epoch(workload, args.data_dir,
                                                                                     device)))
    bf16 = "trainer.precision=32-true" if args.smoke else "trainer.precision=bf16-mixed"  # (the CPU: fp32 again)
    for name, variant in (("ResNet-18, bf16 autocast (s)", [bf16]), ("ResNet-18, channels_last (s)",
                                                                    ["channels_last=true"]),
                          ("ResNet-18, bf16 + channels_last (s)", [bf16, "channels_last=true"]),
                          ("ResNet-18, bf16 + channels_last + torch.compile (s)",
                           [bf16, "channels_last=true", "compile=true"])):
        if args.smoke and "compile=true" in variant:  # inductor compiles for minutes on a CPU
            rows.append((name, None, None))
            continue
        rows.append((name, steady_epoch(resnet, args.data_dir, *variant), float("nan")))
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if not args.smoke else float("nan")
    quick = (["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
              "trainer.limit_test_batches=1", "compile=false", "data.batch_size=16", *on_device] if args.smoke else [])
    run = speedrun(args.data_dir, quick)

    name = torch.cuda.get_device_name(0) if not args.smoke else "CPU (--smoke)"
    print(f"\nlightlab GPU check: {name}, torch {torch.__version__}, {time.perf_counter() - started:.0f} s")
    print(f"{'measurement':58s} {'framework':>10s} {'hand':>10s} {'ratio':>7s}")
    for measurement, framework, hand in rows:
        if framework is None:
            print(f"{measurement:58s} {'skipped in --smoke':>18s}")
            continue
        ratio = framework / hand if hand == hand else float("nan")
        print(f"{measurement:58s} {framework:10.3f} {hand:10.3f} {ratio:7.3f}")
    verdict = "met" if run["accuracy"] >= SPEEDRUN_TARGET else "NOT met"
    print(f"{'cifar10_speedrun: whole python run.py (s)':58s} {run['wall']:10.1f}")
    print(f"{'cifar10_speedrun: test accuracy':58s} {run['accuracy']:10.4f}   >= {SPEEDRUN_TARGET}: {verdict}")
    print(f"{'cifar10_speedrun: training images/s':58s} {run['images_per_second']:10.0f}")
    print(f"{'GPU memory peak, in-process runs (GiB)':58s} {peak:10.2f}")


if __name__ == "__main__":
    try:
        main()
    except UserError as error:  # data not found under --data-dir: the message says where it looked
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
