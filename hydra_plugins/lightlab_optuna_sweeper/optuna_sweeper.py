"""An Optuna sweeper for Hydra on Optuna's current ask/tell API, with pruning (hydra/sweeper=optuna).

hydra-optuna-sweeper 1.3 pins optuna<3 and never hands the job a trial, so trials cannot be pruned. Here the
sweeper asks the study for `n_jobs` trials at a time, turns each trial's suggestions into the job's overrides,
writes the trial's identity into the job's folder (lightlab/sweeps/optuna_pruning.py reads it and reports every epoch's
metric to the trial), launches the batch with the configured launcher (basic, parallel, slurm), and tells the
study each job's outcome: its objective, pruned, or failed.

The study lives in SQLite in the sweep folder (`optuna.db`), so re-running the same command with the same
sweep_name continues it: trial numbers go on, `n_trials` counts every finished trial of the study (completed,
pruned or failed), a trial a killed sweep left running counts with the outcome its job recorded, or else as
interrupted and is replaced, and the sampler is reseeded (seed + trials so far) so it does not repeat itself.

Search space (`params`), in Hydra's sweep syntax: `choice(a, b, c)` (categorical), `interval(low, high)` (float;
`int(interval(low, high))` for integers), `tag(log, interval(low, high))` (log scale), `range(low, high, step)`;
a plain value is passed to every trial as it is.
"""
import json
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lightlab.base.errors import UserError
from lightlab.base.files import write_json
from lightlab.sweeps.optuna_trials import write_trial_file
from lightlab.sweeps.summary import job_outcome


# Hydra imports every plugin module when it starts, before it sets up logging: nothing heavy here (Lightning,
# imported this early, would attach its own log handler and keep its messages out of the run's log file).
def search_space(params: dict) -> dict[str, Any]:
    """{key: a function trial -> the override's value text} for each entry of `params`."""
    parser = OverridesParser.create()
    space = {}
    for key, text in params.items():
        override = parser.parse_override(f"{key}={text}")
        value = override.value()
        if isinstance(value, ChoiceSweep):
            choices = list(override.sweep_string_iterator())
            space[key] = lambda trial, key=key, choices=choices: trial.suggest_categorical(key, choices)
        elif isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space[key] = lambda trial, key=key, v=value, log=log: trial.suggest_int(key, v.start, v.end, log=log)
            else:
                space[key] = lambda trial, key=key, v=value, log=log: trial.suggest_float(
                    key, v.start, v.end, log=log)
        elif isinstance(value, RangeSweep):
            suggest = "suggest_int" if all(isinstance(x, int) for x in (value.start, value.stop, value.step)) \
                else "suggest_float"
            # Hydra's range excludes its stop; Optuna's high is inclusive.
            space[key] = lambda trial, key=key, v=value, suggest=suggest: getattr(trial, suggest)(
                key, v.start, v.stop - v.step, step=v.step)
        elif override.is_sweep_override():
            raise UserError(f"hydra.sweeper.params.{key}={text}: use choice(...), interval(...), "
                            f"tag(log, interval(...)) or range(...).")
        else:
            value_text = override.get_value_element_as_str()  # bound now, as a default, like the branches above
            space[key] = lambda trial, text=value_text: text
    return space


class OptunaSweeper(Sweeper):
    def __init__(self, params: dict, n_trials: int, n_jobs: int, sampler, pruner, study_name: str,
                 storage: str | None = None):
        # Hydra instantiates the plugin recursively: sampler and pruner arrive as Optuna objects.
        self.params, self.n_trials, self.n_jobs, self.sampler, self.pruner = (
            params or {}, n_trials, n_jobs, sampler, pruner)
        self.study_name, self.storage = study_name, storage

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        if self.config.monitor_mode not in ("min", "max"):  # data=table with its file swept: not known yet
            raise UserError(f"monitor_mode={self.config.monitor_mode}: Optuna needs the direction before the first "
                            f"trial. Set monitor=... and monitor_mode=min or max on the command line.")
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        storage = self.storage or f"sqlite:///{(self.sweep_dir / 'optuna.db').resolve()}"
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, load_if_exists=True,
            direction="maximize" if self.config.monitor_mode == "max" else "minimize",
            sampler=self.sampler, pruner=self.pruner)
        seed = self.config.hydra.sweeper.sampler.get("seed")
        if study.trials and seed is not None:  # a resumed study: new suggestions, not the first run's again
            study.sampler = instantiate(self.config.hydra.sweeper.sampler, seed=seed + len(study.trials))
        for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a killed sweep's
            tell(study, stale, self.sweep_dir / str(stale.number), self.config.monitor, killed=True)
        space = search_space(OmegaConf.to_container(self.params, resolve=True)
                             if OmegaConf.is_config(self.params) else self.params)
        swept = set(space) & {a.split("=", 1)[0].lstrip("+~") for a in arguments}
        if swept:
            raise UserError(f"{', '.join(sorted(swept))} is both searched (hydra.sweeper.params) and set on the "
                            f"command line; drop one of the two.")
        while (finished := finished_trials(study)) < self.n_trials:
            trials = [study.ask() for _ in range(min(self.n_jobs, self.n_trials - finished))]
            batch = []
            for trial in trials:
                batch.append([*arguments, *(f"{key}={suggest(trial)}" for key, suggest in space.items())])
                write_trial_file(self.sweep_dir / str(trial.number), storage, self.study_name, trial._trial_id,
                                 trial.number, OmegaConf.to_container(self.config.hydra.sweeper.pruner, resolve=True))
            # Job folders are numbered by trial (hydra.sweep.subdir is the job number), so a resumed study never
            # reuses a folder.
            self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial in trials:
                tell(study, trial, self.sweep_dir / str(trial.number), self.config.monitor)
        best = study.best_trial if study.get_trials(states=(TrialState.COMPLETE,)) else None
        if best is not None:
            print(f"Optuna study {self.study_name} ({storage}): best trial {best.number}, "
                  f"{self.config.monitor} = {best.value:.6g}, {best.params}")


def finished_trials(study) -> int:
    """Trials that count towards n_trials: completed, pruned or failed (a failing trial is not retried forever),
    but not those a killed sweep interrupted."""
    from optuna.trial import TrialState

    return sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
               and not t.user_attrs.get("interrupted") for t in study.get_trials(deepcopy=False))


def tell(study, trial, job_dir: Path, monitor: str, killed: bool = False) -> None:
    """Tell the study the outcome its job recorded. For a trial a killed sweep left running, the job may have
    finished before the kill (then that outcome counts) or not (then the trial is failed as interrupted)."""
    import optuna
    from optuna.trial import TrialState

    row = job_outcome(job_dir, monitor)
    status = row["status"] if row else None
    if status == "completed":
        study.tell(trial.number, row["objective"])
    elif status == "pruned":
        study.tell(trial.number, state=TrialState.PRUNED)
    elif killed and status in (None, "started"):
        optuna.trial.Trial(study, trial._trial_id).set_user_attr("interrupted", True)
        study.tell(trial.number, state=TrialState.FAIL)
        if row is not None:
            status_file = job_dir / "status.json"
            write_json(status_file, {**json.loads(status_file.read_text()), "status": "interrupted",
                                     "error": "the sweep was stopped during this trial; another was asked"})
    else:
        study.tell(trial.number, state=TrialState.FAIL)
