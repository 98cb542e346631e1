"""The quantizers' compiled CPU kernels (numba), all in this one file.

numba's on-disk cache re-checks only the file of the function it compiled, not the files of the functions
that function calls: a kernel here that called ``mix`` from another module would keep its cached machine
code after ``mix`` changed. So every kernel, every function they call and every constant they read lives
here; the torch twins (draws.py, terngrad.py, qsgd.py, natural.py) import the constants from here, and
tests/test_draws.py holds the two sides to the same bytes.

- ``mix`` / ``uniform``: the counter-based draws (draws.py explains them).
- ``scale_and_round``: one entry of QSGD's / TernGrad's stochastic rounding (quantizer.py's ``scaled`` then
  ``stochastic_round_``).
- ``ternarize`` / ``scale_trits``: TernGrad's client pass and server reconstruction (terngrad.py).
- ``round_levels`` / ``levels_to_values``: QSGD's (qsgd.py).
- ``round_to_powers`` / ``float_bits``: natural compression's (natural.py).
"""

from __future__ import annotations

import numpy as np

from ...jit import njit

GAMMA = 0x9E3779B97F4A7C15  # the Weyl increment (2^64 / golden ratio, odd)
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_U_GAMMA, _U_MIX1, _U_MIX2 = np.uint64(GAMMA), np.uint64(MIX1), np.uint64(MIX2)
UNIFORM_SCALE = np.float32(2.0**-24)
MANTISSA_BITS = 23  # float32
MAX_EXPONENT = 254  # 255 is inf / nan in float32


# ---------------------------------------------------------------- draws
@njit
def mix(key, i):
    """uint64 ``z_i`` for uint64 ``key`` and entry ``i`` (wrapping arithmetic)."""
    z = key + (np.uint64(i) + np.uint64(1)) * _U_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _U_MIX1
    z = (z ^ (z >> np.uint64(27))) * _U_MIX2
    return z ^ (z >> np.uint64(31))


@njit
def uniform(key, i):
    """float32 uniform in [0, 1) on a 24-bit grid: ``(z_i >> 40) / 2^24``."""
    return np.float32(mix(key, i) >> np.uint64(40)) * UNIFORM_SCALE


# ---------------------------------------------------------------- QSGD and TernGrad
@njit
def scale_and_round(v, inv, norm, factor, limit, u):
    """One entry (float32 throughout): ``floor(factor v / norm + u)`` as quantizer.py's ``scaled`` then
    ``stochastic_round_`` compute it, ``u`` the entry's uniform. Returns an int."""
    if np.isfinite(inv):
        y = v * inv
    elif norm > 0:
        y = v / norm * factor
    else:
        y = np.float32(0.0)
    t = np.floor(y + u)
    if t > limit:
        t = limit
    elif t < -limit:
        t = -limit
    if t != t:
        t = np.float32(0.0)
    return int(t)


@njit
def ternarize(xt, start, inv, scale, key, out):
    """Trits of one tensor ``xt`` (float32, its entries start at ``start`` of the update) into ``out`` (int8),
    entry by entry as ``TernGrad.ternarize`` computes them."""
    inv = np.float32(inv)
    scale = np.float32(scale)
    one = np.float32(1.0)
    for j in range(xt.size):
        out[j] = scale_and_round(xt[j], inv, scale, one, one, uniform(key, start + j))


@njit
def scale_trits(trits, starts, scales, out):
    """``out[i] = trit_i * s_t`` (float32) for tensor t's entries ``starts[t] .. starts[t + 1] - 1``."""
    for t in range(scales.size):
        s = scales[t]
        for i in range(starts[t], starts[t + 1]):
            out[i] = np.float32(trits[i]) * s


@njit
def round_levels(x, starts, sizes, inv, norms, s, key, out):
    """Symbols (signed level + s) of every bucket into ``out``, entry by entry as ``QSGD.quantize`` computes them
    (``s`` float32: the rounding's factor and limit)."""
    offset = np.int64(s)
    for k in range(starts.size):
        for i in range(starts[k], starts[k] + sizes[k]):
            out[i] = scale_and_round(x[i], inv[k], norms[k], s, s, uniform(key, i)) + offset


@njit
def levels_to_values(symbols, starts, sizes, step, s, out):
    """``out[i] = (symbol_i - s) * step_k`` (float32) for bucket k's entries; ``step_k = ||v_k|| / s``."""
    for k in range(starts.size):
        for i in range(starts[k], starts[k] + sizes[k]):
            out[i] = np.float32(np.int64(symbols[i]) - s) * step[k]


# ---------------------------------------------------------------- natural compression
@njit
def round_to_powers(bits, key, negative, exponent):
    """``Natural.round_to_powers`` with the draws of ``key``: ``bits`` the update's float32 entries viewed as int32;
    writes ``negative`` (bool: the sign bit, where the result is not 0) and ``exponent`` (uint8)."""
    for i in range(bits.size):
        b = np.int64(bits[i])
        e = (b >> MANTISSA_BITS) & 0xFF
        if np.int64(mix(key, i) >> np.uint64(64 - MANTISSA_BITS)) < (b & ((1 << MANTISSA_BITS) - 1)):
            e += 1
        if e > MAX_EXPONENT:
            e = MAX_EXPONENT
        exponent[i] = e
        negative[i] = b < 0 and e > 0


@njit
def float_bits(negative, exponent, out):
    """float32 bit patterns (uint32) ``negative << 31 | exponent << 23``: +-2^(e - 127), or 0."""
    for i in range(out.size):
        out[i] = (np.uint32(negative[i]) << np.uint32(31)) | (np.uint32(exponent[i]) << np.uint32(MANTISSA_BITS))
