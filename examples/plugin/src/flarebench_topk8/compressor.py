"""``topk8``: the k = (1 - sparsity) n largest magnitudes of every tensor, each value sent in 8 bits.

Per tensor t of n_t entries: positions p (sorted) of the k_t largest |v|; ``scale_t`` = max |v_p| (float32);
``code = round(127 v_p / scale_t)`` in -127..127 (int8). The server's value is ``code * scale_t / 127``.
The payload *is* that quantized form, so the bytes carry it exactly: ``decode(encode(p)) == p``, and the
memory (error feedback) learns exactly what the server reconstructs.

Bytes: the 2-byte tag, then per tensor: k_t positions in ceil(log2 n_t) bits each (zero-padded to a byte),
the float32 scale, k_t int8 codes. k_t follows from the run's ``--sparsity`` on both sides, so it is not sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from flarebench.errors import DecodeError
from flarebench.methods.compressors import Compressor, tensor_k
from flarebench.methods.registry import register
from flarebench.wire.frame import ByteReader, ByteWriter

PAYLOAD_ID = 0xB8  # unique among the compressors in one run (flarebench's own use 0x20-0x3F)


@dataclass
class Top8:
    """One client's message: per tensor, sorted positions (int64 ``[k_t]``), int8 codes ``[k_t]``, a float32 scale."""

    positions: list[np.ndarray]
    codes: list[np.ndarray]
    scales: np.ndarray  # float32 [T]

    def __eq__(self, other) -> bool:
        return (isinstance(other, Top8) and np.array_equal(self.scales, other.scales)
                and all(map(np.array_equal, self.positions, other.positions))
                and all(map(np.array_equal, self.codes, other.codes)))


@register
class TopK8(Compressor):
    name = "topk8"
    summary = "top-k per tensor, values as int8 codes of one float32 scale per tensor (example plug-in)"
    paper = "flarebench example plug-in (top-k: Aji & Heafield 2017; 8-bit values)"
    uses_sparsity = True

    def __init__(self, ctx, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.counts = [tensor_k(n, ctx.density) for n in self.layout.sizes]
        self.widths = [max(1, math.ceil(math.log2(n))) for n in self.layout.sizes]

    def compress(self, v, ctx):
        out = []
        for row in v.detach().float().cpu():
            positions, codes, scales = [], [], []
            for seg, k in zip(self.layout.segments, self.counts):
                block = row[seg.start : seg.stop]
                pos = block.abs().topk(k, sorted=False).indices.sort().values
                vals = block[pos].numpy()
                scale = np.float32(np.abs(vals).max()) if k else np.float32(0)
                q = np.zeros(k, np.int8) if scale == 0 else np.clip(np.rint(vals / scale * 127), -127, 127).astype(np.int8)
                positions.append(pos.numpy())
                codes.append(q)
                scales.append(scale)
            out.append(Top8(positions, codes, np.array(scales, dtype=np.float32)))
        return out

    def encode(self, payload: Top8) -> bytes:
        w = ByteWriter().tag(PAYLOAD_ID)
        for pos, q, scale, width in zip(payload.positions, payload.codes, payload.scales, self.widths):
            w.uints(pos.astype(np.uint64), width).f32(scale).raw(q.astype(np.int8).tobytes())
        return w.getvalue()

    def decode(self, data: bytes) -> Top8:
        r = ByteReader(data, self.name)
        r.tag(PAYLOAD_ID)
        positions, codes, scales = [], [], []
        for n, k, width in zip(self.layout.sizes, self.counts, self.widths):
            pos = r.uints(k, width).astype(np.int64)
            if k and (pos[-1] >= n or np.any(np.diff(pos) <= 0)):
                raise DecodeError(f"{self.name}: positions are not sorted and inside the tensor")
            scales.append(r.f32(1, finite=True)[0])
            codes.append(np.frombuffer(r.raw(k), dtype=np.int8).copy())
            positions.append(pos)
        r.end()
        return Top8(positions, codes, np.array(scales, dtype=np.float32))

    def decompress(self, payload: Top8, device=None) -> torch.Tensor:
        out = torch.zeros(self.layout.num_params, dtype=torch.float32)
        for seg, pos, q, scale in zip(self.layout.segments, payload.positions, payload.codes, payload.scales):
            out[seg.start + torch.from_numpy(pos)] = torch.from_numpy(q.astype(np.float32)) * torch.tensor(scale / np.float32(127))
        return out.to(device)

    def nnz(self, payload: Top8) -> int:
        return sum(len(q) for q in payload.codes)

    def bound_bits(self, payload: Top8) -> float:
        """log2 C(n_t, k_t) for the positions + 8 bits per value + 32 per scale, summed over tensors."""
        return sum(
            (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)) / math.log(2) + 8 * k + 32
            for n, k in zip(self.layout.sizes, self.counts)
        )
