"""Bit floors and per-codec position costs, in bits (never bytes).

- :func:`log2_binom`: log2 C(n, k), the bits needed to name one k-subset of n positions.
- :func:`message_bound_bits`: the information-theoretic floor of one message (metrics.csv's
  ``uplink_bound_bits`` sums it over a round's messages).
- :func:`expected_bits_per_entry`: a position codec's exact expected bits per sent entry when the
  k positions of a tensor of n entries are a uniformly random k-subset (what top-k of noise-like
  updates looks like), from the exact gap distribution P(x >= g) = C(n-g+1, k) / C(n, k).
- :func:`measured_bits_per_entry`: the same from the real bytes of one seeded random draw.
- :func:`bits_table`: both for every position codec, next to the bound (``flarebench bits``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bitstream import width_for
from .codecs import POSITION_CODECS, ValueCodec, rice_parameter
from .message import SPARSE, Message

TAIL = 60.0  # gap sums stop where P(x >= g) < exp(-TAIL)


def log2_binom(n: int, k: int) -> float:
    """log2 C(n, k) in bits (0 <= k <= n), via lgamma."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got n={n}, k={k}")
    return (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2)


def message_bound_bits(msg: Message, values: ValueCodec) -> float:
    """Floor of one message in bits: sum_t log2 C(n_t, k_t) for explicit positions + the value bits.

    Value bits are the value codec's payload (e.g. 32 per fp32 value; 1 per value + 32 per tensor
    for sign+scale). Seeded (random-k) positions are shared randomness and dense messages have
    none, so those messages' floor is their value bits. Headers and byte padding are not counted.
    """
    positions = sum(log2_binom(n, k) for n, k in zip(msg.sizes, msg.counts)) if msg.kind == SPARSE else 0.0
    return positions + values.payload_bits(msg.counts)


def _log_survival(n: int, k: int, x: np.ndarray) -> np.ndarray:
    """log P(gap >= x) for a uniformly random k-subset of n positions (gaps x >= 1; -inf past n-k+1)."""
    lg = np.vectorize(math.lgamma, otypes=[float])
    x = np.asarray(x, dtype=np.float64)
    ok = x <= n - k + 1
    a = np.where(ok, n - x + 2, k + 1.0)  # C(n-x+1, k) = Gamma(a) / (Gamma(k+1) Gamma(a-k))
    out = lg(a) - lg(a - k) - (math.lgamma(n + 1) - math.lgamma(n - k + 1))
    return np.where(ok, out, -np.inf)


def _step_sum(n: int, k: int, x: np.ndarray, steps: np.ndarray) -> float:
    """sum_i steps[i] * P(gap >= x[i]): E[len] for a length that grows by steps[i] at gap x[i]."""
    if x.size == 0:
        return 0.0
    return float(np.sum(np.asarray(steps, dtype=np.float64) * np.exp(_log_survival(n, k, x))))


def expected_bits_per_entry(codec: str, n: int, k: int) -> float:
    """Exact expected position bits per sent entry of ``codec`` for k uniformly random of n entries.

    Counts codeword bits only: not the
    byte padding or the message header (the measured figures include all but the header).
    """
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    max_gap = n - k + 1
    if codec == "raw32":
        return 32.0
    if codec == "minwidth":
        return float(width_for(n))
    if codec == "bitmap":
        return n / k
    if codec == "enumerative":  # a fixed width for every subset: ceil(log2 C(n, k)) bits
        return (math.comb(n, k) - 1).bit_length() / k
    j = np.arange(1, max(1, max_gap.bit_length()), dtype=np.int64)  # breakpoints 2^j <= max_gap
    j = j[(np.int64(1) << j) <= max_gap]
    if codec == "elias-gamma":  # 2 floor(log2 x) + 1: +2 at every power of two
        return 1.0 + _step_sum(n, k, np.int64(1) << j, np.full(j.size, 2.0))
    if codec == "elias-delta":  # L + 2 floor(log2 L), L = bits of x: steps at powers of two
        f = lambda L: L + 2 * (np.frexp(np.asarray(L, np.float64))[1] - 1)  # noqa: E731
        return float(f(1)) + _step_sum(n, k, np.int64(1) << j, f(j + 1) - f(j))
    if codec == "golomb":  # m + 1 + floor((x-1) / 2^m): +1 at x = i 2^m + 1
        m = rice_parameter(k, n)
        last = min(max_gap - 1, int(TAIL * n / k) + 1) >> m
        x = (np.arange(1, last + 1, dtype=np.int64) << m) + 1
        return m + 1.0 + _step_sum(n, k, x, np.ones(x.size))
    raise ValueError(f"unknown position codec {codec}")


def entropy_bits_per_entry(n: int, k: int) -> float:
    """n H(k/n) / k: the binary-entropy approximation of log2 C(n, k) / k (slightly above it)."""
    p = k / n
    h = -(p * math.log2(p) + ((1 - p) * math.log2(1 - p) if p < 1 else 0.0))
    return n * h / k


def empirical_entropy_bits(histogram) -> float:
    """``n H(p)`` in bits for a symbol histogram (counts ``[S]``, n = their sum, p = counts / n): the floor
    of any code that treats the n symbols as independent draws from their own empirical distribution."""
    c = np.asarray(histogram, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    return float((c * np.log2(n / c)).sum()) if n else 0.0


def random_positions(n: int, k: int, seed: int = 0) -> np.ndarray:
    """A uniformly random k-subset of [0, n), sorted int64 ``[k]`` (memory O(k) when k << n)."""
    rng = np.random.default_rng(seed)
    if 4 * k > n:
        return np.sort(rng.permutation(n)[:k]).astype(np.int64)
    pos = np.zeros(0, np.int64)
    while pos.size < k:  # distinct draws, then a uniform k of them
        pos = np.unique(np.concatenate([pos, rng.integers(0, n, size=k + k // 8 + 16)]))
    return np.sort(rng.choice(pos, size=k, replace=False)).astype(np.int64)


def measured_bits_per_entry(codec: str, n: int, k: int, seed: int = 0) -> float:
    """Bits per sent entry of the real bytes (8 * len, padding included) for one seeded random k-subset."""
    return 8 * len(POSITION_CODECS[codec].encode([random_positions(n, k, seed)], (n,))) / k


@dataclass
class BitsRow:
    """One line of ``flarebench bits``: bits per sent entry (positions only)."""

    codec: str
    expected: float  # exact expectation of codeword bits over uniformly random positions
    measured: float | None  # real bytes (padding, golomb's parameter) of one seeded draw; None: not measured
    bound: float  # log2 C(n, k) / k

    @property
    def ratio(self) -> float:
        return self.expected / self.bound if self.bound > 0 else math.inf


def sent_entries(n: int, sparsity: float) -> int:
    """k for one tensor of n entries at ``sparsity``: max(1, round((1 - sparsity) n)), as top-k."""
    return min(n, max(1, int(round((1.0 - sparsity) * n))))


def bits_table(n: int, sparsity: float, measure: bool = True, seed: int = 0) -> tuple[int, float, list[BitsRow]]:
    """-> (k, bound bits per entry, one row per applicable position codec) for one tensor of n entries.

    ``measure``: also encode one seeded random draw (memory and time O(n) for bitmap, O(k) else).
    """
    if n < 1:
        raise ValueError(f"need n >= 1 entries, got {n}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    k = sent_entries(n, sparsity)
    bound = log2_binom(n, k) / k
    rows = []
    for name, codec in POSITION_CODECS.items():
        if not codec.applicable((n,), (k,)):
            continue
        measured = measured_bits_per_entry(name, n, k, seed) if measure else None
        rows.append(BitsRow(name, expected_bits_per_entry(name, n, k), measured, bound))
    return k, bound, rows
