"""Run and sweep directories that never collide.

`hydra.run.dir` is `${numbered_dir:<parent>,run,${run_name}}`: with a run name the directory is
`<parent>/<run_name>` (a stable identity: the same name is the same run); without one, the next free
`<parent>/run_NNN` is claimed with an atomic `mkdir`, so two runs started in the same second (or on
two machines sharing the disk) still get different directories.
"""
import functools
import os
import re
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf


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
