"""Text -> token ids: a tokenizer chosen by name and a vocabulary built from the training split only.

Tokenizers:
- "basic" (default): lower-case (switchable), then words and single punctuation marks as tokens:
  "Don't stop!" -> ["don", "'", "t", "stop", "!"]. Fast (one regular expression), no dependencies.
- "whitespace": split on whitespace only (lower-cased when `lowercase`); punctuation stays attached.

Ids 0 and 1 are the padding and unknown tokens; the rest follow descending training frequency (ties in
first-seen order), so the ids, and a checkpoint's embedding rows, depend on the training data alone.
"""
import re
from collections import Counter

import torch

PAD, UNKNOWN = "<pad>", "<unk>"
PAD_ID, UNKNOWN_ID = 0, 1
WORDS_AND_PUNCTUATION = re.compile(r"\w+|[^\w\s]")
TOKENIZERS = ("basic", "whitespace")


def tokenize(text: str, tokenizer: str = "basic", lowercase: bool = True) -> list[str]:
    if lowercase:
        text = text.lower()
    if tokenizer == "basic":
        return WORDS_AND_PUNCTUATION.findall(text)
    if tokenizer == "whitespace":
        return text.split()
    raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")


class Vocabulary:
    def __init__(self, tokens: list[str]):
        self.tokens = list(tokens)  # id -> token; tokens[0] is PAD, tokens[1] is UNKNOWN
        self.ids = {token: index for index, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, tokenized_texts: list[list[str]], min_frequency: int = 1, max_size: int | None = None):
        """The training split's tokens seen at least `min_frequency` times, the `max_size` most frequent
        (counting pad and unknown) when set."""
        counts = Counter(token for tokens in tokenized_texts for token in tokens)
        kept = [token for token, count in counts.most_common() if count >= min_frequency]
        if max_size is not None:
            kept = kept[:max(max_size - 2, 0)]
        return cls([PAD, UNKNOWN, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.ids.get(token, UNKNOWN_ID) for token in tokens]


def padded_ids(tokenized_texts: list[list[str]], vocabulary: Vocabulary, max_length: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, longest kept length) int64 ids padded with PAD_ID, and (N,) lengths; texts longer than
    `max_length` tokens keep their first `max_length`. An empty text keeps one unknown token, so every
    sequence has length >= 1 (a recurrent network cannot pack an empty sequence)."""
    encoded = [vocabulary.encode(tokens[:max_length]) or [UNKNOWN_ID] for tokens in tokenized_texts]
    lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.int64)
    ids = torch.full((len(encoded), int(lengths.max()) if len(encoded) else 1), PAD_ID, dtype=torch.int64)
    for row, sequence in enumerate(encoded):
        ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.int64)
    return ids, lengths
