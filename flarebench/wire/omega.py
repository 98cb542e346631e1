"""Elias' recursive (omega) code, vectorised: the bit codec of QSGD's ``coder = elias`` (Alistarh et al. 2017).

``omega`` codewords: 1 -> ``0``, 2 -> ``10 0``, 4 -> ``10 100 0``, 16 -> ``10 100 10000 0``; every codeword
has its textbook length (:func:`omega_lengths`). To encode and decode without a loop over entries, a stream
of m codewords holds them layer by layer (all first groups' lead bits, all first groups' low bits, then the
second groups ..., a layer's low bits grouped by their width), which permutes bits but adds none.
Streams are numpy uint8 arrays of 0/1 bits (wire/bitstream.py). Decoders raise DecodeError, and only
DecodeError, on a short stream or a value above the caller's limit.
"""

from __future__ import annotations

import numpy as np

from ..errors import DecodeError
from .bitstream import bit_length

def omega_lengths(x: np.ndarray) -> np.ndarray:
    """int64 ``[m]``: bits of the Elias-omega codeword of every ``x >= 1`` (1 + the groups' bit lengths)."""
    c = np.asarray(x, dtype=np.int64)
    total = np.ones(c.shape, dtype=np.int64)
    while True:
        more = c > 1
        if not more.any():
            return total
        n = bit_length(c)
        total += np.where(more, n, 0)
        c = np.where(more, n - 1, 1)


def _uint_for(width: int) -> type:
    """The smallest unsigned numpy type that holds a field of ``width`` bits."""
    return np.uint8 if width <= 8 else np.uint16 if width <= 16 else np.uint32 if width <= 32 else np.uint64


def pack_fields(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The low ``widths[i]`` bits of ``values[i]`` (MSB first) -> bits (uint8 0/1) ``[sum widths]``, the fields
    grouped by width (ascending), each group in index order (a ``[count, w]`` bit matrix per width, built one
    column at a time: vectorised, w passes over the group)."""
    widths = np.asarray(widths, dtype=np.int64)
    values = np.asarray(values)
    parts = []
    present = np.flatnonzero(np.bincount(widths)) if widths.size else []
    for w in present:
        if w == 0:
            continue
        t = _uint_for(int(w))
        vals = (values if len(present) == 1 else np.compress(widths == w, values)).astype(t)
        m = np.empty((vals.size, w), dtype=np.uint8)
        for k in range(w):
            m[:, k] = (vals >> t(w - 1 - k)) & t(1)
        parts.append(m.reshape(-1))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint8)


def read_fields(bits: np.ndarray, at: int, widths: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    """Inverse of :func:`pack_fields` from bit ``at``: -> (int64 values ``[m]``, next offset)."""
    widths = np.asarray(widths, dtype=np.int64)
    total = int(widths.sum())
    if at + total > bits.size:
        raise DecodeError(f"{what}: stream is truncated ({total} bits from bit {at}, stream has {bits.size})")
    out = np.zeros(widths.size, dtype=np.int64)
    counts = np.bincount(widths) if widths.size else np.zeros(0, np.int64)
    for w in np.flatnonzero(counts):
        if w == 0:
            continue
        c, t = int(counts[w]), _uint_for(int(w))
        m = bits[at : at + c * w].reshape(c, w)
        vals = m[:, 0].astype(t)
        for k in range(1, w):
            vals <<= t(1)
            vals |= m[:, k]
        if c == widths.size:
            out[:] = vals
        else:
            out[np.flatnonzero(widths == w)] = vals
        at += c * w
    return out, at


OMEGA_DEPTH_AT = (2, 4, 16, 65536)  # a codeword has a j-th group iff x >= OMEGA_DEPTH_AT[j-1] (then 2^65536)


def _reduce(y: np.ndarray) -> np.ndarray:
    """``bitlen(y) - 1`` (int64)."""
    return bit_length(y) - 1


def _group_tables() -> tuple[np.ndarray, np.ndarray]:
    """For x < 2^16: groups 1 and 2 of x's codeword (G1 in {2, 3} for x >= 2; G2 in 4..15 for x >= 4)."""
    x = np.arange(OMEGA_DEPTH_AT[-1], dtype=np.int64)
    r1 = np.where(x > 1, _reduce(np.maximum(x, 1)), 1)
    r2 = np.where(r1 > 1, _reduce(np.maximum(r1, 1)), 1)
    g1 = np.select([x >= 16, x >= 4], [r2, r1], x)
    g2 = np.where(x >= 16, r1, x)
    return g1.astype(np.uint8), g2.astype(np.uint8)


_G1, _G2 = _group_tables()


def _groups(xs: np.ndarray, j: int) -> np.ndarray:
    """Group j of every codeword in ``xs`` (all of depth >= j): ``R^(D-j)(x)``, ``R(y) = bitlen(y) - 1``."""
    small = xs < OMEGA_DEPTH_AT[-1]
    if small.all() and j <= 2:
        return (_G1 if j == 1 else _G2)[xs].astype(np.int64)
    depth = sum((xs >= t).astype(np.int64) for t in OMEGA_DEPTH_AT)
    y = xs
    for r in range(int((depth - j).max())):
        y = np.where(depth - j > r, _reduce(y), y)
    return y


def omega_encode(x: np.ndarray) -> np.ndarray:
    """Elias-omega codewords of ``x >= 1`` (int, ``[m]``, below 2^53) -> bits (uint8 0/1), layer by layer:

    layer j = one lead bit per codeword still open (1: its group j follows; 0: its terminating 0), then
    the low ``g_{j-1}`` bits of group j of those that continue (``g_0 = 1``; group j has g_{j-1} + 1 bits,
    the first a 1). A codeword of depth D (x >= 2, 4, 16, 65536 for D >= 1, 2, 3, 4) has groups
    ``g_j = R^(D-j)(x)`` with ``R(y) = bitlen(y) - 1``, so ``g_D = x``.
    """
    xs = np.asarray(x, dtype=np.int64)
    if xs.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if xs.min() < 1:
        raise ValueError("Elias omega codes integers >= 1")
    parts = []
    prev = None  # g_{j-1} of the open codewords (None: all 1)
    for j in range(1, len(OMEGA_DEPTH_AT) + 2):
        more = xs >= (OMEGA_DEPTH_AT[j - 1] if j <= len(OMEGA_DEPTH_AT) else np.iinfo(np.int64).max)
        parts.append(more.view(np.uint8))
        xs = np.compress(more, xs)
        if xs.size == 0:
            break
        group = _groups(xs, j)
        if prev is None:  # layer 1: g_0 = 1, one low bit (group is 2 or 3)
            parts.append((group - 2).astype(np.uint8))
        else:
            width = np.compress(more, prev)
            parts.append(pack_fields(group - (np.int64(1) << width), width))
        prev = group
    return np.concatenate(parts)


def omega_decode(bits: np.ndarray, at: int, count: int, max_value: int, what: str) -> tuple[np.ndarray, int]:
    """Inverse of :func:`omega_encode`: ``count`` codewords from bit ``at`` -> (int64 ``[count]``, next offset).

    Reads the layers top-down (each layer's widths are the previous layer's groups), then assembles the
    values bottom-up. DecodeError when the stream is short or a value would exceed ``max_value``; every
    array is sized by a count of bits that were checked to be in the stream.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int64), at
    max_width = int(bit_length(np.array([max_value]))[0]) - 1  # a group read with width w is >= 2^w
    opened, groups = [], []  # per layer: which of the previous layer's open codewords continue, their group
    n_open, width = count, None
    while n_open:
        if at + n_open > bits.size:
            raise DecodeError(f"{what}: stream is truncated inside an Elias-omega codeword")
        idx = np.flatnonzero(bits[at : at + n_open].view(np.bool_))  # bits are 0/1
        at += n_open
        if not idx.size:
            break
        if width is None:  # layer 1: width g_0 = 1 for all
            if max_width < 1:
                raise DecodeError(f"{what}: Elias-omega value exceeds {max_value}")
            if at + idx.size > bits.size:
                raise DecodeError(f"{what}: stream is truncated inside an Elias-omega codeword")
            group = 2 + bits[at : at + idx.size].astype(np.int64)
            at += idx.size
        else:
            w = width[idx]
            if w.max() > max_width:
                raise DecodeError(f"{what}: Elias-omega value exceeds {max_value}")
            low, at = read_fields(bits, at, w, what)
            group = (np.int64(1) << w) | low
        opened.append(idx)
        groups.append(group)
        n_open, width = idx.size, group
    value, below = None, None  # bottom-up: a codeword's value is its last group
    for idx, group in zip(reversed(opened), reversed(groups)):
        if value is not None:
            group[below] = value  # the codewords that went on to the deeper layer
        value, below = group, idx
    out = np.ones(count, dtype=np.int64)  # lead bit 0 in layer 1: x = 1
    if value is not None:
        out[below] = value
        if value.max() > max_value:
            raise DecodeError(f"{what}: Elias-omega value exceeds {max_value}")
    return out, at


__all__ = ["omega_lengths", "omega_encode", "omega_decode", "pack_fields", "read_fields"]
