"""The server half of a round: bytes -> decode -> aggregate -> downlink -> global update.

The server sees only bytes. One round (any transport):

    ids = sample_clients(r)               # seeded by (seed, r)
    b = begin(r, ids)                     # the compressor's phase-0 broadcast bytes, or None
    ... clients train and send phase-0 bytes ...
    b = receive(0, ids, uplink)           # decode; the next phase's broadcast, or None when done
    ... (multi-phase compressors: clients respond to b; receive(1, ids, uplink) ...)
    stats = finish()                      # aggregate, downlink, w <- w + server_lr * update

``receive`` may be given fewer clients than were selected (a client that did not answer); the round
goes on with the ones that did. Bits are counted here from the bytes received and broadcast.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from ..flat import Layout
from ..methods.presets import Parts
from ..methods.registry import RoundContext
from ..wire.downlink import Downlink
from ..wire.encoder import WireFormat
from .seeds import generator

@dataclass
class ServerRound:
    """What the server has received in the round in progress."""

    round_idx: int
    ids: list[int]  # the clients that answered every phase so far
    payloads: dict[int, list[Any]] = field(default_factory=dict)  # client id -> decoded payload per phase
    broadcasts: list[Any] = field(default_factory=list)  # decoded broadcast before each phase (or None)
    uplink_bits: int = 0
    broadcast_bits: int = 0  # bits of the compressor's broadcasts, summed over the clients that receive them


@dataclass
class ServerStats:
    """One round as the server counted it. Bits are ``8 * len(bytes)``."""

    ids: list[int]
    nnz: int  # entries sent by all clients (all phases)
    uplink_bits: int
    uplink_bound_bits: float
    downlink_bits: int  # the model (or sparse update) broadcast + the compressor's broadcasts
    codecs: Counter
    update: torch.Tensor  # [P] what every client applies
    broadcast: Any = None  # the encoded sparse downlink (``--downlink sparse``), or None


class ServerSide:
    """The server: global weights ``w`` ``[P]``, the server-side parts' state, client sampling, bit counts."""

    def __init__(self, cfg, layout: Layout, parts: Parts, w: torch.Tensor, client_sizes: torch.Tensor, device):
        """``client_sizes``: float32 ``[C]`` samples per client (the aggregation weights)."""
        self.cfg, self.layout, self.parts, self.device = cfg, layout, parts, device
        self.w = w.to(device)
        self.client_sizes = client_sizes.to(device=device, dtype=torch.float32)
        self.downlink = Downlink(cfg.downlink, WireFormat(layout.sizes), cfg.clients)
        self.round: ServerRound | None = None

    def sample_clients(self, round_idx: int) -> list[int]:
        """K of C clients, uniformly without replacement, seeded by (seed, round); sorted ids."""
        C, K = self.cfg.clients, self.cfg.participants()
        if K == C:
            return list(range(C))
        return sorted(torch.randperm(C, generator=generator(self.cfg.seed, "clients", round_idx))[:K].tolist())

    def context(self) -> RoundContext:
        return RoundContext(self.round.round_idx, list(self.round.ids), self.cfg.seed)

    def begin(self, round_idx: int, ids: list[int]) -> bytes | None:
        """Start round ``round_idx`` with clients ``ids``; -> the compressor's phase-0 broadcast bytes or None."""
        self.round = ServerRound(round_idx, list(ids), {i: [] for i in ids})
        return self._broadcast(0)

    def _broadcast(self, phase: int) -> bytes | None:
        rnd, compressor = self.round, self.parts.compressor
        received = [rnd.payloads[i] for i in rnd.ids]
        payload = compressor.broadcast(phase, received, self.client_sizes[rnd.ids], self.context())
        if payload is None:
            rnd.broadcasts.append(None)
            return None
        data = compressor.encode(payload)
        rnd.broadcasts.append(compressor.decode(data))  # what the clients decode
        rnd.broadcast_bits += 8 * len(data) * len(rnd.ids)
        return data

    def receive(self, phase: int, ids: list[int], uplink: list[bytes]) -> bytes | None:
        """The clients' bytes of ``phase`` (DecodeError on malformed bytes); -> next phase's broadcast or None."""
        rnd, compressor = self.round, self.parts.compressor
        for i, data in zip(ids, uplink):
            rnd.payloads[i].append(compressor.decode(data))
            rnd.uplink_bits += 8 * len(data)
        rnd.ids = [i for i in rnd.ids if len(rnd.payloads[i]) == phase + 1]  # answered every phase so far
        if phase + 1 < compressor.phases and rnd.ids:
            return self._broadcast(phase + 1)
        return None

    def finish(self) -> ServerStats:
        """Aggregate what was received, send the downlink, step the global model; ends the round."""
        rnd, parts, compressor = self.round, self.parts, self.parts.compressor
        ids = rnd.ids
        payloads = [rnd.payloads[i] for i in ids]
        flat = [p for client in payloads for p in client]
        if ids:
            update = parts.aggregator.aggregate_payloads(
                compressor, payloads, rnd.broadcasts, self.client_sizes[ids], ids, self.context(), self.device
            )
            compressor.end_round(payloads, rnd.broadcasts, self.client_sizes[ids], self.context())
        else:  # nobody answered: the model stays
            update = torch.zeros_like(self.w)
        sent = parts.aggregator.downlink(update, ids, self.context()) if ids else None
        update, downlink_bits, broadcast = sent or self.downlink.send(update, len(ids))  # what every client applies
        self.w = self.w + self.cfg.server_lr * update
        self.round = None
        return ServerStats(
            ids=list(ids),
            nnz=sum(compressor.nnz(p) for p in flat),
            uplink_bits=rnd.uplink_bits,
            uplink_bound_bits=sum(compressor.bound_bits(p) for p in flat),
            downlink_bits=downlink_bits + rnd.broadcast_bits,
            codecs=Counter(compressor.label(p) for p in flat),
            update=update,
            broadcast=broadcast,
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Global weights ``[P]`` and the server-side parts' state (aggregator, compressor, regularizer)."""
        return {"w": self.w, "parts": self.parts.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.w = state["w"].to(self.device)
        self.parts.load_state_dict(state["parts"])


__all__ = ["ServerSide", "ServerRound", "ServerStats"]
