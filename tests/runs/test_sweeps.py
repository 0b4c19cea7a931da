"""Multirun: failed jobs are recorded and the others still run; the sweep's summary table, plot and exit code."""
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest

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
    assert "'optimizer.lr' is -1: must be at least 0" in rows[2]["error"]
    assert "'optimizer.lr' is -1: must be at least 0" in (sweep / "2" / "failure.txt").read_text()  # the traceback
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
    again = subprocess.run([sys.executable, "-m", "lightlab.sweeps.summary", str(sweep)], cwd=ROOT, capture_output=True,
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

    from lightlab.sweeps.summary import job_rows, record_outcome

    for job, value in ((0, 0.9), (1, float("nan"))):
        folder = tmp_path / str(job)
        folder.mkdir()
        record_outcome(folder, [f"optimizer.lr={job}"], 1.0)
        (folder / "metrics.json").write_text(json.dumps({"best_checkpoint": None, "metrics": {"val/acc": value}}))
    rows = job_rows(tmp_path, "val/acc")
    assert [(r["status"], r["objective"]) for r in rows] == [("completed", 0.9), ("failed", None)]
    assert rows[1]["error"] == "val/acc is nan (not a finite number)"


def test_a_killed_sweep_rerun_skips_finished_jobs_resumes_the_interrupted_one_and_ends_the_same(tmp_path):
    data = write_tiny_mnist(tmp_path / "data")
    # Deterministic jobs (no dropout) of 3 epochs, epochs 2 and 3 held 0.4 s so that the sweep can be killed mid-job.
    sweep_command = ["-m", "optimizer.lr=0.01,0.003,0.002,0.001", "sweep_name=grid", "model.dropout=0",
                     *[o for o in quick_overrides(data, tmp_path / "logs") if "max_epochs" not in o],
                     "trainer.max_epochs=3", "+callbacks.pause._target_=tests.slow_epochs.PauseBeforeEpoch",
                     "+callbacks.pause.seconds=0.4"]
    reference = run_cli(*[o.replace(str(tmp_path / "logs"), str(tmp_path / "reference")) for o in sweep_command])
    assert reference.returncode == 0, reference.stderr[-2000:]

    sweep = tmp_path / "logs" / "mnist_mlp" / "grid"
    with open(tmp_path / "killed.log", "w") as log:
        process = subprocess.Popen([sys.executable, "run.py", *sweep_command], cwd=ROOT, stdout=log, stderr=log,
                                   start_new_session=True)
        deadline = time.monotonic() + 240
        while not (sweep / "2" / "pausing_before_epoch_1").is_file():  # job 3 has checkpointed its first epoch
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert json.loads((sweep / "2" / "status.json").read_text())["status"] == "started"
    assert not (sweep / "3").exists()
    finished = {job: (sweep / str(job) / "metrics.json").stat().st_mtime_ns for job in (0, 1)}

    resumed = run_cli(*sweep_command)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for job in (0, 1):
        assert f"{sweep / str(job)}: completed in an earlier run of this command, not run again" in resumed.stdout
        assert (sweep / str(job) / "metrics.json").stat().st_mtime_ns == finished[job]
    assert f"{sweep / '2'}: continuing the interrupted job from {sweep / '2' / 'checkpoints' / 'last.ckpt'}" \
        in resumed.stdout
    timings = {"wall_s", "train/epoch_seconds", "train/samples_per_second"}  # clocks, not results
    without_time = [[{k: v for k, v in row.items() if k not in timings} for row in read_summary(folder)]
                    for folder in (sweep, tmp_path / "reference" / "mnist_mlp" / "grid")]
    assert "train/samples_per_second" in read_summary(sweep)[0]  # the timings are the only columns left out
    assert without_time[0] == without_time[1]
    assert [row["status"] for row in without_time[0]] == ["completed"] * 4


def test_optuna_study_prunes_by_the_configured_pruner_and_a_rerun_continues_the_study(tmp_path):
    import optuna

    data = write_tiny_mnist(tmp_path / "data")
    # Only the learning rate is searched (over a range where small values learn slowly), so some trials fall
    # behind the others after an epoch and the median pruner stops them.
    search = ("hydra.sweeper.params={data.batch_size:32,model.hidden_dims:'[32]',model.dropout:0,"
              "optimizer.weight_decay:0,optimizer.lr:'tag(log,interval(1e-5,1e-1))'}")
    fixed = [o for o in quick_overrides(data, tmp_path / "logs")
             if o.split("=")[0] not in ("data.batch_size", "model.hidden_dims", "trainer.max_epochs")]
    command = ["-m", "hparams_search=mnist_optuna", search, *fixed, "trainer.max_epochs=4", "sweep_name=study"]
    first = run_cli(*command, "hydra.sweeper.n_trials=10")
    assert first.returncode == 0, first.stderr[-3000:]
    sweep = tmp_path / "logs" / "mnist_mlp" / "study"
    study = optuna.load_study(study_name="mnist_mlp", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = study.get_trials()
    assert len(trials) == 10 and {t.state.name for t in trials} == {"COMPLETE", "PRUNED"}

    rows = read_summary(sweep)
    assert [int(r["job"]) for r in rows] == [t.number for t in trials]  # one job folder per trial
    for trial, row in zip(trials, rows):
        assert row["status"] == {"COMPLETE": "completed", "PRUNED": "pruned"}[trial.state.name]
        assert float(row["optimizer.lr"]) == trial.params["optimizer.lr"]
        if trial.state.name == "PRUNED":  # at the first epoch after the warm-up, below the median of earlier trials
            epoch = max(trial.intermediate_values)
            assert row["error"] == f"pruned at epoch {epoch} (val/acc {trial.intermediate_values[epoch]:.4g})"
            assert epoch >= 1 and row["test/acc"] == ""
            earlier = [t.intermediate_values[epoch] for t in trials[:trial.number] if t.state.name == "COMPLETE"]
            assert trial.intermediate_values[epoch] < statistics.median(earlier)  # MedianPruner's rule
        else:
            assert sorted(trial.intermediate_values) == [0, 1, 2, 3] and float(row["test/acc"]) > 0
    assert 1 <= sum(t.state.name == "PRUNED" for t in trials) <= 6

    # A sweep killed during trial 10 leaves it RUNNING in the study and "started" in its folder.
    killed = study.ask()
    (sweep / "10").mkdir()
    (sweep / "10" / "status.json").write_text(json.dumps({"status": "started", "overrides": [], "wall_s": 0.0}))
    statuses = {job: (sweep / str(job) / "status.json").stat().st_mtime_ns for job in range(10)}
    again = run_cli(*command, "hydra.sweeper.n_trials=12")
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name="mnist_mlp", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(13)) and killed.number == 10
    assert ([t.state.name for t in trials][10] == "FAIL"
            and {t.state.name for t in trials[11:]} <= {"COMPLETE", "PRUNED"})
    assert all((sweep / str(job) / "status.json").stat().st_mtime_ns == statuses[job] for job in range(10))
    rows = read_summary(sweep)
    assert [int(r["job"]) for r in rows] == list(range(13)) and rows[10]["status"] == "interrupted"


def test_optuna_search_space_syntax():
    import optuna

    from hydra_plugins.lightlab_optuna_sweeper.optuna_sweeper import search_space
    from lightlab.base.errors import UserError

    space = search_space({"lr": "tag(log, interval(1e-5, 1e-1))", "width": "int(interval(8, 64))",
                          "batch": "choice(32, 64)", "layers": "choice([8], [16, 8])", "steps": "range(2, 10, 2)",
                          "fixed": "[1, 2]"})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        values = {key: suggest(trial) for key, suggest in space.items()}
        assert 1e-5 <= values["lr"] <= 1e-1 and isinstance(values["lr"], float)
        assert isinstance(values["width"], int) and 8 <= values["width"] <= 64
        assert values["batch"] in ("32", "64") and values["layers"] in ("[8]", "[16,8]")
        assert values["steps"] in (2, 4, 6, 8) and values["fixed"] == "[1,2]"
        study.tell(trial, 0.0)
    assert study.trials[0].distributions["lr"].log and not study.trials[0].distributions["width"].log
    with pytest.raises(UserError, match="hydra.sweeper.params.x=glob"):
        search_space({"x": "glob(*)"})


def test_parallel_launcher_runs_jobs_in_their_own_processes_with_a_share_of_the_cores(tmp_path):
    import joblib

    data = write_tiny_mnist(tmp_path / "data")
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # joblib's own choice
    result = subprocess.run([sys.executable, "run.py", "-m", "hydra/launcher=parallel", "optimizer.lr=0.01,0.003",
                             *quick_overrides(data, tmp_path / "logs"), "+callbacks.pause._target_=tests.slow_epochs."
                             "PauseBeforeEpoch", "+callbacks.pause.seconds=2"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-3000:]
    sweeps = list((tmp_path / "logs" / "mnist_mlp").iterdir())
    assert [s.name for s in sweeps] == ["multirun_001"]  # the workers found the folder the parent claimed
    rows = read_summary(sweeps[0])
    assert [r["status"] for r in rows] == ["completed", "completed"]
    for job in ("0", "1"):
        summary = json.loads((sweeps[0] / job / "metrics.json").read_text())
        assert summary["torch_threads"] == max(joblib.cpu_count() // 2, 1)  # joblib's count: affinity, cgroups
    # The two jobs (each over 2 s: the second epoch waits 2 s) ran at the same time.
    (start_0, end_0), (start_1, end_1) = [(s["finished_at"] - s["wall_s"], s["finished_at"]) for s in (
        json.loads((sweeps[0] / job / "status.json").read_text()) for job in ("0", "1"))]
    assert start_0 < end_1 and start_1 < end_0


def test_slurm_launcher_takes_nodes_and_tasks_from_the_trainer_and_its_local_mode_runs_a_sweep(tmp_path):
    from hydra import compose, initialize_config_dir

    from lightlab.run.compose import CONFIG_DIR
    from lightlab.run.folders import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                                           "trainer.num_nodes=2"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (launcher.timeout_min, launcher.signal_delay_s, launcher.max_num_timeout) == (240, 120, 3)

    data = write_tiny_mnist(tmp_path / "data")
    result = run_cli("-m", "hydra/launcher=slurm_local", "optimizer.lr=0.01,0.003",
                     *quick_overrides(data, tmp_path / "logs"))
    assert result.returncode == 0, result.stderr[-3000:]
    sweep = tmp_path / "logs" / "mnist_mlp" / "multirun_001"
    assert [r["status"] for r in read_summary(sweep)] == ["completed", "completed"]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # submitted and collected by submitit


def test_gpu_launcher_gives_every_worker_process_one_gpu_and_each_gpu_its_jobs_per_gpu(tmp_path, monkeypatch):
    """hydra/launcher=gpus on a pretend 2-GPU machine with 2 jobs per GPU: four worker processes each claim a slot
    (the real claim, in real processes) and see exactly one GPU; a slot whose process ended is claimed again."""
    import pickle

    from hydra import compose, initialize_config_dir

    from lightlab.run.compose import CONFIG_DIR
    from lightlab.run.folders import register_resolvers
    from lightlab.sweeps.device_slots import OneGPUPerJob

    register_resolvers()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=gpus", "hydra.callbacks.one_gpu_per_job.jobs_per_gpu=2",
                                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], return_hydra_config=True)
    assert cfg.hydra.launcher.n_jobs == 4
    assert cfg.hydra.launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    OneGPUPerJob(2).on_multirun_start(cfg)  # the sweep's process counts the GPUs once
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")

    (tmp_path / "config.pickle").write_bytes(pickle.dumps(cfg))
    release = tmp_path / "release"  # a worker lives (holding its slot) until this file exists
    worker = ("import os, pickle, sys, time; from lightlab.sweeps.device_slots import OneGPUPerJob; "
              f"cfg = pickle.load(open({str(tmp_path / 'config.pickle')!r}, 'rb')); "
              "callback = OneGPUPerJob(2); callback.on_job_start(cfg); callback.on_job_start(cfg); "
              "print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); "
              f"[time.sleep(0.05) for _ in iter(lambda: os.path.exists({str(release)!r}), True)]")
    workers = [subprocess.Popen([sys.executable, "-c", worker], cwd=ROOT, stdout=subprocess.PIPE, text=True)
               for _ in range(4)]  # each runs two jobs and keeps its slot
    assert sorted(process.stdout.readline().strip() for process in workers) == ["3", "3", "5", "5"]
    late = subprocess.run([sys.executable, "-c", worker], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "all 4 GPU slots" in late.stderr  # a fifth process while four hold the slots
    release.touch()
    for process in workers:
        process.wait(timeout=60)
    again = subprocess.run([sys.executable, "-c", worker], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "3"  # the first slot, freed by its ended process
