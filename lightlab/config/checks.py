"""Checks a composed config before anything is built or loaded, so mistakes fail in seconds and name the key.

Hydra already rejects overrides of keys that do not exist. What it cannot know is which keys and
types a `_target_` accepts, since our YAML has no schema: the signature of the class or function
named by `_target_` *is* the schema. So every node with a `_target_` is checked against that
signature: unknown keys, values of the wrong type, and `???` values left unset.
"""
import inspect
import types
import typing
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from lightlab.base.errors import UserError
from lightlab.base.objects import locate

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


class RunSettings:
    """The types of conf/config.yaml's own top-level keys (their values and meaning are documented there)."""
    mode: typing.Literal["train", "test", "predict", "export"]
    predict_input: str | None
    print_config: bool
    seed: int
    experiment_name: str
    run_name: str | None
    sweep_name: str | None
    monitor: str
    monitor_mode: typing.Literal["min", "max"]
    test_after_fit: bool
    ckpt_path: str | None
    init_from: str | None
    compile: bool
    channels_last: bool


def check_config(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise UserError(f"config value(s) not set: {', '.join(missing)} (the config says '???'). "
                        f"Set each on the command line, e.g. `python run.py {missing[0]}=...`.")
    problems = []
    for key, annotation in typing.get_type_hints(RunSettings).items():
        if key in cfg and not OmegaConf.is_interpolation(cfg, key) and not matches(cfg[key], annotation):
            problems.append(f"'{key}' is {cfg[key]!r} ({type(cfg[key]).__name__}) but the run settings expect "
                            f"{describe(annotation)}. Set `{key}=<{describe(annotation)}>`.")
    _check_node(cfg, "", problems)
    if problems:
        raise UserError("invalid config: " + " ".join(problems))


def _check_node(node, path: str, problems: list[str]) -> None:
    if isinstance(node, ListConfig):
        for index, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)):
                _check_node(item, f"{path}[{index}]", problems)
        return
    if "_target_" in node and not OmegaConf.is_interpolation(node, "_target_"):
        _check_target(node, path, problems)
    for key in node:
        if key != "hydra" and not OmegaConf.is_interpolation(node, key):
            child = node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
                _check_node(child, f"{path}.{key}" if path else str(key), problems)


def _check_target(node: DictConfig, path: str, problems: list[str]) -> None:
    from lightning_modules.optimization import RUN_LENGTH_ARGUMENTS  # torch: imported once a target needs it

    where = f"{path}._target_" if path else "_target_"
    try:
        target = locate(node._target_)
    except UserError as error:
        problems.append(f"{where}: {error}. Check the spelling of the class or function's dotted path.")
        return
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # a builtin without a signature: nothing to check against
    parameters = signature.parameters
    takes_any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable forward references: check names only
        hints = {}
    for key in node:
        if key in HYDRA_KEYS:
            continue
        full_key = f"{path}.{key}" if path else str(key)
        if key not in parameters:
            if not takes_any_keyword:
                accepted = ", ".join(k for k in parameters if k not in ("self", "args", "kwargs"))
                problems.append(f"'{full_key}' is not a parameter of {node._target_} (it accepts: {accepted}). "
                                f"Remove it or fix its spelling.")
            continue
        if key in RUN_LENGTH_ARGUMENTS and node[key] is None:
            continue  # "the whole run": filled in when the scheduler is built
        if key in hints and not OmegaConf.is_interpolation(node, key):
            value = OmegaConf.to_object(node[key]) if isinstance(node[key], (DictConfig, ListConfig)) else node[key]
            if not matches(value, hints[key]):
                problems.append(f"'{full_key}' is {value!r} ({type(value).__name__}) but {node._target_} "
                                f"expects {describe(hints[key])}. Set `{full_key}=<{describe(hints[key])}>`.")


def matches(value, annotation) -> bool:
    """Whether a YAML value fits an annotation. Types YAML cannot express (modules, tensors, callables) pass."""
    if annotation is typing.Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, argument) for argument in arguments)
    if origin is typing.Literal:
        return value in arguments
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    container = origin or annotation
    if container in (list, tuple, Sequence) or (inspect.isclass(container) and issubclass(container, (list, tuple))):
        if not isinstance(value, (list, tuple)):
            return False
        item_type = arguments[0] if arguments and (container is not tuple or arguments[-1] is Ellipsis) else typing.Any
        return all(matches(item, item_type) for item in value)
    if container in (dict, Mapping):
        return isinstance(value, dict)
    return True


def describe(annotation) -> str:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in arguments)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in arguments)
    if annotation is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin)) + (f" of {describe(arguments[0])}" if arguments else "")
    return getattr(annotation, "__name__", str(annotation))
