"""Aggregation: the server's combination of the K decoded client updates into one update ``[P]``."""

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
