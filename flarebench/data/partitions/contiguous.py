"""``contiguous``: the FLARE paper's split: client i gets samples ``[i*n, (i+1)*n)`` in dataset order."""

from __future__ import annotations

import torch

from ...methods.registry import register
from .base import BudgetedPartition


@register
class Contiguous(BudgetedPartition):
    name = "contiguous"
    summary = "client i gets samples [i*n, (i+1)*n) in dataset order (the FLARE paper's split)"

    def deal(self, labels, clients, n, rng):
        return [torch.arange(i * n, (i + 1) * n) for i in range(clients)]
