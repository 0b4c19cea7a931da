"""What a multirun leaves behind: each job's outcome, and one table for the whole sweep.

Every job of a sweep writes `status.json` in its folder: started, then completed, failed or (Optuna) pruned, with
its overrides, its wall time, and for a failure the error, with the full traceback in `failure.txt`. A failing
job does not stop the others.
When the sweep ends, `SweepSummary` (a Hydra callback, see conf/hydra/default.yaml) writes `summary.csv` and
`summary.md` in the sweep folder, prints the table, plots the optimised metric against each swept parameter
(`summary.png`), and makes the sweep exit with status 1 if any job failed. For an existing sweep folder:

    python -m lightlab.sweeps.summary logs/mnist_mlp/multirun_003
"""
import csv
import io
import json
import math
import statistics
import sys
import time
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from lightlab.base.files import write_atomically, write_json, write_text
from lightlab.base.numbers import format_number
from lightlab.base.ranks import is_rank_zero
from lightlab.sweeps.optuna_trials import TRIAL_FILE


def resume_job(cfg, overrides: list[str]) -> dict | None:
    """Before a sweep job or named run runs. Re-running the same command over the same folder meets the earlier
    outcome: a completed job returns its recorded summary and is not run again; a failed or interrupted one
    continues from its checkpoints/last.ckpt when it has one (cfg.ckpt_path is set), else starts over."""
    run_dir = Path(cfg.paths.output_dir)
    status_file, overrides = run_dir / "status.json", list(overrides)
    last = run_dir / "checkpoints" / "last.ckpt"
    conflict = folder_conflict(run_dir, overrides)
    if conflict:  # SystemExit, not an error recorded in the folder: the folder's record is another command's
        raise SystemExit(f"error: {conflict}")
    if status_file.is_file():
        earlier = json.loads(status_file.read_text())
        if same_run(earlier["overrides"]) != same_run(overrides):  # failed before any checkpoint (folder_conflict)
            print(f"{run_dir}: an earlier attempt with other settings failed before any checkpoint; starting over")
        elif earlier["status"] == "completed" and (run_dir / "metrics.json").is_file():
            print(f"{run_dir}: completed in an earlier run of this command, not run again")
            return json.loads((run_dir / "metrics.json").read_text())
    if last.is_file() and cfg.ckpt_path is None:
        print(f"{run_dir}: continuing the interrupted job from {last}")
        cfg.ckpt_path = str(last)
    if is_rank_zero():  # a cluster launcher (SLURM, torchrun) may start the job once per device
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(status_file, {"status": "started", "overrides": overrides, "wall_s": 0.0})
    return None


def before_the_job() -> set[str]:
    """What Hydra (its record, its log) and Optuna's sweeper (the trial's identity) write in a job's folder before the
    job starts: files of this run, not another run's."""
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    names = {hydra.output_subdir, f"{hydra.job.name}.log"} if hydra else {".hydra", "run.log"}
    return {name for name in names if name} | {TRIAL_FILE}


def folder_conflict(run_dir: Path, overrides: list[str]) -> str | None:
    """Why `run_dir` cannot hold this command's run (another command's run is there), or None: it is empty, holds
    this command's run (to continue or report), or an attempt that failed before writing any checkpoint."""
    status_file, last = run_dir / "status.json", run_dir / "checkpoints" / "last.ckpt"
    fixes = ("To continue that run, re-run its own command (same overrides); to start this one, give it its own "
             "folder: another run_name=… (sweeps: sweep_name=…, an explicit folder: hydra.run.dir=…), or none for "
             "a fresh run_NNN.")
    if status_file.is_file():
        earlier = json.loads(status_file.read_text())
        then, now = same_run(earlier["overrides"]), same_run(overrides)
        # This command's run, or an attempt that failed before any checkpoint (a typo caught early, say)
        if then == now or earlier["status"] == "failed" and not last.is_file():
            return None
        differences = (f"{' '.join(o for o in then if o not in now) or '(none)'} there, "
                       f"{' '.join(o for o in now if o not in then) or '(none)'} now")
        return (f"{run_dir} holds a run of another command (overrides that differ: {differences}); two runs never "
                f"share a folder. {fixes}")
    if run_dir.is_dir() and any(entry.name not in before_the_job() for entry in run_dir.iterdir()):
        return (f"{run_dir} already holds files (a run without a status.json: started without run_name, or by an "
                f"older lightlab), so whether this command is its own cannot be told, and two runs never share a "
                f"folder. To continue it explicitly: ckpt_path={last} with a new folder. {fixes}")
    return None


def same_run(overrides: list[str]) -> list[str]:
    """The overrides that say what a run is (in any order): not where it resumes from, nor what it prints."""
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "print_config"))


def record_outcome(run_dir: Path, overrides: list[str], wall_s: float, error: BaseException | None = None) -> None:
    if not is_rank_zero():
        return
    pruned = type(error).__name__ == "TrialPruned"  # Optuna's pruner stopped it (lightlab/sweeps/optuna_pruning.py)
    status = {"status": "pruned" if pruned else "failed" if error else "completed", "overrides": list(overrides),
              "wall_s": round(wall_s, 3), "finished_at": round(time.time(), 3)}
    if pruned:
        status["error"] = str(error)
    elif error is not None:
        status["error"] = f"{type(error).__name__}: {error}"
        write_text(run_dir / "failure.txt", "".join(traceback.format_exception(error)))
    write_json(run_dir / "status.json", status)


def objective(metrics: dict, monitor: str) -> float | None:
    """What a sweep optimises: the monitored metric's best value during training (else its last)."""
    return metrics.get(f"best_{monitor}", metrics.get(monitor))


def job_rows(sweep_dir: Path, monitor: str) -> list[dict]:
    jobs = sorted((d for d in sweep_dir.iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    return [row for row in (job_outcome(job_dir, monitor) for job_dir in jobs) if row is not None]


def job_outcome(job_dir: Path, monitor: str) -> dict | None:
    """One job's row: status, overrides, metrics and `objective` (the monitored metric, None unless completed);
    None for a job that never started."""
    status_file = job_dir / "status.json"
    if not status_file.is_file():
        return None
    status = json.loads(status_file.read_text())
    row = {"job": int(job_dir.name), "overrides": status["overrides"], "status": status["status"],
           "wall_s": status["wall_s"], "error": status.get("error", ""), "metrics": {}, "best_epoch": None}
    metrics_file = job_dir / "metrics.json"
    if status["status"] == "completed" and metrics_file.is_file():
        summary = json.loads(metrics_file.read_text())
        row["metrics"] = summary["metrics"]
        checkpoint = Path(summary.get("best_checkpoint") or "")
        if checkpoint.stem.startswith("epoch") and checkpoint.stem[5:].isdigit():
            row["best_epoch"] = int(checkpoint.stem[5:])
    value = objective(row["metrics"], monitor)
    if row["status"] == "completed" and (value is None or not math.isfinite(value)):
        row["status"], row["error"] = "failed", f"{monitor} is {value} (not a finite number)"
    row["objective"] = value if row["status"] == "completed" else None
    return row


def swept_keys(rows: list[dict]) -> list[str]:
    """The override keys whose values differ between jobs, in command-line order."""
    values: dict[str, set] = {}
    for row in rows:
        for override in row["overrides"]:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1 or len(rows) == 1]


def summarize(sweep_dir: Path, monitor: str, monitor_mode: str) -> list[dict]:
    """Write summary.csv, summary.md and summary.png in the sweep folder and print the table; returns the rows."""
    rows = job_rows(sweep_dir, monitor)
    keys = swept_keys(rows)
    for row in rows:
        row["settings"] = {k.lstrip("+~"): v for k, _, v in (o.partition("=") for o in row["overrides"])}
    finished = [row for row in rows if row["objective"] is not None]
    best = (max if monitor_mode == "max" else min)(finished, key=lambda r: r["objective"]) if finished else None
    metric_names = sorted({name for row in rows for name in row["metrics"]} - {monitor, f"best_{monitor}"})

    header = ["job", *keys, "status", monitor, *metric_names, "best_epoch", "wall_s", "best", "error"]
    table = [[row["job"], *(row["settings"].get(k, "") for k in keys), row["status"],
              "" if row["objective"] is None else f"{row['objective']:.6g}",
              *(f"{row['metrics'][n]:.6g}" if n in row["metrics"] else "" for n in metric_names),
              "" if row["best_epoch"] is None else row["best_epoch"], f"{row['wall_s']:.1f}",
              "*" if row is best else "", row["error"]] for row in rows]
    csv_text = io.StringIO()
    csv.writer(csv_text).writerows([header, *table])
    write_text(sweep_dir / "summary.csv", csv_text.getvalue())
    lines = [f"# Sweep {sweep_dir}", "", f"{len(finished)} of {len(rows)} jobs completed; `{monitor}` is "
             f"{'maximised' if monitor_mode == 'max' else 'minimised'}; the best job is marked *.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table_to_read = [[brief(cell) for cell in line] for line in table]  # the CSV keeps every digit
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in table_to_read]
    lines += seed_groups(rows, keys, monitor)
    write_text(sweep_dir / "summary.md", "\n".join(lines) + "\n")
    plot(sweep_dir / "summary.png", rows, keys, monitor)
    # On the console, the columns that fit a terminal: the full table is in summary.md / summary.csv.
    shown = [i for i, name in enumerate(header) if name not in metric_names and name != "error"
             or name == "test/" + monitor.partition("/")[2] or name == "error" and any(r["error"] for r in rows)]
    print_table([header[i] for i in shown], [[line[i] for i in shown] for line in table_to_read],
                f"{sweep_dir}: {len(finished)}/{len(rows)} jobs completed (full table: summary.md)")
    return rows


def brief(cell) -> str:
    """A searched float such as Optuna's 0.0022881136684755237 as 0.002288; anything else as it is."""
    text = str(cell)
    try:
        return format_number(float(text)) if len(text) > 8 and any(c in text for c in ".e") else text
    except ValueError:
        return text


def seed_groups(rows: list[dict], keys: list[str], monitor: str) -> list[str]:
    """With seed among the swept keys: the objective's mean and standard deviation per configuration."""
    if "seed" not in keys:
        return []
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        configuration = tuple((k, row["settings"].get(k, "")) for k in keys if k != "seed")
        groups.setdefault(configuration, [])
        if row["objective"] is not None:
            groups[configuration].append(row["objective"])
    lines = ["", f"## `{monitor}` over seeds", "", "| configuration | seeds | mean | std |", "|---|---|---|---|"]
    for configuration, values in groups.items():
        name = " ".join(f"{k}={v}" for k, v in configuration) or "(all)"
        mean = f"{statistics.mean(values):.6g}" if values else ""
        std = f"{statistics.stdev(values):.3g}" if len(values) > 1 else ""
        lines.append(f"| {name} | {len(values)} | {mean} | {std} |")
    return lines


def plot(path: Path, rows: list[dict], keys: list[str], monitor: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys or ["job"]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for axis, key in zip(axes[0], keys):
        points = [(row["settings"].get(key, str(row["job"])), row["objective"]) for row in rows
                  if row["objective"] is not None]
        try:
            xs = [float(x) for x, _ in points]
            positive = all(x > 0 for x in xs)
            if positive and xs and max(xs) / min(xs) > 20:
                axis.set_xscale("log")
        except ValueError:  # categorical values: one column each, in order of appearance
            labels = list(dict.fromkeys(x for x, _ in points))
            xs = [labels.index(x) for x, _ in points]
            axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        axis.scatter(xs, [y for _, y in points])
        axis.set_xlabel(key)
        axis.set_ylabel(monitor)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    write_atomically(path, lambda partial: figure.savefig(partial, format="png", dpi=100))
    plt.close(figure)


def print_table(header: list[str], table: list[list], title: str, console=None) -> None:
    """Never a line break inside a name or value. On a terminal: the columns that fit its width, from the left (job,
    swept keys, status, the metric), the rest named as left out; elsewhere (a log file, CI): every column, however
    wide the lines get."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(soft_wrap=True)
    widths = [max(len(str(cell)) for cell in [name, *(line[i] for line in table)]) for i, name in enumerate(header)]
    shown = list(range(len(header)))
    while console.is_terminal and len(shown) > 1 and sum(widths[i] + 3 for i in shown) + 1 > console.width:
        shown.pop()  # 3: a cell's padding and its border
    if not console.is_terminal:
        console.width = max(console.width, sum(w + 3 for w in widths) + 1)
    view = Table(title=title, title_justify="left")
    for i in shown:
        view.add_column(header[i], no_wrap=True)
    for line in table:
        view.add_row(*(str(line[i]) for i in shown))
    console.print(view)
    if len(shown) < len(header):
        console.print(f"(not shown at this width: {', '.join(header[i] for i in range(len(shown), len(header)))})")


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        monitored = config
        if config.monitor == "auto" or config.monitor_mode == "auto":  # data=table, its file swept: a job's settled
            monitored = next((OmegaConf.load(path) for path in Path(config.hydra.sweep.dir).glob("*/config.yaml")),
                             config)
        rows = summarize(Path(config.hydra.sweep.dir), monitored.monitor, monitored.monitor_mode)
        # Pruned trials and trials a resumed Optuna study asked again are outcomes, not failures.
        failed = [row["job"] for row in rows if row["status"] not in ("completed", "pruned", "interrupted")]
        if failed:
            print(f"error: {len(failed)} of {len(rows)} jobs failed (jobs {', '.join(map(str, failed))}); each job "
                  f"folder has status.json and failure.txt.",
                  file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    sweep = Path(sys.argv[1])
    # The jobs' own resolved configs say which metric the sweep optimised.
    job_config = OmegaConf.load(next(sweep.glob("*/config.yaml")))
    summarize(sweep, job_config.monitor, job_config.monitor_mode)
