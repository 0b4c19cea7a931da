"""Whole processes, as a user times them: `python run.py` against benchmarks/hand_written_run.py, each run for 1 and
for 5 epochs, the four alternated; per-epoch time = (T5 - T1) / 4 (training, validation and checkpoint included,
start-up excluded) and fixed cost = T1 - per-epoch (start-up, data, set-up, the end of the run). Medians over
--repeats rounds.

    python benchmarks/whole_runs.py [--hidden 64,128,64] [--batch-norm] [--repeats 3] [--data-dir ../shared/data]

64,128,64 with --batch-norm is lightning-hydra-template's MNIST net (784-64-128-64-10, "MNIST LHT-net"); 512,256,128
without it the default MLP's widths. Both sides: batch 128, Adam(fused), no dropout, no test.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_project() -> None:
    """Byte-compile the project's modules, as Python does on a user's first run and then reuses. Where
    PYTHONDONTWRITEBYTECODE is set (this VM sets it), Python would otherwise compile every lightlab module from
    source in every process (~0.3 s on the 2-core CPU: `run.py --help` 1.02 s, then 0.75 s compiled): a cost no
    user's second run pays.
    (Installed packages are compiled by pip at install time.)"""
    import compileall

    for folder in ("lightlab", "datamodules", "lightning_modules", "hydra_plugins", "benchmarks"):
        compileall.compile_dir(ROOT / folder, quiet=1)


def seconds(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, capture_output=True, check=True)
    return time.perf_counter() - started


def commands(data_dir: str, hidden: str, batch_norm: bool, epochs: int, out: str, val_size: int = 5000,
             extra: tuple[str, ...] = ()) -> dict[str, list[str]]:
    model = ["model=mlp_bn", "model.init=default"] if batch_norm else []
    return {"framework": [sys.executable, "run.py", *model, f"model.hidden_dims=[{hidden}]", "model.dropout=0.0",
                          f"paths.data_dir={data_dir}", f"paths.log_dir={out}", f"trainer.max_epochs={epochs}",
                          f"data.val_size={val_size}", "test_after_fit=false", "print_config=false", *extra],
            "hand-written": [sys.executable, "benchmarks/hand_written_run.py", data_dir, out, "--epochs", str(epochs),
                             "--hidden", hidden, "--val-size", str(val_size),
                             *(["--batch-norm"] if batch_norm else [])]}


def measure(data_dir: str, hidden: str, batch_norm: bool, repeats: int, epochs: int = 5, val_size: int = 5000,
            extra: tuple[str, ...] = ()) -> dict[str, dict]:
    """{side: {"epoch": [s, ...], "fixed": [s, ...]}}, one value per round (`extra`: more run.py overrides)."""
    compile_project()
    results = {side: {"epoch": [], "fixed": []} for side in ("framework", "hand-written")}
    for _ in range(repeats):
        for side in results:
            with tempfile.TemporaryDirectory() as out:
                one = seconds(commands(data_dir, hidden, batch_norm, 1, out, val_size, extra)[side])
            with tempfile.TemporaryDirectory() as out:
                many = seconds(commands(data_dir, hidden, batch_norm, epochs, out, val_size, extra)[side])
            epoch = (many - one) / (epochs - 1)
            results[side]["epoch"].append(epoch)
            results[side]["fixed"].append(one - epoch)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", default="64,128,64")
    parser.add_argument("--batch-norm", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()
    results = measure(args.data_dir, args.hidden, args.batch_norm, args.repeats, args.epochs)
    framework, hand = results["framework"], results["hand-written"]
    rows = [("framework, per epoch (s)", framework["epoch"]), ("hand-written, per epoch (s)", hand["epoch"]),
            ("ratio framework / hand, per epoch", [f / h for f, h in zip(framework["epoch"], hand["epoch"])]),
            ("framework, fixed cost (s)", framework["fixed"]), ("hand-written, fixed cost (s)", hand["fixed"]),
            ("fixed cost above the hand-written (s)", [f - h for f, h in zip(framework["fixed"], hand["fixed"])])]
    print(f"\nMLP 784-{args.hidden.replace(',', '-')}-10{' with BatchNorm' if args.batch_norm else ''}, batch 128, "
          f"whole processes of 1 and {args.epochs} epochs, {args.repeats} rounds")
    print(f"{'':44s} {'median':>8s} {'min':>8s} {'max':>8s}")
    for name, values in rows:
        print(f"{name:44s} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}")


if __name__ == "__main__":
    main()
