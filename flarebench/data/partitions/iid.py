"""``iid``: a seeded random permutation of the training set, cut into equal slices of ``n``."""

from __future__ import annotations

import torch

from ...methods.registry import register
from .base import BudgetedPartition


@register
class IID(BudgetedPartition):
    name = "iid"
    summary = "a seeded random permutation cut into equal slices"

    def deal(self, labels, clients, n, rng):
        perm = torch.from_numpy(rng.permutation(len(labels)))
        return [perm[i * n : (i + 1) * n].sort().values for i in range(clients)]
