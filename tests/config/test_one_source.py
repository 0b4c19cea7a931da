"""Each fact has one source. conf/ against the constructors it configures; conf/config.yaml's top-level keys
against the run settings' types and README; every conf/ option against README's option table."""
import inspect
import re

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from lightlab.base.objects import locate
from lightlab.base.project import CONFIG_DIR, PROJECT_ROOT
from lightlab.config.checks import RunSettings
from lightlab.run.compose import compose_config

OURS = ("lightlab.", "lightning_modules.", "datamodules.", "hydra_plugins.")
GROUPS = ["data", "model", "loss", "optimizer", "scheduler", "callbacks", "trainer", "logger"]
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONFIG_DIR / group).glob("[!_]*.yaml"))]


def plain(value):
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, throw_on_missing=False)
    return list(value) if isinstance(value, tuple) else value  # YAML has lists where Python has tuples


def defaults_restated(node, where: str) -> list[tuple[str, str, object, object]]:
    """(key, target, conf value, constructor default) for every literal value that conf sets on a constructor of
    ours with a default for it (recursively)."""
    found = []
    if node is None:
        return found
    if isinstance(node, ListConfig):
        for index, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)):
                found += defaults_restated(item, f"{where}[{index}]")
        return found
    target = node.get("_target_") if "_target_" in node and not OmegaConf.is_interpolation(node, "_target_") else None
    parameters = {}
    if isinstance(target, str) and target.startswith(OURS):
        built = locate(target)
        constructor = built.__init__ if inspect.isclass(built) else built
        # not a Lightning class's inherited constructor
        if (getattr(constructor, "__module__", None) or "").startswith(OURS):
            parameters = inspect.signature(built).parameters
    for key in node:
        if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
            continue
        if key in parameters and parameters[key].default is not inspect.Parameter.empty:
            found.append((f"{where}.{key}", target, plain(node[key]), plain(parameters[key].default)))
        if isinstance(node[key], (DictConfig, ListConfig)):
            found += defaults_restated(node[key], f"{where}.{key}")
    return found


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_a_conf_value_agrees_with_the_constructors_default(group, option, tmp_path):
    cfg = compose_config([f"{group}={option}"], output_dir=str(tmp_path))
    nodes = {group: cfg[group]}
    if (group, option) == ("model", "mlp"):  # the default config's own nodes, once
        nodes.update({key: cfg[key] for key in ("lightning_module", "parameter_groups", "lr_finder")})
    disagreements = [f"{key}: conf {value!r}, {target} default {default!r}" for name, node in nodes.items()
                     for key, target, value, default in defaults_restated(node, name) if value != default]
    assert disagreements == [], "conf/ and a constructor disagree; drop the constructor's default or match it"


def top_level_keys() -> list[str]:
    """conf/config.yaml's own settings (not its groups' nodes): what RunSettings types and README lists."""
    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "config.yaml"), resolve=False)  # ${hydra:...} as is
    return [key for key, value in raw.items() if key != "defaults" and not isinstance(value, dict)]


def test_the_run_settings_type_exactly_conf_config_yamls_top_level_keys():
    assert sorted(inspect.get_annotations(RunSettings)) == sorted(top_level_keys())


def test_readme_names_every_top_level_key():
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index("Top-level keys"):][:1500]
    assert [key for key in top_level_keys() if f"`{key}`" not in section] == []


def test_readmes_option_table_lists_every_option_of_every_group():
    readme = (PROJECT_ROOT / "README.md").read_text()
    rows = {match[0]: match[1] for match in re.findall(r"^\| `([\w/]+)` \| ([^|]*) \|", readme, re.MULTILINE)}
    groups = [path for path in sorted(CONFIG_DIR.rglob("*")) if path.is_dir()]
    missing = []
    for folder in groups:
        group = str(folder.relative_to(CONFIG_DIR))
        options = sorted(p.stem for p in folder.glob("[!_]*.yaml"))
        if group == "hydra" or not options:
            continue  # hydra/default: our settings of Hydra itself, not a choice
        listed = rows.get(group, "")
        missing += [f"{group}={option}" for option in options if f"`{option}`" not in listed]
    assert missing == [], "README's option table (### The config) misses these options"
