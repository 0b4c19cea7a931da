"""What a process imports before it does anything: `python run.py --help` answers without torch or Lightning (a
module-level import of either in run.py's own imports would cost every --help and every mistake ~1.5 s), and a
training run without figures imports no matplotlib (torchmetrics would, for its own plots: ~0.4 s)."""
import gc
import subprocess
import sys

import pytorch_lightning as pl

from tests.conftest import ROOT, quick_overrides, run_cli


class CollectorState(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        from lightlab.lightning_internals.hydra_mode import ran

        print(f"COLLECTOR enabled={gc.isenabled()} frozen={gc.get_freeze_count()}", flush=True)
        print(f"MODE_WITHOUT_COMPOSING {ran['mode_without_composing']}", flush=True)


def imported_modules(importtime_stderr: str) -> set[str]:
    return {line.split("|")[-1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")}


def test_help_imports_neither_torch_nor_lightning():
    result = subprocess.run([sys.executable, "-X", "importtime", "run.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0 and "== Configuration groups ==" in result.stdout
    imported = imported_modules(result.stderr)
    assert "hydra" in imported  # (the importtime lines were read)
    assert not {name for name in imported if name.split(".")[0] in ("torch", "pytorch_lightning", "pandas")}


def test_a_run_without_figures_imports_no_matplotlib_and_one_with_a_figure_draws_it(tiny_data, tmp_path):
    quick = [*quick_overrides(tiny_data, tmp_path / "logs"), "trainer.max_epochs=1"]
    result = subprocess.run([sys.executable, "-X", "importtime", "run.py", *quick], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    imported = imported_modules(result.stderr)
    assert {"torchmetrics.utilities.plot", "pytorch_lightning"} <= imported
    assert not {name for name in imported if name.split(".")[0] == "matplotlib"}
    # matplotlib is still there for lightlab's own figures: the LR finder's plot goes into TensorBoard
    result = subprocess.run([sys.executable, "run.py", *quick, "lr_finder.enabled=true", "lr_finder.num_steps=8"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [figure] = (tmp_path / "logs").rglob("lr_finder.png")
    assert figure.read_bytes().startswith(b"\x89PNG") and figure.stat().st_size > 5000


def test_lightlab_keeps_matplotlib_out_of_torchmetrics_import_and_matplotlib_still_imports():
    code = ("import sys, lightlab, pytorch_lightning, torchmetrics\n"
            "from lightlab.lightning_internals.dependency_waits import ran\n"
            "print(ran['torchmetrics_without_matplotlib'], 'matplotlib' in sys.modules)\n"
            "import matplotlib.pyplot, torch\n"
            "print(float(torchmetrics.Accuracy(task='multiclass', num_classes=3)(torch.tensor([0, 2]), "
            "torch.tensor([0, 1]))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False", "0.5"]


def test_a_runs_start_up_objects_are_frozen_and_a_sweep_collects_as_usual(tiny_data, tmp_path):
    # run.py pauses the garbage collector while torch and Lightning load; Job.run freezes what they built (so no
    # later collection scans it) and turns collection back on. A sweep's process turns it back on at the sweep's
    # start (it lives as long as the sweep), so its jobs find it on and freeze nothing.
    callback = "+callbacks.collector._target_=tests.runs.test_startup.CollectorState"
    single = run_cli(*quick_overrides(tiny_data, tmp_path / "logs"), "trainer.max_epochs=1", callback)
    assert single.returncode == 0, single.stderr[-2000:]
    [state] = [line.split()[1:] for line in single.stdout.splitlines() if line.startswith("COLLECTOR")]
    assert state[0] == "enabled=True" and int(state[1].removeprefix("frozen=")) > 100_000  # torch's, Lightning's
    assert "MODE_WITHOUT_COMPOSING 1" in single.stdout  # no config sets hydra.mode: composed once
    sweep = run_cli("-m", "seed=0,1", *quick_overrides(tiny_data, tmp_path / "sweep_logs"), "trainer.max_epochs=1",
                    callback)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    states = [line.split()[1:] for line in sweep.stdout.splitlines() if line.startswith("COLLECTOR")]
    assert states == [["enabled=True", "frozen=0"]] * 2, sweep.stdout
    assert "MODE_WITHOUT_COMPOSING 1" in sweep.stdout


def test_an_experiment_that_sets_hydra_mode_to_multirun_sweeps_without_dash_m(tiny_data, tmp_path):
    # hydra_mode.py reads hydra.mode without composing only when no config file can set it: here one does
    experiments = tmp_path / "more_conf" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "self_sweep.yaml").write_text("# @package _global_\nhydra:\n  mode: MULTIRUN\n  sweeper:\n"
                                                 "    params:\n      seed: 0,1\n")
    result = run_cli("--config-dir", str(tmp_path / "more_conf"), "experiment=self_sweep",
                     *quick_overrides(tiny_data, tmp_path / "logs"), "trainer.max_epochs=1",
                     "+callbacks.collector._target_=tests.runs.test_startup.CollectorState")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("MODE_WITHOUT_COMPOSING 0") == 2  # two sweep jobs, Hydra's own get_mode
    assert len(list((tmp_path / "logs").rglob("metrics.json"))) == 2, sorted((tmp_path / "logs").rglob("*"))
