"""The job's side of an Optuna sweep (hparams_search=..., the sweeper in hydra_plugins/lightlab_optuna_sweeper).

The sweeper writes `optuna_trial.json` into each trial's job folder before it starts the job. `PruneUnpromisingTrials`
reads it, reports the monitored metric to the trial after every validation, and ends the job when the study's
pruner says the trial is unpromising; run.py records the job as pruned at that epoch. Outside an Optuna sweep
(no trial file) the callback does nothing.
"""
import json
from pathlib import Path

import pytorch_lightning as pl

from lightlab.base.ranks import is_rank_zero
from lightlab.sweeps.optuna_trials import TRIAL_FILE


class PruneUnpromisingTrials(pl.Callback):
    def __init__(self, run_dir: str, monitor: str):
        self.trial_file, self.monitor, self.trial = Path(run_dir) / TRIAL_FILE, monitor, None

    def setup(self, trainer, module, stage: str) -> None:
        self.active = stage == "fit" and self.trial_file.is_file()
        if self.active and is_rank_zero(trainer):  # under DDP, rank 0 talks to the study and tells the others
            import optuna
            from hydra.utils import instantiate

            spec = json.loads(self.trial_file.read_text())
            study = optuna.load_study(study_name=spec["study_name"], storage=spec["storage"],
                                      pruner=instantiate(spec["pruner"]))
            self.trial = optuna.trial.Trial(study, spec["trial_id"])

    def on_validation_end(self, trainer, module) -> None:
        if not self.active or trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        import optuna

        value, epoch = float(trainer.callback_metrics[self.monitor]), trainer.current_epoch
        if self.trial is not None:
            self.trial.report(value, step=epoch)
        if trainer.strategy.broadcast(self.trial is not None and self.trial.should_prune()):
            raise optuna.TrialPruned(f"pruned at epoch {epoch} ({self.monitor} {value:.4g})")
