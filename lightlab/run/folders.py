"""Run and sweep directories that never collide.

`hydra.run.dir` is `${numbered_dir:<parent>,run,${run_name}}`: with a run name the directory is
`<parent>/<run_name>` (a stable identity: the same name is the same run); without one, the next free
`<parent>/run_NNN` is claimed with an atomic `mkdir`, so two runs started in the same second (or on
two machines sharing the disk) still get different directories.
"""
import dataclasses
import functools
import logging
import os
import re
import shutil
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


@functools.cache  # Hydra re-reads hydra.sweep.dir for every job of a sweep: one process, one directory
def numbered_dir(parent: str, prefix: str, name: str | None = None) -> str:
    if name:
        return str(Path(parent) / name)
    Path(parent).mkdir(parents=True, exist_ok=True)
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)$")
    taken = [int(m.group(1)) for entry in os.listdir(parent) if (m := pattern.match(entry))]
    number = max(taken, default=0) + 1
    while True:
        candidate = Path(parent) / f"{prefix}_{number:03d}"
        try:
            candidate.mkdir()  # atomic: exactly one process wins each name
            return str(candidate)
        except FileExistsError:
            number += 1


def run_dir(mode: str, checkpoint: str | None, parent: str, name: str | None = None) -> str:
    """hydra.run.dir. Training: `<parent>/run_NNN` (or `<parent>/<name>`). mode=test, predict or export: a folder
    `<mode>_NNN` inside the run that wrote the checkpoint (`<run>/checkpoints/x.ckpt`), so an evaluation sits
    beside what it evaluates and never overwrites the run's own files."""
    run = checkpoint_run_folder(checkpoint) if mode != "train" else None
    # (A checkpoint outside a run is refused before this is resolved: lightlab/run/job.py, CheckBeforeWriting.)
    return numbered_dir(str(run) if run else parent, "run" if mode == "train" else mode, name)


def checkpoint_run_folder(checkpoint: str | None) -> Path | None:
    """The run that wrote `checkpoint` (`<run>/checkpoints/<file>.ckpt`), or None for a path that is not one."""
    path = Path(checkpoint).expanduser().resolve() if checkpoint else None
    return path.parent.parent if path and path.is_file() and path.parent.name == "checkpoints" else None


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("numbered_dir"):
        # use_cache: the value travels inside the config (Hydra copies the cache into every job's config), so
        # jobs that the joblib launcher runs in other processes get the sweep folder the parent claimed.
        OmegaConf.register_new_resolver("numbered_dir", numbered_dir, use_cache=True)
        OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True)
    if not OmegaConf.has_resolver("gpu_slots"):  # hydra/launcher=gpus: worker processes = GPUs x jobs per GPU
        from lightlab.sweeps.device_slots import gpu_slots
        OmegaConf.register_new_resolver("gpu_slots", gpu_slots)


class ResolveSweepDirectory(Callback):
    """Hydra's launcher resolves hydra.sweep.dir before it sets HydraConfig, so the ${hydra:runtime.choices...}
    inside experiment_name would fail there; this sets it first (the same config the jobs start from)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        HydraConfig.instance().set_config(config)


@dataclasses.dataclass
class FolderPlan:
    """What lightlab/run/job.py's CheckBeforeWriting learnt about a single run's folder before Hydra made it."""
    named: bool = False      # chosen by the user (run_name=…, hydra.run.dir=…): a stable folder, never numbered
    numbered: bool = False   # a fresh run_NNN / <mode>_NNN, made by this run
    new: Path | None = None  # the outermost folder this run makes on the way to its own (None: they all exist)


PLAN = FolderPlan()  # one process, one single run (sweep jobs and DDP ranks leave it as it is: nothing to remove)


def plan_folder(config: DictConfig, task: DictConfig) -> FolderPlan:
    """Before Hydra resolves hydra.run.dir (which makes a numbered folder): whose folder this run writes into."""
    shipped = str(OmegaConf.to_container(config.hydra.run, resolve=False)["dir"]).startswith("${run_dir:")
    if shipped and task.run_name is None:  # run_NNN in <log_dir>/<experiment>, or <mode>_NNN in the checkpoint's run
        parent = Path(task.paths.log_dir) / task.experiment_name if task.mode == "train" else None
        return FolderPlan(numbered=True, new=first_missing(parent) if parent else None)
    return FolderPlan(named=True, new=first_missing(Path(config.hydra.run.dir)))  # (resolving it makes nothing)


def first_missing(path: Path) -> Path | None:
    """The outermost folder on the way to `path` (itself included) that does not exist yet; None if `path` does."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


# What a run's folder holds before the run has any result: besides Hydra's files, the resolved config and the
# provenance (lightlab/run/record.py), a named run's status.json ("started"), and the hparams.yaml Lightning's
# TensorBoard logger writes when a run ends, also one refused by its data (settings, not results).
BEFORE_RESULTS = {"config.yaml", "provenance.json", "status.json", "hparams.yaml"}


def empty_event_file(path: Path) -> bool:
    """A TensorBoard event file that holds no summary yet (a logger opened by a callback's setup, before the data)."""
    if not path.name.startswith("events.out.tfevents"):
        return False
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return not any(event.HasField("summary") for event in EventFileLoader(str(path)).Load())


def remove_refused_run(folder: Path, plan: FolderPlan | None = None) -> bool:
    """A run refused (exit 2) before it had any result (data that does not load, a size the data does not allow)
    removes its folder, and the empty folders it made above it, so a refused run leaves nothing. A folder that held
    anything before this run, or holds events, checkpoints or other results of it, is left as it is."""
    from lightlab.sweeps.summary import before_the_job  # (here, not at start-up: run.py imports this module)

    plan = plan or PLAN
    top = folder.absolute() if plan.numbered and plan.new is None else plan.new
    if top is None or not folder.is_dir() or top not in (folder.absolute(), *folder.absolute().parents):
        return False
    if any(entry.name not in before_the_job() | BEFORE_RESULTS and not empty_event_file(entry)
           for entry in folder.iterdir()):
        return False
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)  # Hydra's run.log, inside the folder
        handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.absolute().parents:  # up to `top`, while empty: another run may have started beside
        if top not in (parent, *parent.parents):
            break
        try:
            parent.rmdir()
        except OSError:
            break
    return True
