"""Position and value codecs: arrays <-> bytes, vectorised with numpy.

Position codecs encode, per tensor of ``n`` entries, ``k`` ascending positions; a message's
tensors are written one after the other into one bit stream, padded to a whole byte at the end.
Value codecs encode the message's float32 values.

Every codec's ``encode`` returns the exact bytes that go on the wire; bits = 8 * len(bytes).
Decoders take the header's (already validated) sizes and counts and raise DecodeError on
anything inconsistent.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DecodeError


# ---------------------------------------------------------------- bit packing helpers
def pack_fixed(values: np.ndarray, width: int) -> np.ndarray:
    """uint64 values (each < 2**width) -> bits (uint8 0/1), MSB first, ``[len * width]``."""
    if width == 0 or values.size == 0:
        return np.zeros(0, dtype=np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(-1)


def unpack_fixed(bits: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_fixed`: the first ``count * width`` bits -> uint64 ``[count]``."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    b = bits[: count * width].reshape(count, width).astype(np.uint64)
    weights = np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64)
    return (b * weights).sum(axis=1, dtype=np.uint64)


def bits_to_bytes(bits: np.ndarray) -> bytes:
    return np.packbits(bits).tobytes()


def bytes_to_bits(buf: bytes | memoryview) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buf, dtype=np.uint8))


def width_for(n: int) -> int:
    """Bits to write any position in ``[0, n)``: ceil(log2 n) (0 for n <= 1)."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


# ---------------------------------------------------------------- position codecs
class PositionCodec:
    """Encodes per-tensor ascending positions. Subclasses define the bit layout."""

    id: int = -1
    name: str = ""

    def applicable(self, sizes, counts) -> bool:
        return True

    def encode_bits(self, positions: list[np.ndarray], sizes) -> np.ndarray:
        raise NotImplementedError

    def decode_bits(self, bits: np.ndarray, sizes, counts) -> list[np.ndarray]:
        raise NotImplementedError

    def encode(self, positions: list[np.ndarray], sizes) -> bytes:
        return bits_to_bytes(self.encode_bits(positions, sizes))

    def decode(self, buf: bytes | memoryview, sizes, counts) -> list[np.ndarray]:
        bits = bytes_to_bits(buf)
        try:
            out = self.decode_bits(bits, sizes, counts)
        except (ValueError, IndexError) as e:
            raise DecodeError(f"{self.name} positions are malformed: {e}") from None
        for pos, n, k in zip(out, sizes, counts):
            if len(pos) != k or (k and (int(pos[-1]) >= n or (k > 1 and np.any(np.diff(pos.astype(np.int64)) <= 0)))):
                raise DecodeError(f"{self.name} positions are out of range or not ascending")
        return out


class Raw32(PositionCodec):
    """Each position as a little-endian uint32 (COO indices; 32 bits per entry)."""

    id, name = 0, "raw32"

    def applicable(self, sizes, counts):
        return all(n <= 2**32 for n in sizes)

    def encode(self, positions, sizes):
        return b"".join(np.asarray(p, dtype="<u4").tobytes() for p in positions)

    def decode(self, buf, sizes, counts):
        need = 4 * sum(counts)
        if len(buf) != need:
            raise DecodeError(f"raw32 positions need {need} bytes, got {len(buf)}")
        flat = np.frombuffer(buf, dtype="<u4").astype(np.int64)
        out = np.split(flat, np.cumsum(counts)[:-1]) if counts else []
        for pos, n in zip(out, sizes):
            if pos.size and (pos.max() >= n or np.any(np.diff(pos) <= 0)):
                raise DecodeError("raw32 positions are out of range or not ascending")
        return list(out)


class MinWidth(PositionCodec):
    """Each position in ceil(log2 n_t) bits."""

    id, name = 1, "minwidth"

    def encode_bits(self, positions, sizes):
        return np.concatenate([pack_fixed(np.asarray(p), width_for(n)) for p, n in zip(positions, sizes)] or [np.zeros(0, np.uint8)])

    def decode_bits(self, bits, sizes, counts):
        need = sum(k * width_for(n) for n, k in zip(sizes, counts))
        if bits.size < need or bits.size >= need + 8:
            raise ValueError(f"need {need} bits, got {bits.size}")
        out, at = [], 0
        for n, k in zip(sizes, counts):
            w = width_for(n)
            out.append(unpack_fixed(bits[at:], w, k).astype(np.int64))
            at += w * k
        return out


class Bitmap(PositionCodec):
    """One bit per entry of every tensor (1 = sent): n_t bits per tensor."""

    id, name = 2, "bitmap"

    def encode_bits(self, positions, sizes):
        parts = []
        for p, n in zip(positions, sizes):
            m = np.zeros(n, dtype=np.uint8)
            m[np.asarray(p, dtype=np.int64)] = 1
            parts.append(m)
        return np.concatenate(parts) if parts else np.zeros(0, np.uint8)

    def decode_bits(self, bits, sizes, counts):
        need = sum(sizes)
        if bits.size < need or bits.size >= need + 8:
            raise ValueError(f"need {need} bits, got {bits.size}")
        out, at = [], 0
        for n in sizes:
            out.append(np.flatnonzero(bits[at : at + n]).astype(np.int64))
            at += n
        return out


POSITION_CODECS: dict[str, PositionCodec] = {c.name: c for c in (Raw32(), MinWidth(), Bitmap())}
POSITION_CODECS_BY_ID: dict[int, PositionCodec] = {c.id: c for c in POSITION_CODECS.values()}


# ---------------------------------------------------------------- value codecs
class ValueCodec:
    """Encodes float32 values ``[m]``; ``bits_per_value`` is exact (no per-message overhead)."""

    id: int = -1
    name: str = ""
    dtype: str = "<f4"
    bits_per_value: int = 32

    def encode(self, values: np.ndarray) -> bytes:
        return np.asarray(values, dtype=np.float32).astype(self.dtype).tobytes()

    def decode(self, buf: bytes | memoryview, count: int) -> np.ndarray:
        need = count * self.bits_per_value // 8
        if len(buf) != need:
            raise DecodeError(f"{self.name} values need {need} bytes, got {len(buf)}")
        return np.frombuffer(buf, dtype=self.dtype).astype(np.float32)

    def nbytes(self, count: int) -> int:
        return count * self.bits_per_value // 8


class Fp32(ValueCodec):
    id, name, dtype, bits_per_value = 0, "fp32", "<f4", 32


class Fp16(ValueCodec):
    id, name, dtype, bits_per_value = 1, "fp16", "<f2", 16


VALUE_CODECS: dict[str, ValueCodec] = {c.name: c for c in (Fp32(), Fp16())}
VALUE_CODECS_BY_ID: dict[int, ValueCodec] = {c.id: c for c in VALUE_CODECS.values()}
