"""Losses for the `loss` config group, each called as `loss(outputs, targets)`.

Every constructor takes plain YAML values (numbers, lists, null), as configs are instantiated with
`_convert_="all"`; per-class weights become buffers, so they follow the module's `.to(device/dtype)` and
are stored in checkpoints. Classification targets are int64 class indices of shape (batch,) for outputs
of shape (batch, classes); extra trailing dimensions (e.g. per-pixel labels) work the same way.
"""
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Reduction = Literal["mean", "sum", "none"]


def optional_tensor(values: float | list[float] | None) -> torch.Tensor | None:
    return None if values is None else torch.tensor(values, dtype=torch.float32)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """Softmax cross-entropy on logits. With class weights, 'mean' divides by the summed weights of the targets."""

    def __init__(self, class_weights: list[float] | None = None, label_smoothing: float = 0.0):
        super().__init__(weight=optional_tensor(class_weights), label_smoothing=label_smoothing)


class NLLLoss(nn.NLLLoss):
    """Negative log-likelihood: expects log-probabilities (log_softmax outputs), not logits."""

    def __init__(self, class_weights: list[float] | None = None):
        super().__init__(weight=optional_tensor(class_weights))


class FocalLoss(nn.Module):
    """Multi-class focal loss, -alpha_t (1 - p_t)^gamma log p_t (Lin et al., 2017), on logits.

    (1 - p_t)^gamma shrinks the loss of examples the model already gets right, so training concentrates on
    the hard ones. alpha: None for no weighting, one number to scale every class, or one weight per class.
    gamma=0 with alpha=None is plain cross-entropy. 'mean' is the plain mean over examples, also with alpha.
    """

    def __init__(self, alpha: float | list[float] | None = None, gamma: float = 2.0, reduction: Reduction = "mean"):
        super().__init__()
        self.register_buffer("alpha", optional_tensor(alpha))
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # log p_t from log_softmax: exp(-cross_entropy) would lose p_t's precision where it matters, near 0 and 1.
        target_log_probability = F.log_softmax(outputs, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
        losses = -(1 - target_log_probability.exp()) ** self.gamma * target_log_probability
        if self.alpha is not None:
            losses = losses * (self.alpha if self.alpha.dim() == 0 else self.alpha[targets])
        if self.reduction == "mean":
            return losses.mean()
        return losses.sum() if self.reduction == "sum" else losses


class ClassIndicesAsOneHot:
    """Mixin for losses that compare outputs with float targets of the same shape.

    Integer class indices (one dimension fewer than the outputs) become one-hot floats over dimension 1, so
    these losses also train a classifier; any other targets (floats, bools, 0/1 ints of the outputs' shape)
    are only cast to the outputs' dtype.
    """

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not targets.is_floating_point() and targets.dim() == outputs.dim() - 1:
            targets = F.one_hot(targets.long(), outputs.shape[1]).movedim(-1, 1)
        return super().forward(outputs, targets.to(outputs.dtype))


class BCEWithLogitsLoss(ClassIndicesAsOneHot, nn.BCEWithLogitsLoss):
    """Sigmoid + binary cross-entropy per output: binary and multi-label tasks, or one-vs-rest on class indices."""

    def __init__(self, pos_weight: list[float] | None = None):
        super().__init__(pos_weight=optional_tensor(pos_weight))


class MSELoss(ClassIndicesAsOneHot, nn.MSELoss):
    """Mean squared error, for regression heads (or a classifier's outputs against one-hot targets)."""


class L1Loss(ClassIndicesAsOneHot, nn.L1Loss):
    """Mean absolute error: less swayed by outliers than MSE."""


class SmoothL1Loss(ClassIndicesAsOneHot, nn.SmoothL1Loss):
    """Huber-like: squared error below `beta`, absolute error above it."""

    def __init__(self, beta: float = 1.0):
        super().__init__(beta=beta)


class HuberLoss(ClassIndicesAsOneHot, nn.HuberLoss):
    """Squared error below `delta`, delta * (|error| - delta / 2) above it: mse's gradient near the target, l1's
    robustness to outliers far from it."""

    def __init__(self, delta: float = 1.0):
        super().__init__(delta=delta)
