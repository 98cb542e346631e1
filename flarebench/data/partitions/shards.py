"""``shards``: McMahan et al. 2017: sort ``clients * n`` samples by label, cut into ``shards_per_client * clients``
shards, deal ``shards_per_client`` of them to each client at random."""

from __future__ import annotations

import numpy as np
import torch

from ...methods.registry import Param, positive, register
from .base import BudgetedPartition


@register
class Shards(BudgetedPartition):
    name = "shards"
    summary = "sort by label, cut into shards, deal shards_per_client shards to each client"
    paper = "McMahan et al., AISTATS 2017"
    params = (Param("shards_per_client", int, 2, "label-sorted shards each client gets", check=positive, rule="> 0"),)

    def deal(self, labels, clients, n, rng):
        k = self.shards_per_client
        y = labels.cpu().numpy()[: clients * n]
        order = np.argsort(y, kind="stable")
        pieces = np.array_split(order, clients * k)
        deal = rng.permutation(len(pieces))
        return [torch.from_numpy(np.sort(np.concatenate([pieces[j] for j in deal[i * k : (i + 1) * k]])))
                for i in range(clients)]
