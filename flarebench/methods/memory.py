"""Error-feedback memories (GRACE's 'memory'): what a client adds before compressing and keeps after.

Batched over the K clients of a round; state is kept per client id for all C clients (a client
that sits a round out keeps its memory).

- ``none``: ``v = d``; nothing kept.
- ``residual`` (EC / top-k EF): ``v = d + A_i``; after sending ``s``: ``A_i <- v - s``.
- ``ef21`` (Richtarik et al. 2021): ``v = d - g_i``; after sending ``c = C(v)``: ``g_i <- g_i + c``.
  The server keeps the same ``g_i`` (see aggregation.EF21Aggregator), so only ``c`` travels.
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


class EF21Memory(Memory):
    """EF21's client-side estimate ``g_i`` of its own update (zeros at start): ``[C, P]`` float32.

    The client compresses the innovation ``d_i - g_i`` and adds what the server decoded to ``g_i``.
    ``residual`` is None: ``g_i`` is not an unsent remainder, so FLARE's anchor does not apply.
    """

    name = "ef21"

    def __init__(self, num_clients: int, num_params: int, device=None):
        self.g = torch.zeros(num_clients, num_params, dtype=torch.float32, device=device)

    def compensate(self, d, ids):
        return d - self.g[ids]

    def update(self, ids, v, sent):
        self.g[ids] = self.g[ids] + sent

    def state_dict(self):
        return {"g": self.g}

    def load_state_dict(self, state):
        self.g.copy_(state["g"])
