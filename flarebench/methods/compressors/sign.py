"""``sign`` (signSGD) and ``scaled-sign`` (EF-signSGD): one bit per entry, and per tensor 0 or 1 scale.

Shapes: ``v`` ``[K, P]`` float32; a payload holds ``signs`` (bool ``[P]``, True where ``v >= 0``) and
``scales`` (float32 ``[T, m]``, m reconstruction values per tensor; m = 0 for ``sign``).

- ``sign`` (Bernstein et al., ICML 2018; ICLR 2019): the bit of every entry; ``decompress`` gives
  ``+1`` / ``-1`` (what the ``majority-vote`` aggregator counts: the step size is the aggregator's,
  not the compressor's). Pair it with ``majority-vote`` (or a server that scales it): with the
  sample-weighted mean it would move every weight by 1 per round.
- ``scaled-sign`` (Karimireddy et al., ICML 2019, "Error Feedback Fixes SignSGD"): per tensor t,
  ``(||v_t||_1 / n_t) * sign(v_t)``: one float32 scale per tensor + one bit per entry.

A zero entry has bit 1 (``v >= 0``), as 1-bit SGD and GRACE: one bit cannot say 0.
In the FL setting the sign is that of the client's round update d (plus memory), not of a minibatch
gradient. The server's answer in signSGD is itself a sign (1 bit down); flarebench's downlink stays
the run's ``--downlink`` (the dense model by default), as for every other method.

Main job (mlp, mnist-embedded, 10 clients, 200 rounds) at the defaults, final test accuracy and uplink:
signsgd 0.9575, signum 0.947, ef-signsgd 0.958, all 151.7-151.9 Mib (FedAvg: 0.9595 for 4.74 Gib).

Wire (payload via :mod:`flarebench.wire.frame`): 2-byte tag, the ``m * T`` float32 scales (tensor
by tensor), then P sign bits (1 = ``v >= 0``), MSB first, zero-padded to a byte. Sizes come from the
model's layout, so nothing on the wire is a length: bits = ``16 + 32 m T + 8 ceil(P / 8)``.
Floor (``bound_bits``): ``P + 32 m T`` bits (1 bit per entry, 32 per scale).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...wire.frame import ByteReader, ByteWriter
from ..registry import PartContext, register
from .base import Compressor
from .topk import CHUNK


@dataclass
class SignPayload:
    """One client's sign message: ``signs`` bool ``[P]`` (True: ``v >= 0``), ``scales`` float32 ``[T, m]``."""

    signs: torch.Tensor
    scales: torch.Tensor


class SignFamily(Compressor):
    """Base of the one-bit-per-entry compressors: ``m`` float32 reconstruction values per tensor.

    Subclasses set ``payload_id`` (the frame tag), ``scales_per_tensor`` (m) and :meth:`scales_of`
    (``v`` ``[K, P]`` -> ``[K, T, m]``) and, for m > 0, :meth:`check_scales` (decoder-side validity).
    """

    family = "sign"
    payload_id: int = -1
    scales_per_tensor: int = 0

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.sizes = tuple(self.layout.sizes)
        self.num_tensors = len(self.sizes)
        self.num_params = self.layout.num_params

    # ------------------------------------------------------------ helpers
    @staticmethod
    def row_sums(x: torch.Tensor, fn=None) -> torch.Tensor:
        """float64 ``[K]``: the sums of ``fn(x)`` (``x`` ``[K, n]``; fn elementwise, default none) over the last dim
        in float64, ``CHUNK`` entries at a time (temporaries of one chunk, in cache, not of the whole block)."""
        total = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for a in range(0, x.shape[1], CHUNK):
            chunk = x[:, a : a + CHUNK]
            total += (chunk if fn is None else fn(chunk)).sum(1, dtype=torch.float64)
        return total

    def blocks(self, x: torch.Tensor):
        """``x`` ``[..., P]`` -> its per-tensor views ``[..., n_t]`` (a loop over tensors, never entries)."""
        return [x[..., s.start : s.stop] for s in self.layout.segments]

    def scales_of(self, v: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        """``[K, T, m]`` float32 reconstruction values (m = 0: none) of ``v`` ``[K, P]`` with ``signs = v >= 0``."""
        return torch.zeros(v.shape[0], self.num_tensors, 0, dtype=torch.float32)

    def check_scales(self, scales: np.ndarray) -> None:
        """DecodeError if decoded ``scales`` ``[T, m]`` are not ones this compressor sends."""

    # ------------------------------------------------------------ client side
    def compress(self, v, ctx):
        v = v.detach()
        signs = v >= 0
        scales = self.scales_of(v, signs).float().cpu()
        signs = signs.cpu()
        return [SignPayload(signs[k], scales[k]) for k in range(v.shape[0])]

    # ------------------------------------------------------------ bytes
    def encode(self, payload: SignPayload) -> bytes:
        w = ByteWriter().tag(self.payload_id)
        if self.scales_per_tensor:
            w.f32(payload.scales.numpy())
        return w.bits(payload.signs.numpy().view(np.uint8)).getvalue()

    def decode(self, data: bytes) -> SignPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        r.need(4 * self.num_tensors * self.scales_per_tensor + (self.num_params + 7) // 8)
        scales = r.f32(self.num_tensors * self.scales_per_tensor).reshape(self.num_tensors, self.scales_per_tensor)
        self.check_scales(scales)
        signs = r.bits(self.num_params)
        r.end()
        return SignPayload(torch.from_numpy(signs.view(bool)), torch.from_numpy(scales))

    # ------------------------------------------------------------ server side
    def decompress(self, payload: SignPayload, device=None) -> torch.Tensor:
        """float32 ``[P]``: +-1 (m = 0); +-scale_t (m = 1); mu+_t where the bit is 1, mu-_t where 0 (m = 2):
        per tensor, a lookup of its two values by the bit (index_select; faster than torch.where on CPU)."""
        signs = payload.signs.to(device)
        out = torch.empty(self.num_params, dtype=torch.float32, device=device)
        if self.scales_per_tensor == 0:
            values = torch.tensor([[-1.0, 1.0]], device=device).expand(self.num_tensors, 2)
        elif self.scales_per_tensor == 1:
            scale = payload.scales.to(device=device, dtype=torch.float32)
            values = torch.cat([-scale, scale], dim=1)
        else:
            values = payload.scales.to(device=device, dtype=torch.float32).flip(1)  # [mu-, mu+]: bit 0, bit 1
        for block, bits, table in zip(self.blocks(out), self.blocks(signs), values):
            torch.index_select(table, 0, bits.to(torch.int32), out=block)
        return out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload) -> int:
        return self.num_params  # every entry's bit travels

    def bound_bits(self, payload) -> float:
        """1 bit per entry + 32 bits per float32 scale."""
        return float(self.num_params + 32 * self.scales_per_tensor * self.num_tensors)

    def host_bytes_bound(self, payload) -> int:
        """One byte per entry (its sign, bool) + 4 bytes per float32 scale."""
        return self.num_params + 4 * self.scales_per_tensor * self.num_tensors


@register
class Sign(SignFamily):
    name = "sign"
    summary = "one bit per entry (v >= 0); decoded as +-1 for the server's majority vote (signSGD)"
    paper = "Bernstein et al., ICML 2018; ICLR 2019"
    payload_id = 0x20
    scales_per_tensor = 0

    @classmethod
    def check(cls, parts):
        if parts.aggregator.name == "weighted-mean":
            return ("compressor sign decodes to +-1 (its step size is the aggregator's): use --aggregator majority-vote, "
                    "or --compressor scaled-sign for a scaled sign with the mean")
        return None


@register
class ScaledSign(SignFamily):
    name = "scaled-sign"
    summary = "(||v_t||_1 / n_t) sign(v_t) per tensor: one float32 scale per tensor + one bit per entry"
    paper = "Karimireddy et al., ICML 2019"
    payload_id = 0x21
    scales_per_tensor = 1

    def scales_of(self, v, signs):
        l1 = torch.stack([self.row_sums(b, torch.abs) for b in self.blocks(v)], dim=1)
        n = torch.tensor(self.sizes, dtype=torch.float64, device=v.device)
        return (l1 / n).float().unsqueeze(2).cpu()

    def check_scales(self, scales):
        if np.any(scales < 0):
            raise DecodeError(f"{self.name}: negative scale")


__all__ = ["SignPayload", "SignFamily", "Sign", "ScaledSign"]
