"""``dirichlet``: label skew (Hsu et al. 2019): per class, client proportions ~ Dir(alpha); small alpha = skewed.

Uses ``clients * n`` samples in total; client sizes are unequal (that is the point). Every client gets at
least one sample (one moved from the largest client). ``alpha`` was RunConfig ``dirichlet_alpha`` before parts.
"""

from __future__ import annotations

import numpy as np
import torch

from ...methods.registry import Param, positive, register
from .base import BudgetedPartition


@register
class Dirichlet(BudgetedPartition):
    name = "dirichlet"
    summary = "per class, client proportions ~ Dir(alpha): label skew, unequal client sizes"
    paper = "Hsu et al., 2019 (arXiv 1909.06335)"
    params = (Param("alpha", float, 0.5, "concentration; smaller = more skewed labels", check=positive, rule="> 0"),)

    def deal(self, labels, clients, n, rng):
        y = labels.cpu().numpy()
        pool = rng.permutation(len(y))[: clients * n]
        owners: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(y[pool]):
            idx = pool[y[pool] == c]
            p = rng.dirichlet(np.full(clients, self.alpha))
            cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
            for i, part in enumerate(np.split(idx, cuts)):
                owners[i].extend(part.tolist())
        for i in range(clients):  # no empty client: move one sample from the largest client
            if not owners[i]:
                j = max(range(clients), key=lambda k: len(owners[k]))
                owners[i].append(owners[j].pop())
        return [torch.tensor(sorted(o), dtype=torch.int64) for o in owners]
