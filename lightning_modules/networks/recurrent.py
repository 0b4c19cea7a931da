"""The seed's sequence classifiers: embedding -> RNN / LSTM / GRU -> pooling -> classifier.

Sequences run packed (pack_padded_sequence), so the recurrence never reads padding and a sentence gets the
same logits alone or next to a much longer one. Pooling turns the per-token outputs into one vector:
- last: the final hidden state (of both directions when bidirectional), the seed's BasicRNN/LSTMModel/BiLSTM;
- mean / max: over the real tokens only;
- attention: the seed's additive attention, a learned weighting of the tokens (weights kept for inspection).
"""
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "mean", "max", "attention")


class AdditiveAttention(nn.Module):
    """score_t = v . tanh(W h_t + b) over the real tokens; returns (sum_t softmax(score)_t h_t, the weights)."""

    def __init__(self, width: int, attention_width: int):
        super().__init__()
        self.project = nn.Linear(width, attention_width)
        self.score = nn.Linear(attention_width, 1, bias=False)

    def forward(self, outputs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(torch.tanh(self.project(outputs))).squeeze(2).masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=1)
        return torch.bmm(weights.unsqueeze(1), outputs).squeeze(1), weights


class RecurrentClassifier(nn.Module):
    # No defaults where conf/model's options differ (rnn, lstm, gru, bilstm_attention): conf/ is their one source.
    def __init__(self, input_shape: list[int], num_classes: int, vocabulary_size: int, *, cell: str,
                 bidirectional: bool, pooling: str, embedding_dim: int = 128, hidden_size: int = 128,
                 num_layers: int = 1, dropout: float = 0.3, attention_width: int = 64, sparse_embeddings: bool = False):
        super().__init__()
        if cell not in CELLS or pooling not in POOLINGS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)} and pooling one of {', '.join(POOLINGS)}; "
                             f"got cell={cell!r}, pooling={pooling!r}")
        self.pooling = pooling
        # padding_idx: the pad token's row stays zero and gets no gradient.
        self.embedding = nn.Embedding(vocabulary_size, embedding_dim, padding_idx=0, sparse=sparse_embeddings)
        self.recurrent = CELLS[cell](embedding_dim, hidden_size, num_layers, batch_first=True,
                                     bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        width = hidden_size * (2 if bidirectional else 1)
        self.attention = AdditiveAttention(width, attention_width) if pooling == "attention" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        embedded = self.dropout(self.embedding(ids))
        # Packing needs the lengths on the CPU; enforce_sorted=False sorts inside and restores the batch order.
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, state = self.recurrent(packed)
        if self.pooling == "last" and torch.onnx.is_in_onnx_export():
            # torch's ONNX (TorchScript-based) exporter fails on a one-layer RNN whose packed outputs go unused
            # ("vector::_M_range_check" in its peephole pass): read the same final states off the outputs.
            outputs, _ = pad_packed_sequence(outputs, batch_first=True)
            pooled = final_states(outputs, lengths.to(outputs.device), self.recurrent.bidirectional)
        elif self.pooling == "last":
            hidden = state[0] if isinstance(state, tuple) else state  # LSTM's state is (hidden, cell)
            # The last layer's final state; bidirectional: the forward one (after the last real token)
            # and the backward one (after reading back to the first).
            pooled = torch.cat([hidden[-2], hidden[-1]], dim=1) if self.recurrent.bidirectional else hidden[-1]
        else:
            outputs, _ = pad_packed_sequence(outputs, batch_first=True)  # zeros after each sequence's end
            mask = torch.arange(outputs.shape[1], device=outputs.device) < lengths.to(outputs.device)[:, None]
            if self.pooling == "mean":
                pooled = outputs.sum(dim=1) / lengths.to(outputs.device)[:, None]
            elif self.pooling == "max":
                pooled = outputs.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
            else:
                pooled, _ = self.attention(outputs, mask)
        return self.classifier(self.dropout(pooled))


def final_states(outputs: torch.Tensor, lengths: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """The last layer's final hidden states from its padded outputs (B, T, directions * H): the forward
    direction's after each sequence's last real token, the backward direction's at the first token."""
    index = (lengths - 1)[:, None, None].expand(-1, 1, outputs.shape[2])
    last = outputs.gather(1, index).squeeze(1)
    if not bidirectional:
        return last
    width = outputs.shape[2] // 2
    return torch.cat([last[:, :width], outputs[:, 0, width:]], dim=1)
