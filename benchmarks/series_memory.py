"""Windows are views: the memory a series' windows and an epoch of their batches take, against the series' own size.

    python benchmarks/series_memory.py [--steps 2000000] [--lookback 336] [--horizon 48] [--data-dir ...]

A synthetic series of `steps` x 7 features (the electricity experiment's: demand, two covariates, four calendar
features) is made as one float tensor in a fresh process; then datamodules/time_series.py's `windows_of` cuts its
training, validation and test windows and every batch of an epoch of each split is gathered. Resident memory is read
before the windows and after every batch (not ru_maxrss: the import of torch peaks higher than a small series): the
series plus the most the windows and batches added, over the series' size.
Windows copied out of the series would add (lookback + horizon) times the series. Beside it, on the real file: the
bytes of every tensor the electricity experiment's DataModule holds, over its series'.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def resident_bytes() -> int:
    with open("/proc/self/statm") as file:  # (Linux) pages: size, resident, ...
        return int(file.read().split()[1]) * resource.getpagesize()


def child(steps: int, lookback: int, horizon: int) -> dict:
    import torch

    from datamodules.tensor_batches import TensorBatches
    from datamodules.time_series import windows_of

    series = torch.randn(steps + horizon, 7)  # (+ the padding the DataModule adds for the last windows)
    before = resident_bytes()
    train, val = int(0.8 * steps), int(0.9 * steps)
    splits, _ = windows_of(series, 1, lookback, horizon, 48,
                           {"fit": (0, train), "validate": (train, val), "test": (val, steps)})
    added = resident_bytes() - before
    for split, tensors in splits.items():
        for _ in TensorBatches(tensors, 128 if split == "fit" else 1024, shuffle=split == "fit"):
            added = max(added, resident_bytes() - before)
    size = series.nbytes
    return {"series_bytes": size, "added_bytes": added, "peak_over_series": (size + added) / size}


def measure(steps: int = 2_000_000, lookback: int = 336, horizon: int = 48) -> dict:
    """The child's numbers, from a fresh process (its peak memory is its own)."""
    output = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps), "--lookback", str(lookback),
                             "--horizon", str(horizon)], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(output.splitlines()[-1])


def datamodule_bytes(data_dir: str, *overrides: str) -> dict:
    """The electricity experiment's DataModule, set up: bytes of the distinct storages its tensors use, and its
    series' bytes."""
    import tempfile

    from hydra.utils import instantiate

    from lightlab.run.compose import compose_config

    cfg = compose_config(["experiment=elecdemand_dayahead", f"paths.data_dir={data_dir}", *overrides],
                         output_dir=tempfile.gettempdir())
    datamodule = instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for tensors in datamodule.splits.values() for t in tensors}
    storages[datamodule.series.untyped_storage().data_ptr()] = datamodule.series.nbytes
    return {"series_bytes": datamodule.series.nbytes, "held_bytes": sum(storages.values()),
            "windows": sum(len(tensors[0]) for tensors in datamodule.splits.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2_000_000)
    parser.add_argument("--lookback", type=int, default=336)
    parser.add_argument("--horizon", type=int, default=48)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.steps, args.lookback, args.horizon)))
        return
    synthetic = measure(args.steps, args.lookback, args.horizon)
    real = datamodule_bytes(args.data_dir)
    print(f"\nseries of {args.steps:,} steps x 7 features, lookback {args.lookback}, horizon {args.horizon}")
    print(f"  series (MB)                                     {synthetic['series_bytes'] / 1e6:10.1f}")
    print(f"  peak added by windows + an epoch's batches (MB) {synthetic['added_bytes'] / 1e6:10.1f}")
    print(f"  peak / series                                   {synthetic['peak_over_series']:10.2f}  (goal <= 2)")
    print(f"elecdemand_dayahead DataModule: {real['windows']:,} windows; tensors held / series: "
          f"{real['held_bytes'] / real['series_bytes']:.2f} ({real['held_bytes'] / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
