"""Checks a composed config before anything is built or loaded, so mistakes fail in seconds and name the key.

Hydra already rejects overrides of keys that do not exist. What it cannot know is which keys and
types a `_target_` accepts, since our YAML has no schema: the signature of the class or function
named by `_target_` *is* the schema. So every node with a `_target_` is checked against that
signature: unknown keys, values of the wrong type, and `???` values left unset.
"""
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from lightlab.base.errors import UserError
from lightlab.base.objects import locate

HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}

# Values a parameter's type allows but no run can use, for every _target_ with a parameter of that name (a list:
# each entry): name -> (smallest value, why). null is left to the target (it means "none" or "the default").
AT_LEAST = {
    "batch_size": (1, "a batch holds at least one sample"),
    "eval_batch_size": (1, "a batch holds at least one sample"),
    "val_size": (1, "the validation split holds at least one sample"),
    "hidden_dims": (1, "a layer has at least one unit"),
    "channels": (1, "a convolution has at least one channel"),
    "widths": (1, "a stage has at least one channel"),
    "head_width": (1, "a layer has at least one unit"),
    "embedding_dim": (1, "an embedding has at least one dimension"),
    "hidden_size": (1, "a recurrent layer has at least one unit"),
    "attention_width": (1, "a layer has at least one unit"),
    "num_layers": (1, "a recurrent network has at least one layer"),
    "blocks_per_stage": (1, "a stage has at least one block"),
    "lr": (0, "a learning rate is not negative"),
    "weight_decay": (0, "weight decay is not negative"),
    "max_epochs": (-1, "-1 trains without an epoch limit, 0 or more is the number of epochs"),
    "max_steps": (-1, "-1 trains without a step limit"),
    "accumulate_grad_batches": (1, "an optimizer step takes the gradients of at least one batch"),
}
SEEDS = range(2**32)  # what numpy's seed accepts (torch's and Python's accept more)


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
    if isinstance(cfg.get("seed"), int) and cfg.seed not in SEEDS:
        problems.append(f"'seed' is {cfg.seed}: a seed is a whole number from 0 to {SEEDS[-1]} (2**32-1), the range "
                        f"numpy accepts. Set e.g. `seed=0`.")
    problems += folder_name_problems(cfg)
    _check_node(cfg, "", problems)
    if problems:
        raise UserError("invalid config: " + " ".join(problems))
    if cfg.get("mode") != "export":  # export needs the network alone, on any machine
        check_accelerator(cfg)


def folder_name_problems(cfg: DictConfig) -> list[str]:
    """run_name and sweep_name name one folder inside <log_dir>/<experiment_name>/: never a path out of it."""
    problems = []
    for key in ("run_name", "sweep_name"):
        name = cfg.get(key)
        if isinstance(name, str) and (not name.strip(". ") or any(c in name for c in "/\\") or ".." in name):
            parts = [part.strip(". ") for part in re.split(r"[/\\]", name)]
            suggestion = re.sub(r"\.{2,}", ".", "_".join(part for part in parts if part)) or "my_run"
            problems.append(f"'{key}' is {name!r}: a {key.split('_')[0]} name is one folder name inside "
                            f"<paths.log_dir>/<experiment_name>/, without '/', '\\' or '..'. Set e.g. "
                            f"`{key}={suggestion}`.")
    return problems


def check_accelerator(cfg: DictConfig) -> None:
    """trainer.accelerator=gpu (trainer=gpu, trainer=ddp) where torch sees no GPU: said here, not as Lightning's
    "No supported gpu backend found!" from inside Hydra's instantiate."""
    import os

    import torch

    if str(OmegaConf.select(cfg, "trainer.accelerator", default="")) not in ("gpu", "cuda"):
        return
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():  # (Lightning's gpu: CUDA or MPS)
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise UserError(f"trainer.accelerator=gpu, but no GPU was found (torch {torch.__version__}, {build}, sees "
                        f"none{'' if visible is None else f'; CUDA_VISIBLE_DEVICES={visible!r}'}). To train on the "
                        f"CPU, use `trainer=cpu` or `trainer.accelerator=cpu` (trainer=default takes a GPU when "
                        f"there is one). To use the GPU, check that `nvidia-smi` lists it, that CUDA_VISIBLE_DEVICES "
                        f"does not hide it, and that torch is a CUDA build (README, Quick start: on a GPU machine).")


def check_section(node: DictConfig, path: str) -> None:
    """check_config's checks of one part of the config (e.g. `data`), for code that builds it before the rest."""
    problems = []
    _check_node(node, path, problems)
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
            elif key in AT_LEAST and not accepts_text(hints[key]) and too_small(value, AT_LEAST[key][0]):
                # (a size that may also be a share or a duration, data=time_series's val_size, checks itself)
                smallest, why = AT_LEAST[key]
                each = "each entry " if isinstance(value, (list, tuple)) else ""
                problems.append(f"'{full_key}' is {value!r}: {each}must be at least {smallest} ({why}). Set "
                                f"`{full_key}=<{each or 'a value '}>= {smallest}>`.")


def too_small(value, smallest) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v < smallest for v in values)


def accepts_text(annotation) -> bool:
    """Whether an annotation names str (itself, or in a union)."""
    return annotation is str or str in typing.get_args(annotation)


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
