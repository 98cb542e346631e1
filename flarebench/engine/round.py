"""One federated round on the local backend, top to bottom, and the state that lives across rounds.

    ids = server.sample_clients(r)
    b = server.begin(r, ids)                                # a compressor's round-start broadcast, if any
    rnd = clients.begin(w, r, ids, states, b)               # train (regularizer) -> memory -> compress -> bytes
    b = server.receive(0, ids, rnd.uplink[0])               # the server sees only bytes
    (multi-phase compressors: clients.respond(rnd, p, b) -> server.receive(p, ...))
    clients.end(rnd, states)                                # memory update with what the server decoded
    stats = server.finish()                                 # aggregate -> downlink -> w <- w + server_lr * update

Both halves (engine/client.py, engine/server.py) are functions of explicit state, so another
transport (the Flower backend) carries the same bytes between the same calls. Every random draw is
derived from (seed, round, client), so the state to checkpoint is only: global weights, the
server-side parts' state, and every client's state (memories, persistent optimizer buffers).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ..flat import Layout
from ..methods.presets import Parts
from .client import ClientSide, ClientStates
from ..world import validation_set
from .sequential import evaluate
from .server import ServerSide


@dataclass
class RoundStats:
    """What one round sent and how training went. Bits are counted from encoded bytes."""

    round: int  # 1-based: rounds completed
    clients: list[int]
    train_loss: float
    nnz: int  # entries sent by all clients this round
    uplink_bits: int  # sum of 8 * len(bytes) over the clients' messages (all phases)
    downlink_bits: int  # dense: 32 * P * K; sparse: C * 8 * len(broadcast bytes) (wire/downlink.py); + compressor broadcasts
    uplink_bound_bits: float = 0.0  # sum over messages of the compressor's stated floor (docs/wire.md)
    codecs: Counter = field(default_factory=Counter)  # payload label (position codec, ...) -> messages
    messages: list[bytes] = field(default_factory=list, repr=False)  # phase-0 uplink bytes, per client (as sent)
    broadcast: object | None = field(default=None, repr=False)  # the server's broadcast (--downlink sparse), or None


class Federation:
    """The server and its clients for one run, in one process; :meth:`run_round` is the FL round."""

    def __init__(self, cfg, model: nn.Module, layout: Layout, parts: Parts, data, client_indices: list[torch.Tensor], device,
                 validation: torch.Tensor | None = None):
        self.cfg, self.model, self.layout, self.parts, self.device = cfg, model, layout, parts, device
        self.x_test, self.y_test = data.x_test, data.y_test
        # the rows held out of the clients' training data (world.hold_out): evaluated by runner.evaluate_all
        self.x_val, self.y_val = validation_set(data, validation if validation is not None else torch.zeros(0, dtype=torch.int64))
        sizes = torch.tensor([len(i) for i in client_indices], dtype=torch.float32)
        self.server = ServerSide(cfg, layout, parts, layout.flatten(model), sizes, device)
        self.clients = ClientSide(cfg, model, layout, parts, data.x_train, data.y_train, client_indices, device)
        self.states = ClientStates(self.clients.initial_state(), cfg.clients, device)
        self.engine_choice = self.clients.engine_choice
        self.client_sizes = self.server.client_sizes

    @property
    def w(self) -> torch.Tensor:
        """The global weights ``[P]``."""
        return self.server.w

    @property
    def engine(self):
        """The clients' local-training engine (settable: bench and tests swap it)."""
        return self.clients.engine

    @engine.setter
    def engine(self, engine) -> None:
        self.clients.engine = engine

    # the clients' data, for bench and the engine probe
    x_train = property(lambda self: self.clients.x)
    y_train = property(lambda self: self.clients.y)
    spec = property(lambda self: self.clients.spec)
    client_indices = property(lambda self: [self.clients.client_indices[i] for i in sorted(self.clients.client_indices)])

    def run_round(self, round_idx: int) -> RoundStats:
        """Round ``round_idx`` (0-based): train, compress, encode, decode, aggregate, step."""
        server, clients = self.server, self.clients
        ids = server.sample_clients(round_idx)
        broadcast = server.begin(round_idx, ids)
        states = self.states.gather(ids)
        rnd = clients.begin(server.w, round_idx, ids, states, broadcast)
        broadcast = server.receive(0, ids, rnd.uplink[0])
        for phase in range(1, self.parts.compressor.phases):
            broadcast = server.receive(phase, ids, clients.respond(rnd, phase, broadcast))
        clients.end(rnd, states)
        self.states.scatter(ids, states)
        stats = server.finish()
        return RoundStats(
            round=round_idx + 1,
            clients=stats.ids,
            train_loss=rnd.train_loss,
            nnz=stats.nnz,
            uplink_bits=stats.uplink_bits,
            downlink_bits=stats.downlink_bits,
            uplink_bound_bits=stats.uplink_bound_bits,
            codecs=stats.codecs,
            messages=list(rnd.uplink[0]),  # references to the bytes sent: the round's record, not a copy
            broadcast=stats.broadcast,
        )

    def evaluate(self) -> tuple[float, float]:
        """(test loss, test accuracy) of the global model on the central test set."""
        return evaluate(self.model, self.layout, self.server.w, self.x_test, self.y_test, self.cfg.eval_batch_size)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"server": self.server.state_dict(), "clients": self.states.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.server.load_state_dict(state["server"])
        self.states.load_state_dict(state["clients"])
