"""``natural``: natural compression (Horvath et al., 2019, arXiv 1905.10988), unbiased rounding to powers of two.

Quantizer (the paper's C_nat): an entry with ``2^a <= |t| < 2^(a+1)`` becomes ``sign(t) 2^a`` with
probability ``(2^(a+1) - |t|) / 2^a`` and ``sign(t) 2^(a+1)`` otherwise, so ``E = t`` (variance at most
``t^2 / 8``, the paper's omega = 1/8); 0 stays 0. On float32 this drops the mantissa m (23 bits) and
adds 1 to the exponent with probability ``m / 2^23``; it is done that way here, with a uniform
32-bit integer per entry (up iff it is below ``m 2^9``), so the rounding probability is exact. Subnormal entries (|t| < 2^-126)
round to 0 or 2^-126 with the same rule (unbiased). Entries at or above 2^127 (never a model
update) stay at 2^127 instead of overflowing to infinity.

Wire (via :mod:`flarebench.wire.frame`), 9 bits per entry as in the paper (1 sign + the 8 exponent
bits of float32; exponent 0 is the value 0, 1..254 the value 2^(e - 127), 255 never sent): 2-byte
tag, the P sign bits (1 = negative; must be 0 for a zero), MSB first, zero-padded to a byte, then
the P exponent bytes. Bits = ``16 + 8 ceil(P / 8) + 8 P``.

Floor (``bound_bits``): ``P H`` where H is the empirical entropy of the message's 9-bit symbols
(sign, exponent) (<= 9, so always below the bytes). No scale travels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...wire.bounds import empirical_entropy_bits
from ...wire.frame import ByteReader, ByteWriter
from ..registry import PartContext, register
from .base import Compressor
from .qsgd import row_chunks, uniform_bits

MANTISSA_BITS = 23
MAX_EXPONENT = 254  # 255 is inf / nan in float32


@dataclass
class NaturalPayload:
    """One client's natural-compression message: ``negative`` bool ``[P]`` and ``exponent`` uint8 ``[P]``
    (0: the entry is 0; e in 1..254: magnitude 2^(e - 127))."""

    negative: np.ndarray
    exponent: np.ndarray


@register
class Natural(Compressor):
    name = "natural"
    family = "quantizer"
    summary = "unbiased stochastic rounding of every entry to a power of two: sign + 8-bit exponent (9 bits)"
    paper = "Horvath et al., 2019 (arXiv 1905.10988)"
    unbiased = True
    payload_id = 0x32

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.num_params = ctx.layout.num_params

    # ------------------------------------------------------------ client side
    @staticmethod
    def round_to_powers(x: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` float32 and uniform integers ``r`` in [0, 2^32) (uint32), same shape (``[K, P]`` or ``[P]``) ->
        (negative bool, exponent uint8), that shape. Up iff ``r < m 2^9`` (m: the 23 mantissa bits): P = m / 2^23."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        bits = x.view(np.uint32)
        exponent = (bits >> np.uint32(MANTISSA_BITS)).astype(np.uint8)  # the sign bit falls off
        exponent += (bits << np.uint32(32 - MANTISSA_BITS)) > np.asarray(r, dtype=np.uint32)  # mantissa * 2^9 > r
        if exponent.size and exponent.max() > MAX_EXPONENT:  # |x| >= 2^127 rounded up (never an update)
            np.minimum(exponent, MAX_EXPONENT, out=exponent)
        return np.logical_and(x < 0, exponent), exponent

    def compress(self, v, ctx):
        x = v.detach().float().cpu().numpy()
        out = []
        for rows in row_chunks(x.shape[0], self.num_params):
            r = uniform_bits([ctx.seed_for(k, self.name) for k in rows], self.num_params, 32)
            negative, exponent = self.round_to_powers(x[rows.start : rows.stop], r)
            out += [NaturalPayload(negative[i], exponent[i]) for i in range(len(rows))]
        return out

    # ------------------------------------------------------------ bytes
    def encode(self, payload: NaturalPayload) -> bytes:
        return ByteWriter().tag(self.payload_id).bits(payload.negative.view(np.uint8)).raw(payload.exponent.tobytes()).getvalue()

    def decode(self, data: bytes) -> NaturalPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        P = self.num_params
        r.need((P + 7) // 8 + P)
        negative = r.bits(P).astype(bool)
        exponent = np.frombuffer(r.raw(P), dtype=np.uint8).copy()
        r.end()
        if np.any(exponent > MAX_EXPONENT):
            raise DecodeError("natural: exponent 255 (inf/nan) is never sent")
        if np.any(negative & (exponent == 0)):
            raise DecodeError("natural: a zero entry with the sign bit set")
        return NaturalPayload(negative, exponent)

    # ------------------------------------------------------------ server side
    def decompress(self, payload: NaturalPayload, device=None) -> torch.Tensor:
        bits = (payload.negative.astype(np.uint32) << np.uint32(31)) | (payload.exponent.astype(np.uint32) << np.uint32(MANTISSA_BITS))
        out = torch.from_numpy(bits.view(np.float32))
        return out.to(device) if device is not None else out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: NaturalPayload) -> int:
        return self.num_params  # every entry's sign and exponent travel

    def bound_bits(self, payload: NaturalPayload) -> float:
        """The empirical entropy of the P 9-bit symbols (sign, exponent)."""
        symbols = payload.exponent.astype(np.uint16) | (payload.negative.astype(np.uint16) << np.uint16(8))
        return empirical_entropy_bits(np.bincount(symbols, minlength=512))

    def host_bytes_bound(self, payload: NaturalPayload) -> int:
        """One byte per entry (its symbol, for the coder; issue 21)."""
        return self.num_params


__all__ = ["Natural", "NaturalPayload"]
