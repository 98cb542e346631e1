"""One federated round, top to bottom, and the state that lives across rounds.

    select clients -> local training (with the method's regularizer) -> d = w_i - w
    -> memory.compensate -> compressor.compress -> wire.encode (bits counted here)
    -> wire.decode on the server -> compressor.decompress -> memory.update
    -> aggregate -> downlink (dense model, or the encoded sparse update) -> server step

Every random draw is derived from (seed, round, client), so the state to checkpoint is only:
global weights, the parts' state (EF memories), and persistent optimizer buffers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import RunConfig
from ..flat import Layout
from ..methods.presets import Parts
from ..wire.downlink import Downlink
from ..wire.encoder import Encoded, WireFormat
from .optim import FlatSGD
from .seeds import derive, generator
from .select import build_engine
from .sequential import LocalSpec, evaluate


@dataclass
class RoundStats:
    """What one round sent and how training went. Bits are counted from encoded bytes."""

    round: int  # 1-based: rounds completed
    clients: list[int]
    train_loss: float
    nnz: int  # entries sent by all clients this round
    uplink_bits: int  # sum of 8 * len(bytes) over the clients' messages
    downlink_bits: int  # dense: 32 * P * K; sparse: C * 8 * len(broadcast bytes) (wire/downlink.py)
    uplink_bound_bits: float = 0.0  # sum over messages of log2 C(n_t, k_t) + value bits (wire/bounds.py)
    codecs: Counter = field(default_factory=Counter)  # position codec -> messages
    messages: list[Encoded] = field(default_factory=list, repr=False)
    broadcast: Encoded | None = field(default=None, repr=False)  # --downlink sparse, with keep_messages


class Federation:
    """The server and its clients for one run; :meth:`run_round` is the FL round."""

    def __init__(self, cfg: RunConfig, model: nn.Module, layout: Layout, parts: Parts, data, client_indices: list[torch.Tensor], device):
        self.cfg, self.model, self.layout, self.parts, self.device = cfg, model, layout, parts, device
        self.x_train, self.y_train = data.x_train, data.y_train
        self.x_test, self.y_test = data.x_test, data.y_test
        self.client_indices = [idx.to(device) for idx in client_indices]
        self.client_sizes = torch.tensor([len(i) for i in client_indices], dtype=torch.float32, device=device)
        self.w = layout.flatten(model).to(device)
        self.wire = WireFormat(layout.sizes, cfg.encoding, cfg.value_codec)
        self.downlink = Downlink(cfg.downlink, self.wire, cfg.clients)
        self.spec = LocalSpec(cfg.local_epochs, cfg.batch_size, FlatSGD(cfg.lr, cfg.momentum, cfg.weight_decay), cfg.shuffle, cfg.seed)
        self.engine, self.engine_choice = build_engine(  # sequential | vectorized; auto times both once per shape
            cfg, model, layout, parts.regularizer, self.x_train, self.y_train, self.client_indices, self.spec
        )
        self.momentum = (
            torch.zeros(cfg.clients, layout.num_params, device=device)
            if cfg.keep_optimizer_state and cfg.momentum
            else None
        )
        self.keep_messages = False  # tests set this to inspect every round's bytes

    # ------------------------------------------------------------------ the round
    def select_clients(self, round_idx: int) -> list[int]:
        """K of C clients, uniformly without replacement, seeded by (seed, round); sorted ids."""
        C, K = self.cfg.clients, self.cfg.participants()
        if K == C:
            return list(range(C))
        return sorted(torch.randperm(C, generator=generator(self.cfg.seed, "select", round_idx))[:K].tolist())

    def run_round(self, round_idx: int) -> RoundStats:
        """Round ``round_idx`` (0-based): train, compress, encode, decode, aggregate, step."""
        cfg, parts, w = self.cfg, self.parts, self.w
        ids = self.select_clients(round_idx)
        torch.manual_seed(derive(cfg.seed, "round", round_idx))  # dropout etc.: same draws on resume

        anchor = parts.regularizer.anchor(w, parts.memory.residual(ids), round_idx, len(ids))
        momentum = self.momentum[ids] if self.momentum is not None else None
        theta, train_loss = self.engine.train(
            w, self.x_train, self.y_train, [self.client_indices[i] for i in ids], ids, anchor, self.spec, round_idx, momentum
        )
        if self.momentum is not None:
            self.momentum[ids] = momentum
        d = theta - w

        v = parts.memory.compensate(d, ids)
        messages = parts.compressor.compress(v, [derive(cfg.seed, "randk", round_idx, i) for i in ids])
        encoded = [self.wire.encode(m) for m in messages]

        received = [self.wire.decode(e.data) for e in encoded]  # the server sees only bytes
        sent = torch.stack([parts.compressor.decompress(m, self.device) for m in received])
        parts.memory.update(ids, v, sent)

        update = parts.aggregator.aggregate(sent, self.client_sizes[ids], ids)
        update, downlink_bits, broadcast = self.downlink.send(update, len(ids))  # what every client applies
        self.w = w + cfg.server_lr * update

        return RoundStats(
            round=round_idx + 1,
            clients=ids,
            train_loss=train_loss,
            nnz=sum(m.nnz for m in received),
            uplink_bits=sum(e.bits for e in encoded),
            downlink_bits=downlink_bits,
            uplink_bound_bits=sum(self.wire.bound_bits(m) for m in received),
            codecs=Counter(e.position_codec or ("dense" if m.is_dense else "seed") for e, m in zip(encoded, received)),
            messages=encoded if self.keep_messages else [],
            broadcast=broadcast if self.keep_messages else None,
        )

    def evaluate(self) -> tuple[float, float]:
        """(test loss, test accuracy) of the global model on the central test set."""
        return evaluate(self.model, self.layout, self.w, self.x_test, self.y_test, self.cfg.eval_batch_size)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            "w": self.w,
            "parts": self.parts.state_dict(),
            "momentum": self.momentum,
        }

    def load_state_dict(self, state: dict) -> None:
        self.w = state["w"].to(self.device)
        self.parts.load_state_dict(state["parts"])
        if self.momentum is not None:
            self.momentum.copy_(state["momentum"])
