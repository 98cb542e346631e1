"""One round of a compressor's exchange as a run makes it, for the tests that follow bytes through every phase."""

from __future__ import annotations

import torch

from flarebench.methods.registry import RoundContext


def one_round(comp, v: torch.Tensor, ctx: RoundContext) -> tuple[list, list[bytes], list[list], list]:
    """Every phase of one round for the clients (rows of ``v``): compress + encode on the clients, the server's
    decodes and broadcasts (PowerSGD) from bytes -> (the payloads sent, their bytes, the decoded payloads per
    client, the decoded broadcasts)."""
    weights, received, broadcasts = torch.ones(v.shape[0]), [[] for _ in range(v.shape[0])], []
    payloads, sent = [], []
    for phase in range(comp.phases):
        b = comp.broadcast(phase, received, weights, ctx)
        broadcasts.append(None if b is None else comp.decode(comp.encode(b)))
        for k, p in enumerate(comp.compress_phase(phase, v, broadcasts, ctx)):
            payloads.append(p)
            sent.append(comp.encode(p))
            received[k].append(comp.decode(sent[-1]))
    return payloads, sent, received, broadcasts
