"""``stc``: Sparse Ternary Compression (Sattler et al., IEEE TNNLS 2019), the client's uplink.

Per tensor of n entries (Algorithm 1 of the paper): the k = tensor_k(n, 1 - ``--sparsity``) entries
of largest |v| (exact top-k: :func:`~.topk.topk_positions`), ``mu`` = mean |v| over those k, and each sent as
``+-mu`` (the sign of v). ``compress`` already gives the ternary values, so the payload a client
builds and the one the server decodes are identical. The preset adds client error feedback
(``residual`` memory: A <- v - sent) and the ``stc`` aggregator (server residual, STC-compressed
downlink, catch-up of clients that sat rounds out: aggregation.py).

Wire: a sparse Message; positions with ``position_codec`` (default golomb, the paper's: Golomb-Rice
with b = 2^m, m = 1 + floor(log2(ln(phi - 1) / ln(1 - k/n))) per tensor, 6 bits of m per tensor);
values with the ``sign+scale`` codec: one fp32 mu per tensor with k > 0, then one sign bit per sent
entry. Bits per message: header (5 + varints) + length varint + positions + 32 T' + sum_t k_t
(T' = tensors with k_t > 0), padded to bytes.
``bound_bits``: sum_t log2 C(n_t, k_t) + sum_t k_t + 32 T' (the positions' floor, one bit per sign,
the scales).

Deviations: the paper's mask |v| >= (k-th largest |v|) may keep more than k entries at ties;
here exactly k travel.
"""

from __future__ import annotations

import torch

from ...errors import DecodeError
from ...wire.codecs import POSITION_CODECS, VALUE_CODECS
from ...wire.message import Message
from ..registry import Param, register
from .topk import TopK

VALUE_CODEC = "sign+scale"


def ternarize(values: torch.Tensor, counts) -> torch.Tensor:
    """float32 ``[sum k_t]`` (tensor by tensor) -> ``+-mu_t`` with mu_t = mean |values| of tensor t.

    mu is computed in float64 and rounded to float32, exactly as the sign+scale codec does, so that
    encoding the result and decoding it gives the same values.
    """
    counts_t = torch.tensor(list(counts), dtype=torch.int64)
    if values.numel() == 0:
        return values.float()
    seg = torch.repeat_interleave(torch.arange(len(counts_t)), counts_t)
    sums = torch.zeros(len(counts_t), dtype=torch.float64).index_add_(0, seg, values.abs().double())
    mu = (sums / counts_t.clamp_min(1)).float()[seg]
    return torch.where(values < 0, -mu, mu)


@register
class STC(TopK):
    name = "stc"
    summary = "top-k per tensor, sent as +-mu (mu = mean |top-k|), Golomb positions + sign bits + one fp32 per tensor"
    paper = "Sattler et al., IEEE TNNLS 2019"
    value_codec = VALUE_CODEC  # not a parameter: the ternary values are the method
    params = (
        Param("position_codec", str, "golomb", "how positions travel (golomb: the paper's; auto: the smallest per message)",
              choices=("auto", *POSITION_CODECS), paper="Sattler et al. 2019: Golomb"),
    ) + tuple(p for p in TopK.params if p.name == "rounding")

    def select(self, v: torch.Tensor, counts) -> list[Message]:
        """``v`` ``[K, P]`` -> K sparse messages of ternary values (top-``counts[t]`` of every tensor t)."""
        msgs = super().select(v, counts)
        for m in msgs:
            m.values = ternarize(m.values, counts)
        return msgs

    def decode(self, data: bytes) -> Message:
        """A sparse sign+scale message (DecodeError for any other kind, value codec or position codec)."""
        if len(data) >= 5 and data[4] != VALUE_CODECS[VALUE_CODEC].id:
            raise DecodeError("stc: values are not sign+scale")
        msg = self.wire.decode(data)
        if msg.is_dense or msg.indices is None:
            raise DecodeError("stc: not a sparse message")
        if self.position_codec != "auto" and msg.position_codec != self.position_codec:
            raise DecodeError(f"stc: positions are not {self.position_codec}")
        return msg


__all__ = ["STC", "ternarize"]
