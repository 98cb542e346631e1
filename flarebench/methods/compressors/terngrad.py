"""``terngrad``: TernGrad (Wen et al., NeurIPS 2017), stochastic ternary values with a per-tensor scale.

Quantizer (the paper's layer-wise ternarizing, Eq. 5-6): per tensor t with scale
``s_t = max |v_t|``, every entry becomes ``s_t sign(v_i) b_i`` with ``b_i ~ Bernoulli(|v_i| / s_t)``,
so ``E = v`` (unbiased), computed on the update's device as ``floor(v_i / s_t + u_i)`` with u_i uniform
in [0, 1) (24-bit grid) from the counter-based draws of draws.py keyed by (run seed, round, client)
(quantizer.py). The "gradient" is the client's round update.

Option ``clip`` (the paper's gradient clipping, Sec. 3.3): with ``clip = c > 0`` each tensor is first
clipped to ``[-c sigma_t, c sigma_t]`` (sigma_t: the standard deviation of its entries) and
``s_t = max |clipped|``. The paper's experiments use c = 2.5; it makes the compressor biased (the
clipped tails), so the default is 0 (off, unbiased), as issue 11 asks for an unbiased TernGrad.
Not implemented: the paper's scaler sharing (workers agree on max_t s_t before ternarizing, one
more exchange per round), a systems device for integer all-reduce; each client sends its own s_t.

Wire (via :mod:`flarebench.wire.frame`): 2-byte tag, the T scales as float32, then the P trits:
``coder = rans`` (default) or ``ans``: entropy-coded against the message's trit histogram (wire/rans.py,
wire/entropy.py: 5 trits per step, the 3-symbol table travels), about ``P H`` bits (H: the trits' empirical
entropy; mostly 0s, so far below log2 3). ``coder = fixed``: the fixed-rate packing, ``packing = base3``: 5 trits per byte,
``byte = sum_k 3^(4-k) (t_k + 1)`` (<= 242), ``ceil(P / 5)`` bytes, i.e. 1.6 bits per entry, the last
byte padded with trits 0; ``packing = 2bit``: 2 bits per entry as the paper counts it (00 = 0, 01 = +1,
10 = -1), ``ceil(P / 4)`` bytes. Bits = ``16 + 32 T`` + the coded trits.
Host transfer per compress + encode: 1 byte per 5 entries (rans, ans; 1 per entry for fixed) + the T scales.

Floor (``bound_bits``): ``32 T`` for the scales plus ``P H`` where H is the empirical entropy of
the message's trits (<= log2 3). Both entropy coders are within 1% of it on the zoo's mlp (the table counted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...jit import on_host
from ...wire.bounds import empirical_entropy_bits
from ...wire.entropy import histogram
from ...wire.frame import ByteReader, ByteWriter
from ..registry import FLOAT32_MAX, Param, PartContext, float32_or_zero, register
from . import kernels
from .draws import torch_uniforms
from .quantizer import Quantizer, coder_param, inverse_norms, scaled, stochastic_round_
from .topk import CHUNK

_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.uint8)
_BASE3_TABLE = ((np.arange(243)[:, None] // _POW3.astype(np.int64)) % 3 - 1).astype(np.int8)  # byte -> 5 trits
_TWO_BIT_CODE = np.array([2, 0, 1], dtype=np.uint8)  # trit -1, 0, +1 -> 10, 00, 01
_TWO_BIT_TRIT = np.array([0, 1, -1, 0], dtype=np.int8)  # code -> trit (code 3 is invalid)
_TWO_BIT_TABLE = _TWO_BIT_TRIT[(np.arange(256)[:, None] >> np.array([6, 4, 2, 0])) & 3]  # byte -> 4 trits
_TWO_BIT_BAD = (((np.arange(256)[:, None] >> np.array([6, 4, 2, 0])) & 3) == 3).any(axis=1)


@dataclass
class TernPayload:
    """One client's TernGrad message: ``scales`` float32 ``[T]`` (s_t, host), ``trits`` int8 ``[P]`` in {-1, 0, 1}
    (a tensor on the update's device on the client; on the host after decoding)."""

    scales: np.ndarray
    trits: torch.Tensor


@register
class TernGrad(Quantizer):
    name = "terngrad"
    family = "quantizer"
    summary = "stochastic ternary {-1, 0, 1} * max|v_t| per tensor (unbiased without clipping), entropy-coded trits"
    paper = "Wen et al., NeurIPS 2017"
    payload_id = 0x31
    params = (
        Param("clip", float, 0.0, "c: clip each tensor to +-c std before ternarizing (the paper's experiments: 2.5); "
              "0 = off (unbiased)", unit="standard deviations", paper="Wen et al. 2017, Sec. 3.3",
              check=float32_or_zero, rule=f"in [0, {FLOAT32_MAX:.3g}] (a float32)"),
        coder_param("fixed", "fixed-rate packing (see packing)"),
        Param("packing", str, "base3", "coder = fixed: base3 = 5 trits per byte (1.6 bits/entry), 2bit = 2 bits/entry "
              "(the paper's count)", choices=("base3", "2bit")),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.num_params = self.layout.num_params
        self.num_tensors = len(self.layout.segments)
        self.starts = np.array([seg.start for seg in self.layout.segments] + [self.num_params], dtype=np.int64)

    @property
    def unbiased(self) -> bool:
        return self.clip == 0

    # ------------------------------------------------------------ client side
    def _tensors(self, x: torch.Tensor):
        """Per tensor of ``x`` ``[P]``: (its segment, its entries after the optional clip, s_t = max |v_t| as a
        float32 ``[]`` tensor on x's device)."""
        for seg in self.layout.segments:
            xt = x[seg.start : seg.stop]
            if not seg.numel:
                yield seg, xt, torch.zeros((), dtype=torch.float32, device=x.device)
                continue
            if self.clip > 0:  # c sigma can pass float32's range (a huge c, huge entries): no clip there
                bound = min(float(self.clip * xt.double().std(correction=0)), FLOAT32_MAX)
                xt = xt.clamp(-bound, bound)
            lo, hi = torch.aminmax(xt)
            yield seg, xt, torch.maximum(hi, -lo)

    def ternarize(self, x: torch.Tensor, draw) -> tuple[np.ndarray, torch.Tensor]:
        """``x`` ``[P]`` float32 and ``draw(a, b)`` -> uniforms ``[b - a]`` in [0, 1) for entries a..b-1 on x's device
        -> (scales ``[T]`` float32 numpy, trits ``[P]`` int8 on x's device): ``sign(v_i) b_i = floor(v_i / s_t + u_i)``
        (``|v_i| / s_t <= 1``, so the trit is 0 or sign(v_i), the latter with probability |v_i| / s_t)."""
        x = torch.as_tensor(x, dtype=torch.float32)
        trits = torch.empty(x.shape, dtype=torch.int8, device=x.device)
        scales = []
        for seg, xt, scale in self._tensors(x):
            for a in range(seg.start, seg.stop, CHUNK):  # float temporaries of CHUNK entries, in cache
                b = min(a + CHUNK, seg.stop)
                y = scaled(xt[None, a - seg.start : b - seg.start], scale[None], 1.0)[0]
                trits[a:b] = stochastic_round_(y, draw(a, b), 1)
            scales.append(scale)
        return self._host_scales(scales), trits

    def ternarize_on_host(self, x: torch.Tensor, key: int) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`ternarize` with the draws of ``key`` (draws.py), compiled: one pass per tensor (CPU)."""
        trits = torch.empty(x.shape, dtype=torch.int8)
        out, scales = trits.numpy(), []
        for seg, xt, scale in self._tensors(x):
            inv = inverse_norms(scale[None], 1.0)
            kernels.ternarize(xt.contiguous().numpy(), seg.start, inv.item(), scale.item(), np.uint64(key), out[seg.start : seg.stop])
            scales.append(scale)
        return self._host_scales(scales), trits

    @staticmethod
    def _host_scales(scales: list) -> np.ndarray:
        return (torch.stack(scales).cpu().numpy() if scales else np.zeros(0, np.float32)).astype(np.float32)

    def compress_row(self, x: torch.Tensor, key: int) -> TernPayload:
        if on_host(x):
            return TernPayload(*self.ternarize_on_host(x, key))
        return TernPayload(*self.ternarize(x, lambda a, b: torch_uniforms(key, a, b, x.device)))

    # ------------------------------------------------------------ bytes
    def _packed_bytes(self) -> int:
        per = 5 if self.packing == "base3" else 4
        return -(-self.num_params // per)

    def encode(self, payload: TernPayload) -> bytes:
        w = ByteWriter().tag(self.payload_id).f32(payload.scales)
        if self.entropy_coded:
            self.encode_symbols(w, (payload.trits + 1).view(torch.uint8), 3)
            return w.getvalue()
        per = 5 if self.packing == "base3" else 4
        t = np.zeros(self._packed_bytes() * per, dtype=np.int8)
        t[: self.num_params] = payload.trits.cpu().numpy()
        if self.packing == "base3":
            digits = (t + 1).astype(np.uint8).reshape(-1, 5)
            packed = digits[:, 0] * _POW3[0]
            for k in range(1, 5):
                packed += digits[:, k] * _POW3[k]
        else:
            codes = _TWO_BIT_CODE[t + 1].reshape(-1, 4)
            packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
        return w.raw(packed.tobytes()).getvalue()

    def _unpack(self, r: ByteReader) -> np.ndarray:
        """The fixed packing's trits (int8 ``[P]``)."""
        nbytes = self._packed_bytes()
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
        return trits[: self.num_params].copy()

    def decode(self, data: bytes) -> TernPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        scales = r.f32(self.num_tensors)
        if np.any(scales < 0):
            raise DecodeError("terngrad: negative scale")
        if self.entropy_coded:
            trits = self.decode_symbols(r, self.num_params, 3).view(np.int8) - np.int8(1)
        else:
            r.need(self._packed_bytes())
            trits = self._unpack(r)
        for seg, scale in zip(self.layout.segments, scales.tolist()):
            if scale == 0 and trits[seg.start : seg.stop].any():
                raise DecodeError("terngrad: non-zero trits in a tensor of scale 0")
        return TernPayload(scales, torch.from_numpy(trits))

    # ------------------------------------------------------------ server side
    writes_into = True

    def decompress(self, payload: TernPayload, device=None, out=None) -> torch.Tensor:
        trits = payload.trits.to(device)
        out = self.output(device, out)
        if on_host(out):
            kernels.scale_trits(trits.numpy(), self.starts, payload.scales, out.numpy())
            return out
        for seg, scale in zip(self.layout.segments, payload.scales.tolist()):
            for a in range(seg.start, seg.stop, CHUNK):  # one pass: int8 trit * float32 scale
                b = min(a + CHUNK, seg.stop)
                torch.mul(trits[a:b], torch.tensor(scale, dtype=torch.float32), out=out[a:b])
        return out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: TernPayload) -> int:
        return self.num_params  # every entry's trit travels

    def bound_bits(self, payload: TernPayload) -> float:
        """32 bits per scale + the empirical entropy of the P trits."""
        return 32.0 * self.num_tensors + empirical_entropy_bits(histogram((payload.trits + 1).view(torch.uint8), 3))

    def host_bytes_bound(self, payload: TernPayload) -> int:
        """One byte per entry (its trit, for the coder) + 4 bytes per float32 scale (issue 21)."""
        return self.num_params + 4 * self.num_tensors


__all__ = ["TernGrad", "TernPayload"]
