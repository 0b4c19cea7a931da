"""Compose the real config from Python, as `python run.py` would: for tests, benchmarks and notebooks; and the
command line of a checkpoint mode, made composable."""
import re

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from lightlab.base.project import CONFIG_DIR
from lightlab.run.folders import register_resolvers


def compose_config(overrides: list[str] = (), output_dir: str | None = None) -> DictConfig:
    """The config `python run.py <overrides>` would run with; `output_dir` replaces the numbered run directory."""
    register_resolvers()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    # Like Hydra's run_job: ${hydra:...} interpolations read HydraConfig, and the task sees no `hydra` key.
    if output_dir is not None:
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def checkpoint_command_line(arguments: list[str]) -> list[str]:
    """mode=test/predict/export run the checkpoint's own config, whose keys the default config Hydra composes first
    may lack (data.predict_path of data=table, when conf/'s default data is mnist). Such `group.key=value` overrides
    reach Hydra as `++group.key=value`, which composes; lightlab/run/checkpoint_modes.py then sets them in the
    checkpoint's config, where the key must exist."""
    if not any(argument in ("mode=test", "mode=predict", "mode=export") for argument in arguments):
        return arguments
    return [f"++{argument}" if re.match(r"[A-Za-z_]\w*\.[\w.]+=", argument) and not argument.startswith("hydra.")
            else argument for argument in arguments]
