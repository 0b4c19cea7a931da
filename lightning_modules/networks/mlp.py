"""The MLP family as one configurable network.

The seed's networks are all settings of this one class:
  BasicNeuralNetwork  hidden_dims=[h, h]
  MNISTClassifier     hidden_dims=[512, 256, 128], dropout=0.3
  DynamicMLP          any hidden_dims, dropout=0.2
  MLPWithBN           batch_norm=true (Linear -> BatchNorm -> activation -> dropout)
  residual MLP        residual=true, equal widths (a block adds its input when its widths match)
  FusedBiasActivation activation=fused_bias_relu (the hidden layers' bias and ReLU as one autograd op)
"""
from typing import Literal

import torch
from torch import nn

from lightning_modules.networks.fused_activation import FusedBiasReLULayer

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}
Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "fused_bias_relu"]
Init = Literal["default", "kaiming", "xavier"]


class HiddenBlock(nn.Module):
    """Linear -> (BatchNorm) -> activation -> (Dropout), plus the input when `residual` and widths match.

    With "fused_bias_relu" the bias moves from the Linear into the activation, which adds it and applies ReLU
    in one op (after the BatchNorm, if any); the parameter count stays the same.
    """

    def __init__(self, in_features: int, out_features: int, activation: str, dropout: float, batch_norm: bool,
                 residual: bool):
        super().__init__()
        fused = activation == "fused_bias_relu"
        layers = [nn.Linear(in_features, out_features, bias=not fused)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(out_features))
        layers.append(FusedBiasReLULayer(out_features, fan_in=in_features) if fused else ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*layers)
        self.residual = residual and in_features == out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + x if self.residual else self.layers(x)


class MLP(nn.Module):
    """Flattens its input, runs one HiddenBlock per entry of `hidden_dims`, and ends in a linear classifier.

    Dropout follows every hidden block but the last, as in the seed's MNISTClassifier and DynamicMLP.
    """

    # No defaults where conf/model's options differ (mlp, mlp_bn, residual_mlp): conf/ is their one source.
    def __init__(self, input_shape: list[int], num_classes: int, *, hidden_dims: list[int], dropout: float,
                 batch_norm: bool, residual: bool, init: Init, activation: Activation = "relu"):
        super().__init__()
        if not 0 <= dropout < 1:  # checked here: with one hidden layer no Dropout is built to refuse it
            raise ValueError(f"dropout={dropout}: a probability of zeroing a unit, from 0 (none) to below 1")
        widths = [int(torch.Size(input_shape).numel()), *hidden_dims]
        self.features = nn.Sequential(*(
            HiddenBlock(widths[i], widths[i + 1], activation, dropout if i < len(hidden_dims) - 1 else 0.0,
                        batch_norm, residual)
            for i in range(len(hidden_dims))))
        self.classifier = nn.Linear(widths[-1], num_classes)
        initialize_weights(self, init, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(1)))


def initialize_weights(module: nn.Module, init: str, activation: str = "relu") -> None:
    """Kaiming (He) suits ReLU-like activations, Xavier (Glorot) tanh/sigmoid; 'default' keeps PyTorch's."""
    if init == "default":
        return
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if init == "kaiming":
                nonlinearity = "leaky_relu" if activation == "leaky_relu" else "relu"
                nn.init.kaiming_normal_(layer.weight, nonlinearity=nonlinearity)
            else:
                nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, FusedBiasReLULayer):
            nn.init.zeros_(layer.bias)  # the bias its Linear hands over
