"""How the Optuna sweeper (hydra_plugins/lightlab_optuna_sweeper) tells a job which trial it is. Light on purpose:
Hydra imports its plugins before it sets up logging, and a Lightning import then would keep Lightning's log lines
out of the run's log file."""
from pathlib import Path

from lightlab.base.files import write_json

TRIAL_FILE = "optuna_trial.json"  # the trial's identity in its job folder


def write_trial_file(job_dir: Path, storage: str, study_name: str, trial_id: int, number: int, pruner: dict) -> None:
    """`pruner` is the sweeper's pruner config: a study loaded without one would prune by Optuna's default."""
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json(job_dir / TRIAL_FILE, {"storage": storage, "study_name": study_name, "trial_id": trial_id,
                                      "number": number, "pruner": pruner})
