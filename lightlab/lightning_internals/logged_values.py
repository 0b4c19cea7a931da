"""Lightning's store of `self.log` values, without moving to the device what is already there.

Every `self.log` call asks the value's `_ResultMetric` to move itself to the logged value's device, and its `to()`
walks its whole `__dict__` with `apply_to_collection`, deep-copying its metadata dataclass on the way: ~0.5 ms a
call on the 2-core CPU, ~20 calls an epoch for a small MNIST run (the step loss, the validation metrics, the
epoch's). When every tensor it holds, and the torchmetrics Metric it holds for a logged Metric, is on that device
already, the walk would hand back the same objects: `to()` returns at once. The metadata object then stays the
one `self.log` registered instead of an equal copy. tests/unit/test_lightning_internals.py checks the path runs
and that logged values still move when the device changes.
"""
import torch
from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric
from torchmetrics import Metric

from lightlab.lightning_internals.hook_dispatch import dispatched

_lightning_to = _ResultMetric.to


def _on(device: torch.device, value) -> bool:
    """Whether `value` (an attribute of a _ResultMetric) holds no tensor or Metric off `device` (nor another Module)."""
    if isinstance(value, (torch.Tensor, Metric)):  # (a torchmetrics Metric moves its states, `device` follows)
        return value.device == device
    if isinstance(value, dict):
        return all(_on(device, item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(_on(device, item) for item in value)
    return not isinstance(value, torch.nn.Module)


def _to(self, *args, **kwargs):
    device = args[0] if len(args) == 1 and not kwargs and isinstance(args[0], torch.device) else None
    if device is not None and all(_on(device, value) for value in self.__dict__.values()):
        dispatched["log_not_moved"] += 1
        return self
    return _lightning_to(self, *args, **kwargs)


_ResultMetric.to = _to
