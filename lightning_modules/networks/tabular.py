"""The MLP family for tables: an embedding per categorical column, concatenated with the numeric block, then the MLP.

Inputs are what datamodules/table.py gives: numeric (batch, input_shape[0]) float and categorical (batch, columns)
int64 category indices, 0 meaning "unknown" (missing, rare or new). Embedding widths follow fastai's rule of thumb,
round(scale * categories ** power), capped at `embedding_max_dim`: wider for columns with more categories.
"""
import torch
from torch import nn

from lightning_modules.networks.mlp import MLP, Activation, Init


def embedding_width(categories: int, scale: float, power: float, max_dim: int) -> int:
    return max(1, min(max_dim, round(scale * categories ** power)))


class TabularMLP(nn.Module):
    # No defaults where conf/model/tabular_mlp.yaml sets them: conf/ is their one source.
    def __init__(self, input_shape: list[int], num_classes: int, cardinalities: list[int], *, hidden_dims: list[int],
                 dropout: float, batch_norm: bool, residual: bool, init: Init, embedding_max_dim: int,
                 embedding_scale: float, embedding_power: float, embedding_dropout: float,
                 activation: Activation = "relu"):
        super().__init__()
        self.embeddings = nn.ModuleList(
            nn.Embedding(rows, embedding_width(rows, embedding_scale, embedding_power, embedding_max_dim))
            for rows in cardinalities)
        for embedding in self.embeddings:
            # Row 0 ("unknown") starts at zero: where training never updates it (no rare category in that column),
            # an unseen category adds nothing rather than a random vector.
            nn.init.zeros_(embedding.weight[0].data)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        width = input_shape[0] + sum(e.embedding_dim for e in self.embeddings)
        self.mlp = MLP([width], num_classes, hidden_dims=hidden_dims, dropout=dropout, batch_norm=batch_norm,
                       residual=residual, init=init, activation=activation)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        embedded = [embedding(categorical[:, i]) for i, embedding in enumerate(self.embeddings)]
        features = torch.cat([numeric, self.embedding_dropout(torch.cat(embedded, dim=1))] if embedded else [numeric],
                             dim=1)
        return self.mlp(features)
