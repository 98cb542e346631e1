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

The decoder checks every field against the layout it expects (sizes known to the server) before
allocating anything, and raises DecodeError on any inconsistency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DecodeError
from .codecs import POSITION_CODECS, POSITION_CODECS_BY_ID, VALUE_CODECS, VALUE_CODECS_BY_ID
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

    ``encoding``: a position codec name, or ``auto`` for the smallest applicable one per message.
    ``value_codec``: how values travel (fp32 default).
    """

    def __init__(self, sizes: list[int] | tuple[int, ...], encoding: str = "auto", value_codec: str = "fp32"):
        self.sizes = tuple(int(n) for n in sizes)
        if encoding != "auto" and encoding not in POSITION_CODECS:
            raise ValueError(f"unknown encoding {encoding}")
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

    def _positions(self, msg: Message) -> tuple[int, bytes]:
        pos = [p.numpy() for p in msg.split_indices()]
        if self.encoding != "auto":
            codec = POSITION_CODECS[self.encoding]
            return codec.id, codec.encode(pos, self.sizes)
        best = None
        for codec in POSITION_CODECS.values():
            if codec.applicable(self.sizes, msg.counts):
                data = codec.encode(pos, self.sizes)
                if best is None or len(data) < len(best[1]):
                    best = (codec.id, data)
        return best

    def encode(self, msg: Message) -> Encoded:
        if tuple(msg.sizes) != self.sizes:
            raise ValueError("message sizes do not match the wire format's layout")
        values = self.values.encode(msg.values.numpy())
        if msg.kind == SPARSE:
            codec_id, pos = self._positions(msg)
            data = bytes(self._header(SPARSE, codec_id, msg.counts) + write_varint(len(pos)) + pos + values)
            return Encoded(data, POSITION_CODECS_BY_ID[codec_id].name)
        if msg.kind == SEEDED:
            return Encoded(bytes(self._header(SEEDED, 0, msg.counts) + int(msg.seed).to_bytes(8, "little") + values), None)
        return Encoded(bytes(self._header(DENSE, 0, msg.counts) + values), None)

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
        values = torch.from_numpy(values_codec.decode(buf[at:], sum(counts_t)).copy())
        return Message(kind, self.sizes, counts_t, values, indices=indices, seed=seed)
