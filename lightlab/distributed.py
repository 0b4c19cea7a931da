"""DDP that works the same in a single run and inside a Hydra multirun (conf/trainer/ddp_cpu.yaml, ddp.yaml).

Lightning starts ranks 1..N-1 by re-running the script with the parent's command line. Under `python run.py -m`
that command line is the whole sweep, so every rank would start a sweep of its own (lightning-hydra-template
#393; Lightning reverted its fix, PR #15737). `JobDDPStrategy` starts each rank as a *single run of this job*:
`python run.py --config-path=<this job's folder> --config-name=config hydra.run.dir=<this job's folder>`, so the
ranks share the job's folder and config whether the job came from a run, a multirun, the joblib launcher or the
Optuna sweeper.

Lightning also leaves the process group and its MASTER_PORT / LOCAL_RANK variables behind after fit; the next
job of a sweep would then believe its ranks already exist and wait for them forever. `end_ranks` (called by
run.py when a job ends) waits for the job's ranks, closes the group and restores the environment.
"""
import os
import sys
from pathlib import Path
from unittest import mock

import torch.distributed
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import subprocess_script

RUN_SCRIPT = Path(__file__).resolve().parent.parent / "run.py"  # not sys.argv[0]: joblib workers run jobs too
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_started: list[tuple[dict, list]] = []  # (the environment before the launch, the rank processes) per launch


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command line of one more rank of the current Hydra job, and the directory to start it in.
    The rank runs the very config rank 0 saved in the job's folder before fit began (run.py writes it), so
    whatever rank 0 settled on, such as the checkpoint a re-run sweep job resumes from, holds for every rank."""
    hydra = HydraConfig.get()
    run_dir = hydra.runtime.output_dir
    command = [sys.executable, str(RUN_SCRIPT), f"--config-path={run_dir}", "--config-name=config",
               f'hydra.run.dir="{run_dir}"', "hydra.output_subdir=null", f"hydra.job.name=rank_{local_rank}"]
    return command, hydra.runtime.cwd


class JobLauncher(subprocess_script._SubprocessScriptLauncher):
    def _call_children_scripts(self) -> None:
        environment = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
        # Lightning's launcher, with its Hydra command line replaced by this job's.
        with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", job_command):
            super()._call_children_scripts()
        _started.append((environment, self.procs))


class JobDDPStrategy(DDPStrategy):
    def _configure_launcher(self) -> None:
        self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)


def end_ranks(timeout_s: float = 300) -> None:
    """After a job: wait for the ranks it started, close the process group, restore MASTER_PORT & co."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    while _started:
        environment, processes = _started.pop()
        for process in processes:
            process.wait(timeout=timeout_s)
        for name, value in environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
