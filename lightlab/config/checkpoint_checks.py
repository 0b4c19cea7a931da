"""A checkpoint given to a run (`ckpt_path=` to resume, `init_from=` to start from) is checked before training, so a
wrong file fails in seconds with its name and the fix instead of in Lightning's loader with a traceback.

Only `torch.load(..., weights_only=True)` is used: a file that would need to unpickle arbitrary objects (code) is
refused, as are truncated or foreign files and checkpoints of another network (missing, unexpected or reshaped
weights). Resuming also compares the optimizer and schedule settings: the checkpoint's saved optimizer and
scheduler states win (that is what continuing means), and settings of this command that they override are named.
"""
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lightlab.base.errors import UserError


def load_plain(path: str, key: str, fix: str):
    if not Path(path).expanduser().is_file():
        raise UserError(f"{key}={path}: no such file. {fix}")
    try:
        return torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as error:  # truncated files, foreign formats, pickled objects: all refused
        raise UserError(f"{key}={path} does not load as plain tensors and numbers ({type(error).__name__}: "
                        f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no details'}). It is "
                        f"truncated, not a checkpoint, or holds pickled objects, which are never loaded. "
                        f"{fix}") from None


def compare_weights(own: dict, weights: dict, key: str, path: str, fix: str) -> None:
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    reshaped = sorted(name for name in set(own) & set(weights) if own[name].shape != weights[name].shape)
    if missing or unexpected or reshaped:
        details = "; ".join(f"{label}: {', '.join(names[:5])}{' …' if len(names) > 5 else ''}" for label, names in
                            (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)) if names)
        raise UserError(f"{key}={path} is a different network ({details}). {fix}")


def check_resume_checkpoint(cfg: DictConfig, module: torch.nn.Module) -> None:
    """ckpt_path: a whole Lightning checkpoint of this network. Changed optimizer or scheduler settings are named."""
    fix = ("Resume from a checkpoint of this run's network and settings (its checkpoints/last.ckpt); to start "
           "from another run's weights with a fresh optimizer, use init_from=<file> instead.")
    checkpoint = load_plain(cfg.ckpt_path, "ckpt_path", fix)
    if not isinstance(checkpoint, dict) or not {"state_dict", "optimizer_states", "loops"} <= set(checkpoint):
        raise UserError(f"ckpt_path={cfg.ckpt_path} is not a Lightning training checkpoint (no state_dict, optimizer "
                        f"states and loop counters; a bare state_dict or an export cannot be resumed). {fix}")
    compare_weights(module.state_dict(), checkpoint["state_dict"], "ckpt_path", cfg.ckpt_path, fix)
    saved = checkpoint.get("hyper_parameters", {})
    now = OmegaConf.to_container(cfg.lightning_module, resolve=True)
    changed = [f"{group}.{name}: {before!r} -> {after!r}" for group in ("optimizer", "scheduler")
               for name, before, after in differences(saved.get(group), now.get(group))]
    if changed:
        print(f"warning: resuming {cfg.ckpt_path}: the optimizer and schedule continue from their saved state, so "
              f"these settings of this command do not apply: {'; '.join(changed)}. To train these weights with new "
              f"settings, use init_from={cfg.ckpt_path} (a fresh optimizer and schedule) instead.", file=sys.stderr)


def differences(before, after, prefix: str = "") -> list[tuple[str, object, object]]:
    if isinstance(before, dict) and isinstance(after, dict):
        return [difference for name in sorted(set(before) | set(after), key=str)
                for difference in differences(before.get(name), after.get(name), f"{prefix}{name}.")]
    return [(prefix.rstrip("."), before, after)] if before != after else []
