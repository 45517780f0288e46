"""Characters as tokens: names to padded index tensors and back.

A name of L characters becomes one row of ``max_len + 2`` integers::

    [BOUNDARY, c_1, ..., c_L, BOUNDARY, PAD, ..., PAD]

Index 0 is the boundary token ``"."``: the first one is the start a model conditions on, the
second marks the end of the name, and a model must predict it like any character (so "where
the name stops" is learned, and counted in every per-character loss). ``PAD`` (-1) is not a
token: it fills the row after the end, and losses ignore it. Letters take indices 1, 2, ...

    vocab = CharVocab.from_names(train_names)
    x = vocab.encode(train_names)     # int64 (N, max_len + 2)
    vocab.decode(x)                   # the names again
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

BOUNDARY = "."  # index 0: starts every name and ends it
PAD = -1  # fills a row after the end token; never a model input or target


@dataclass(frozen=True)
class CharVocab:
    """The letters (indices 1..len) and the longest name (in characters) that rows can hold."""

    letters: str
    max_len: int

    def __post_init__(self) -> None:
        if not self.letters or len(set(self.letters)) != len(self.letters) or BOUNDARY in self.letters:
            raise ValueError(f"letters must be distinct characters other than {BOUNDARY!r}, got {self.letters!r}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {self.max_len}")

    @classmethod
    def from_names(cls, names: Sequence[str], max_len: int | None = None) -> "CharVocab":
        """The sorted letters of ``names``; ``max_len`` defaults to the longest name."""
        if not names:
            raise ValueError("from_names needs at least one name")
        longest = max(len(n) for n in names)
        return cls("".join(sorted(set("".join(names)))), longest if max_len is None else max_len)

    @property
    def size(self) -> int:
        """Number of tokens a model predicts over: the letters and the boundary."""
        return len(self.letters) + 1

    @property
    def width(self) -> int:
        """Length of an encoded row: start token, up to ``max_len`` letters, end token."""
        return self.max_len + 2

    def itos(self, i: int) -> str:
        return BOUNDARY if i == 0 else self.letters[i - 1]

    def encode(self, names: Sequence[str]) -> Tensor:
        """Names -> int64 tensor (N, max_len + 2): start, letters, end, then PAD."""
        if isinstance(names, str):
            raise TypeError("encode expects a list of names, got one string; wrap it: encode([name])")
        index = {c: i + 1 for i, c in enumerate(self.letters)}
        x = torch.full((len(names), self.width), PAD, dtype=torch.long)
        for row, name in enumerate(names):
            if len(name) > self.max_len:
                raise ValueError(
                    f"name {name!r} has {len(name)} characters, more than max_len={self.max_len}; "
                    "build the vocabulary with a larger max_len"
                )
            unknown = sorted(set(name) - set(index))
            if unknown:
                raise ValueError(f"name {name!r} has characters {unknown} that are not in the vocabulary {self.letters!r}")
            x[row, 0] = 0
            x[row, 1 : len(name) + 1] = torch.tensor([index[c] for c in name], dtype=torch.long)
            x[row, len(name) + 1] = 0
        return x

    def decode(self, x: Tensor) -> list[str]:
        """Rows (as made by ``encode`` or a model's ``sample``) -> names; each stops at its end token."""
        if x.dim() != 2:
            raise ValueError(f"decode expects rows of shape (N, T), got {tuple(x.shape)}")
        out = []
        for row in x.tolist():
            letters = []
            for i in row[1:]:
                if i <= 0:  # end token or padding
                    break
                letters.append(self.letters[i - 1])
            out.append("".join(letters))
        return out


def count_tokens(x: Tensor) -> int:
    """Number of predicted tokens in encoded rows: every letter plus each name's end token."""
    return int((x[:, 1:] != PAD).sum())
