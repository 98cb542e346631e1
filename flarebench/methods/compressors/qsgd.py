"""``qsgd``: QSGD (Alistarh et al., NeurIPS 2017), s levels per bucket, entropy- or Elias-coded; unbiased.

Quantizer (the paper's Q_s, per bucket): every tensor is cut into buckets of ``d`` consecutive
entries (``bucket``; a tensor's last bucket may be shorter; buckets never cross tensors). For a
bucket ``v`` (n entries) with norm ``||v||`` (``norm = l2``: the 2-norm, as analysed in the paper;
``max``: max |v_i|, the normalisation of the paper's experiments) and ``r_i = s |v_i| / ||v||``,
the level is ``l_i = floor(r_i) + Bernoulli(r_i - floor(r_i))`` in ``0..s`` and the server gets
``Q(v)_i = ||v|| sign(v_i) l_i / s``, so ``E[Q(v)] = v`` and, for ``l2``, the paper's Lemma 3.1
holds: ``E||Q(v) - v||^2 <= min(n / s^2, sqrt(n) / s) ||v||^2`` per bucket. It is computed on the
update's device as ``sign(v_i) l_i = floor(s v_i / ||v|| + u_i)`` with u_i uniform in [0, 1) (24-bit
grid) from the counter-based draws of draws.py keyed by (run seed, round, client): one compiled pass on the
CPU, the same numbers by torch operations on another device (quantizer.py). No error
feedback by default (memory ``none``).

Defaults: ``levels`` s = 7 and ``bucket`` d = 512: the paper's "4-bit QSGD" with the bucket size of
its experiments, reading "b bits" as a fixed-width code of 1 sign bit + b - 1 level bits, so
s = 2^(b-1) - 1 (``levels = 1``: ternary 2-bit QSGD; ``levels = 127``: 8-bit). The "gradient" is the
client's round update.

Wire: 2-byte tag; the B bucket norms as float32 (32 bits each, as the paper); then the levels:

- ``coder = rans`` (default) or ``ans``: the P signed levels as symbols ``sign(v_i) l_i + s`` (alphabet 2s + 1)
  entropy-coded against the message's own level histogram (wire/rans.py, wire/entropy.py: 2 levels per step at
  s = 7, the table travels): about ``P H`` bits, H the levels' empirical entropy.
- ``coder = elias``: the paper's Elias coding (Sec. 3.1 / Thm 3.2, with a count per bucket instead of an
  end marker), one bit stream: ``omega(c_b + 1)`` for the number c_b of non-zero levels of every bucket,
  then for every non-zero entry (bucket by bucket, ascending): ``omega(gap)`` of its position (gap =
  position - previous non-zero position in the bucket, the first counted from -1), its sign bit (1 =
  negative) and ``omega(l_i)``; zero-padded to a byte (wire/omega.py: Elias' recursive code, the paper's
  "Elias(k)", written layer by layer). Bits = ``16 + 32 B + 8 ceil((sum_b |omega(c_b + 1)| + sum_i
  (|omega(gap_i)| + 1 + |omega(l_i)|)) / 8)``.

Host transfer per compress + encode: 1 byte per 2 entries (rans, ans at s = 7; 1 per entry at s <= 127 with
elias; 4 above) + the B norms + the coder's histogram.

Floor (``bound_bits``): ``32 B`` for the norms plus ``P H`` where H is the empirical entropy of the
message's signed levels over all P entries (the floor of any code that treats the entries as independent
draws from the message's own histogram); rans and ans are within 1% of it on the zoo's mlp (the table counted);
Elias coding is above it on noise-like updates; long runs of zeros (e.g. input pixels that never change)
can take it below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...errors import DecodeError
from ...jit import on_host
from ...wire.bitstream import bits_to_bytes, check_end
from ...wire.bounds import empirical_entropy_bits
from ...wire.entropy import histogram
from ...wire.frame import ByteReader, ByteWriter
from ...wire.omega import omega_decode, omega_encode, omega_lengths
from ..registry import Param, PartContext, register
from . import kernels
from .draws import torch_uniforms
from .quantizer import Quantizer, coder_param, inverse_norms, scaled, stochastic_round_
from .topk import CHUNK

MAX_LEVELS = 2**15 - 1  # symbols (signed level + s, up to 2s = 65534) travel in int32 arrays above 127 levels
MAX_BUCKET = 2**31


# ---------------------------------------------------------------- payload
@dataclass
class QSGDPayload:
    """One client's QSGD message: ``norms`` float32 ``[B]`` (per bucket, layout order; host) and ``symbols``
    ``[P]`` (``sign(v_i) l_i + s``: uint8 for s <= 127, else int32; on the update's device on the client, on
    the host after decoding)."""

    norms: np.ndarray
    symbols: torch.Tensor


@register
class QSGD(Quantizer):
    name = "qsgd"
    family = "quantizer"
    summary = "s levels per bucket of d entries, stochastic rounding against the bucket norm, entropy-coded (unbiased)"
    paper = "Alistarh et al., NeurIPS 2017"
    payload_id = 0x30
    params = (
        Param("levels", int, 7, "s: levels per sign (entries -> norm * sign * l/s, l in 0..s); 7 = the paper's 4-bit QSGD",
              unit="levels", paper="Alistarh et al. 2017", check=lambda s: 1 <= s <= MAX_LEVELS, rule=f"in [1, {MAX_LEVELS}]"),
        Param("bucket", int, 512, "d: entries per bucket (per tensor; a tensor's last bucket may be shorter)",
              unit="entries", paper="Alistarh et al. 2017 (experiments)", check=lambda d: 1 <= d <= MAX_BUCKET,
              rule=f"in [1, {MAX_BUCKET}]"),
        Param("norm", str, "l2", "levels are relative to the bucket's l2 norm (the paper's analysis) or its max |v| "
              "(the paper's experiments)", choices=("l2", "max"), paper="Alistarh et al. 2017"),
        coder_param("elias", "the paper's Elias-omega coding of counts, gaps, signs and levels"),
    )

    def __init__(self, ctx: PartContext, **params):
        super().__init__(ctx, **params)
        self.layout = ctx.layout
        self.num_params = self.layout.num_params
        d = self.bucket
        starts, sizes = [], []
        for seg in self.layout.segments:
            s = np.arange(seg.start, seg.stop, d, dtype=np.int64)
            starts.append(s)
            sizes.append(np.minimum(d, seg.stop - s))
        self.bucket_starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)  # flat start of every bucket
        self.bucket_sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)
        self.num_buckets = int(self.bucket_starts.size)
        self.alphabet = 2 * self.levels + 1
        self.symbol_dtype = torch.uint8 if self.alphabet <= 256 else torch.int32

    # ------------------------------------------------------------ client side
    def _blocks(self, x: torch.Tensor):
        """Per tensor of ``x`` ``[P]``: (flat start, its full buckets ``[m, d]``), then its short last bucket
        ``[1, r]`` (layout order)."""
        d = self.bucket
        for seg in self.layout.segments:
            full = seg.numel // d
            if full:
                yield seg.start, x[seg.start : seg.start + full * d].view(full, d)
            if seg.numel % d:
                yield seg.start + full * d, x[seg.start + full * d : seg.stop].view(1, -1)

    def _pieces(self, x: torch.Tensor):
        """(flat start, buckets ``[m, d]`` of ``x`` ``[P]``, their norms ``[m]`` float32) for about CHUNK entries at a
        time (float temporaries in cache), layout order."""
        rows = max(1, CHUNK // self.bucket)
        for start, xb in self._blocks(x):
            for r in range(0, xb.shape[0], rows):
                yield start + r * xb.shape[1], xb[r : r + rows], self._norms(xb[r : r + rows])

    def _norms(self, xb: torch.Tensor) -> torch.Tensor:
        """Per bucket (row of ``xb``): max |v| (``norm = max``) or the l2 norm."""
        top = xb.abs().amax(dim=1)
        if self.norm == "max":
            return top
        nrm = torch.linalg.vector_norm(xb, dim=1)
        low = nrm < top  # squares that underflowed (|v| < 1e-19) or rounding: redo in float64
        if not on_host(xb) or bool(low.any()):  # on a device, without waiting for it to answer low.any()
            nrm = torch.where(low, torch.linalg.vector_norm(xb.double(), dim=1).float(), nrm)
        return nrm

    def quantize(self, x: torch.Tensor, draw) -> tuple[np.ndarray, torch.Tensor]:
        """``x`` ``[P]`` float32 and ``draw(a, b)`` -> uniforms ``[b - a]`` in [0, 1) for entries a..b-1 on x's device
        -> (norms ``[B]`` float32 numpy, symbols ``[P]`` on x's device): ``sign(x_i) l_i = floor(s x_i / ||v|| + u_i)``,
        i.e. |level| is ``floor(r_i)`` or ``floor(r_i) + 1``, the latter with probability ``r_i - floor(r_i)``;
        symbol = signed level + s."""
        x = torch.as_tensor(x, dtype=torch.float32).contiguous()
        s = self.levels
        out = torch.empty(x.shape, dtype=self.symbol_dtype, device=x.device)
        norms = []
        for start, xb, nrm in self._pieces(x):
            ub = draw(start, start + xb.numel()).view(xb.shape)
            y = stochastic_round_(scaled(xb, nrm, float(s)), ub, s).add_(s)
            out[start : start + xb.numel()] = y.view(-1).to(self.symbol_dtype)
            norms.append(nrm)
        return self._host_norms(norms), out

    def quantize_on_host(self, x: torch.Tensor, key: int) -> tuple[np.ndarray, torch.Tensor]:
        """:meth:`quantize` with the draws of ``key`` (draws.py): the norms in torch, then one compiled pass (CPU)."""
        x = torch.as_tensor(x, dtype=torch.float32).contiguous()
        norms = [nrm for _, _, nrm in self._pieces(x)]
        host = self._host_norms(norms)
        inv = inverse_norms(torch.from_numpy(host), float(self.levels)).numpy()
        out = torch.empty(x.shape, dtype=self.symbol_dtype)
        kernels.round_levels(x.numpy(), self.bucket_starts, self.bucket_sizes, inv, host, np.float32(self.levels),
                             np.uint64(key), out.numpy())
        return host, out

    @staticmethod
    def _host_norms(norms: list) -> np.ndarray:
        return torch.cat(norms).cpu().numpy() if norms else np.zeros(0, np.float32)

    def compress_row(self, x: torch.Tensor, key: int) -> QSGDPayload:
        if on_host(x):
            return QSGDPayload(*self.quantize_on_host(x, key))
        return QSGDPayload(*self.quantize(x, lambda a, b: torch_uniforms(key, a, b, x.device)))

    # ------------------------------------------------------------ bytes
    def _sparse(self, payload: QSGDPayload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (counts ``[B]`` of non-zero levels per bucket, their ascending flat positions ``[N]``, their signed
        levels int64 ``[N]``): the entries the Elias coder writes."""
        levels = payload.symbols.cpu().numpy().astype(np.int64) - self.levels
        positions = np.flatnonzero(levels)
        counts = np.diff(np.searchsorted(positions, np.append(self.bucket_starts, self.num_params)))
        return counts.astype(np.int64), positions, levels[positions]

    def _gaps(self, counts: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Position gaps within buckets (first non-zero of a bucket: its offset + 1), int64 ``[N]``."""
        gaps = np.empty(positions.size, dtype=np.int64)
        if positions.size:
            gaps[1:] = np.diff(positions)
            firsts = (np.cumsum(counts) - counts)[counts > 0]
            gaps[firsts] = positions[firsts] - self.bucket_starts[counts > 0] + 1
        return gaps

    def encode(self, payload: QSGDPayload) -> bytes:
        w = ByteWriter().tag(self.payload_id).f32(payload.norms)
        if self.entropy_coded:
            self.encode_symbols(w, payload.symbols, self.alphabet)
            return w.getvalue()
        counts, positions, levels = self._sparse(payload)
        stream = np.concatenate([
            omega_encode(counts + 1),
            omega_encode(self._gaps(counts, positions)),
            (levels < 0).astype(np.uint8),
            omega_encode(np.abs(levels)),
        ])
        return w.raw(bits_to_bytes(stream)).getvalue()

    def max_elias_bits(self) -> int:
        """The most bits an Elias stream of this layout can take (every entry non-zero, the longest gap and level
        codewords): a longer message is refused before anything is unpacked."""
        per_bucket = int(omega_lengths(np.array([self.bucket + 1]))[0])
        per_entry = int(omega_lengths(np.array([self.bucket]))[0]) + 1 + int(omega_lengths(np.array([self.levels]))[0])
        return self.num_buckets * per_bucket + self.num_params * per_entry

    def decode(self, data: bytes) -> QSGDPayload:
        r = ByteReader(data, self.name)
        r.tag(self.payload_id)
        B = self.num_buckets
        norms = r.f32(B)
        if np.any(norms < 0):
            raise DecodeError("qsgd: negative bucket norm")
        if self.entropy_coded:
            symbols = self.decode_symbols(r, self.num_params, self.alphabet)
            zero_norm = norms == 0
            if zero_norm.any() and np.logical_or.reduceat(symbols != self.levels, self.bucket_starts)[zero_norm].any():
                raise DecodeError("qsgd: non-zero levels in a bucket of norm 0")
            return QSGDPayload(norms, torch.from_numpy(symbols))
        if 8 * r.remaining > self.max_elias_bits() + 7:
            raise DecodeError(f"qsgd: {r.remaining} bytes of levels, more than any message of this model")
        bits = np.unpackbits(np.frombuffer(r.raw(r.remaining), dtype=np.uint8))
        counts, at = omega_decode(bits, 0, B, self.bucket + 1, "qsgd bucket counts")
        counts -= 1
        if np.any(counts > self.bucket_sizes):
            raise DecodeError("qsgd: a bucket claims more non-zero levels than entries")
        if np.any((counts > 0) & (norms == 0)):
            raise DecodeError("qsgd: non-zero levels in a bucket of norm 0")
        n = int(counts.sum())
        if at + 3 * n > bits.size:  # every entry needs >= 1 gap bit, 1 sign bit, >= 1 level bit
            raise DecodeError(f"qsgd: {n} levels claimed, the stream cannot hold them")
        gaps, at = omega_decode(bits, at, n, self.bucket, "qsgd gaps")
        signs = bits[at : at + n].view(np.bool_)
        at += n
        mags, at = omega_decode(bits, at, n, self.levels, "qsgd levels")
        check_end(bits, at, "qsgd")
        positions = self._positions(counts, gaps)
        symbols = np.full(self.num_params, self.levels, dtype=np.uint8 if self.alphabet <= 256 else np.int32)
        symbols[positions] = np.where(signs, self.levels - mags, self.levels + mags)
        return QSGDPayload(norms, torch.from_numpy(symbols))

    def _positions(self, counts: np.ndarray, gaps: np.ndarray) -> np.ndarray:
        """Per-bucket gaps -> ascending flat positions; DecodeError if one falls past its bucket."""
        if gaps.size == 0:
            return np.zeros(0, dtype=np.int64)
        cs = np.cumsum(gaps)
        nonempty = counts > 0
        firsts = (np.cumsum(counts) - counts)[nonempty]
        shift = np.zeros(self.num_buckets, dtype=np.int64)  # bucket start - 1 - (gaps summed before the bucket)
        shift[nonempty] = self.bucket_starts[nonempty] - 1 - (cs[firsts] - gaps[firsts])
        positions = cs + np.repeat(shift, counts)
        lasts = firsts + counts[nonempty] - 1
        if np.any(positions[lasts] >= (self.bucket_starts + self.bucket_sizes)[nonempty]):
            raise DecodeError("qsgd: a position falls past the end of its bucket")
        return positions

    # ------------------------------------------------------------ server side
    writes_into = True

    def decompress(self, payload: QSGDPayload, device=None, out=None) -> torch.Tensor:
        step = torch.from_numpy(payload.norms / np.float32(self.levels)).to(device)  # ||v_b|| / s per bucket
        symbols = payload.symbols.to(device)
        out = self.output(device, out)
        if on_host(out):
            kernels.levels_to_values(symbols.numpy(), self.bucket_starts, self.bucket_sizes, step.numpy(), self.levels, out.numpy())
            return out
        rows, b = max(1, CHUNK // self.bucket), 0
        for (_, block), (_, sym) in zip(self._blocks(out), self._blocks(symbols)):  # [m, d] views, in bucket order
            for r in range(0, block.shape[0], rows):  # one pass per CHUNK entries: (symbol - s) * ||v_b|| / s
                e = min(r + rows, block.shape[0])
                block[r:e].copy_(sym[r:e]).sub_(self.levels).mul_(step[b + r : b + e, None])
            b += block.shape[0]
        return out

    # ------------------------------------------------------------ accounting
    def nnz(self, payload: QSGDPayload) -> int:
        return int((payload.symbols != self.levels).sum())  # entries with a non-zero level (sign + level travel)

    def bound_bits(self, payload: QSGDPayload) -> float:
        """32 bits per bucket norm + the empirical entropy of the P signed levels (zeros included)."""
        return 32.0 * self.num_buckets + empirical_entropy_bits(histogram(payload.symbols, self.alphabet))

    def host_bytes_bound(self, payload: QSGDPayload) -> int:
        """One byte per entry (its signed level, for the coder; 4 above 127 levels), 4 bytes per bucket norm and the
        coder's histogram (8 bytes per alphabet symbol)."""
        return self.num_params * (1 if self.alphabet <= 256 else 4) + 4 * self.num_buckets + 8 * self.alphabet


__all__ = ["QSGD", "QSGDPayload"]
