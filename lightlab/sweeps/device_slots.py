"""hydra/launcher=gpus: a sweep's jobs run in parallel, each process on one GPU that it alone sees.

Built on hydra-joblib-launcher: `n_jobs` = GPUs x jobs_per_gpu worker processes. When a worker runs its first job
it claims a free slot (an atomic mkdir in the sweep folder) and keeps it for its life; slot k is GPU k mod GPUs,
and the worker's CUDA_VISIBLE_DEVICES is that one GPU, set before anything in it touches CUDA. So each GPU holds
jobs_per_gpu jobs at a time and no job can allocate on another job's GPU. The GPUs are counted once, by the
sweep's own process (`on_multirun_start`), and handed to the workers in the sweep folder.
"""
import json
import os
import shutil
from pathlib import Path

from hydra.experimental.callback import Callback

from lightlab.base.files import write_json, write_text

LAUNCHER = "gpus"  # conf/hydra/launcher/gpus.yaml


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU torch finds."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d]
    import torch
    return [str(index) for index in range(torch.cuda.device_count())]


def gpu_slots(jobs_per_gpu: int) -> int:
    """hydra.launcher.n_jobs for hydra/launcher=gpus: one worker process per job that runs at once."""
    return max(len(visible_gpus()), 1) * jobs_per_gpu


def claim_slot(folder: Path, slots: int) -> int:
    """This process's slot under `folder`: the one it holds, else the first free one (or one whose process ended)."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        owner_file = folder / str(slot) / "pid"
        try:
            (folder / str(slot)).mkdir()  # atomic: one process wins each free slot
        except FileExistsError:
            owner = owner_file.read_text() if owner_file.is_file() else ""
            if owner == str(os.getpid()):
                return slot
            if not owner or process_alive(int(owner)):
                continue
        write_text(owner_file, str(os.getpid()))  # whole: another worker may read it at once
        return slot
    raise RuntimeError(f"all {slots} GPU slots under {folder} are held by running processes")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class OneGPUPerJob(Callback):
    def __init__(self, jobs_per_gpu: int):
        self.jobs_per_gpu = jobs_per_gpu

    @staticmethod
    def active(config) -> bool:
        return config.hydra.runtime.choices.get("hydra/launcher") == LAUNCHER

    def on_multirun_start(self, config, **kwargs) -> None:
        if self.active(config):
            folder = Path(config.hydra.sweep.dir) / ".gpu_slots"
            shutil.rmtree(folder, ignore_errors=True)  # a re-run sweep's old claims: no worker exists yet
            folder.mkdir(parents=True)
            write_json(folder / "gpus.json", visible_gpus())

    def on_job_start(self, config, **kwargs) -> None:
        if not self.active(config):
            return
        folder = Path(config.hydra.sweep.dir) / ".gpu_slots"
        gpus = json.loads((folder / "gpus.json").read_text())
        if not gpus:
            raise RuntimeError("hydra/launcher=gpus found no GPU; use hydra/launcher=parallel on a CPU machine.")
        slot = claim_slot(folder, len(gpus) * self.jobs_per_gpu)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
