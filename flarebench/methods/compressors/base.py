"""The compressor contract, and the base of the sparsifiers (payload = a sparse/dense/seeded Message).

A compressor owns its payload: it decides what travels, turns it into bytes and back, and says what
the server reconstructs. Shapes: ``v`` is ``[K, P]`` float32 (K clients of the round, P entries of the
flat model, per-tensor segments in ``layout``); a payload is one client's message; ``decompress``
gives the dense float32 ``[P]`` the server adds up for that client. Bits are ``8 * len(encode(p))``.

One round, for a one-phase compressor (the usual case)::

    client:  payloads = compress(v, ctx)  ->  encode(p)  ->  bytes
    server:  decode(bytes) -> payload  ->  decompress(payload) -> [P]

Every compressor implements the six abstract methods of :class:`Compressor`: ``compress``, ``encode``,
``decode``, ``decompress``, ``nnz`` and ``bound_bits`` (a user's class that misses one is refused with one
line naming it). The engine and the aggregator reconstruct into a ``[K, P]`` buffer they keep between rounds
(:func:`contribution_into`): a class whose ``decompress`` takes ``out=`` sets ``writes_into = True`` (the
built-ins do); otherwise its result is copied in. ``host_bytes_bound`` is optional for a user's compressor (the built-ins state it and
tests/test_host_bytes.py holds them to it); ``label``, ``state_dict``/``load_state_dict`` have defaults.

A multi-phase exchange (PowerSGD: P up, P-hat down, Q up) adds :class:`MultiPhase` before the base,
``class X(MultiPhase, Compressor)``: it sets ``phases`` and implements :meth:`~MultiPhase.broadcast`
(server, before each phase), :meth:`~MultiPhase.compress_phase` (client, each phase) and
:meth:`~MultiPhase.contribution` (the client's reconstructed update from all its payloads and the
broadcasts); :meth:`~Compressor.end_round` is optional. Broadcast payloads are encoded with the same
:meth:`encode` and counted as downlink bits for each participant. The engine calls these hooks on every
compressor: a one-phase one gets them from :class:`Compressor` (no broadcast, its one payload decompressed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from ...errors import DecodeError
from ...wire.bounds import message_bound_bits
from ...wire.codecs import POSITION_CODECS, VALUE_CODECS
from ...wire.encoder import WireFormat
from ...wire.message import SPARSE, Message
from ..registry import Param, Part, PartContext, RoundContext


def tensor_k(n: int, density: float, rounding: str = "round") -> int:
    """Entries kept of a tensor of ``n`` entries.

    ``round``: ``max(1, round(density * n))`` (flarebench's default);
    ``reference``: ``min(n, round(density * n) + 1)``: the authors' code takes the round(n*R)+2
    largest and keeps those strictly above the smallest of them.
    """
    if rounding == "reference":
        return min(n, int(round(density * n)) + 1)
    return min(n, max(1, int(round(density * n))))


class Compressor(Part, ABC):
    """Base class of every compressor; the contract is the module docstring's."""

    kind = "compressor"
    phases: int = 1  # uplink transfers per round
    uses_sparsity: bool = False  # whether the run's --sparsity sets how much is sent
    family: str = "other"  # for figures: dense | sparsifier | quantizer | sign | low-rank/sketch | other
    unbiased: bool = False  # E[decompress(compress(v))] = v over the compressor's own randomness
    payload_tags: tuple[int, ...] = ()  # the frame.py payload ids it writes besides ``payload_id``

    @classmethod
    def wire_tags(cls) -> tuple[int, ...]:
        """Every payload id (wire/frame.py tag) this compressor writes: checked unique at registration."""
        own = getattr(cls, "payload_id", -1)
        return tuple(cls.payload_tags) + ((own,) if own >= 0 else ())

    # ------------------------------------------------------------ client side
    @abstractmethod
    def compress(self, v: torch.Tensor, ctx: RoundContext) -> list[Any]:
        """``v`` ``[K, P]`` -> K payloads (phase 0)."""

    def compress_phase(self, phase: int, v: torch.Tensor, broadcasts: list[Any], ctx: RoundContext) -> list[Any]:
        """Payloads of phase ``phase``: one phase, :meth:`compress` (:class:`MultiPhase` for more)."""
        if phase != 0:
            raise ValueError(f"{self.name} has one phase, not phase {phase}")
        return self.compress(v, ctx)

    # ------------------------------------------------------------ bytes
    @abstractmethod
    def encode(self, payload: Any) -> bytes:
        """Payload -> the bytes that travel (their 8 * len is the payload's bit count)."""

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """Bytes -> payload; DecodeError (only) on anything malformed; sizes checked before allocating."""

    # ------------------------------------------------------------ server side
    @abstractmethod
    def decompress(self, payload: Any, device=None) -> torch.Tensor:
        """Dense float32 ``[P]``: what this payload adds to the aggregate. A class that sets
        :attr:`writes_into` also takes ``out=`` (a float32 ``[P]`` buffer to write into and return)."""

    writes_into: bool = False  # decompress(payload, device, out=buffer) writes into the caller's buffer

    def contribution(self, payloads: list[Any], broadcasts: list[Any], device=None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The client's reconstructed update ``[P]``: one phase, its one payload decompressed; into ``out``
        (float32 ``[P]``, the caller's buffer, reused round after round) when given."""
        if out is None:
            return self.decompress(payloads[-1], device)
        if self.writes_into:
            return self.decompress(payloads[-1], out.device, out=out)
        return out.copy_(self.decompress(payloads[-1], out.device))  # a user's decompress without out=

    def output(self, device, out: torch.Tensor | None, zero: bool = False) -> torch.Tensor:
        """The float32 ``[P]`` a decompress writes: ``out`` (zeroed if ``zero``) or a new tensor on ``device``.
        Writing into a buffer the caller keeps saves the fresh allocation's page faults (about 20 ms per 59 MB
        on one CPU thread: as long as reconstructing a sparse message)."""
        P = self.ctx.layout.num_params
        if out is None:
            return (torch.zeros if zero else torch.empty)(P, dtype=torch.float32, device=device)
        if out.dtype != torch.float32 or tuple(out.shape) != (P,):
            raise ValueError(f"{self.name}: out must be float32 [{P}], got {out.dtype} {list(out.shape)}")
        return out.zero_() if zero else out

    def broadcast(self, phase: int, received: list[list[Any]], weights: torch.Tensor, ctx: RoundContext) -> Any | None:
        """The server's broadcast before phase ``phase``: one phase, none (:class:`MultiPhase` for more)."""
        return None

    def end_round(self, received: list[list[Any]], broadcasts: list[Any], weights: torch.Tensor, ctx: RoundContext) -> None:
        """Server, after the last phase: ``received[k][p]`` the decoded payloads of the clients that answered
        every phase, the round's decoded broadcasts and the clients' weights ``[K]``. Updates server-side state
        (PowerSGD keeps the weighted mean Q for the next round's warm start). Default: nothing."""

    # ------------------------------------------------------------ accounting
    @abstractmethod
    def nnz(self, payload: Any) -> int:
        """Entries whose values travel (a sign or a level counts as a value)."""

    @abstractmethod
    def bound_bits(self, payload: Any) -> float:
        """The stated floor of this payload in bits (docs/wire.md); headers and padding not counted."""

    def host_bytes_bound(self, payload: Any) -> int:
        """The most bytes that may leave the update's device for the host in the compress + encode that built
        ``payload`` (``.cpu()``, ``.numpy()``, ``.tolist()``, ``.item()``, ``.to('cpu')``, ``bool()`` ...): the
        payload itself, never the dense float update unless the compressor sends it densely (docs/wire.md,
        'Where compressors compute'; tests/test_host_bytes.py holds every built-in to it). Optional for a
        user's compressor: nothing in a run calls it."""
        raise NotImplementedError(f"{self.name} states no host-bytes bound")

    def label(self, payload: Any) -> str:
        """What kind of payload this is, for metrics.csv's ``position_codecs`` column (e.g. ``golomb``, ``qsgd``)."""
        return self.name


def contribution_into(compressor: "Compressor", payloads: list[Any], broadcasts: list[Any], out: torch.Tensor) -> torch.Tensor:
    """``compressor.contribution`` written into ``out`` (float32 ``[P]``, the caller's buffer, reused round after
    round): passed down where the compressor writes into it (the built-ins, or a user's one-phase class through
    :meth:`Compressor.contribution`), else its result copied in."""
    if compressor.writes_into or type(compressor).contribution is Compressor.contribution:
        return compressor.contribution(payloads, broadcasts, out.device, out=out)
    return out.copy_(compressor.contribution(payloads, broadcasts, out.device))


def reused_rows(owner: Any, attr: str, rows: int, num_params: int, device) -> torch.Tensor:
    """A float32 ``[rows, num_params]`` buffer kept on ``owner`` as ``attr`` and handed out again while its shape
    and device stay (the reconstructions of a round: K clients' contributions). Its contents are valid until
    the owner's next round; a consumer that keeps them copies (the built-in memories and aggregators do)."""
    buf = getattr(owner, attr, None)
    want = torch.device(device or "cpu")
    same_device = buf is not None and buf.device.type == want.type and (want.index is None or buf.device.index == want.index)
    if not same_device or tuple(buf.shape) != (rows, num_params):  # ("cuda" is the buffer's "cuda:0")
        buf = torch.empty(rows, num_params, dtype=torch.float32, device=device)
        setattr(owner, attr, buf)
    return buf


class MultiPhase(ABC):
    """Mixin of a compressor with several uplink phases per round, placed before the base:
    ``class X(MultiPhase, Compressor)``. Per round, for phase p = 0 .. phases - 1: the server's
    :meth:`broadcast` (None: nothing sent), then the clients' :meth:`compress_phase`; after the last
    phase, the server reconstructs each client's update with :meth:`contribution` and calls ``end_round``.
    A single payload is not an update, so :meth:`decompress` refuses; :meth:`compress` is phase 0."""

    phases: int = 2

    @abstractmethod
    def compress_phase(self, phase: int, v: torch.Tensor, broadcasts: list[Any], ctx: RoundContext) -> list[Any]:
        """``v`` ``[K, P]`` -> K payloads of phase ``phase``; ``broadcasts[p]`` is the decoded broadcast
        before phase p (None where there was none)."""

    @abstractmethod
    def broadcast(self, phase: int, received: list[list[Any]], weights: torch.Tensor, ctx: RoundContext) -> Any | None:
        """The server's broadcast before phase ``phase`` (phase 0: at round start), from the decoded payloads
        of the earlier phases (``received[k][p]``, client k, phase p) and the clients' weights ``[K]``. None: nothing."""

    @abstractmethod
    def contribution(self, payloads: list[Any], broadcasts: list[Any], device=None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Client k's reconstructed update, dense float32 ``[P]``, from its payloads (one per phase) and the
        round's broadcasts; written into ``out`` (float32 ``[P]``) when given."""

    def compress(self, v: torch.Tensor, ctx: RoundContext) -> list[Any]:
        """Phase 0 with no broadcast before it."""
        return self.compress_phase(0, v, [None], ctx)

    def decompress(self, payload: Any, device=None) -> torch.Tensor:
        raise TypeError(f"{self.name}: one payload of a multi-phase exchange is no update; use contribution()")


class MessageCompressor(Compressor):
    """A compressor whose payload is a :class:`Message` (sparse, dense or seeded positions + values),
    encoded by :class:`WireFormat` with its ``position_codec`` and ``value_codec`` parameters.

    ``message_kinds``: the kinds it sends (SPARSE, DENSE, SEEDED); its decoder accepts no other.
    :meth:`known_counts`: the k_t both sides know (then they do not travel), or None."""

    message_kinds: tuple[int, ...] = (SPARSE,)

    params = (
        Param("position_codec", str, "auto", "how positions travel; auto = the smallest per message (flarebench bits)",
              choices=("auto", *POSITION_CODECS)),
        Param("value_codec", str, "fp32", "how values travel; lossy codecs: server and memory use the decoded values",
              choices=tuple(VALUE_CODECS)),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.sizes = tuple(self.layout.sizes)
        self.wire = self.make_wire()

    def known_counts(self) -> tuple[int, ...] | None:
        """Entries per tensor both sides know before the message (None: they travel in it)."""
        return None

    def make_wire(self) -> WireFormat:
        return WireFormat(self.sizes, getattr(self, "position_codec", "auto"), self.value_codec,
                          counts=self.known_counts(), kinds=self.message_kinds)

    def encode(self, payload: Message) -> bytes:
        return self.wire.encode(payload).data

    def decode(self, data: bytes) -> Message:
        return self.wire.decode(data)

    def positions(self, msg: Message) -> list[torch.Tensor]:
        """Per-tensor int64 positions the message's values belong to (sorted)."""
        return msg.split_indices()

    def flat_positions(self, msg: Message, device=None) -> torch.Tensor:
        """int64 ``[sum k_t]`` positions in the flat ``[P]`` vector (each tensor's offset added to its positions:
        no ``[sum k_t]`` repeat of the offsets, which costs ~10 ns per entry on CPU)."""
        parts = [p.to(device) + seg.start for p, seg in zip(self.positions(msg), self.layout.segments)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device=device)

    def values_of(self, msg: Message, device=None) -> torch.Tensor:
        """The float32 values the server uses (after the value codec)."""
        return msg.values.to(device=device, dtype=torch.float32)

    writes_into = True

    def decompress(self, payload: Message, device=None, out=None) -> torch.Tensor:
        if payload.is_dense:
            return self.output(device, out).copy_(self.values_of(payload, device))
        out = self.output(device, out, zero=True)
        out[self.flat_positions(payload, device)] = self.values_of(payload, device)
        return out

    def nnz(self, payload: Message) -> int:
        return payload.nnz

    def bound_bits(self, payload: Message) -> float:
        return message_bound_bits(payload, self.wire.values)

    def host_bytes_bound(self, payload: Message) -> int:
        """4 bytes per entry for a dense message (float32 values); 8 (int64 position) + 4 (float32 value) per
        sent entry of a sparse one, 4 per value of a seeded one (the positions are drawn on both sides);
        + 8 bytes per tensor (counts, the selection's one-byte checks)."""
        per_entry = 12 if payload.indices is not None else 4
        return per_entry * payload.nnz + 8 * len(self.sizes)

    def label(self, payload: Message) -> str:
        if payload.is_dense:
            return "dense"
        return payload.position_codec or ("seed" if payload.seed is not None else self.name)

    def check_sizes(self, msg: Message) -> Message:
        """DecodeError unless the message is for this model (the decoder already checks the header's sizes)."""
        if tuple(msg.sizes) != self.sizes:
            raise DecodeError("message sizes do not match the model")
        return msg


class Sparsifier(MessageCompressor):
    """A MessageCompressor that sends ``k_t = tensor_k(n_t, density, rounding)`` entries per tensor,
    the density coming from the run's ``--sparsity``. ``fixed_k``: k_t is the same every round, so it
    does not travel (a subclass whose k_t varies, e.g. DGC's warm-up, sets it False)."""

    fixed_k: bool = True

    uses_sparsity = True
    family = "sparsifier"
    params = MessageCompressor.params + (
        Param("rounding", str, "round", "k per tensor: round = max(1, round(R n)); reference = round(R n) + 1 (authors' code)",
              choices=("round", "reference"), paper="Greidi & Cohen 2023 (reference code)"),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.density = ctx.density
        self.counts = self.counts_at(self.density)
        self.wire = self.make_wire()

    def known_counts(self):
        return getattr(self, "counts", None) if self.fixed_k else None

    def counts_at(self, density: float) -> tuple[int, ...]:
        """Entries sent per tensor at ``density``."""
        return tuple(tensor_k(n, density, self.rounding) for n in self.layout.sizes)


__all__ = ["Compressor", "MessageCompressor", "MultiPhase", "Sparsifier", "contribution_into", "reused_rows", "tensor_k"]
