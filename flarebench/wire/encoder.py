"""Message <-> bytes. The server only ever sees these bytes; uplink bits = 8 * len(bytes).

Lean layout: a message carries only what the server cannot know. Both sides know the model's layout
(T tensors of n_t entries), the run's value codec and, for fixed-k compressors (top-k, STC, random-k),
every k_t (from the run's sparsity and rounding rule): none of these travel.

    frame: 16 * kind + position codec id       1 byte (kind 0 sparse, 1 dense, 2 seeded; codec id 0
                                               unless sparse)
    k_t per tensor, only where the counts      varints
      are not known (dgc, threshold, the
      sparse downlink) and the kind is not dense
    seed (seeded only)                         8 bytes, little-endian
    positions (sparse only)                    every byte between the header and the values
    values                                     the value codec's bytes for sum(k_t) values: a length
                                               the counts fix, so the positions need no length field

Bits per message = 8 (frame) + counts' varints if sent + 64 (seed) or the positions' bytes + the values'
bytes. The decoder accepts only the message kinds its compressor sends, checks every field against the
layout (k_t <= n_t, known codec, exact lengths, zero padding) before allocating anything, and raises
DecodeError, and only DecodeError, on any inconsistency; nothing is allocated from a length field that
has not been checked.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DecodeError
from .bounds import message_bound_bits
from .bitstream import MAX_POSITION_BITS
from .codecs import POSITION_CODECS, POSITION_CODECS_BY_ID, VALUE_CODECS, VALUE_CODECS_BY_ID, PositionCodec, gaps_of
from .message import DENSE, SEEDED, SPARSE, Message

KIND_NAMES = {SPARSE: "sparse", DENSE: "dense", SEEDED: "seeded"}


def write_varint(x: int) -> bytes:
    if x < 0:
        raise ValueError("varint must be >= 0")
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        out.append(b | (0x80 if x else 0))
        if not x:
            return bytes(out)


def read_varint(buf: memoryview, at: int) -> tuple[int, int]:
    """-> (value, next offset); at most 10 bytes (64-bit values)."""
    x = shift = 0
    for i in range(10):
        if at + i >= len(buf):
            raise DecodeError("message is truncated inside a varint")
        b = buf[at + i]
        x |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return x, at + i + 1
    raise DecodeError("varint is longer than 10 bytes")


@dataclass
class Encoded:
    """One encoded message: its ``data`` and the position codec used (None for dense/seeded)."""

    data: bytes
    position_codec: str | None

    @property
    def bits(self) -> int:
        return 8 * len(self.data)


class WireFormat:
    """Encodes and decodes messages for a model with per-tensor ``sizes``.

    ``encoding``: a position codec name (where it does not apply to a message: as auto), or ``auto`` for
    the smallest applicable one per message (sizes are computed exactly; only the chosen codec encodes).
    ``value_codec``: how values travel (fp32 default; fp16, bf16, sign+scale are lossy: the
    receiver uses the decoded values).
    ``counts``: the k_t both sides know (fixed-k compressors), or None: the counts travel.
    ``kinds``: the message kinds this format sends and accepts (e.g. only SPARSE for top-k).
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], encoding: str = "auto", value_codec: str = "fp32",
                 counts=None, kinds=(SPARSE, DENSE, SEEDED)):
        self.sizes = tuple(int(n) for n in sizes)
        if encoding != "auto" and encoding not in POSITION_CODECS:
            raise ValueError(f"unknown encoding {encoding}")
        if value_codec not in VALUE_CODECS:
            raise ValueError(f"unknown value codec {value_codec}")
        self.encoding = encoding
        self.values = VALUE_CODECS[value_codec]
        self.counts = None if counts is None else tuple(int(k) for k in counts)
        if self.counts is not None and (len(self.counts) != len(self.sizes)
                                        or any(not 0 <= k <= n for n, k in zip(self.sizes, self.counts))):
            raise ValueError("known counts do not fit the sizes")
        self.kinds = frozenset(kinds)

    # ------------------------------------------------------------ encode
    def _header(self, kind: int, codec_id: int, counts) -> bytearray:
        if kind not in self.kinds:
            raise ValueError(f"this wire format does not send {KIND_NAMES[kind]} messages")
        h = bytearray([16 * kind + codec_id])
        if kind == DENSE:
            return h
        if self.counts is not None:
            if tuple(counts) != self.counts:
                raise ValueError("message counts differ from the counts both sides know")
            return h
        for k in counts:
            h += write_varint(k)
        return h

    def choose(self, positions: list[np.ndarray], counts, gaps: np.ndarray | None = None) -> PositionCodec:
        """The position codec for these per-tensor positions: the fixed one, or (auto, or where the fixed one
        does not apply, e.g. enumerative past ENUMERATIVE_MAX_K entries) the smallest; the frame says which."""
        if self.encoding != "auto":
            codec = POSITION_CODECS[self.encoding]
            if codec.applicable(self.sizes, counts):
                return codec
        best = None
        for codec in POSITION_CODECS.values():  # ties: the lowest id
            if codec.applicable(self.sizes, counts):
                nbytes = codec.nbytes(positions, self.sizes, gaps)
                if best is None or nbytes < best[0]:
                    best = (nbytes, codec)
        return best[1]

    def _positions(self, msg: Message) -> tuple[int, bytes]:
        pos = [p.numpy() for p in msg.split_indices()]
        gap_codecs = POSITION_CODECS.values() if self.encoding == "auto" else [POSITION_CODECS[self.encoding]]
        gaps = None  # computed once for every gap codec the choice weighs
        if any(c.uses_gaps for c in gap_codecs) and all(n < 2**MAX_POSITION_BITS for n in self.sizes):
            gaps = gaps_of(pos)
        codec = self.choose(pos, msg.counts, gaps)
        data = codec.encode(pos, self.sizes, gaps)
        if codec.name != self.encoding and len(data) != codec.nbytes(pos, self.sizes, gaps):
            raise RuntimeError(f"{codec.name}: size estimate and encoding disagree")  # a bug, never input
        return codec.id, data

    def bound_bits(self, msg: Message) -> float:
        """The information-theoretic floor of ``msg`` in bits (see :func:`bounds.message_bound_bits`)."""
        return message_bound_bits(msg, self.values)

    def encode(self, msg: Message) -> Encoded:
        if tuple(msg.sizes) != self.sizes:
            raise ValueError("message sizes do not match the wire format's layout")
        host = msg.values.detach().cpu().numpy()
        if msg.kind == DENSE and self.values.name == "fp32":  # one copy: the values' bytes straight into the message
            view = memoryview(np.ascontiguousarray(host, dtype="<f4").reshape(-1)).cast("B")
            return Encoded(b"".join((self._header(DENSE, 0, msg.counts), view)), None)
        values = self.values.encode(host, msg.counts)
        if msg.kind == SPARSE:
            codec_id, pos = self._positions(msg)
            data = bytes(self._header(SPARSE, codec_id, msg.counts) + pos + values)
            return Encoded(data, POSITION_CODECS_BY_ID[codec_id].name)
        if msg.kind == SEEDED:
            return Encoded(bytes(self._header(SEEDED, 0, msg.counts) + int(msg.seed).to_bytes(8, "little") + values), None)
        return Encoded(b"".join((self._header(DENSE, 0, msg.counts), values)), None)  # one copy of the values

    # ------------------------------------------------------------ decode
    def decode(self, data: bytes) -> Message:
        """Bytes -> Message; DecodeError for anything malformed, truncated, inconsistent or of a kind not sent."""
        buf = memoryview(bytes(data))
        if len(buf) < 1:
            raise DecodeError("message is empty")
        kind, codec_id = divmod(buf[0], 16)
        if kind not in KIND_NAMES:
            raise DecodeError(f"unknown message kind {kind}")
        if kind not in self.kinds:
            sent = ", ".join(KIND_NAMES[k] for k in sorted(self.kinds))
            raise DecodeError(f"a {KIND_NAMES[kind]} message; this format sends only {sent} messages")
        if kind != SPARSE and codec_id != 0:
            raise DecodeError(f"position codec id {codec_id} in a message without positions")
        at = 1
        if kind == DENSE:
            counts_t = self.sizes
        elif self.counts is not None:
            counts_t = self.counts
        else:
            counts = []
            for n in self.sizes:
                k, at = read_varint(buf, at)
                if k > n:
                    raise DecodeError(f"header says {k} entries of a tensor of {n}")
                counts.append(k)
            counts_t = tuple(counts)
        values_codec = self.values
        value_bytes = values_codec.nbytes(counts_t)
        seed = indices = None
        if kind == SEEDED:
            if at + 8 + value_bytes != len(buf):
                raise DecodeError(f"message has {len(buf)} bytes; its header implies {at + 8 + value_bytes}")
            seed = int.from_bytes(buf[at : at + 8], "little")
            at += 8
        elif kind == DENSE:
            if at + value_bytes != len(buf):
                raise DecodeError(f"message has {len(buf)} bytes; a dense message has {at + value_bytes}")
        else:  # the positions are what lies between the header and the values
            if codec_id not in POSITION_CODECS_BY_ID:
                raise DecodeError(f"unknown position codec id {codec_id}")
            length = len(buf) - at - value_bytes
            if length < 0:
                raise DecodeError(f"message has {len(buf)} bytes; its {values_codec.name} values alone need {value_bytes}")
            pos = POSITION_CODECS_BY_ID[codec_id].decode(buf[at : at + length], self.sizes, counts_t)
            at += length
            indices = torch.from_numpy(np.concatenate(pos).astype(np.int64)) if pos else torch.zeros(0, dtype=torch.int64)
        if kind == DENSE and values_codec.name == "fp32" and sys.byteorder == "little":  # no copy: a read-only view of ``data`` (consumers copy)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch: the buffer is not writable
                values = torch.frombuffer(buf[at:], dtype=torch.float32) if value_bytes else torch.zeros(0)
            return Message(kind, self.sizes, counts_t, values)
        values = values_codec.decode(buf[at:], counts_t)
        values = torch.from_numpy(values if values.flags.writeable else values.copy())
        codec_name = POSITION_CODECS_BY_ID[codec_id].name if kind == SPARSE else None
        return Message(kind, self.sizes, counts_t, values, indices=indices, seed=seed, position_codec=codec_name)
