"""``randk``: k positions per tensor uniformly without replacement, drawn from a seed client and server
share (derived from run seed, round and client), so the message carries the seed and the values only.

Tensor t's positions are ``torch.randperm(n_t)[:k_t]`` (sorted) of a CPU generator seeded with
``derive(seed, "randk", t)``: the same on every device (the server draws them again from the seed),
computed in O(k_t) (engine/seeds.py, randperm_prefix) and moved to the update's device, where the
values are gathered; only the k values cross to the host.

``scale = false`` (default, GRACE's RandomK): values as they are; with error feedback the usual choice.
``scale = true``: the server multiplies tensor t's values by ``n_t / k_t``, which makes the compressor
unbiased (E[decompress] = v); no extra bits travel.
"""

from __future__ import annotations

import torch

from ...wire.message import Message
from ...engine.seeds import derive, randperm_prefix
from ..registry import Param, register
from .base import Sparsifier


@register
class RandK(Sparsifier):
    name = "randk"
    summary = "k = R n uniformly random positions per tensor from a shared seed (values only travel)"
    paper = "Stich et al., NeurIPS 2018; Wangni et al., NeurIPS 2018"
    params = Sparsifier.params + (
        Param("scale", bool, False, "multiply by n/k at the server: unbiased (no extra bits)", paper="Wangni et al. 2018"),
    )

    @property
    def unbiased(self) -> bool:
        return bool(self.scale)

    def seeded_positions(self, seed: int) -> list[torch.Tensor]:
        """Per-tensor sorted int64 positions drawn from ``seed`` (CPU: the same on every device)."""
        return [randperm_prefix(derive(seed, "randk", t), n, k).sort().values
                for t, (n, k) in enumerate(zip(self.layout.sizes, self.counts))]

    def positions(self, msg):
        if msg.seed is None:
            return msg.split_indices()
        return self.seeded_positions(msg.seed)

    def values_of(self, msg, device=None):
        values = msg.values.to(device=device, dtype=torch.float32)
        if not self.scale or msg.is_dense:
            return values
        factor = torch.tensor([n / k for n, k in zip(msg.sizes, msg.counts)], dtype=torch.float32, device=device)
        return values * torch.repeat_interleave(factor, torch.tensor(msg.counts, device=device))

    def compress(self, v, ctx):
        offsets = [s.start for s in self.layout.segments]
        out = []
        for row in range(v.shape[0]):
            seed = ctx.seed_for(row, "randk")
            flat_idx = torch.cat([p + o for p, o in zip(self.seeded_positions(seed), offsets)]).to(v.device)
            out.append(Message.seeded(self.sizes, self.counts, seed, v[row, flat_idx].detach().float().cpu()))
        return out
