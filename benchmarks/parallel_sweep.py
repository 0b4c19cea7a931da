"""Wall time of a 2-job sweep: Hydra's basic launcher (one job after the other, each using every core) against
hydra/launcher=parallel (joblib: both jobs at once, each limited to its share of the cores).

    python benchmarks/parallel_sweep.py [--experiment mnist_mlp] [--epochs 4] [--repeats 2] [--data-dir ../shared/data]
    python benchmarks/parallel_sweep.py --experiment trec_lstm --epochs 3

Both sides are the same `python run.py -m experiment=<experiment> optimizer.lr=0.003,0.001 ...` command on the
real dataset (--epochs epochs, validation and test included), run alternately as fresh processes, so the times
include everything a user waits for. How much a second job at once gains depends on how poorly one job uses the
second core: a wide MLP's matrix products use both threads well, a small LSTM's steps do not. Prints a table and writes
benchmarks/results/parallel_sweep_<experiment>_<epochs>_epochs.json.
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


def sweep_seconds(experiment: str, launcher: list[str], data_dir: str, epochs: int,
                  log_dir: str) -> tuple[float, list[float]]:
    command = [sys.executable, "run.py", "-m", f"experiment={experiment}", "optimizer.lr=0.003,0.001", *launcher,
               f"paths.data_dir={data_dir}", f"paths.log_dir={log_dir}", "data.download=false",
               f"trainer.max_epochs={epochs}"]
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # each launcher's own choice
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"sweep failed:\n{result.stderr[-3000:]}")
    sweep = next(Path(log_dir).glob("*/multirun_*"))
    jobs = [json.loads((job / "status.json").read_text())["wall_s"] for job in sorted(sweep.glob("[0-9]*"))]
    return wall, jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--experiment", default="mnist_mlp")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per job (sets the job length)")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", str(ROOT.parent / "shared" / "data")))
    args = parser.parse_args()

    launchers = {"basic (sequential)": [], "parallel (joblib, 2 jobs)": ["hydra/launcher=parallel"]}
    walls = {name: [] for name in launchers}
    jobs = {name: [] for name in launchers}
    for _ in range(args.repeats):
        for name, launcher in launchers.items():
            with tempfile.TemporaryDirectory() as log_dir:
                wall, job_walls = sweep_seconds(args.experiment, launcher, args.data_dir, args.epochs, log_dir)
            walls[name].append(wall)
            jobs[name] += job_walls
    basic, parallel = (statistics.median(walls[name]) for name in launchers)
    rows = [(f"{name}: sweep wall time (s)", statistics.median(walls[name]), min(walls[name]), max(walls[name]))
            for name in launchers]
    rows += [(f"{name}: one job's train+test (s)", statistics.median(jobs[name]), min(jobs[name]), max(jobs[name]))
             for name in launchers]
    rows.append(("speed-up of parallel over basic", basic / parallel, None, None))
    print(f"2-job sweep of experiment={args.experiment}, {args.epochs} epochs a job, {args.repeats} repeats, "
          f"{os.cpu_count()} cores")
    print("| measurement | median | min | max |\n|---|---|---|---|")
    for name, median, low, high in rows:
        print(f"| {name} | {median:.3f} | {'' if low is None else f'{low:.3f}'} | "
              f"{'' if high is None else f'{high:.3f}'} |")
    out = ROOT / "benchmarks" / "results" / f"parallel_sweep_{args.experiment}_{args.epochs}_epochs.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"experiment": args.experiment, "epochs": args.epochs, "repeats": args.repeats,
                               "cores": os.cpu_count(), "sweep_wall_s": walls, "job_wall_s": jobs,
                               "speedup": basic / parallel}, indent=2))


if __name__ == "__main__":
    main()
