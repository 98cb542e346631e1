"""Compressors: turn K clients' vectors ``v`` ``[K, P]`` into sparse messages, and back.

``compress`` works per tensor (every trainable tensor, kernels and biases): it keeps
``k_t = tensor_k(n_t, density, rounding)`` entries of tensor t. ``decompress`` rebuilds the dense
``[P]`` vector that a message stands for (what the server adds up).

- ``identity``: everything, dense.
- ``topk``: the k largest magnitudes per tensor (ties broken by torch.topk).
- ``randk``: k positions per tensor uniformly without replacement, drawn from a seed that client
  and server share, so the message carries the seed and the values, not the positions.
  Values are not rescaled by n/k (as GRACE's RandomK); with error feedback that is the usual choice.
"""

from __future__ import annotations

import torch

from ..flat import Layout
from ..wire.message import Message


def tensor_k(n: int, density: float, rounding: str = "round") -> int:
    """Entries kept of a tensor of ``n`` entries.

    ``round``: ``max(1, round(density * n))`` (flarebench's default);
    ``reference``: ``min(n, round(density * n) + 1)``: the authors' code takes the round(n*R)+2
    largest and keeps those strictly above the smallest of them.
    """
    if rounding == "reference":
        return min(n, int(round(density * n)) + 1)
    return min(n, max(1, int(round(density * n))))


class Compressor:
    """Base class. ``compress(v [K, P], seeds) -> K messages``; ``decompress(msg) -> [P]``."""

    name = "base"

    def __init__(self, layout: Layout, density: float = 1.0, rounding: str = "round"):
        self.layout = layout
        self.density = density
        self.rounding = rounding
        self.counts = tuple(tensor_k(n, density, rounding) for n in layout.sizes)

    def compress(self, v: torch.Tensor, seeds: list[int]) -> list[Message]:
        raise NotImplementedError

    def positions(self, msg: Message) -> list[torch.Tensor]:
        """Per-tensor int64 positions the message's values belong to (sorted)."""
        return msg.split_indices()

    def decompress(self, msg: Message, device=None) -> torch.Tensor:
        """Dense float32 ``[P]`` with the message's values at their positions, zeros elsewhere."""
        out = torch.zeros(self.layout.num_params, dtype=torch.float32, device=device)
        if msg.is_dense:
            out.copy_(msg.values.to(device))
            return out
        offsets = torch.tensor([s.start for s in self.layout.segments], device=device)
        flat_idx = torch.cat([p.to(device) + offsets[t] for t, p in enumerate(self.positions(msg))])
        out[flat_idx] = msg.values.to(device=device, dtype=torch.float32)
        return out

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Identity(Compressor):
    name = "identity"

    def __init__(self, layout: Layout, density: float = 1.0, rounding: str = "round"):
        super().__init__(layout, 1.0, rounding)

    def compress(self, v, seeds):
        sizes = tuple(self.layout.sizes)
        return [Message.dense(sizes, row.detach().float().cpu()) for row in v]


class TopK(Compressor):
    name = "topk"

    def compress(self, v, seeds):
        K = v.shape[0]
        idx_parts, val_parts = [], []
        for seg, k in zip(self.layout.segments, self.counts):
            block = v[:, seg.start : seg.stop]
            idx = block.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values  # [K, k]
            idx_parts.append(idx)
            val_parts.append(block.gather(1, idx))
        idx_all = torch.cat(idx_parts, dim=1).cpu()
        val_all = torch.cat(val_parts, dim=1).detach().float().cpu()
        sizes = tuple(self.layout.sizes)
        return [Message.sparse(sizes, self.counts, idx_all[i], val_all[i]) for i in range(K)]


class RandK(Compressor):
    name = "randk"

    def seeded_positions(self, seed: int) -> list[torch.Tensor]:
        """Per-tensor sorted positions drawn from ``seed`` (CPU generator: same on every device)."""
        g = torch.Generator().manual_seed(seed)
        return [torch.randperm(n, generator=g)[:k].sort().values for n, k in zip(self.layout.sizes, self.counts)]

    def positions(self, msg):
        if msg.seed is None:
            return msg.split_indices()
        return self.seeded_positions(msg.seed)

    def compress(self, v, seeds):
        sizes = tuple(self.layout.sizes)
        offsets = [s.start for s in self.layout.segments]
        out = []
        for row, seed in zip(v, seeds):
            flat_idx = torch.cat([p + o for p, o in zip(self.seeded_positions(seed), offsets)]).to(v.device)
            out.append(Message.seeded(sizes, self.counts, seed, row[flat_idx].detach().float().cpu()))
        return out


COMPRESSORS = {"identity": Identity, "topk": TopK, "randk": RandK}
