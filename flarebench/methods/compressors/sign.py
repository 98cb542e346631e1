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
from .packing import pack_nonnegative, unpack_range
from .topk import CHUNK


BIT_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(bool)  # byte -> its 8 bits, MSB first


@dataclass
class SignPayload:
    """One client's sign message: ``bits`` uint8 ``[ceil(P / 8)]`` on the host, the P bits of ``v >= 0`` packed MSB
    first (packing.py: the wire's own layout), and ``scales`` float32 ``[T, m]``."""

    bits: np.ndarray
    scales: torch.Tensor
    count: int  # P

    @property
    def signs(self) -> torch.Tensor:
        """bool ``[P]``: True where ``v >= 0``."""
        return torch.from_numpy(np.unpackbits(self.bits, count=self.count).view(bool))


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
    def row_sums(x: torch.Tensor, *fns) -> torch.Tensor:
        """float64 ``[len(fns), K]``: for each ``fn`` (``fn(chunk, out=buffer)``, an elementwise torch op such as
        ``torch.abs``; None: the entries themselves) the sums of ``fn(x)`` (``x`` ``[K, n]``) over the last dim,
        ``CHUNK`` entries at a time, every ``fn`` reading the chunk while it is in cache, into one reused buffer.
        Each chunk is summed in float32 (torch's cascade sum: relative error ~1e-7, below the float32 scale's own
        rounding but for an ulp now and then) and the chunks' sums added in float64: a float64 reduction of
        float32 entries costs ~14x a float32 one on one CPU thread (0.7 vs 0.05 ns per entry)."""
        totals = torch.zeros(len(fns), x.shape[0], dtype=torch.float64, device=x.device)
        full = torch.empty(x.shape[0], min(x.shape[1], CHUNK), dtype=x.dtype, device=x.device)
        for a in range(0, x.shape[1], CHUNK):
            chunk = x[:, a : a + CHUNK]
            buf = full if chunk.shape[1] == full.shape[1] else torch.empty_like(chunk)
            for i, fn in enumerate(fns):
                totals[i] += (chunk if fn is None else fn(chunk, out=buf)).sum(1).double()
        return totals

    def blocks(self, x: torch.Tensor):
        """``x`` ``[..., P]`` -> its per-tensor views ``[..., n_t]`` (a loop over tensors, never entries)."""
        return [x[..., s.start : s.stop] for s in self.layout.segments]

    def scales_of(self, v: torch.Tensor, bits: list[np.ndarray]) -> torch.Tensor:
        """``[K, T, m]`` float32 reconstruction values (m = 0: none) of ``v`` ``[K, P]``; ``bits[k]``: row k's packed
        bits of ``v >= 0``."""
        return torch.zeros(v.shape[0], self.num_tensors, 0, dtype=torch.float32)

    def check_scales(self, scales: np.ndarray) -> None:
        """DecodeError if decoded ``scales`` ``[T, m]`` are not ones this compressor sends."""

    # ------------------------------------------------------------ client side
    def compress(self, v, ctx):
        v = v.detach()
        bits = [pack_nonnegative(row) for row in v]  # packed where v is: 1 bit per entry crosses to the host
        scales = self.scales_of(v, bits).float().cpu()
        return [SignPayload(bits[k], scales[k], self.num_params) for k in range(v.shape[0])]

    # ------------------------------------------------------------ bytes
    def encode(self, payload: SignPayload) -> bytes:
        w = ByteWriter().tag(self.payload_id)
        if self.scales_per_tensor:
            w.f32(payload.scales.numpy())
        return w.raw(payload.bits.tobytes()).getvalue()  # already the wire's packing

    def decode(self, data: bytes) -> SignPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        r.need(4 * self.num_tensors * self.scales_per_tensor + (self.num_params + 7) // 8)
        scales = r.f32(self.num_tensors * self.scales_per_tensor).reshape(self.num_tensors, self.scales_per_tensor)
        self.check_scales(scales)
        bits = np.frombuffer(r.raw((self.num_params + 7) // 8), dtype=np.uint8).copy()  # writable: torch takes it
        r.end()
        if self.num_params % 8 and bits[-1] & ((1 << (8 - self.num_params % 8)) - 1):
            raise DecodeError(f"{r.what}: padding bits are not zero")
        return SignPayload(bits, torch.from_numpy(scales), self.num_params)

    # ------------------------------------------------------------ server side
    writes_into = True

    def bit_values(self, payload: SignPayload) -> np.ndarray:
        """float32 ``[T, 2]``: per tensor the value of bit 0 and of bit 1: -1, +1 (m = 0); -scale_t, +scale_t
        (m = 1); mu-_t, mu+_t (m = 2)."""
        scales = payload.scales.cpu().numpy().astype(np.float32, copy=False).reshape(self.num_tensors, -1)
        if self.scales_per_tensor == 0:
            return np.tile(np.array([[-1.0, 1.0]], dtype=np.float32), (self.num_tensors, 1))
        if self.scales_per_tensor == 1:
            return np.concatenate([-scales, scales], axis=1)
        return scales[:, ::-1].copy()  # [mu+, mu-] -> [mu-, mu+]

    def decompress(self, payload: SignPayload, device=None, out=None) -> torch.Tensor:
        """float32 ``[P]``: per tensor its bit-0 or bit-1 value (:meth:`bit_values`), written as float32 bit
        patterns (exactly the two values, no arithmetic on them): the tensor's whole bytes through a ``[256, 8]``
        table of patterns (one lookup writes 8 entries), the at most 7 entries at either end of a tensor that share
        a byte with its neighbour as ``lo ^ (bit * (lo ^ hi))``. About 4x faster than a per-entry lookup on CPU."""
        out = self.output(device, out)
        words = out.view(torch.int32)
        patterns = self.bit_values(payload).view(np.int32)  # [T, 2] int32 bit patterns of the two values
        data = torch.from_numpy(payload.bits).to(device)
        for seg, (lo, hi) in zip(self.layout.segments, patterns.tolist()):
            first, last = -(-seg.start // 8), seg.stop // 8  # the tensor's whole bytes
            if first >= last:
                first = last = seg.stop // 8 + 1  # none: every entry an edge
            edges = [(seg.start, min(seg.stop, 8 * first)), (max(seg.start, 8 * last), seg.stop)]
            for a, b in edges:
                if a < b:
                    words[a:b].copy_(unpack_range(payload.bits, a, b, device)).mul_(int(np.int32(lo) ^ np.int32(hi))).bitwise_xor_(lo)
            if first < last:
                table = torch.from_numpy(np.where(BIT_TABLE, np.int32(hi), np.int32(lo))).to(device)  # [256, 8]
                for a in range(first, last, CHUNK // 8):
                    b = min(a + CHUNK // 8, last)
                    torch.index_select(table, 0, data[a:b].to(torch.int32), out=words[8 * a : 8 * b].view(-1, 8))
        return out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload) -> int:
        return self.num_params  # every entry's bit travels

    def bound_bits(self, payload) -> float:
        """1 bit per entry + 32 bits per float32 scale."""
        return float(self.num_params + 32 * self.scales_per_tensor * self.num_tensors)

    def host_bytes_bound(self, payload) -> int:
        """One bit per entry (packed where v is) + 4 bytes per float32 scale."""
        return (self.num_params + 7) // 8 + 4 * self.scales_per_tensor * self.num_tensors


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

    def scales_of(self, v, bits):
        l1 = torch.stack([self.row_sums(b, torch.abs)[0] for b in self.blocks(v)], dim=1)
        n = torch.tensor(self.sizes, dtype=torch.float64, device=v.device)
        return (l1 / n).float().unsqueeze(2).cpu()

    def check_scales(self, scales):
        if np.any(scales < 0):
            raise DecodeError(f"{self.name}: negative scale")


__all__ = ["SignPayload", "SignFamily", "Sign", "ScaledSign"]
