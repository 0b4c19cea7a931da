"""Forecasting networks: a window's history in, `horizon` steps of every target out (direct multi-step).

Inputs are what datamodules/time_series.py gives, standardised: history (batch, lookback, targets + covariates), the
targets first, and the covariates of the steps to forecast, future (batch, horizon, covariates), which are known in
advance (a workday flag, a temperature forecast, calendar features). Output: (batch, horizon, targets).

Each network forecasts the change from the last observed value (NLinear's normalisation, Zeng et al. 2023): the
window's level is subtracted from its history and added back to the output, so a level the training period never
reached (a trend, a shifted series) does not leave the network's range.
"""
from typing import Literal

import torch
from torch import nn

from lightning_modules.networks.mlp import MLP, Activation, Init


def relative_history(history: torch.Tensor, targets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(history with its targets relative to their last value, that last value (batch, 1, targets))."""
    last = history[:, -1:, :targets]
    return torch.cat([history[..., :targets] - last, history[..., targets:]], dim=2), last


class LinearForecaster(nn.Module):
    """NLinear: each step ahead is a learned linear combination of the history's steps (shared by the targets),
    plus a linear function of that step's covariates. The honest baseline for the networks below."""

    def __init__(self, lookback: int, horizon: int, targets: int, covariates: int):
        super().__init__()
        self.targets = targets
        self.time = nn.Linear(lookback, horizon)
        self.covariates = nn.Linear(covariates, targets) if covariates else None

    def forward(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        relative, last = relative_history(history, self.targets)
        forecast = self.time(relative[..., :self.targets].transpose(1, 2)).transpose(1, 2) + last
        return forecast + self.covariates(future) if self.covariates is not None else forecast


class WindowMLP(nn.Module):
    """The seeds' MLP over the whole window: the flattened history and future covariates in, every step of every
    target out."""

    # No defaults where conf/model/forecast_mlp.yaml sets them: conf/ is their one source.
    def __init__(self, lookback: int, horizon: int, targets: int, covariates: int, *, hidden_dims: list[int],
                 dropout: float, batch_norm: bool, residual: bool, init: Init, activation: Activation = "relu"):
        super().__init__()
        self.targets, self.horizon = targets, horizon
        width = lookback * (targets + covariates) + horizon * covariates
        self.mlp = MLP([width], horizon * targets, hidden_dims=hidden_dims, dropout=dropout, batch_norm=batch_norm,
                       residual=residual, init=init, activation=activation)

    def forward(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        relative, last = relative_history(history, self.targets)
        inputs = torch.cat([relative.flatten(1), future.flatten(1)], dim=1)
        return self.mlp(inputs).view(-1, self.horizon, self.targets) + last


class RecurrentForecaster(nn.Module):
    """The seeds' recurrent family as an encoder: an LSTM or GRU reads the history step by step; its last hidden
    state and the future covariates feed a direct multi-step head (an MLP that outputs every step at once)."""

    def __init__(self, lookback: int, horizon: int, targets: int, covariates: int, *, cell: Literal["lstm", "gru"],
                 hidden_size: int, num_layers: int, dropout: float, head_dims: list[int]):
        super().__init__()
        self.targets, self.horizon = targets, horizon
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.encoder = recurrent(targets + covariates, hidden_size, num_layers=num_layers, batch_first=True,
                                 dropout=dropout if num_layers > 1 else 0.0)
        self.head = MLP([hidden_size + horizon * covariates], horizon * targets, hidden_dims=head_dims, dropout=0.0,
                        batch_norm=False, residual=False, init="default")

    def forward(self, history: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        relative, last = relative_history(history, self.targets)
        outputs, _ = self.encoder(relative)
        inputs = torch.cat([outputs[:, -1], future.flatten(1)], dim=1)
        return self.head(inputs).view(-1, self.horizon, self.targets) + last
