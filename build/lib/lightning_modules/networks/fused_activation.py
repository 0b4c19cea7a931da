"""The seed's FusedBiasActivation, corrected: bias add and ReLU as one autograd op with a hand-written backward.

The seed's backward read `bias`, which it never saved. This one saves only a boolean mask of the positive
pre-activations: one byte per element instead of a float pre-activation, and all that ReLU's derivative needs.
"""
import math

import torch
from torch import nn


class FusedBiasReLU(torch.autograd.Function):
    """relu(input + bias) for input (..., features) and bias (features,): the bias adds along the last dimension."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        if bias.dim() != 1 or input.dim() < 1 or input.shape[-1] != bias.shape[0]:
            raise ValueError(f"FusedBiasReLU: bias must be (features,) matching input's last dimension; "
                             f"got input {tuple(input.shape)} and bias {tuple(bias.shape)}")
        pre_activation = input + bias
        positive = pre_activation > 0
        ctx.save_for_backward(positive)
        # The mask is saved, not returned: the only output is differentiable, so there is nothing to mark.
        return pre_activation.relu_()  # in place: pre_activation is ours and not needed again

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        positive, = ctx.saved_tensors
        needs_input_grad, needs_bias_grad = ctx.needs_input_grad
        if not (needs_input_grad or needs_bias_grad):
            return None, None
        # d relu(x + b) / dx = d relu(x + b) / db = 1 where x + b > 0, else 0. Written with tensor ops on
        # grad_output, so double backward works too (the mask is a constant).
        grad_pre_activation = grad_output * positive
        grad_bias = grad_pre_activation.reshape(-1, positive.shape[-1]).sum(0) if needs_bias_grad else None
        return (grad_pre_activation if needs_input_grad else None), grad_bias


class FusedBiasReLULayer(nn.Module):
    """A learned bias (features,) followed by ReLU, through FusedBiasReLU. Use after a Linear with bias=False.

    The bias starts as nn.Linear's would: uniform in +-1/sqrt(fan_in), fan_in being that Linear's input width.
    """

    def __init__(self, features: int, fan_in: int):
        super().__init__()
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        self.bias = nn.Parameter(torch.empty(features).uniform_(-bound, bound))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            # A saved trace (TorchScript, lightlab/run/export.py) cannot call a Python autograd.Function: trace the
            # same forward as plain ops. The hand-written backward is for training, which a trace is not used for.
            return torch.relu(input + self.bias)
        return FusedBiasReLU.apply(input, self.bias)

    def extra_repr(self) -> str:
        return f"features={self.bias.shape[0]}"
