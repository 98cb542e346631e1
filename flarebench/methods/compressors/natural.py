"""``natural``: natural compression (Horvath et al., 2019, arXiv 1905.10988), unbiased rounding to powers of two.

Quantizer (the paper's C_nat): an entry with ``2^a <= |t| < 2^(a+1)`` becomes ``sign(t) 2^a`` with
probability ``(2^(a+1) - |t|) / 2^a`` and ``sign(t) 2^(a+1)`` otherwise, so ``E = t`` (variance at most
``t^2 / 8``, the paper's omega = 1/8); 0 stays 0. On float32 this drops the mantissa m (23 bits) and
adds 1 to the exponent with probability ``m / 2^23``; it is done that way here, on the update's device,
with a uniform integer r in [0, 2^23) per entry (up iff r < m) from the counter-based draws of draws.py keyed
by (run seed, round, client), so the rounding probability is exact. Subnormal entries (|t| < 2^-126)
round to 0 or 2^-126 with the same rule (unbiased). Entries at or above 2^127 (never a model
update) stay at 2^127 instead of overflowing to infinity.

Symbols: the exponent e (8 bits of float32: 0 is the value 0, 1..254 the value 2^(e - 127), 255 never
sent) and, for e > 0, the sign. Wire (via :mod:`flarebench.wire.frame`), 2-byte tag, then
``coder = rans`` (default) or ``ans``: the number z of non-zero entries (varint), their z sign bits (1 = negative; in
entry order, padded to a byte), then the P exponents entropy-coded against the message's exponent
histogram (wire/rans.py, wire/entropy.py; its table travels): about ``P H(e) + z`` bits. ``coder = fixed``: 9 bits per
entry as in the paper: the P sign bits (1 = negative; 0 for a zero) padded to a byte, then the P exponent
bytes: ``16 + 8 ceil(P / 8) + 8 P`` bits.
Host transfer per compress + encode: the P exponent bytes + z sign bits (<= 9 bits per entry).

Floor (``bound_bits``): ``P H`` where H is the empirical entropy of the message's 9-bit symbols
(sign, exponent) (<= 9). No scale travels. The entropy coders are ``P H(e) + z`` >= ``P H(sign, e)``: the signs
of a symmetric update are incompressible; within 1% of the floor on the zoo's mlp.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...jit import on_host
from ...wire.bounds import empirical_entropy_bits
from ...wire.frame import ByteReader, ByteWriter
from ..registry import PartContext, register
from .packing import pack_bits
from . import kernels
from .draws import torch_bits
from .kernels import MANTISSA_BITS, MAX_EXPONENT
from .quantizer import Quantizer, coder_param
from .topk import CHUNK



@dataclass
class NaturalPayload:
    """One client's natural-compression message: ``negative`` bool ``[P]`` and ``exponent`` uint8 ``[P]``
    (0: the entry is 0; e in 1..254: magnitude 2^(e - 127)); tensors on the update's device on the client,
    on the host after decoding."""

    negative: torch.Tensor
    exponent: torch.Tensor


@register
class Natural(Quantizer):
    name = "natural"
    family = "quantizer"
    summary = "unbiased stochastic rounding of every entry to a power of two: sign + entropy-coded 8-bit exponent"
    paper = "Horvath et al., 2019 (arXiv 1905.10988)"
    payload_id = 0x32
    params = (coder_param("fixed", "the paper's 9 bits per entry (sign + exponent byte)"),)

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.num_params = ctx.layout.num_params

    # ------------------------------------------------------------ client side
    @staticmethod
    def round_to_powers(x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` float32 and uniform integers ``r`` in [0, 2^23) (tensors or arrays, same shape and device) ->
        (negative bool, exponent uint8), that shape, on x's device. Up iff ``r < m`` (m: the 23 mantissa bits):
        probability m / 2^23. Computed ``CHUNK`` entries at a time (int32 temporaries that stay in cache)."""
        x = torch.as_tensor(x, dtype=torch.float32).contiguous()
        r = torch.as_tensor(r, device=x.device).reshape(-1)
        flat = x.reshape(-1)
        bits_all = flat.view(torch.int32)
        negative = torch.empty(x.shape, dtype=torch.bool, device=x.device)
        exponent = torch.empty(x.shape, dtype=torch.uint8, device=x.device)
        neg_flat, exp_flat = negative.view(-1), exponent.view(-1)
        for a in range(0, bits_all.numel(), CHUNK):
            bits = bits_all[a : a + CHUNK]
            e = (bits >> MANTISSA_BITS) & 0xFF  # the sign bit falls off
            e += r[a : a + CHUNK].to(torch.int32) < (bits & ((1 << MANTISSA_BITS) - 1))
            e.clamp_(max=MAX_EXPONENT)  # |x| >= 2^127 rounded up (never an update)
            exp_flat[a : a + CHUNK] = e
            torch.logical_and(bits < 0, e > 0, out=neg_flat[a : a + CHUNK])  # the sign bit (a NaN's too)
        return negative, exponent

    def compress_row(self, x: torch.Tensor, key: int) -> NaturalPayload:
        if on_host(x):
            negative = torch.empty(self.num_params, dtype=torch.bool)
            exponent = torch.empty(self.num_params, dtype=torch.uint8)
            kernels.round_to_powers(x.contiguous().numpy().view(np.int32), np.uint64(key), negative.numpy(), exponent.numpy())
            return NaturalPayload(negative, exponent)
        parts = [self.round_to_powers(x[a : a + CHUNK], torch_bits(key, a, min(a + CHUNK, self.num_params), x.device,
                                                                   64 - MANTISSA_BITS))
                 for a in range(0, self.num_params, CHUNK)]
        if not parts:
            return NaturalPayload(torch.zeros(0, dtype=torch.bool, device=x.device),
                                  torch.zeros(0, dtype=torch.uint8, device=x.device))
        return NaturalPayload(*(torch.cat(t) for t in zip(*parts)))

    # ------------------------------------------------------------ bytes
    def encode(self, payload: NaturalPayload) -> bytes:
        w = ByteWriter().tag(self.payload_id)
        if self.entropy_coded:
            z = int(torch.count_nonzero(payload.exponent))
            # the signs of the non-zero entries (negative is False where the exponent is 0); all of them when none is 0
            signs = payload.negative if z == self.num_params else torch.masked_select(payload.negative, payload.exponent > 0)
            w.varint(z).raw(pack_bits(signs).tobytes())
            self.encode_symbols(w, payload.exponent, MAX_EXPONENT + 1)
            return w.getvalue()
        return w.raw(pack_bits(payload.negative).tobytes()).raw(payload.exponent.cpu().numpy().tobytes()).getvalue()

    def decode(self, data: bytes) -> NaturalPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        P = self.num_params
        if self.entropy_coded:
            z = r.varint(max_value=P)
            signs = r.bits(z).astype(bool)
            exponent = self.decode_symbols(r, P, MAX_EXPONENT + 1)
            nonzero = int(np.count_nonzero(exponent))
            if nonzero != z:
                raise DecodeError(f"natural: {z} signs for {nonzero} non-zero entries")
            if z == P:
                negative = signs
            else:
                negative = np.zeros(P, dtype=bool)
                negative[exponent > 0] = signs
        else:
            r.need((P + 7) // 8 + P)
            negative = r.bits(P).astype(bool)
            exponent = np.frombuffer(r.raw(P), dtype=np.uint8).copy()
            r.end()
            if np.any(exponent > MAX_EXPONENT):
                raise DecodeError("natural: exponent 255 (inf/nan) is never sent")
            if np.any(negative & (exponent == 0)):
                raise DecodeError("natural: a zero entry with the sign bit set")
        return NaturalPayload(torch.from_numpy(negative), torch.from_numpy(exponent))

    # ------------------------------------------------------------ server side
    writes_into = True

    def decompress(self, payload: NaturalPayload, device=None, out=None) -> torch.Tensor:
        neg, exp = payload.negative.to(device), payload.exponent.to(device)
        out = self.output(device, out).view(torch.int32)
        if on_host(out):
            kernels.float_bits(neg.numpy(), exp.numpy(), out.numpy().view(np.uint32))
            return out.view(torch.float32)
        for a in range(0, self.num_params, CHUNK):  # int32 temporaries of CHUNK entries, in cache
            o = out[a : a + CHUNK]
            o.copy_(exp[a : a + CHUNK]).bitwise_left_shift_(MANTISSA_BITS)
            o.bitwise_or_(neg[a : a + CHUNK].to(torch.int32).bitwise_left_shift_(31))
        return out.view(torch.float32)

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: NaturalPayload) -> int:
        return self.num_params  # every entry's sign and exponent travel

    def bound_bits(self, payload: NaturalPayload) -> float:
        """The empirical entropy of the P 9-bit symbols (sign, exponent)."""
        symbols = payload.exponent.to(torch.int64) | (payload.negative.to(torch.int64) << 8)
        return empirical_entropy_bits(torch.bincount(symbols, minlength=512).cpu().numpy())

    def host_bytes_bound(self, payload: NaturalPayload) -> int:
        """Nine bits per entry (its exponent byte, for the coder, and its sign bit) and the exponents'
        histogram (at most 512 int64 counts)."""
        return self.num_params + -(-self.num_params // 8) + 8 * 512


__all__ = ["Natural", "NaturalPayload"]
