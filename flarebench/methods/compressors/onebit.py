"""``onebit``: 1-bit SGD (Seide et al., Interspeech 2014): one bit per entry, two reconstruction values per tensor.

Per tensor t of ``v`` ``[K, P]``: bit 1 where ``v >= 0``, 0 elsewhere; the server reconstructs a 1-bit
as ``mu+_t`` = the mean of the tensor's entries ``>= 0`` and a 0-bit as ``mu-_t`` = the mean of its
negative entries (the two values that minimise the squared quantization error given the bits). Used
with error feedback (memory ``residual``: the paper's "error feedback" carries ``v - decoded`` into the
next round). A group with no entries has mean 0 (never used).

Deviation: the paper quantizes each column of a weight matrix with its own two values; here the
unit is the tensor (flarebench's layout has tensors, not a column convention shared by all layers).

Wire: 2-byte tag, ``2 T`` float32 (``mu+_t``, ``mu-_t`` per tensor; ``mu+ >= 0 >= mu-`` checked on
decode), then P bits, zero-padded to a byte: ``16 + 64 T + 8 ceil(P / 8)`` bits.
Floor: ``P + 64 T`` bits (1 bit per entry, 32 per reconstruction value).

Main job (mlp, mnist-embedded, 10 clients, 200 rounds), preset ``onebit``: 0.958 final test accuracy
for 152.2 Mib of uplink (1.0034 bits per entry).
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import DecodeError
from ..registry import register
from .packing import count_ones
from .sign import SignFamily


@register
class OneBit(SignFamily):
    name = "onebit"
    summary = "one bit per entry (v >= 0); decoded per tensor as the mean of its non-negative / negative entries"
    paper = "Seide et al., Interspeech 2014"
    payload_id = 0x22
    scales_per_tensor = 2

    def scales_of(self, v, bits):
        cols = []
        for seg, block in zip(self.layout.segments, self.blocks(v)):  # [K, n_t]
            pos, neg = self.row_sums(block, lambda x, out: torch.clamp(x, min=0, out=out),  # sum of the entries >= 0
                                     lambda x, out: torch.clamp(x, max=0, out=out))  # sum of the negative entries
            n_pos = torch.tensor([count_ones(b, seg.start, seg.stop) for b in bits], dtype=torch.float64, device=v.device)
            n_neg = block.shape[1] - n_pos
            cols.append(torch.stack([pos / n_pos.clamp_min(1), neg / n_neg.clamp_min(1)], dim=1))  # empty group: 0
        return torch.stack(cols, dim=1).float().cpu()

    def check_scales(self, scales):
        if np.any(scales[:, 0] < 0) or np.any(scales[:, 1] > 0):
            raise DecodeError(f"{self.name}: a positive reconstruction value < 0 or a negative one > 0")


__all__ = ["OneBit"]
