"""Split a training set into clients by partition part name (see partitions/: one file per built-in)."""

from __future__ import annotations

import torch

from ..methods.registry import make_part


def partition(labels: torch.Tensor, name: str, clients: int, seed: int, samples_per_client: int | None = None,
              natural: list[torch.Tensor] | None = None, params: dict | None = None) -> list[torch.Tensor]:
    """Client index tensors (int64, sorted) of partition part ``name`` with ``params``; deterministic in ``seed``."""
    return make_part("partition", name, params).split(labels, clients, seed, samples_per_client, natural)


__all__ = ["partition"]
