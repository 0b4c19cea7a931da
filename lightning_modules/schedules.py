"""Learning-rate functions for scheduler=lambda, and the adapter that names them by dotted path.

A function here takes the number of completed intervals (epochs or steps) and returns a factor on the
optimizer's learning rate; keyword arguments come from `scheduler.scheduler.arguments`.
"""
import functools
import math

import torch

from lightlab.base.objects import locate


def lambda_schedule(optimizer: torch.optim.Optimizer, function: str, arguments: dict | None):
    """LambdaLR over the function at dotted path `function` (config cannot hold a Python lambda)."""
    # Checkpoints keep no trace of the function but plain data: on resume it is rebuilt from this config.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(locate(function), **(arguments or {})))


def warmup_inverse_square_root(t: int, warmup: int) -> float:
    """Linear rise to 1 over `warmup` intervals, then decay as 1/sqrt(t) (the original Transformer's schedule)."""
    return min((t + 1) / warmup, math.sqrt(warmup / (t + 1)))
