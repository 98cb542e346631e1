"""``contiguous``: the FLARE paper's split: client i gets samples ``[i*n, (i+1)*n)`` in dataset order."""

from __future__ import annotations

import torch

from ...methods.registry import register
from .base import PartitionPart, samples_each


@register
class Contiguous(PartitionPart):
    name = "contiguous"
    summary = "client i gets samples [i*n, (i+1)*n) in dataset order (the FLARE paper's split)"

    def split(self, labels, clients, seed, samples_per_client, natural):
        n = samples_each(len(labels), clients, samples_per_client)
        return [torch.arange(i * n, (i + 1) * n) for i in range(clients)]
