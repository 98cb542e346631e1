"""Aggregation: the server's combination of the K decoded client updates into one update ``[P]``.

- ``weighted-mean``: FedAvg's sample-weighted mean of what the clients sent.
- ``ef21``: the server's copy of EF21's ``g_i``: ``g_i <- g_i + c_i`` for the participants, then
  the sample-weighted mean of their ``g_i`` (stateful).
"""

from __future__ import annotations

import torch


class WeightedMean:
    """``sum_k w_k s_k / sum_k w_k`` with ``w_k`` the clients' sample counts (FedAvg weighting)."""

    name = "weighted-mean"

    def aggregate(self, received: torch.Tensor, weights: torch.Tensor, ids: list[int]) -> torch.Tensor:
        """``received``: ``[K, P]`` dense decoded updates; ``weights``: ``[K]`` -> ``[P]``."""
        w = weights.to(received.dtype) / weights.sum()
        return w @ received

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EF21Aggregator(WeightedMean):
    """EF21's server side: keeps ``g_i`` ``[C, P]`` (zeros at start) in step with the clients' copies.

    ``received`` holds the decoded innovations ``c_i``; returns ``sum_k w_k g_k / sum_k w_k`` over
    the round's participants after ``g_k <- g_k + c_k`` (absent clients' ``g`` is kept, not averaged in).
    """

    name = "ef21"

    def __init__(self, num_clients: int, num_params: int, device=None):
        self.g = torch.zeros(num_clients, num_params, dtype=torch.float32, device=device)

    def aggregate(self, received, weights, ids):
        self.g[ids] = self.g[ids] + received
        return super().aggregate(self.g[ids], weights, ids)

    def state_dict(self):
        return {"g": self.g}

    def load_state_dict(self, state):
        self.g.copy_(state["g"])
