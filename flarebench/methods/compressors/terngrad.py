"""``terngrad``: TernGrad (Wen et al., NeurIPS 2017), stochastic ternary values with a per-tensor scale.

Quantizer (the paper's layer-wise ternarizing, Eq. 5-6): per tensor t with scale
``s_t = max |v_t|``, every entry becomes ``s_t sign(v_i) b_i`` with ``b_i ~ Bernoulli(|v_i| / s_t)``,
so ``E = v`` (unbiased), computed as ``floor(v_i / s_t + u_i)`` with u_i uniform in [0, 1) (24-bit
grid) from a PCG64 generator seeded by (run seed, round, client). The "gradient" is the client's
round update.

Option ``clip`` (the paper's gradient clipping, Sec. 3.3): with ``clip = c > 0`` each tensor is first
clipped to ``[-c sigma_t, c sigma_t]`` (sigma_t: the standard deviation of its entries) and
``s_t = max |clipped|``. The paper's experiments use c = 2.5; it makes the compressor biased (the
clipped tails), so the default is 0 (off, unbiased), as issue 11 asks for an unbiased TernGrad.
Not implemented: the paper's scaler sharing (workers agree on max_t s_t before ternarizing, one
more exchange per round), a systems device for integer all-reduce; each client sends its own s_t.

Wire (via :mod:`flarebench.wire.frame`): 2-byte tag, the T scales as float32, then the P trits.
``packing = base3`` (default): 5 trits per byte, ``byte = sum_k 3^(4-k) (t_k + 1)`` (<= 242),
``ceil(P / 5)`` bytes, i.e. 1.6 bits per entry (log2 3 = 1.585 is the floor of any fixed-rate
ternary code); the last byte is padded with trits 0. ``packing = 2bit``: 2 bits per entry as the
paper counts it (00 = 0, 01 = +1, 10 = -1), ``ceil(P / 4)`` bytes. Bits = ``16 + 32 T + 8 ceil(P/5)``
(base3) or ``16 + 32 T + 8 ceil(P/4)`` (2bit).

Floor (``bound_bits``): ``32 T`` for the scales plus ``P H`` where H is the empirical entropy of
the message's trits (<= log2 3, so always below the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...wire.bounds import empirical_entropy_bits
from ...wire.frame import ByteReader, ByteWriter
from ..registry import FLOAT32_MAX, Param, PartContext, float32_or_zero, register
from .base import Compressor
from .qsgd import row_chunks, stochastic_round, uniform_floats

_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.uint8)
_BASE3_TABLE = ((np.arange(243)[:, None] // _POW3.astype(np.int64)) % 3 - 1).astype(np.int8)  # byte -> 5 trits
_TWO_BIT_CODE = np.array([2, 0, 1], dtype=np.uint8)  # trit -1, 0, +1 -> 10, 00, 01
_TWO_BIT_TRIT = np.array([0, 1, -1, 0], dtype=np.int8)  # code -> trit (code 3 is invalid)
_TWO_BIT_TABLE = _TWO_BIT_TRIT[(np.arange(256)[:, None] >> np.array([6, 4, 2, 0])) & 3]  # byte -> 4 trits
_TWO_BIT_BAD = (((np.arange(256)[:, None] >> np.array([6, 4, 2, 0])) & 3) == 3).any(axis=1)


@dataclass
class TernPayload:
    """One client's TernGrad message: ``scales`` float32 ``[T]`` (s_t), ``trits`` int8 ``[P]`` in {-1, 0, 1}."""

    scales: np.ndarray
    trits: np.ndarray


@register
class TernGrad(Compressor):
    name = "terngrad"
    family = "quantizer"
    summary = "stochastic ternary {-1, 0, 1} * max|v_t| per tensor (unbiased without clipping), 5 trits per byte"
    paper = "Wen et al., NeurIPS 2017"
    payload_id = 0x31
    params = (
        Param("clip", float, 0.0, "c: clip each tensor to +-c std before ternarizing (the paper's experiments: 2.5); "
              "0 = off (unbiased)", unit="standard deviations", paper="Wen et al. 2017, Sec. 3.3",
              check=float32_or_zero, rule=f"in [0, {FLOAT32_MAX:.3g}] (a float32)"),
        Param("packing", str, "base3", "trits on the wire: base3 = 5 per byte (1.6 bits/entry), 2bit = 2 bits/entry "
              "(the paper's count)", choices=("base3", "2bit")),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.num_params = self.layout.num_params
        self.num_tensors = len(self.layout.segments)

    @property
    def unbiased(self) -> bool:
        return self.clip == 0

    # ------------------------------------------------------------ client side
    def ternarize(self, x: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x`` ``[K, P]`` float32, uniforms ``u`` ``[K, P]`` in [0, 1) (or both ``[P]``) ->
        (scales ``[K, T]`` float32, trits ``[K, P]`` int8): ``sign(v_i) b_i = floor(v_i / s_t + u_i)``
        (``|v_i| / s_t <= 1``, so the trit is 0 or sign(v_i), the latter with probability |v_i| / s_t)."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 1:
            return tuple(t[0] for t in self.ternarize(x[None], np.asarray(u)[None]))
        u = np.asarray(u, dtype=np.float32)
        trits = np.empty(x.shape, dtype=np.int8)
        scales = np.zeros((x.shape[0], self.num_tensors), dtype=np.float32)
        for t, seg in enumerate(self.layout.segments):
            xt = x[:, seg.start : seg.stop]
            if self.clip > 0:
                bound = (self.clip * xt.std(axis=1, dtype=np.float64)).astype(np.float32)[:, None]
                xt = np.clip(xt, -bound, bound)
            scale = np.maximum(xt.max(axis=1), -xt.min(axis=1))  # max |v|
            with np.errstate(over="ignore"):
                inv = np.divide(np.float32(1), scale, out=np.zeros_like(scale), where=scale > 0)
            if np.isfinite(inv).all():
                y = xt * inv[:, None]
            else:  # a subnormal scale: 1 / scale overflows, x / scale does not
                y = np.divide(xt, scale[:, None], out=np.zeros_like(xt), where=scale[:, None] > 0)
            trits[:, seg.start : seg.stop] = stochastic_round(y, u[:, seg.start : seg.stop], 1)
            scales[:, t] = scale
        return scales, trits

    def compress(self, v, ctx):
        x = v.detach().float().cpu().numpy()
        out = []
        for rows in row_chunks(x.shape[0], self.num_params):
            u = uniform_floats([ctx.seed_for(k, self.name) for k in rows], self.num_params)
            scales, trits = self.ternarize(x[rows.start : rows.stop], u)
            out += [TernPayload(scales[i], trits[i]) for i in range(len(rows))]
        return out

    # ------------------------------------------------------------ bytes
    def _packed_bytes(self) -> int:
        per = 5 if self.packing == "base3" else 4
        return -(-self.num_params // per)

    def encode(self, payload: TernPayload) -> bytes:
        w = ByteWriter().tag(self.payload_id).f32(payload.scales)
        per = 5 if self.packing == "base3" else 4
        t = np.zeros(self._packed_bytes() * per, dtype=np.int8)
        t[: self.num_params] = payload.trits
        if self.packing == "base3":
            digits = (t + 1).astype(np.uint8).reshape(-1, 5)
            packed = digits[:, 0] * _POW3[0]
            for k in range(1, 5):
                packed += digits[:, k] * _POW3[k]
        else:
            codes = _TWO_BIT_CODE[t + 1].reshape(-1, 4)
            packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
        return w.raw(packed.tobytes()).getvalue()

    def decode(self, data: bytes) -> TernPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        nbytes = self._packed_bytes()
        r.need(4 * self.num_tensors + nbytes)
        scales = r.f32(self.num_tensors)
        if np.any(scales < 0):
            raise DecodeError("terngrad: negative scale")
        packed = np.frombuffer(r.raw(nbytes), dtype=np.uint8)
        r.end()
        if self.packing == "base3":
            if packed.size and packed.max() > 242:
                raise DecodeError("terngrad: a byte above 242 is not 5 trits")
            trits = _BASE3_TABLE[packed].reshape(-1)
        else:
            if _TWO_BIT_BAD[packed].any():
                raise DecodeError("terngrad: 2-bit code 11 is not a trit")
            trits = _TWO_BIT_TABLE[packed].reshape(-1)
        if trits[self.num_params :].any():
            raise DecodeError("terngrad: padding trits are not zero")
        trits = trits[: self.num_params].copy()
        for seg, scale in zip(self.layout.segments, scales.tolist()):
            if scale == 0 and trits[seg.start : seg.stop].any():
                raise DecodeError("terngrad: non-zero trits in a tensor of scale 0")
        return TernPayload(scales, trits)

    # ------------------------------------------------------------ server side
    def decompress(self, payload: TernPayload, device=None) -> torch.Tensor:
        out = torch.from_numpy(payload.trits).to(device).float()
        for seg, scale in zip(self.layout.segments, payload.scales.tolist()):
            out[seg.start : seg.stop] *= scale
        return out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: TernPayload) -> int:
        return self.num_params  # every entry's trit travels

    def bound_bits(self, payload: TernPayload) -> float:
        """32 bits per scale + the empirical entropy of the P trits."""
        return 32.0 * self.num_tensors + empirical_entropy_bits(np.bincount(payload.trits.astype(np.int64) + 1, minlength=3))

    def host_bytes_bound(self, payload: TernPayload) -> int:
        """One byte per entry (its trit, for the coder) + 4 bytes per float32 scale (issue 21)."""
        return self.num_params + 4 * self.num_tensors


__all__ = ["TernGrad", "TernPayload"]
