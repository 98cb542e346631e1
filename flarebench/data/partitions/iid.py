"""``iid``: a seeded random permutation of the training set, cut into equal slices of ``n``."""

from __future__ import annotations

import numpy as np
import torch

from ...methods.registry import register
from .base import PartitionPart, samples_each


@register
class IID(PartitionPart):
    name = "iid"
    summary = "a seeded random permutation cut into equal slices"

    def split(self, labels, clients, seed, samples_per_client, natural):
        n = samples_each(len(labels), clients, samples_per_client)
        perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
        return [perm[i * n : (i + 1) * n].sort().values for i in range(clients)]
