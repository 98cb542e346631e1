"""Message <-> bytes. The server only ever sees these bytes; uplink bits = 8 * len(bytes).

Layout (all integers unsigned; varint = LEB128):
    magic 0xFB, version 1                      2 bytes
    kind (0 sparse, 1 dense, 2 seeded)         1 byte
    position codec id, value codec id          2 bytes
    T (tensor count)                           varint
    per tensor: n_t, and k_t unless dense      varints
    seed (seeded only)                         8 bytes, little-endian
    position bytes length L (sparse only)      varint, then L bytes
    values                                     the rest: value codec bytes for sum(k_t) values

Position codec id is 0 for dense and seeded messages. The decoder checks every field against the
layout it expects (sizes known to the server, k_t <= n_t, known codec ids, exact lengths, zero
padding) before allocating anything, and raises DecodeError, and only DecodeError, on any
inconsistency; nothing is allocated from a length field that has not been checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DecodeError
from .bounds import message_bound_bits
from .codecs import POSITION_CODECS, POSITION_CODECS_BY_ID, VALUE_CODECS, VALUE_CODECS_BY_ID, PositionCodec
from .message import DENSE, SEEDED, SPARSE, Message

MAGIC, VERSION = 0xFB, 1


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

    ``encoding``: a position codec name, or ``auto`` for the smallest applicable one per message
    (sizes are computed exactly from the gaps; only the chosen codec encodes).
    ``value_codec``: how values travel (fp32 default; fp16, bf16, sign+scale are lossy: the
    receiver uses the decoded values).
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], encoding: str = "auto", value_codec: str = "fp32"):
        self.sizes = tuple(int(n) for n in sizes)
        if encoding != "auto" and encoding not in POSITION_CODECS:
            raise ValueError(f"unknown encoding {encoding}")
        if value_codec not in VALUE_CODECS:
            raise ValueError(f"unknown value codec {value_codec}")
        self.encoding = encoding
        self.values = VALUE_CODECS[value_codec]

    # ------------------------------------------------------------ encode
    def _header(self, kind: int, codec_id: int, counts) -> bytearray:
        h = bytearray([MAGIC, VERSION, kind, codec_id, self.values.id])
        h += write_varint(len(self.sizes))
        for n, k in zip(self.sizes, counts):
            h += write_varint(n)
            if kind != DENSE:
                h += write_varint(k)
        return h

    def choose(self, positions: list[np.ndarray], counts) -> PositionCodec:
        """The position codec for these per-tensor positions: the fixed one, or (auto) the smallest."""
        if self.encoding != "auto":
            codec = POSITION_CODECS[self.encoding]
            if not codec.applicable(self.sizes, counts):
                raise ValueError(f"position codec {codec.name} cannot encode tensors of these sizes")
            return codec
        best = None
        for codec in POSITION_CODECS.values():  # ties: the lowest id
            if codec.applicable(self.sizes, counts):
                nbytes = codec.nbytes(positions, self.sizes)
                if best is None or nbytes < best[0]:
                    best = (nbytes, codec)
        return best[1]

    def _positions(self, msg: Message) -> tuple[int, bytes]:
        pos = [p.numpy() for p in msg.split_indices()]
        codec = self.choose(pos, msg.counts)
        data = codec.encode(pos, self.sizes)
        if self.encoding == "auto" and len(data) != codec.nbytes(pos, self.sizes):
            raise RuntimeError(f"{codec.name}: size estimate and encoding disagree")  # a bug, never input
        return codec.id, data

    def bound_bits(self, msg: Message) -> float:
        """The information-theoretic floor of ``msg`` in bits (see :func:`bounds.message_bound_bits`)."""
        return message_bound_bits(msg, self.values)

    def encode(self, msg: Message) -> Encoded:
        if tuple(msg.sizes) != self.sizes:
            raise ValueError("message sizes do not match the wire format's layout")
        values = self.values.encode(msg.values.detach().cpu().numpy(), msg.counts)
        if msg.kind == SPARSE:
            codec_id, pos = self._positions(msg)
            data = bytes(self._header(SPARSE, codec_id, msg.counts) + write_varint(len(pos)) + pos + values)
            return Encoded(data, POSITION_CODECS_BY_ID[codec_id].name)
        if msg.kind == SEEDED:
            return Encoded(bytes(self._header(SEEDED, 0, msg.counts) + int(msg.seed).to_bytes(8, "little") + values), None)
        return Encoded(b"".join((self._header(DENSE, 0, msg.counts), values)), None)  # one copy of the values

    # ------------------------------------------------------------ decode
    def decode(self, data: bytes) -> Message:
        """Bytes -> Message; DecodeError for anything malformed, truncated or inconsistent."""
        buf = memoryview(bytes(data))
        if len(buf) < 5:
            raise DecodeError("message is shorter than its fixed header")
        if buf[0] != MAGIC or buf[1] != VERSION:
            raise DecodeError("not a flarebench message (bad magic or version)")
        kind, codec_id, value_id = buf[2], buf[3], buf[4]
        if kind not in (SPARSE, DENSE, SEEDED):
            raise DecodeError(f"unknown message kind {kind}")
        if value_id not in VALUE_CODECS_BY_ID:
            raise DecodeError(f"unknown value codec id {value_id}")
        values_codec = VALUE_CODECS_BY_ID[value_id]
        if kind != SPARSE and codec_id != 0:
            raise DecodeError(f"position codec id {codec_id} in a message without positions")
        at = 5
        t, at = read_varint(buf, at)
        if t != len(self.sizes):
            raise DecodeError(f"message has {t} tensors, the model has {len(self.sizes)}")
        counts = []
        for n_expected in self.sizes:
            n, at = read_varint(buf, at)
            if n != n_expected:
                raise DecodeError(f"tensor size {n} in the header does not match the model's {n_expected}")
            if kind == DENSE:
                counts.append(n)
            else:
                k, at = read_varint(buf, at)
                if k > n:
                    raise DecodeError(f"header says {k} entries of a tensor of {n}")
                counts.append(k)
        counts_t = tuple(counts)
        if kind == SPARSE:  # the values are the rest of the message: their size must add up before any decoding
            length, pos_at = read_varint(buf, at)
            if pos_at + length + values_codec.nbytes(counts_t) != len(buf):
                raise DecodeError(
                    f"message has {len(buf)} bytes; its header implies {pos_at + length} + "
                    f"{values_codec.nbytes(counts_t)} (positions + {values_codec.name} values)"
                )
        elif at + (8 if kind == SEEDED else 0) + values_codec.nbytes(counts_t) != len(buf):
            raise DecodeError(f"message has {len(buf)} bytes, not what its header implies")
        seed = indices = None
        if kind == SEEDED:
            if at + 8 > len(buf):
                raise DecodeError("message is truncated inside its seed")
            seed = int.from_bytes(buf[at : at + 8], "little")
            at += 8
        elif kind == SPARSE:
            if codec_id not in POSITION_CODECS_BY_ID:
                raise DecodeError(f"unknown position codec id {codec_id}")
            length, at = read_varint(buf, at)
            if at + length > len(buf):
                raise DecodeError("message is truncated inside its positions")
            pos = POSITION_CODECS_BY_ID[codec_id].decode(buf[at : at + length], self.sizes, counts_t)
            at += length
            indices = torch.from_numpy(np.concatenate(pos).astype(np.int64)) if pos else torch.zeros(0, dtype=torch.int64)
        values = values_codec.decode(buf[at:], counts_t)
        values = torch.from_numpy(values if values.flags.writeable else values.copy())
        codec_name = POSITION_CODECS_BY_ID[codec_id].name if kind == SPARSE else None
        return Message(kind, self.sizes, counts_t, values, indices=indices, seed=seed, position_codec=codec_name)
