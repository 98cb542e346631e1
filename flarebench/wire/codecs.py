"""Position and value codecs: arrays <-> bytes, vectorised with numpy.

Position codecs encode, per tensor of ``n`` entries, ``k`` ascending positions; a message's
tensors are written into one bit stream, zero-padded to a whole byte at the end. The gap codecs
work on ``x_i = p_i - p_{i-1}`` (``p_{-1} = -1``, so ``x_i >= 1``), restarting at every tensor.

| id | name          | bits per sent entry (tensor of n entries, k sent)                       |
|----|---------------|--------------------------------------------------------------------------|
| 0  | raw32         | 32 (little-endian uint32 COO indices)                                    |
| 1  | minwidth      | ceil(log2 n)                                                             |
| 2  | bitmap        | n / k (one bit per entry)                                                |
| 3  | elias-gamma   | 2 floor(log2 x) + 1                                                      |
| 4  | elias-delta   | floor(log2 x) + 2 floor(log2(floor(log2 x) + 1)) + 1                     |
| 5  | golomb        | Golomb-Rice, b = 2^m: floor((x-1)/b) + 1 + m (m from k/n: not sent)      |
| 6  | enumerative   | ceil(sum_t log2 C(n_t, k_t)) / sum_t k_t: the floor, rounded up once per message |

``enumerative`` (sum k_t <= ENUMERATIVE_MAX_K) numbers every tensor's k-subset in the combinatorial
number system (rank = sum_i C(p_i, i + 1) over the ascending positions p_0 < ... < p_{k-1}, in
[0, C(n, k))) and writes the mixed-radix integer of all tensors' ranks (tensor 0 least significant)
in ceil(log2 prod_t C(n_t, k_t)) bits: within one bit of the floor per message; Python integers, so
it is offered for small k only (FLARE's regime: tens to hundreds of entries).

The variable-length codes have exactly their textbook lengths; to vectorise decoding, a message
writes all codewords' unary parts first, then all their binary parts (each block in entry order),
instead of interleaving them. Golomb's m is chosen per tensor from its density p = k/n as in STC
(Sattler et al. 2019): ``m = max(0, 1 + floor(log2(ln(phi - 1) / ln(1 - p))))``; the decoder knows
n and k, so m does not travel.

Value codecs encode the message's float32 values, tensor by tensor (``counts`` per tensor).
Every ``encode`` returns the exact bytes that go on the wire; bits = 8 * len(bytes). Decoders
take the header's (already validated) sizes and counts and raise DecodeError on anything
inconsistent: short, long, non-zero padding, out-of-range or non-ascending positions.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import DecodeError
from .bitstream import (
    EMPTY,
    MAX_POSITION_BITS,
    as_bool,
    bit_length,
    bits_to_bytes,
    bytes_to_bits,
    check_end,
    pack_fixed,
    pack_unary,
    pack_varwidth,
    read_unary,
    read_varwidth,
    unpack_fixed,
    width_for,
)

__all__ = [
    "POSITION_CODECS", "POSITION_CODECS_BY_ID", "VALUE_CODECS", "VALUE_CODECS_BY_ID",
    "PositionCodec", "ValueCodec", "gaps_of", "rice_parameter", "width_for",
]


# ---------------------------------------------------------------- gaps
def gaps_of(positions: Sequence[np.ndarray]) -> np.ndarray:
    """Per-tensor ascending positions -> int64 gaps ``x = p_i - p_{i-1}`` (``p_{-1} = -1``), concatenated.

    ValueError if some tensor's positions are not strictly ascending or negative (an encoder-side bug).
    """
    parts = [np.asarray(p, dtype=np.int64) for p in positions]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if flat.size == 0:
        return flat
    x = np.empty_like(flat)
    x[0] = flat[0] + 1
    x[1:] = flat[1:] - flat[:-1]
    counts = np.array([p.size for p in parts], dtype=np.int64)
    starts = (np.cumsum(counts) - counts)[counts > 0]
    x[starts] = flat[starts] + 1
    if x.min() < 1:
        raise ValueError("positions must be ascending and >= 0 within each tensor")
    return x


def _positions_from_gaps(x: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """Inverse of :func:`gaps_of`: int64 gaps ``[sum k]`` -> per-tensor positions."""
    cs = np.cumsum(x)
    counts = np.asarray(counts, dtype=np.int64)
    ends = np.cumsum(counts)
    base = np.concatenate([[0], cs])[ends - counts]  # cumulative gap before each tensor
    return [cs[e - k : e] - b - 1 for e, k, b in zip(ends.tolist(), counts.tolist(), base.tolist())]


def _entry_sizes(sizes, counts) -> np.ndarray:
    """int64 ``[sum k]``: the size n_t of the tensor each sent entry belongs to."""
    return np.repeat(np.asarray(sizes, dtype=np.int64), np.asarray(counts, dtype=np.int64))


PHI = (1 + 5**0.5) / 2


def rice_parameter(k: int, n: int) -> int:
    """Golomb-Rice exponent m (b = 2^m) for k of n entries, STC's rule: near-optimal for geometric gaps."""
    if k <= 0 or k >= n:
        return 0
    ratio = math.log(PHI - 1) / math.log1p(-k / n)
    return max(0, 1 + math.floor(math.log2(ratio)))


# ---------------------------------------------------------------- position codecs
class PositionCodec:
    """Encodes per-tensor ascending positions. Subclasses define the bit layout.

    ``positions``: per-tensor int arrays (ascending, in ``[0, n_t)``); ``sizes``/``counts``: n_t/k_t.
    """

    id: int = -1
    name: str = ""
    uses_gaps: bool = False  # codes the gaps x_i (then its size and encoding take precomputed ``gaps``)

    def applicable(self, sizes, counts) -> bool:
        return all(n < 2**MAX_POSITION_BITS for n in sizes)

    def encode_bits(self, positions: list[np.ndarray], sizes, gaps: np.ndarray | None = None) -> np.ndarray:
        """``gaps``: :func:`gaps_of` of ``positions`` when the caller already has them (the gap codecs use them)."""
        raise NotImplementedError

    def decode_bits(self, bits: np.ndarray, sizes, counts) -> list[np.ndarray]:
        raise NotImplementedError

    def nbits(self, positions: list[np.ndarray], sizes, gaps: np.ndarray | None = None) -> int:
        """Exact bits of the encoding before byte padding (computed without encoding where cheaper)."""
        return int(self.encode_bits(positions, sizes, gaps).size)

    def nbytes(self, positions: list[np.ndarray], sizes, gaps: np.ndarray | None = None) -> int:
        """Exact ``len(self.encode(positions, sizes))``."""
        return (self.nbits(positions, sizes, gaps) + 7) // 8

    def encode(self, positions: list[np.ndarray], sizes, gaps: np.ndarray | None = None) -> bytes:
        return bits_to_bytes(self.encode_bits(positions, sizes, gaps))

    def decode(self, buf: bytes | memoryview, sizes, counts) -> list[np.ndarray]:
        bits = bytes_to_bits(buf)
        try:
            out = self.decode_bits(bits, sizes, counts)
        except (ValueError, IndexError) as e:
            raise DecodeError(f"{self.name} positions are malformed: {e}") from None
        for pos, n, k in zip(out, sizes, counts):
            if len(pos) != k or (k and (int(pos[0]) < 0 or int(pos[-1]) >= n or (k > 1 and np.any(np.diff(pos.astype(np.int64)) <= 0)))):
                raise DecodeError(f"{self.name} positions are out of range or not ascending")
        return out


class Raw32(PositionCodec):
    """Each position as a little-endian uint32 (COO indices; 32 bits per entry)."""

    id, name = 0, "raw32"

    def applicable(self, sizes, counts):
        return all(n <= 2**32 for n in sizes)

    def nbits(self, positions, sizes, gaps=None):
        return 32 * sum(len(p) for p in positions)

    def encode(self, positions, sizes, gaps=None):
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

    def nbits(self, positions, sizes, gaps=None):
        return sum(len(p) * width_for(n) for p, n in zip(positions, sizes))

    def encode_bits(self, positions, sizes, gaps=None):
        return np.concatenate([pack_fixed(np.asarray(p), width_for(n)) for p, n in zip(positions, sizes)] or [EMPTY])

    def decode_bits(self, bits, sizes, counts):
        need = sum(k * width_for(n) for n, k in zip(sizes, counts))
        check_end(bits, need, "minwidth positions")
        out, at = [], 0
        for n, k in zip(sizes, counts):
            w = width_for(n)
            out.append(unpack_fixed(bits[at:], w, k).astype(np.int64))
            at += w * k
        return out


class Bitmap(PositionCodec):
    """One bit per entry of every tensor (1 = sent): n_t bits per tensor."""

    id, name = 2, "bitmap"

    def nbits(self, positions, sizes, gaps=None):
        return sum(int(n) for n in sizes)

    def encode_bits(self, positions, sizes, gaps=None):
        m = np.zeros(sum(int(n) for n in sizes), dtype=np.uint8)
        offsets = np.cumsum([0, *sizes[:-1]]) if len(sizes) else []
        for p, o in zip(positions, offsets):
            m[np.asarray(p, dtype=np.int64) + int(o)] = 1
        return m

    def decode_bits(self, bits, sizes, counts):
        need = sum(sizes)
        check_end(bits, need, "bitmap")
        set_bits = np.flatnonzero(as_bool(bits[:need]))  # bits are 0/1 (unpacked bytes)
        bounds = np.searchsorted(set_bits, np.cumsum([0, *sizes]))
        out = [set_bits[a:b] - o for a, b, o in zip(bounds[:-1], bounds[1:], np.cumsum([0, *sizes[:-1]]))]
        for pos, k in zip(out, counts):
            if pos.size != k:
                raise DecodeError(f"bitmap has {pos.size} entries set in a tensor whose header says {k}")
        return out


class EliasGamma(PositionCodec):
    """Elias-gamma on gaps: x = N zeros then x's N+1 bits (N = floor(log2 x)); 2N+1 bits.

    Stream: all unary parts (N zeros then the leading 1), then all low N bits of every x.
    """

    id, name = 3, "elias-gamma"
    uses_gaps = True

    def nbits(self, positions, sizes, gaps=None):
        x = gaps_of(positions) if gaps is None else gaps
        return int((2 * bit_length(x) - 1).sum())

    def encode_bits(self, positions, sizes, gaps=None):
        x = gaps_of(positions) if gaps is None else gaps
        nb = bit_length(x) - 1
        return np.concatenate([pack_unary(nb), pack_varwidth(x, nb)])

    def decode_bits(self, bits, sizes, counts):
        total = sum(counts)
        nb, at = read_unary(bits, 0, total)
        if total and nb.max() >= int(bit_length(max(sizes))):
            raise DecodeError("elias-gamma gap is longer than the tensor")
        low, at = read_varwidth(bits, at, nb)
        check_end(bits, at, "elias-gamma positions")
        x = ((np.uint64(1) << nb.astype(np.uint64)) | low).astype(np.int64)
        return _positions_from_gaps(x, counts)


class EliasDelta(PositionCodec):
    """Elias-delta on gaps: gamma(L) then x's low L-1 bits (L = floor(log2 x) + 1 bits of x).

    Stream: unary parts of gamma(L), then the low bits of every L, then the low L-1 bits of every x.
    """

    id, name = 4, "elias-delta"
    uses_gaps = True

    def nbits(self, positions, sizes, gaps=None):
        L = bit_length(gaps_of(positions) if gaps is None else gaps)
        return int((2 * bit_length(L) - 1 + L - 1).sum())

    def encode_bits(self, positions, sizes, gaps=None):
        x = gaps_of(positions) if gaps is None else gaps
        L = bit_length(x)
        M = bit_length(L) - 1
        return np.concatenate([pack_unary(M), pack_varwidth(L, M), pack_varwidth(x, L - 1)])

    def decode_bits(self, bits, sizes, counts):
        total = sum(counts)
        max_len = int(bit_length(max(sizes))) if total else 0  # no gap has more bits than n
        M, at = read_unary(bits, 0, total)
        if total and M.max() >= int(bit_length(max_len)):
            raise DecodeError("elias-delta length prefix is longer than any gap can be")
        low_l, at = read_varwidth(bits, at, M)
        L = ((np.uint64(1) << M.astype(np.uint64)) | low_l).astype(np.int64)
        if total and L.max() > max_len:
            raise DecodeError("elias-delta gap is longer than the tensor")
        low_x, at = read_varwidth(bits, at, L - 1)
        check_end(bits, at, "elias-delta positions")
        x = ((np.uint64(1) << (L - 1).astype(np.uint64)) | low_x).astype(np.int64)
        return _positions_from_gaps(x, counts)


class Golomb(PositionCodec):
    """Golomb-Rice on gaps g = x - 1 with b = 2^m per tensor (m = rice_parameter(k_t, n_t), known to both
    sides): unary(g >> m) then the low m bits.

    Stream: all unary quotients (q zeros then a one), then all m-bit remainders.
    """

    id, name = 5, "golomb"
    uses_gaps = True

    @staticmethod
    def _params(sizes, counts) -> np.ndarray:
        return np.array([rice_parameter(k, n) for n, k in zip(sizes, counts)], dtype=np.int64)

    def _split(self, positions, sizes, gaps=None):
        counts = [len(p) for p in positions]
        g = (gaps_of(positions) if gaps is None else gaps) - 1
        return self._params(sizes, counts), np.asarray(counts, dtype=np.int64), g

    def nbits(self, positions, sizes, gaps=None):
        m, counts, g = self._split(positions, sizes, gaps)
        return int((g >> np.repeat(m, counts)).sum() + g.size + (m * counts).sum())

    def encode_bits(self, positions, sizes, gaps=None):
        m, counts, g = self._split(positions, sizes, gaps)
        ends = np.cumsum(counts)
        low = [pack_fixed(g[e - k : e] & ((1 << w) - 1), int(w)) for w, k, e in zip(m, counts, ends) if k]
        return np.concatenate([pack_unary(g >> np.repeat(m, counts)), *low])  # each tensor's m-bit remainders

    def decode_bits(self, bits, sizes, counts):
        total = sum(counts)
        q, at = read_unary(bits, 0, total)  # first: proves the stream holds `total` codewords
        me = np.repeat(self._params(sizes, counts), counts)
        if total and np.any(q > (_entry_sizes(sizes, counts) >> me)):
            raise DecodeError("golomb gap is longer than the tensor")
        r = np.empty(total, dtype=np.uint64)  # the m-bit remainders: fixed width within a tensor
        ends = np.cumsum(counts)
        for w, k, e in zip(self._params(sizes, counts).tolist(), counts, ends.tolist()):
            r[e - k : e] = unpack_fixed(bits[at:], w, k)
            at += w * k
        check_end(bits, at, "golomb positions")
        x = (q << me) + r.astype(np.int64) + 1
        return _positions_from_gaps(x, counts)

ENUMERATIVE_MAX_K = 256  # enumerative coding's cost grows as k^2 log n: offered up to this many entries


def _binoms(sizes, counts) -> list[int]:
    return [math.comb(int(n), int(k)) for n, k in zip(sizes, counts)]


def _exact_floor(guess: int, i: int, rank: int, lo: int, hi: int) -> int:
    """The largest p in [lo, hi] with C(p, i) <= rank (C(lo, i) <= rank assumed), searched from ``guess``
    by doubling steps, then bisection, with exact binomials."""
    step = 1
    a = b = min(max(guess, lo), hi)
    while a > lo and math.comb(a, i) > rank:  # below the answer
        a, step = max(lo, a - step), 2 * step
    step = 1
    while b < hi and math.comb(b + 1, i) <= rank:  # b + 1 is past the answer
        b, step = min(hi, b + step), 2 * step
    a = max(a, lo)
    if math.comb(a, i) > rank:
        a = lo
    while a < b:  # invariant: C(a, i) <= rank; the answer is in [a, b]
        mid = (a + b + 1) // 2
        if math.comb(mid, i) <= rank:
            a = mid
        else:
            b = mid - 1
    return a


def _unrank_subset(rank: int, n: int, k: int) -> np.ndarray:
    """The k-subset of [0, n) of combinatorial-number-system ``rank`` (0 <= rank < C(n, k)): int64 ``[k]``
    ascending. Each position comes from a float estimate (lgamma) corrected with exact binomials."""
    out = np.empty(k, dtype=np.int64)
    hi = n  # positions below hi
    lg = math.lgamma
    for i in range(k, 0, -1):  # the largest p < hi with C(p, i) <= rank
        if rank == 0:
            out[:i] = np.arange(i)
            break
        target = math.log(rank)
        lo_p, hi_p = i - 1, hi - 1  # C(i-1, i) = 0 <= rank; search in floats
        while hi_p - lo_p > 1:
            mid = (lo_p + hi_p) // 2
            if lg(mid + 1) - lg(i + 1) - lg(mid - i + 1) <= target:
                lo_p = mid
            else:
                hi_p = mid
        p = _exact_floor(lo_p, i, rank, i - 1, hi - 1)
        c = math.comb(p, i)
        out[i - 1] = p
        rank -= c
        hi = p
    return out


class Enumerative(PositionCodec):
    """All tensors' k-subsets as one integer below prod_t C(n_t, k_t), written in the fewest bits that hold it.

    Applicable for sum k_t <= ENUMERATIVE_MAX_K (cost O(k^2 log n) big-integer work). Decoding checks the
    integer is below the product (every such integer names valid positions), so only the length can be wrong.
    """

    id, name = 6, "enumerative"

    def applicable(self, sizes, counts):
        return sum(int(k) for k in counts) <= ENUMERATIVE_MAX_K and super().applicable(sizes, counts)

    @staticmethod
    def _width(sizes, counts) -> int:
        return (math.prod(_binoms(sizes, counts)) - 1).bit_length()

    def nbits(self, positions, sizes, gaps=None):
        return self._width(sizes, [len(p) for p in positions])

    def encode(self, positions, sizes, gaps=None):
        counts = [len(p) for p in positions]
        value, radix = 0, 1
        for p, c in zip(positions, _binoms(sizes, counts)):
            rank = sum(math.comb(int(x), i + 1) for i, x in enumerate(np.asarray(p).tolist()))
            value += rank * radix
            radix *= c
        width = self._width(sizes, counts)
        nbytes = (width + 7) // 8
        return (value << (8 * nbytes - width)).to_bytes(nbytes, "big")  # MSB first, zero-padded at the end

    def decode(self, buf, sizes, counts):
        if not self.applicable(sizes, counts):
            raise DecodeError(f"enumerative positions for {sum(counts)} entries (at most {ENUMERATIVE_MAX_K})")
        width = self._width(sizes, counts)
        if len(buf) != (width + 7) // 8:
            raise DecodeError(f"enumerative positions need {(width + 7) // 8} bytes, got {len(buf)}")
        value = int.from_bytes(bytes(buf), "big")
        pad = 8 * len(buf) - width
        if value & ((1 << pad) - 1):
            raise DecodeError("enumerative positions: the padding bits are not zero")
        value >>= pad
        binoms = _binoms(sizes, counts)
        if value >= math.prod(binoms):
            raise DecodeError("enumerative positions: the rank is out of range")
        out = []
        for n, k, c in zip(sizes, counts, binoms):
            value, rank = divmod(value, c)
            out.append(_unrank_subset(rank, int(n), int(k)))
        return out


POSITION_CODECS: dict[str, PositionCodec] = {
    c.name: c for c in (Raw32(), MinWidth(), Bitmap(), EliasGamma(), EliasDelta(), Golomb(), Enumerative())
}
POSITION_CODECS_BY_ID: dict[int, PositionCodec] = {c.id: c for c in POSITION_CODECS.values()}


# ---------------------------------------------------------------- value codecs
def _counts(counts) -> tuple[int, ...]:
    return (int(counts),) if isinstance(counts, (int, np.integer)) else tuple(int(c) for c in counts)


class ValueCodec:
    """Encodes float32 values ``[sum k_t]`` (tensor by tensor; ``counts`` = k_t per tensor, or a total).

    ``payload_bits(counts)``: information bits before byte padding; ``nbytes(counts)``: exact bytes.
    ``decode`` returns float32 ``[sum k_t]``: the values the receiver uses (lossy codecs round them).
    """

    id: int = -1
    name: str = ""
    dtype: str = "<f4"
    bits_per_value: int = 32

    def payload_bits(self, counts) -> int:
        return sum(_counts(counts)) * self.bits_per_value

    def nbytes(self, counts) -> int:
        return (self.payload_bits(counts) + 7) // 8

    def encode(self, values: np.ndarray, counts=None) -> bytes:
        return np.asarray(values, dtype=np.float32).astype(self.dtype, copy=False).tobytes()  # fp32: one copy

    def decode(self, buf: bytes | memoryview, counts) -> np.ndarray:
        need = self.nbytes(counts)
        if len(buf) != need:
            raise DecodeError(f"{self.name} values need {need} bytes, got {len(buf)}")
        return np.frombuffer(buf, dtype=self.dtype).astype(np.float32, copy=False)  # fp32: a read-only view


class Fp32(ValueCodec):
    id, name, dtype, bits_per_value = 0, "fp32", "<f4", 32


class Fp16(ValueCodec):
    id, name, dtype, bits_per_value = 1, "fp16", "<f2", 16


class Bf16(ValueCodec):
    """bfloat16: the top 16 bits of float32, rounded to nearest even (torch's conversion)."""

    id, name, dtype, bits_per_value = 2, "bf16", "<u2", 16

    def encode(self, values, counts=None):
        t = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(torch.bfloat16)
        return t.view(torch.int16).numpy().astype("<i2").tobytes()

    def decode(self, buf, counts):
        need = self.nbytes(counts)
        if len(buf) != need:
            raise DecodeError(f"bf16 values need {need} bytes, got {len(buf)}")
        return (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)


class SignScale(ValueCodec):
    """One float32 scale per tensor (mean |v| of its sent values) + one sign bit per value (1 = negative).

    Decoded value = sign * scale (STC / ternary style). Layout: the scales of the tensors with
    k_t > 0 (little-endian float32 each), then all sign bits, zero-padded to a byte.
    """

    id, name, dtype, bits_per_value = 3, "sign+scale", "", 1

    def payload_bits(self, counts):
        c = _counts(counts)
        return 32 * sum(k > 0 for k in c) + sum(c)

    def nbytes(self, counts):
        c = _counts(counts)
        return 4 * sum(k > 0 for k in c) + (sum(c) + 7) // 8

    def encode(self, values, counts=None):
        v = np.asarray(values, dtype=np.float32)
        c = np.asarray(_counts(v.size if counts is None else counts), dtype=np.int64)
        nz = c[c > 0]
        starts = (np.cumsum(c) - c)[c > 0]
        scales = np.add.reduceat(np.abs(v).astype(np.float64), starts) / nz if nz.size else np.zeros(0)
        return scales.astype("<f4").tobytes() + np.packbits(v < 0).tobytes()

    def decode(self, buf, counts):
        c = np.asarray(_counts(counts), dtype=np.int64)
        need = self.nbytes(c)
        if len(buf) != need:
            raise DecodeError(f"sign+scale values need {need} bytes, got {len(buf)}")
        t = int((c > 0).sum())
        scales = np.frombuffer(buf[: 4 * t], dtype="<f4")
        if np.any(scales < 0):
            raise DecodeError("sign+scale has a negative scale")
        signs = np.unpackbits(np.frombuffer(buf[4 * t :], dtype=np.uint8))
        total = int(c.sum())
        if signs[total:].any():
            raise DecodeError("sign+scale: the padding bits after the last sign are not zero")
        mag = np.repeat(scales, c[c > 0])
        return np.where(signs[:total].astype(bool), -mag, mag).astype(np.float32)


VALUE_CODECS: dict[str, ValueCodec] = {c.name: c for c in (Fp32(), Fp16(), Bf16(), SignScale())}
VALUE_CODECS_BY_ID: dict[int, ValueCodec] = {c.id: c for c in VALUE_CODECS.values()}

# the bit helpers used to live here
__all__ += ["pack_fixed", "unpack_fixed", "bits_to_bytes", "bytes_to_bits"]
