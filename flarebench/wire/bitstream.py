"""Vectorised bit streams: integers <-> uint8 arrays of 0/1 bits (MSB first) <-> bytes.

A bit stream here is a numpy uint8 array with one bit per element; :func:`bits_to_bytes` packs it
(MSB first, zero-padded to a whole byte). Writers return such arrays; readers take one and a bit
offset ``at`` and return ``(values, next offset)``. No function loops over entries in Python.

Readers raise DecodeError when the stream is too short or a field is out of range; they allocate
at most a few arrays of the stream's own length (never from a length read out of the stream).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DecodeError

EMPTY = np.zeros(0, dtype=np.uint8)
MAX_POSITION_BITS = 53  # positions and gaps go through float64 bit lengths: exact below 2**53


def width_for(n: int) -> int:
    """Bits to write any position in ``[0, n)``: ceil(log2 n) (0 for n <= 1)."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def bit_length(x: np.ndarray) -> np.ndarray:
    """int64 ``[m]`` of ``floor(log2 x) + 1`` for integers ``1 <= x < 2**53`` (0 for x == 0)."""
    return np.frexp(np.asarray(x, dtype=np.float64))[1].astype(np.int64)


def bits_to_bytes(bits: np.ndarray) -> bytes:
    """Bits (uint8 0/1) -> bytes, MSB first, the last byte zero-padded."""
    return np.packbits(bits).tobytes()


def bytes_to_bits(buf: bytes | memoryview) -> np.ndarray:
    """Bytes -> bits (uint8 0/1), ``8 * len(buf)`` of them."""
    return np.unpackbits(np.frombuffer(buf, dtype=np.uint8))


def check_end(bits: np.ndarray, at: int, what: str) -> None:
    """DecodeError unless the stream ends at bit ``at`` plus fewer than 8 zero padding bits."""
    if at > bits.size or bits.size - at >= 8:
        raise DecodeError(f"{what}: the stream has {bits.size} bits, its fields end at bit {at}")
    if bits[at:].any():
        raise DecodeError(f"{what}: the padding bits after the last field are not zero")


# ---------------------------------------------------------------- fixed width
def pack_fixed(values: np.ndarray, width: int) -> np.ndarray:
    """uint64 values (each < 2**width) -> bits ``[len * width]``, MSB first."""
    if width == 0 or values.size == 0:
        return EMPTY
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint64)
    return ((values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)).astype(np.uint8).reshape(-1)


def unpack_fixed(bits: np.ndarray, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_fixed`: the first ``count * width`` bits -> uint64 ``[count]``."""
    if width == 0 or count == 0:
        return np.zeros(count, dtype=np.uint64)
    if bits.size < count * width:
        raise DecodeError(f"stream is truncated: {count} fields of {width} bits need {count * width}, got {bits.size}")
    b = bits[: count * width].reshape(count, width).astype(np.uint64)
    weights = np.uint64(1) << np.arange(width - 1, -1, -1, dtype=np.uint64)
    return (b * weights).sum(axis=1, dtype=np.uint64)


# ---------------------------------------------------------------- variable width
def pack_varwidth(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Field i = the low ``widths[i]`` bits of ``values[i]`` (MSB first); fields back to back.

    ``values``: integers ``[m]``; ``widths``: int64 ``[m]`` in [0, 63]. -> bits ``[sum(widths)]``.
    """
    widths = np.asarray(widths, dtype=np.int64)
    total = int(widths.sum())
    if total == 0:
        return EMPTY
    ends = np.cumsum(widths)
    owner = np.repeat(np.arange(widths.size), widths)
    shift = (ends[owner] - 1 - np.arange(total, dtype=np.int64)).astype(np.uint64)  # from the LSB
    return ((np.asarray(values).astype(np.uint64)[owner] >> shift) & np.uint64(1)).astype(np.uint8)


def read_varwidth(bits: np.ndarray, at: int, widths: np.ndarray) -> tuple[np.ndarray, int]:
    """Inverse of :func:`pack_varwidth` from bit ``at``: -> (uint64 values ``[m]``, next offset)."""
    widths = np.asarray(widths, dtype=np.int64)
    total = int(widths.sum())
    if total == 0:
        return np.zeros(widths.size, dtype=np.uint64), at
    if at + total > bits.size:
        raise DecodeError(f"stream is truncated: fields of {total} bits from bit {at}, stream has {bits.size}")
    ends = np.cumsum(widths)
    owner = np.repeat(np.arange(widths.size), widths)
    shift = (ends[owner] - 1 - np.arange(total, dtype=np.int64)).astype(np.uint64)
    contrib = bits[at : at + total].astype(np.uint64) << shift
    cs = np.concatenate([np.zeros(1, np.uint64), np.cumsum(contrib, dtype=np.uint64)])
    return cs[ends] - cs[ends - widths], at + total  # exact: each field < 2**63


# ---------------------------------------------------------------- unary
def pack_unary(q: np.ndarray) -> np.ndarray:
    """Each ``q[i] >= 0`` as ``q[i]`` zeros then a one -> bits ``[sum(q) + m]``."""
    q = np.asarray(q, dtype=np.int64)
    if q.size == 0:
        return EMPTY
    ends = np.cumsum(q + 1)
    bits = np.zeros(int(ends[-1]), dtype=np.uint8)
    bits[ends - 1] = 1
    return bits


def as_bool(bits: np.ndarray) -> np.ndarray:
    """A 0/1 uint8 bit array seen as bool (no copy): numpy's nonzero on bool is ~5x its uint8 one."""
    return bits.view(np.bool_) if bits.dtype == np.uint8 else bits.astype(np.bool_)


def read_unary(bits: np.ndarray, at: int, count: int) -> tuple[np.ndarray, int]:
    """Inverse of :func:`pack_unary` from bit ``at``: -> (int64 ``q`` ``[count]``, next offset)."""
    if count == 0:
        return np.zeros(0, dtype=np.int64), at
    ones = np.flatnonzero(as_bool(bits[at:]))  # bits are 0/1: numpy's bool nonzero is ~5x its uint8 one
    if ones.size < count:
        raise DecodeError(f"stream is truncated: {count} unary codes expected, found {ones.size} terminators")
    ends = ones[:count].astype(np.int64)
    q = np.diff(ends, prepend=-1) - 1
    return q, at + int(ends[-1]) + 1
