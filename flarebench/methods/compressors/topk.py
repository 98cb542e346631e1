"""``topk``: the k largest magnitudes of every tensor (ties broken by torch.topk), positions + values."""

from __future__ import annotations

import torch

from ...wire.message import Message
from ..registry import register
from .base import Sparsifier


def topk_positions(block: torch.Tensor, k: int) -> torch.Tensor:
    """``block`` ``[K, n]`` -> sorted int64 positions ``[K, k]`` of the k largest ``|block|`` per row."""
    return block.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values


@register
class TopK(Sparsifier):
    name = "topk"
    summary = "the k = R n largest magnitudes per tensor"
    paper = "Aji & Heafield, EMNLP 2017; Stich et al., NeurIPS 2018"

    def select(self, v: torch.Tensor, counts) -> list[Message]:
        """Top-``counts[t]`` of every tensor t of every row of ``v`` ``[K, P]`` -> K sparse messages."""
        idx_parts, val_parts = [], []
        for seg, k in zip(self.layout.segments, counts):
            block = v[:, seg.start : seg.stop]
            idx = topk_positions(block, k)
            idx_parts.append(idx)
            val_parts.append(block.gather(1, idx))
        idx_all = torch.cat(idx_parts, dim=1).cpu()
        val_all = torch.cat(val_parts, dim=1).detach().float().cpu()
        return [Message.sparse(self.sizes, counts, idx_all[i], val_all[i]) for i in range(v.shape[0])]

    def compress(self, v, ctx):
        return self.select(v, self.counts)
