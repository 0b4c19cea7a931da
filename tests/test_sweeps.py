"""Multirun: failed jobs are recorded and the others still run; the sweep's summary table, plot and exit code."""
import csv
import statistics
import subprocess
import sys

from tests.conftest import ROOT, quick_overrides, run_cli, write_tiny_mnist


def read_summary(sweep_dir):
    with open(sweep_dir / "summary.csv") as f:
        return list(csv.DictReader(f))


def test_a_failing_job_is_recorded_the_others_run_and_the_summary_marks_the_best(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli("-m", "optimizer.lr=0.01,0.001,-1,0.005", *quick_overrides(data, tmp_path / "logs"))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "1 of 4 jobs failed (jobs 2)" in result.stderr
    sweep = tmp_path / "logs" / "mnist_mlp" / "multirun_001"
    rows = read_summary(sweep)
    assert [(r["job"], r["optimizer.lr"], r["status"]) for r in rows] == [
        ("0", "0.01", "completed"), ("1", "0.001", "completed"), ("2", "-1", "failed"), ("3", "0.005", "completed")]
    assert "Invalid learning rate: -1" in rows[2]["error"]
    assert "Invalid learning rate: -1" in (sweep / "2" / "failure.txt").read_text()  # the whole traceback
    assert all((sweep / str(job) / "metrics.json").is_file() for job in (0, 1, 3))
    completed = [r for r in rows if r["status"] == "completed"]
    best = max(completed, key=lambda r: float(r["val/acc"]))  # the first of equals, as the summary picks
    assert [r["job"] for r in rows if r["best"] == "*"] == [best["job"]]
    assert all(float(r["test/acc"]) > 0.1 and float(r["wall_s"]) > 0 and r["best_epoch"] != "" for r in completed)
    png = (sweep / "summary.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "| 2 | -1 | failed |" in (sweep / "summary.md").read_text()

    # On demand, for an existing sweep folder: the same table.
    before = (sweep / "summary.csv").read_text()
    (sweep / "summary.csv").unlink()
    again = subprocess.run([sys.executable, "-m", "lightlab.sweep_summary", str(sweep)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (sweep / "summary.csv").read_text() == before


def test_seed_sweeps_report_mean_and_spread_per_configuration(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    fixed = [o for o in quick_overrides(data, tmp_path / "logs") if not o.startswith("model.hidden_dims")]
    result = run_cli("-m", "seed=0,1", "model.hidden_dims=[8],[32]", *fixed, "trainer.max_epochs=1",
                     "optimizer.lr=0.003")
    assert result.returncode == 0, result.stderr[-2000:]
    sweep = tmp_path / "logs" / "mnist_mlp" / "multirun_001"
    rows = read_summary(sweep)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    markdown = (sweep / "summary.md").read_text().split("over seeds")[1]
    for width in ("[8]", "[32]"):
        values = [float(r["val/acc"]) for r in rows if r["model.hidden_dims"] == width]
        line = next(line for line in markdown.splitlines() if f"model.hidden_dims={width} |" in line)
        assert f"| 2 | {statistics.mean(values):.6g} |" in line


def test_a_job_whose_metric_is_not_finite_counts_as_failed(tmp_path):
    import json

    from lightlab.sweep_summary import job_rows, record_outcome

    for job, value in ((0, 0.9), (1, float("nan"))):
        folder = tmp_path / str(job)
        folder.mkdir()
        record_outcome(folder, [f"optimizer.lr={job}"], 1.0)
        (folder / "metrics.json").write_text(json.dumps({"best_checkpoint": None, "metrics": {"val/acc": value}}))
    rows = job_rows(tmp_path, "val/acc")
    assert [(r["status"], r["objective"]) for r in rows] == [("completed", 0.9), ("failed", None)]
    assert rows[1]["error"] == "val/acc is nan (not a finite number)"
