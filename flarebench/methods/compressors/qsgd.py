"""``qsgd``: QSGD (Alistarh et al., NeurIPS 2017), s levels per bucket, Elias-omega coded; unbiased.

Quantizer (the paper's Q_s, per bucket): every tensor is cut into buckets of ``d`` consecutive
entries (``bucket``; a tensor's last bucket may be shorter; buckets never cross tensors). For a
bucket ``v`` (n entries) with norm ``||v||`` (``norm = l2``: the 2-norm, as analysed in the paper;
``max``: max |v_i|, the normalisation of the paper's experiments) and ``r_i = s |v_i| / ||v||``,
the level is ``l_i = floor(r_i) + Bernoulli(r_i - floor(r_i))`` in ``0..s`` and the server gets
``Q(v)_i = ||v|| sign(v_i) l_i / s``, so ``E[Q(v)] = v`` and, for ``l2``, the paper's Lemma 3.1
holds: ``E||Q(v) - v||^2 <= min(n / s^2, sqrt(n) / s) ||v||^2`` per bucket. It is computed as
``sign(v_i) l_i = floor(s v_i / ||v|| + u_i)`` with u_i uniform in [0, 1) (24-bit grid) from a PCG64
generator seeded by (run seed, round, client). No error feedback by default (memory ``none``).

Defaults: ``levels`` s = 7 and ``bucket`` d = 512: the paper's "4-bit QSGD" with the bucket size of
its experiments, reading "b bits" as a fixed-width code of 1 sign bit + b - 1 level bits, so
s = 2^(b-1) - 1 (``levels = 1``: ternary 2-bit QSGD; ``levels = 127``: 8-bit). The "gradient" is the
client's round update.

Wire (the paper's Elias coding, Sec. 3.1 / Thm 3.2, with a count per bucket instead of an end
marker): 2-byte tag; the B bucket norms as float32 (32 bits each, as the paper); then one bit stream:
``omega(c_b + 1)`` for the number c_b of non-zero levels of every bucket, then for every non-zero
entry (bucket by bucket, ascending): ``omega(gap)`` of its position (gap = position - previous
non-zero position in the bucket, the first counted from -1, so gap >= 1), its sign bit (1 =
negative) and ``omega(l_i)``; zero-padded to a byte. ``omega`` is Elias' recursive (omega) code, the
paper's "Elias(k)": 1 -> ``0``, 2 -> ``10 0``, 4 -> ``10 100 0``, 16 -> ``10 100 10000 0``. Every
codeword has its textbook length; to decode without a loop over entries the stream holds the gaps'
codewords layer by layer (all first groups' lead bits, all first groups' low bits, then the second
groups ..., a layer's low bits grouped by their width; likewise the levels), which permutes bits but
adds none. Bits =
``16 + 32 B + 8 ceil((sum_b |omega(c_b + 1)| + sum_i (|omega(gap_i)| + 1 + |omega(l_i)|)) / 8)``.

Floor (``bound_bits``): ``32 B`` for the norms plus ``P H`` where H is the empirical entropy of the
message's signed levels ``sign(v_i) l_i`` over all P entries (the floor of any code that treats
the entries as independent draws from the message's own histogram). Elias coding is above it on
noise-like updates; long runs of zeros (e.g. input pixels that never change) can go below it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...wire.bitstream import bit_length, bits_to_bytes, check_end
from ...wire.bounds import empirical_entropy_bits
from ...wire.frame import ByteReader, ByteWriter
from ..registry import Param, PartContext, register
from .base import Compressor

MAX_LEVELS = 2**15 - 1  # signed levels travel in int16 arrays
MAX_BUCKET = 2**31


# ---------------------------------------------------------------- Elias omega, vectorised
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


def row_chunks(rows: int, entries: int, budget: int = 1 << 24) -> list[range]:
    """Rows ``0..rows-1`` in chunks of about ``budget`` entries (at least one row each): bounds the memory
    of quantizing K clients at once."""
    step = max(1, budget // max(1, entries))
    return [range(a, min(rows, a + step)) for a in range(0, rows, step)]


def uniform_bits(seeds: list[int], n: int, bits: int = 32) -> np.ndarray:
    """``[len(seeds), n]`` uint32 uniform in ``[0, 2^bits)`` (bits <= 32), row k the top ``bits`` bits of the raw
    32-bit outputs of a PCG64 generator seeded with ``seeds[k]`` (a :meth:`RoundContext.seed_for` seed, derived
    from run seed, round and client: the same draws on every device and on resume; numpy's PCG64 is 2-6x faster
    than torch's CPU generator for this)."""
    rows = []
    for seed in seeds:
        raw = np.random.PCG64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]
        if bits < 32:
            np.right_shift(raw, np.uint32(32 - bits), out=raw)
        rows.append(raw)
    return rows[0][None] if len(rows) == 1 else np.stack(rows) if rows else np.zeros((0, n), np.uint32)


def uniform_floats(seeds: list[int], n: int) -> np.ndarray:
    """``[len(seeds), n]`` float32 uniform in [0, 1) on the grid ``k 2^-24`` (see :func:`uniform_bits`)."""
    u = uniform_bits(seeds, n, 24).astype(np.float32)
    u *= np.float32(2.0**-24)
    return u


def stochastic_round(y: np.ndarray, u: np.ndarray, limit: float) -> np.ndarray:
    """``floor(y + u)`` in place (float32), clipped to ``[-limit, limit]``: with u uniform in [0, 1) every
    entry becomes ``floor(y)`` or ``floor(y) + 1``, the latter with probability ``y - floor(y)``, so
    ``E = y`` (for both signs). The clip only catches float rounding of ``y + u`` at ``|y| = limit``."""
    y += u
    np.floor(y, out=y)
    if y.size and (y.max() > limit or y.min() < -limit):
        np.clip(y, -limit, limit, out=y)
    return y


# ---------------------------------------------------------------- payload
@dataclass
class QSGDPayload:
    """One client's QSGD message.

    ``norms`` float32 ``[B]`` (per bucket, layout order); ``counts`` int64 ``[B]`` (non-zero levels per
    bucket); ``positions`` int64 ``[N]`` (ascending flat positions in ``[P]`` of the non-zero levels,
    N = sum counts); ``levels`` int16 ``[N]`` (signed levels ``sign(v_i) l_i``, ``1 <= |l| <= s``).
    """

    norms: np.ndarray
    counts: np.ndarray
    positions: np.ndarray
    levels: np.ndarray


@register
class QSGD(Compressor):
    name = "qsgd"
    family = "quantizer"
    summary = "s levels per bucket of d entries, stochastic rounding against the bucket norm, Elias-omega coded (unbiased)"
    paper = "Alistarh et al., NeurIPS 2017"
    unbiased = True
    payload_id = 0x30
    params = (
        Param("levels", int, 7, "s: levels per sign (entries -> norm * sign * l/s, l in 0..s); 7 = the paper's 4-bit QSGD",
              unit="levels", paper="Alistarh et al. 2017", check=lambda s: 1 <= s <= MAX_LEVELS, rule=f"in [1, {MAX_LEVELS}]"),
        Param("bucket", int, 512, "d: entries per bucket (per tensor; a tensor's last bucket may be shorter)",
              unit="entries", paper="Alistarh et al. 2017 (experiments)", check=lambda d: 1 <= d <= MAX_BUCKET,
              rule=f"in [1, {MAX_BUCKET}]"),
        Param("norm", str, "l2", "levels are relative to the bucket's l2 norm (the paper's analysis) or its max |v| "
              "(the paper's experiments)", choices=("l2", "max"), paper="Alistarh et al. 2017"),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.num_params = self.layout.num_params
        d = self.bucket
        starts, sizes = [], []
        for seg in self.layout.segments:
            s = np.arange(seg.start, seg.stop, d, dtype=np.int64)
            starts.append(s)
            sizes.append(np.minimum(d, seg.stop - s))
        self.bucket_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)  # flat start of every bucket
        self.bucket_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
        self.num_buckets = int(self.bucket_starts.size)

    # ------------------------------------------------------------ client side
    def _blocks(self, x: np.ndarray):
        """Per tensor of ``x`` ``[K, P]``: (flat start, its full buckets ``[K, m, d]``), then its short last
        bucket ``[K, 1, r]`` (layout order)."""
        d, K = self.bucket, x.shape[0]
        for seg in self.layout.segments:
            full = seg.numel // d
            if full:
                yield seg.start, x[:, seg.start : seg.start + full * d].reshape(K, full, d)
            if seg.numel % d:
                yield seg.start + full * d, x[:, seg.start + full * d : seg.stop].reshape(K, 1, -1)

    def quantize(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``[K, P]`` float32 and uniforms ``u`` ``[K, P]`` in [0, 1) (or both ``[P]``) ->
        (norms ``[K, B]`` float32, signed levels ``[K, P]`` int16): ``sign(x_i) l_i = floor(s x_i / ||v|| + u_i)``,
        i.e. |level| is ``floor(r_i)`` or ``floor(r_i) + 1``, the latter with probability ``r_i - floor(r_i)``."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            return tuple(t[0] for t in self.quantize(x[None], np.asarray(u)[None]))
        s, K = self.levels, x.shape[0]
        u = np.asarray(u, dtype=np.float32)
        out = np.empty(x.shape, dtype=np.int16)
        norms = []
        for (start, xb), (_, ub) in zip(self._blocks(x), self._blocks(u)):
            top = np.maximum(xb.max(axis=2), -xb.min(axis=2))  # max |v| per bucket
            if self.norm == "max":
                nrm = top
            else:
                nrm = np.sqrt(np.einsum("kbi,kbi->kb", xb, xb))
                low = nrm < top  # squares that underflowed (|v| < 1e-19) or rounding: redo in float64
                if low.any():
                    nrm[low] = np.sqrt(np.square(xb[low].astype(np.float64)).sum(axis=-1))
            with np.errstate(over="ignore"):
                scale = np.divide(np.float32(s), nrm, out=np.zeros_like(nrm), where=nrm > 0)
            if np.isfinite(scale).all():
                y = xb * scale[..., None]
            else:  # a subnormal norm: s / norm overflows, x / norm does not
                y = np.divide(xb, nrm[..., None], out=np.zeros_like(xb), where=nrm[..., None] > 0) * np.float32(s)
            out[:, start : start + xb.shape[1] * xb.shape[2]] = stochastic_round(y, ub, s).reshape(K, -1)
            norms.append(nrm)
        return (np.concatenate(norms, axis=1) if norms else np.zeros((K, 0), np.float32)), out

    def compress(self, v, ctx):
        x = v.detach().float().cpu().numpy()
        ends = np.append(self.bucket_starts, self.num_params)
        out = []
        for rows in row_chunks(x.shape[0], self.num_params):
            u = uniform_floats([ctx.seed_for(k, self.name) for k in rows], self.num_params)
            norms, levels = self.quantize(x[rows.start : rows.stop], u)
            for i in range(len(rows)):
                positions = np.flatnonzero(levels[i] != 0)
                counts = np.diff(np.searchsorted(positions, ends)).astype(np.int64)
                out.append(QSGDPayload(norms[i], counts, positions, levels[i][positions]))
        return out

    # ------------------------------------------------------------ bytes
    def _gaps(self, p: QSGDPayload) -> np.ndarray:
        """Position gaps within buckets (first non-zero of a bucket: its offset + 1), int64 ``[N]``."""
        gaps = np.empty(p.positions.size, dtype=np.int64)
        if p.positions.size:
            gaps[1:] = np.diff(p.positions)
            firsts = (np.cumsum(p.counts) - p.counts)[p.counts > 0]
            gaps[firsts] = p.positions[firsts] - self.bucket_starts[p.counts > 0] + 1
        return gaps

    def encode(self, payload: QSGDPayload) -> bytes:
        mags = np.abs(payload.levels.astype(np.int64))
        stream = np.concatenate([
            omega_encode(payload.counts + 1),
            omega_encode(self._gaps(payload)),
            (payload.levels < 0).astype(np.uint8),
            omega_encode(mags),
        ])
        return ByteWriter().tag(self.payload_id).f32(payload.norms).raw(bits_to_bytes(stream)).getvalue()

    def decode(self, data: bytes) -> QSGDPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        B = self.num_buckets
        norms = r.f32(B)
        if np.any(norms < 0):
            raise DecodeError("qsgd: negative bucket norm")
        bits = np.unpackbits(np.frombuffer(r.raw(r.remaining), dtype=np.uint8))
        counts, at = omega_decode(bits, 0, B, self.bucket + 1, "qsgd bucket counts")
        counts -= 1
        if np.any(counts > self.bucket_sizes):
            raise DecodeError("qsgd: a bucket claims more non-zero levels than entries")
        if np.any((counts > 0) & (norms == 0)):
            raise DecodeError("qsgd: non-zero levels in a bucket of norm 0")
        n = int(counts.sum())
        if at + 3 * n > bits.size:  # every entry needs >= 1 gap bit, 1 sign bit, >= 1 level bit
            raise DecodeError(f"qsgd: {n} levels claimed, the stream cannot hold them")
        gaps, at = omega_decode(bits, at, n, self.bucket, "qsgd gaps")
        signs = bits[at : at + n].view(np.bool_)
        at += n
        mags, at = omega_decode(bits, at, n, self.levels, "qsgd levels")
        check_end(bits, at, "qsgd")
        positions = self._positions(counts, gaps)
        neg = signs.view(np.uint8).astype(np.int16)
        levels = (mags.astype(np.int16) ^ -neg) + neg  # two's complement: -m where the sign bit is 1
        return QSGDPayload(norms, counts, positions, levels)

    def _positions(self, counts: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """Per-bucket gaps -> ascending flat positions; DecodeError if one falls past its bucket."""
        if gaps.size == 0:
            return np.zeros(0, dtype=np.int64)
        cs = np.cumsum(gaps)
        nonempty = counts > 0
        firsts = (np.cumsum(counts) - counts)[nonempty]
        shift = np.zeros(self.num_buckets, dtype=np.int64)  # bucket start - 1 - (gaps summed before the bucket)
        shift[nonempty] = self.bucket_starts[nonempty] - 1 - (cs[firsts] - gaps[firsts])
        positions = cs + np.repeat(shift, counts)
        lasts = firsts + counts[nonempty] - 1
        if np.any(positions[lasts] >= (self.bucket_starts + self.bucket_sizes)[nonempty]):
            raise DecodeError("qsgd: a position falls past the end of its bucket")
        return positions

    # ------------------------------------------------------------ server side
    def decompress(self, payload: QSGDPayload, device=None) -> torch.Tensor:
        step = payload.norms / np.float32(self.levels)  # ||v_b|| / s per bucket
        out = np.zeros(self.num_params, dtype=np.float32)
        out[payload.positions] = payload.levels * np.repeat(step, payload.counts)
        out = torch.from_numpy(out)
        return out.to(device) if device is not None else out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: QSGDPayload) -> int:
        return int(payload.positions.size)  # entries with a non-zero level (sign + level travel)

    def bound_bits(self, payload: QSGDPayload) -> float:
        """32 bits per bucket norm + the empirical entropy of the P signed levels (zeros included)."""
        hist = np.bincount(payload.levels.astype(np.int64) + self.levels, minlength=2 * self.levels + 1)
        hist[self.levels] += self.num_params - payload.positions.size
        return 32.0 * self.num_buckets + empirical_entropy_bits(hist)

    def host_bytes_bound(self, payload: QSGDPayload) -> int:
        """One byte per entry (its signed level, for the coder) + 4 bytes per bucket norm (issue 21)."""
        return self.num_params + 4 * self.num_buckets


__all__ = ["QSGD", "QSGDPayload", "omega_encode", "omega_decode", "omega_lengths", "pack_fields", "read_fields",
           "row_chunks", "uniform_bits", "uniform_floats", "stochastic_round"]
