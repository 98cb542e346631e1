"""Error-feedback memories (GRACE's 'memory'): what a client adds before compressing and keeps after.

Batched over the K clients of a round; state is kept per client id for all C clients (a client
that sits a round out keeps its memory).

- ``none``: ``v = d``; nothing kept.
- ``residual`` (EC / top-k EF): ``v = d + A_i``; after sending ``s``: ``A_i <- v - s``.
"""

from __future__ import annotations

import torch


class Memory:
    """No error feedback."""

    name = "none"

    def compensate(self, d: torch.Tensor, ids: list[int]) -> torch.Tensor:
        """``d``: ``[K, P]`` local updates of clients ``ids`` -> ``v`` ``[K, P]`` to compress."""
        return d

    def update(self, ids: list[int], v: torch.Tensor, sent: torch.Tensor) -> None:
        """``v``: what was compressed; ``sent``: ``[K, P]`` dense what the server received."""

    def residual(self, ids: list[int]) -> torch.Tensor | None:
        """``[K, P]`` the memory of clients ``ids`` (FLARE's accumulator), or None."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ResidualMemory(Memory):
    """EC's accumulator ``A_i`` (zeros at start), one row per client: ``[C, P]`` float32."""

    name = "residual"

    def __init__(self, num_clients: int, num_params: int, device=None):
        self.acc = torch.zeros(num_clients, num_params, dtype=torch.float32, device=device)

    def compensate(self, d, ids):
        return d + self.acc[ids]

    def update(self, ids, v, sent):
        self.acc[ids] = v - sent

    def residual(self, ids):
        return self.acc[ids]

    def state_dict(self):
        return {"acc": self.acc}

    def load_state_dict(self, state):
        self.acc.copy_(state["acc"])
