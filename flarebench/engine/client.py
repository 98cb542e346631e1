"""The client half of a round: local training -> memory -> compress -> bytes, for K clients at once.

The local backend runs it for all the round's clients together (K = participants); a Flower node runs
it for itself (K = 1). Its inputs and outputs are explicit:

- a client's persistent state is a dict of tensors (:meth:`ClientSide.initial_state`: the memory's
  ``memory.NAME`` ``[P]`` and, with ``keep_optimizer_state``, ``optimizer.momentum`` ``[P]``); a round
  takes the participants' rows stacked (``[K, P]`` each) and updates them in place;
- what travels is bytes: :meth:`begin` returns the phase-0 uplink (one ``bytes`` per client),
  :meth:`respond` the later phases' (multi-phase compressors), given the server's broadcast bytes;
- :meth:`end` updates the memory with exactly what the server decodes from those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..flat import Layout
from ..methods.compressors.base import contribution_into, reused_rows
from ..methods.presets import Parts
from ..methods.registry import RoundContext
from .optim import FlatSGD
from .seeds import derive
from .select import build_engine
from .sequential import LocalSpec, mean_loss

State = dict[str, torch.Tensor]


def check_wire(compressor, payload: Any, data: Any) -> None:
    """ConfigError (one line naming the compressor) unless ``data = encode(payload)`` is ``bytes`` whose
    decoding is the payload: ``decompress(decode(data))`` equals ``decompress(payload)`` exactly and
    re-encoding gives the same bytes; and its stated floor ``bound_bits`` is at most the ``8 * len(data)``
    bits counted. flarebench counts every message as ``8 * len(bytes)``: a user's compressor is held to it."""
    from ..errors import ConfigError

    name = compressor.name
    if not isinstance(data, bytes):
        raise ConfigError(f"compressor {name}: encode() must return bytes (bits are counted as 8 * len(bytes)), "
                          f"got {type(data).__name__}")
    back = compressor.decode(data)
    again = compressor.encode(back)
    # a multi-phase payload alone is no update (MultiPhase): the re-encoding below checks it
    same = compressor.phases > 1 or torch.equal(compressor.decompress(payload), compressor.decompress(back))
    if not same or again != data:
        raise ConfigError(f"compressor {name}: decode(encode(x)) changes the payload "
                          f"({'decompressed values differ' if not same else f're-encoding gives {len(again)} bytes, not the {len(data)} sent'})")
    floor = compressor.bound_bits(payload)
    if floor > 8 * len(data):
        raise ConfigError(f"compressor {name}: states a floor of {floor:g} bits (bound_bits) above the "
                          f"{8 * len(data)} bits of its {len(data)} bytes")


@dataclass
class ClientRound:
    """A round in progress on the client side, for clients ``ids`` (rows k = 0..K-1)."""

    round_idx: int
    ids: list[int]
    v: torch.Tensor  # [K, P] what the clients compress (update after the memory's compensation)
    uplink: list[list[bytes]] = field(default_factory=list)  # [phase][k] bytes sent
    broadcasts: list[Any] = field(default_factory=list)  # [phase] decoded server broadcast before that phase (or None)
    train_loss: float = 0.0  # mean local cross-entropy over the round's local steps (no regularizer term)
    loss_sums: list = field(default_factory=list)  # per client: (sum of step loss x batch size, samples)


class ClientSide:
    """Local training and compression for any subset of the federation's clients.

    ``x``, ``y``: the training data on ``device``; ``client_indices[i]``: int64 rows of client ``i``
    (a list over all C clients, or a dict for the clients this process holds).
    """

    def __init__(self, cfg, model: torch.nn.Module, layout: Layout, parts: Parts, x: torch.Tensor, y: torch.Tensor,
                 client_indices, device):
        self.cfg, self.model, self.layout, self.parts, self.device = cfg, model, layout, parts, device
        self.x, self.y = x, y
        items = client_indices.items() if isinstance(client_indices, dict) else enumerate(client_indices)
        self.client_indices = {int(i): idx.to(device) for i, idx in items}
        self.spec = LocalSpec(cfg.local_epochs, cfg.batch_size, FlatSGD(cfg.lr, cfg.momentum, cfg.weight_decay), cfg.shuffle, cfg.seed)
        ordered = [self.client_indices[i] for i in sorted(self.client_indices)]
        self.engine, self.engine_choice = build_engine(  # sequential | vectorized; auto times both once per shape
            cfg, model, layout, parts.regularizer, x, y, ordered, self.spec
        )
        self.keeps_momentum = bool(cfg.keep_optimizer_state and cfg.momentum)
        from ..references import source_of

        # a user's compressor (import reference or plug-in): its wire format is checked once, on its first message
        self.check_wire = source_of("compressor", parts.compressor.name) is not None

    # ------------------------------------------------------------------ state
    def initial_state(self) -> State:
        """One client's state at the start of the run: ``{name: tensor}`` (``[P]`` float32 each)."""
        state = {f"memory.{k}": v for k, v in self.parts.memory.init_state(self.layout.num_params).items()}
        if self.keeps_momentum:
            state["optimizer.momentum"] = torch.zeros(self.layout.num_params, dtype=torch.float32)
        return state

    @staticmethod
    def memory_view(states: State) -> State:
        """The memory's own tensors (keys without the ``memory.`` prefix); views, so updates land in ``states``."""
        return {k[len("memory."):]: v for k, v in states.items() if k.startswith("memory.")}

    # ------------------------------------------------------------------ the round
    def context(self, round_idx: int, ids: list[int]) -> RoundContext:
        return RoundContext(round_idx, list(ids), self.cfg.seed)

    def begin(self, w: torch.Tensor, round_idx: int, ids: list[int], states: State, broadcast: bytes | None = None) -> ClientRound:
        """Train clients ``ids`` from the global weights ``w`` ``[P]``; compress; -> the round, with ``uplink[0]``.

        ``states``: the clients' rows ``{name: [K, P]}`` (updated in place here and in :meth:`end`);
        ``broadcast``: the server's phase-0 broadcast bytes, if its compressor has one.
        """
        parts, ctx = self.parts, self.context(round_idx, ids)
        torch.manual_seed(derive(self.cfg.seed, "round", round_idx))  # dropout etc.: same draws on resume
        memory_state = self.memory_view(states)
        anchor = parts.regularizer.anchor(w, parts.memory.residual(memory_state), round_idx, len(ids))
        momentum = states.get("optimizer.momentum")
        theta, sums = self.engine.train(
            w, self.x, self.y, [self.client_indices[i] for i in ids], list(ids), anchor, self.spec, round_idx, momentum
        )
        v = parts.memory.compensate(theta - w, memory_state, ctx)
        rnd = ClientRound(round_idx, list(ids), v, train_loss=mean_loss(sums), loss_sums=list(sums))
        rnd.uplink.append(self._send(rnd, 0, broadcast))
        return rnd

    def respond(self, rnd: ClientRound, phase: int, broadcast: bytes | None) -> list[bytes]:
        """Phase ``phase`` >= 1 of a multi-phase compressor: the clients' bytes, given the server's broadcast."""
        up = self._send(rnd, phase, broadcast)
        rnd.uplink.append(up)
        return up

    def _send(self, rnd: ClientRound, phase: int, broadcast: bytes | None) -> list[bytes]:
        compressor = self.parts.compressor
        rnd.broadcasts.append(None if broadcast is None else compressor.decode(broadcast))
        payloads = compressor.compress_phase(phase, rnd.v, rnd.broadcasts, self.context(rnd.round_idx, rnd.ids))
        sent = [compressor.encode(p) for p in payloads]
        if self.check_wire:
            check_wire(compressor, payloads[0], sent[0])
            self.check_wire = False
        return sent

    def sent(self, rnd: ClientRound) -> torch.Tensor:
        """``[K, P]``: each client's update as the server reconstructs it from the bytes (decoded here the same way)."""
        compressor = self.parts.compressor
        out = reused_rows(self, "_sent", len(rnd.ids), rnd.v.shape[1], self.device)
        for k in range(len(rnd.ids)):
            payloads = [compressor.decode(rnd.uplink[phase][k]) for phase in range(len(rnd.uplink))]
            contribution_into(compressor, payloads, rnd.broadcasts, out[k])
        return out

    def end(self, rnd: ClientRound, states: State) -> None:
        """After the last phase: the memory learns what the server decoded (error feedback). Updates ``states``."""
        memory = self.parts.memory
        sent = self.sent(rnd) if memory.error_feedback else None
        memory.update(rnd.v, sent, self.memory_view(states), self.context(rnd.round_idx, rnd.ids))


class ClientStates:
    """The local backend's store of every client's state: ``{name: [C, ...]}`` on one device."""

    def __init__(self, initial: State, num_clients: int, device):
        self.tensors = {k: v.to(device).unsqueeze(0).repeat(num_clients, *([1] * v.dim())).contiguous() for k, v in initial.items()}

    def gather(self, ids: list[int]) -> State:
        """The rows of ``ids`` (copies ``[K, ...]``); write them back with :meth:`scatter`."""
        return {k: v[ids].clone() for k, v in self.tensors.items()}

    def scatter(self, ids: list[int], rows: State) -> None:
        for k, v in rows.items():
            self.tensors[k][ids] = v

    def state_dict(self) -> dict:
        return dict(self.tensors)

    def load_state_dict(self, state: dict) -> None:
        for k, v in self.tensors.items():
            v.copy_(state[k])


__all__ = ["ClientSide", "ClientRound", "ClientStates", "State"]
