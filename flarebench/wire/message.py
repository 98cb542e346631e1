"""The message a client uploads, before it becomes bytes.

A :class:`Message` holds, for T tensors: ``sizes`` (n_t), ``counts`` (k_t entries sent) and
``values`` (float32 ``[sum k_t]``, tensor by tensor); the positions are either
``indices`` (int64 ``[sum k_t]``, positions local to each tensor, ascending within it),
or a ``seed`` from which both sides draw them (random-k), or implicit (dense: k_t == n_t).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPARSE, DENSE, SEEDED = 0, 1, 2


@dataclass
class Message:
    kind: int
    sizes: tuple[int, ...]
    counts: tuple[int, ...]
    values: torch.Tensor
    indices: torch.Tensor | None = None
    seed: int | None = None
    position_codec: str | None = None  # set by the decoder: the codec the sender chose (None: dense/seeded)

    @classmethod
    def sparse(cls, sizes, counts, indices: torch.Tensor, values: torch.Tensor) -> "Message":
        return cls(SPARSE, tuple(sizes), tuple(int(c) for c in counts), values, indices=indices)

    @classmethod
    def dense(cls, sizes, values: torch.Tensor) -> "Message":
        return cls(DENSE, tuple(sizes), tuple(sizes), values)

    @classmethod
    def seeded(cls, sizes, counts, seed: int, values: torch.Tensor) -> "Message":
        return cls(SEEDED, tuple(sizes), tuple(int(c) for c in counts), values, seed=int(seed))

    @property
    def is_dense(self) -> bool:
        return self.kind == DENSE

    @property
    def nnz(self) -> int:
        """Entries sent (values on the wire)."""
        return sum(self.counts)

    def split_indices(self) -> list[torch.Tensor]:
        """Per-tensor positions (views into ``indices``)."""
        if self.indices is None:
            raise ValueError("message carries no explicit positions")
        return list(torch.split(self.indices, list(self.counts)))
