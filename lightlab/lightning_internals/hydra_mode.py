"""Hydra's run mode without composing the config an extra time.

Before every run Hydra composes the whole config once only to read `hydra.mode` (Hydra.get_mode), then composes it
again to run: ~0.1 s of a 3 s start-up on the 2-core CPU (README, Performance). `hydra.mode` is unset unless a
config file or the command line sets it, so when neither can, the answer is Hydra's for an unset mode (None: a run,
or a multirun with -m) without the composition. It can when an override names it or the search path, or when a
config folder has a YAML line `mode: RUN` or `mode: MULTIRUN` (an experiment that sweeps by itself, as
lightning-hydra-template's hparams_search does), or when the search path holds anything but Hydra's own package
config, structured configs and config folders: then Hydra composes as before.
"""
import re
from pathlib import Path

from hydra._internal.hydra import Hydra

ran = {"mode_without_composing": 0}  # tests: the path really ran
_hydra_get_mode = Hydra.get_mode
SETS_MODE = re.compile(r"""^\s*mode:\s*['"]?(RUN|MULTIRUN)['"]?\s*(#.*)?$""", re.MULTILINE)


def mode_may_be_set(search_path, overrides: list[str]) -> bool:
    """Whether a config file or an override could set hydra.mode (when unsure: True)."""
    if any("mode" in override or "searchpath" in override for override in overrides if "hydra" in override):
        return True
    for element in search_path.get_path():
        path = element.path or ""
        if element.provider == "hydra" and path == "pkg://hydra.conf" or path.startswith("structured://"):
            continue  # Hydra's own defaults (mode: None) and registered dataclasses
        local = path.removeprefix("file://")
        if "://" in local or not Path(local).is_dir():
            return True  # a package or another kind of source: not read here
        if any(SETS_MODE.search(file.read_text(errors="replace")) for file in Path(local).rglob("*.yaml")):
            return True
    return False


def _get_mode(self, config_name, overrides):
    if mode_may_be_set(self.config_loader.get_search_path(), overrides):
        return _hydra_get_mode(self, config_name, overrides)
    ran["mode_without_composing"] += 1
    return None


def compose_once() -> None:
    Hydra.get_mode = _get_mode
