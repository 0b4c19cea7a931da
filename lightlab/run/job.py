"""What one `python run.py …` process is, decided once, and how its outcome becomes an exit code.

    run          mode=train in a fresh <experiment>/run_NNN folder
    named run    mode=train with run_name=… or hydra.run.dir=…: a stable folder; the same command again continues it,
                 or says it is complete (status.json, as for a sweep job); another command is refused there
    sweep job    one job of `-m`: recorded in its folder (status.json, failure.txt); a failure does not stop the sweep
    DDP rank     a rank that rank 0 of a job started (lightlab/lightning_internals/ddp_launch.py): rank 0 reports
    checkpoint   mode=test / predict / export of ckpt_path, with the config of the run that wrote it

Exit codes (README, "Exit codes"): 0 done; 1 a crash (a bug, an error we did not foresee: the traceback, and
failure.txt in the run's folder); 2 bad config, data or checkpoint (one paragraph naming the key or file and the fix;
config and checkpoint-mode mistakes are refused before any folder is made); 130 Ctrl-C and 143 SIGTERM (stopped with
a checkpoint to continue from). A sweep exits 1 when any of its jobs failed (lightlab/sweeps/summary.py).
A single run refused with exit 2 before it has any result (data that does not load, say) removes the folders it
made (lightlab/run/folders.py): a refused run leaves nothing. Any other failure leaves its folder marked failed:
status.json and failure.txt.
"""
import gc
import logging
import os
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from lightlab.base.errors import UserError
from lightlab.base.ranks import is_rank_zero

EXIT_CRASH, EXIT_BAD_INPUT = 1, 2  # 130 / 143 (128 + the signal's number): lightlab/callbacks/preemption.py


def refuse(error: UserError):
    print(f"error: {error}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


class Job:
    def __init__(self, cfg: DictConfig):
        from lightlab.lightning_internals.ddp_launch import RANK_OF_JOB

        hydra = HydraConfig.get()
        self.cfg, self.overrides, self.started = cfg, list(hydra.overrides.task), time.monotonic()
        self.in_sweep = hydra.mode == RunMode.MULTIRUN
        self.ddp_rank = RANK_OF_JOB in os.environ
        from lightlab.run.folders import PLAN

        named = PLAN.named and cfg.mode == "train"
        self.kind = ("DDP rank" if self.ddp_rank else "sweep job" if self.in_sweep else
                     "checkpoint" if cfg.mode != "train" else "named run" if named else "run")
        self.tracked = self.kind in ("sweep job", "named run")  # a folder with a stable identity: resumable
        self.folder = Path(cfg.paths.output_dir)

    def run(self, train, use_checkpoint) -> float | None:
        """train(cfg) or use_checkpoint(cfg) -> the run's summary; returns what sweepers optimise."""
        from lightlab.lightning_internals.ddp_launch import end_ranks
        from lightlab.sweeps.summary import objective, record_outcome, resume_job

        if not gc.isenabled():  # run.py paused the collector for a single run's start-up
            gc.freeze()  # what exists now lives as long as the process: no collection need scan it again
            gc.enable()
        try:
            earlier = resume_job(self.cfg, self.overrides) if self.tracked else None
            if earlier is not None:  # completed by an earlier run of this command: not run, nothing recorded
                return objective(earlier["metrics"], self.cfg.monitor)
            metrics = self.metrics(train, use_checkpoint)
        except Exception as error:
            return self.failed(error)
        except SystemExit:
            return self.stopped()
        finally:
            if os.environ.get("LOCAL_RANK") == "0":  # this job started DDP ranks: end them before the next job
                end_ranks()
        if self.tracked:
            record_outcome(self.folder, self.overrides, time.monotonic() - self.started)
        return objective(metrics, self.cfg.monitor)

    def metrics(self, train, use_checkpoint) -> dict:
        from lightlab.run.checkpoint_modes import checkpoint_config

        if self.cfg.mode == "train":
            return train(self.cfg)["metrics"]
        if self.in_sweep:
            raise UserError(f"mode={self.cfg.mode} uses one checkpoint: run it without -m (once per checkpoint).")
        # (a DDP rank starts from the config its rank 0 settled on, saved in the job's folder)
        return use_checkpoint(self.cfg if self.ddp_rank else checkpoint_config(self.cfg, self.overrides))["metrics"]

    def failed(self, error: Exception) -> None:
        from lightlab.sweeps.summary import record_outcome

        removed = isinstance(error, UserError) and self.remove_refused_run()  # refused before any result
        if not removed and not self.ddp_rank and self.folder.is_dir():  # status.json (failed, pruned), failure.txt
            record_outcome(self.folder, self.overrides, time.monotonic() - self.started, error)
        if self.in_sweep:  # the sweep goes on, and exits 1 at its end
            print(f"error: {error}", file=sys.stderr)
            return None
        if self.ddp_rank:  # rank 0 reports; a rank exiting non-zero would get rank 0 killed by Lightning
            print(f"error in rank {os.environ.get('LOCAL_RANK')}: {error}", file=sys.stderr)
            return None
        if isinstance(error, UserError):
            refuse(error)
        raise error  # a crash: Python prints the traceback and exits 1

    def remove_refused_run(self) -> bool:
        """Hydra made the folder before the job: a single run refused before any result removes it again."""
        from lightlab.lightning_internals.ddp_launch import end_ranks
        from lightlab.run.folders import remove_refused_run

        if self.kind not in ("run", "named run", "checkpoint") or not is_rank_zero():
            return False
        if os.environ.get("LOCAL_RANK") == "0":  # the ranks it started: ended first, their logs are in the folder
            end_ranks()
        return remove_refused_run(self.folder)

    def stopped(self) -> None:
        """SIGTERM or Ctrl-C during training (lightlab/callbacks/preemption.py): a checkpoint to continue from."""
        from lightlab.callbacks.preemption import exit_code, report_stop

        if exit_code() is None:  # another SystemExit (a refused folder): as it is
            raise
        if self.ddp_rank:  # rank 0 reports and exits with the code
            return None
        sys.exit(report_stop(resumable_by_rerun=self.tracked))


class CheckBeforeWriting(Callback):
    """conf/hydra/default.yaml: a single run's config is checked before Hydra makes its folder (and for
    mode=test/predict/export, its checkpoint and that run's config), so a mistake leaves nothing behind."""

    # At a multirun's start only the sweep folder's name: the swept values are not in the config then (a sweep may
    # fill a `???`). A sweep job's config is checked in its job, and a job that fails it is recorded as failed.
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from lightlab.config.checks import folder_name_problems
        from lightlab.config.table_task import settle_task

        # run.py paused the collector for a run's start-up; a sweep's own process composes a config per job for as
        # long as the sweep lasts (its jobs may run elsewhere: joblib, SLURM), so it collects as usual from here.
        gc.enable()

        problems = folder_name_problems(config)
        if problems:
            refuse(UserError("invalid config: " + " ".join(problems)))
        try:  # data=table: the sweep's monitor and its direction (the summary's and Optuna's), when the file is known
            settle_task(config)
        except UserError as error:
            refuse(error)

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from lightlab.config.checks import check_accelerator, check_config
        from lightlab.config.table_task import settle_task
        from lightlab.lightning_internals.ddp_launch import RANK_OF_JOB
        from lightlab.run import folders
        from lightlab.run.checkpoint_modes import checkpoint_config
        from lightlab.sweeps.summary import folder_conflict

        HydraConfig.instance().set_config(config)  # ${hydra:...} values (experiment_name) read it
        task = config.copy()
        with open_dict(task):
            overrides = list(task.hydra.overrides.task)
            del task["hydra"]
        # Lightning, imported by the check before Hydra sets up logging, would add a console handler of its own and
        # keep its messages out of the run's log file; with a root handler present it leaves logging to Hydra.
        placeholder = logging.NullHandler()
        logging.getLogger().addHandler(placeholder)
        try:
            if RANK_OF_JOB in os.environ:  # a DDP rank: its rank 0 checked all of this
                return
            # In mode=test/predict/export, the checkpoint's run config is what will run (a GPU asked for on this
            # command line is refused as such first).
            if task.mode in ("test", "predict"):
                check_accelerator(task)
            checked = checkpoint_config(task, overrides) if task.mode in ("test", "predict", "export") else task
            settle_task(checked)  # data=table: reads the target column (or the checkpoint) now, before any folder
            check_config(checked)
            folders.PLAN = folders.plan_folder(config, task)
            conflict = folders.PLAN.named and task.mode == "train" and folder_conflict(Path(config.hydra.run.dir),
                                                                                       overrides)
            if conflict:
                raise UserError(conflict)
        except UserError as error:
            refuse(error)
        finally:
            logging.getLogger().removeHandler(placeholder)
