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

A job's outcome (completed, failed, pruned) is recorded by rank 0. The other ranks exit 0 even when the job fails:
Lightning's watchdog kills the whole process (the sweep, with every later job) when a rank exits non-zero. A rank
that dies alone still ends the job: rank 0's next collective then fails (gloo reports the closed connection).
"""
import os
import subprocess
import sys
import types
from unittest import mock

import torch.distributed
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers import subprocess_script
from pytorch_lightning.utilities.exceptions import SIGTERMException

from lightlab.base.project import RUN_SCRIPT
from lightlab.lightning_internals.trainer_state import stop_after_this_step

# What Lightning's launch changes in this process: the rendezvous variables, and the thread count it divides
# among the ranks. All are put back when the job ends.
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")
RANK_OF_JOB = "LIGHTLAB_RANK_OF_JOB"  # set in the ranks this module starts: run.py lets rank 0 report the job
_started: list[tuple[dict, int, list]] = []  # (environment, torch threads, rank processes) per launch


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
        os.environ[RANK_OF_JOB] = "1"
        try:
            with mock.patch.object(subprocess_script, "_hydra_subprocess_cmd", job_command):
                super()._call_children_scripts()
        finally:
            del os.environ[RANK_OF_JOB]
        _started.append((environment, torch.get_num_threads(), self.procs))


class JobDDPStrategy(DDPStrategy):
    def _configure_launcher(self) -> None:
        self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def setup_environment(self) -> None:
        super().setup_environment()
        # Lightning 2.6 under DDP reads each process's own SIGTERM flag in places the ranks are not in step (the end
        # of an epoch, of a training or validation batch): a signal that lands in one rank before such a check and in
        # the other after it (or in one rank only) stops one rank while the other waits in a collective, and the job
        # hangs (its handler also broadcasts from inside itself, wherever each rank was interrupted). Here a signal is
        # only noted, and the ranks agree on it before every training step: all stop at the same step if any was
        # signalled. One that comes after the last step does not stop the run; it ends as it would have. (A single
        # process, e.g. trainer=ddp on a machine with one GPU, keeps Lightning's handler: it has no one to agree with.)
        if self.world_size == 1:
            return
        trainer = self.lightning_module.trainer
        trainer._signal_connector.stop_requested = False
        trainer._signal_connector._sigterm_notifier_fn = types.MethodType(note_sigterm, trainer._signal_connector)
        trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = types.MethodType(
            agree_on_stop, trainer.fit_loop.epoch_loop)


def note_sigterm(connector, signum, frame) -> None:
    """Lightning's SIGTERM handler under JobDDPStrategy: forwards the signal to the ranks this process started, once,
    and notes it for `agree_on_stop`."""
    if not connector.stop_requested and connector.trainer.strategy.launcher is not None:
        connector.trainer.strategy.launcher.kill(signum)
    stop_after_this_step(connector.trainer)


def agree_on_stop(epoch_loop) -> None:
    """Before each training step (in place of Lightning's broadcast of rank 0's flag): whether any rank was asked to
    stop. If one was, every rank raises SIGTERMException here, at the same step, with Lightning's flag set."""
    trainer = epoch_loop.trainer
    flag = torch.tensor([int(trainer._signal_connector.stop_requested)], device=trainer.strategy.root_device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item():
        trainer._signal_connector.received_sigterm = True
        torch.distributed.barrier()
        raise SIGTERMException()


def end_ranks(timeout_s: float = 120) -> None:
    """After a job: wait for the ranks it started (killing any still running after `timeout_s`, e.g. stuck in a
    collective after rank 0 failed), close the process group, restore the environment and thread count."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    while _started:
        environment, threads, processes = _started.pop()
        try:
            for process in processes:
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        finally:
            for name, value in environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            torch.set_num_threads(threads)
