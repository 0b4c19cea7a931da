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
A run refused with exit 2 before it wrote any checkpoint (data that does not load, say) removes the folders it
made: a refused run leaves nothing. Any other failure leaves its folder marked failed: status.json and failure.txt.
"""
import logging
import os
import shutil
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


def explicit_folder(hydra_overrides: list[str], run_name: str | None, mode: str) -> bool:
    """Whether this run's folder is one the user named (run_name=…, hydra.run.dir=…), not a fresh numbered one."""
    return mode == "train" and (run_name is not None or any(o.startswith("hydra.run.dir=") for o in hydra_overrides))


def first_missing(path: Path) -> Path | None:
    """The outermost folder on the way to `path` (itself included) that does not exist yet; None if `path` does."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


# Set by CheckBeforeWriting before Hydra makes the run's folder: the outermost folder the run is about to create
# (its own, or <log_dir>/<experiment> above it), THE_RUN_FOLDER for a numbered folder whose parent exists, None for
# a folder that exists already. A refused run removes it (Job.failed).
THE_RUN_FOLDER = "the run's folder"
created_by_this_run: Path | str | None = None


class Job:
    def __init__(self, cfg: DictConfig):
        from lightlab.lightning_internals.ddp_launch import RANK_OF_JOB

        hydra = HydraConfig.get()
        self.cfg, self.overrides, self.started = cfg, list(hydra.overrides.task), time.monotonic()
        self.in_sweep = hydra.mode == RunMode.MULTIRUN
        self.ddp_rank = RANK_OF_JOB in os.environ
        named = explicit_folder(list(hydra.overrides.hydra), cfg.run_name, cfg.mode)
        self.kind = ("DDP rank" if self.ddp_rank else "sweep job" if self.in_sweep else
                     "checkpoint" if cfg.mode != "train" else "named run" if named else "run")
        self.tracked = self.kind in ("sweep job", "named run")  # a folder with a stable identity: resumable
        self.folder = Path(cfg.paths.output_dir)

    def run(self, train, use_checkpoint) -> float | None:
        """train(cfg) or use_checkpoint(cfg) -> the run's summary; returns what sweepers optimise."""
        from lightlab.lightning_internals.ddp_launch import end_ranks
        from lightlab.sweeps.summary import objective, record_outcome, resume_job

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

        if isinstance(error, UserError) and self.remove_refused_run():
            pass  # refused before any checkpoint: nothing is left behind
        elif not self.ddp_rank and self.folder.is_dir():  # status.json (failed or pruned) and failure.txt
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
        """A single run refused before it wrote a checkpoint (data that does not load, a size that does not fit the
        data) removes the folders it made, so a refused run leaves nothing (Hydra made the folder before the job)."""
        created = self.folder if created_by_this_run == THE_RUN_FOLDER else created_by_this_run
        if self.kind not in ("run", "named run", "checkpoint") or created is None or not is_rank_zero():
            return False
        if not self.folder.is_dir() or any(self.folder.rglob("*.ckpt")):
            return False
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)  # Hydra's run.log, inside the folder
            handler.close()
        shutil.rmtree(created, ignore_errors=True)
        return True

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

    # Not at a multirun's start: the swept values are not in the config then (a sweep may fill a `???`). A sweep
    # job's config is checked in its job, and a job that fails it is recorded as failed while the others run.
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from lightlab.config.checks import check_config
        from lightlab.lightning_internals.ddp_launch import RANK_OF_JOB
        from lightlab.run.checkpoint_modes import checkpoint_config
        from lightlab.sweeps.summary import folder_conflict

        global created_by_this_run
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
            check_config(task)
            if RANK_OF_JOB in os.environ:  # a DDP rank: its rank 0 checked all of this
                return
            if task.mode != "train":
                checkpoint_config(task, overrides)
            if explicit_folder(list(config.hydra.overrides.hydra), task.run_name, task.mode):
                folder = Path(config.hydra.run.dir)  # (a named folder: resolving it makes nothing)
                conflict = folder_conflict(folder, overrides)
                if conflict:
                    raise UserError(conflict)
                created_by_this_run = first_missing(folder)
            else:  # numbered: run_NNN in <log_dir>/<experiment>, or <mode>_NNN in the checkpoint's run
                parent = Path(task.paths.log_dir) / task.experiment_name if task.mode == "train" else None
                created_by_this_run = (parent and first_missing(parent)) or THE_RUN_FOLDER
        except UserError as error:
            refuse(error)
        finally:
            logging.getLogger().removeHandler(placeholder)
