"""``topk``: the k largest magnitudes of every tensor (ties broken by torch.topk), positions + values.

:func:`topk_positions` is flarebench's one exact top-k selection (topk, stc, dgc, the stc aggregator,
count-sketch's heavy hitters use it): it runs on the device of the block it is given.
"""

from __future__ import annotations

import numpy as np
import torch

from ...jit import on_host
from ...wire.message import Message
from ..registry import register
from .base import Sparsifier


CHUNK = 1 << 18  # entries per step of a scan: its temporaries stay in cache and are reused


def numpy_scan(x: torch.Tensor) -> bool:
    """Whether a scan over ``x`` runs in numpy: on the CPU (numpy is the device there) its elementwise compares and
    nonzero are about 2x faster than torch's; on another device the scan stays there (torch)."""
    return on_host(x)


GROUP = 16  # entries summed per group when looking for the few that pass (a sum over a short row is cheap)


def positions_above(x: torch.Tensor, floor: float | torch.Tensor, nan: bool = False) -> torch.Tensor:
    """``x`` ``[n]`` -> int64 ascending positions i where ``|x_i| > floor`` (and where x_i is NaN if ``nan``), on
    ``x``'s device, ``CHUNK`` entries at a time into one reused float buffer (no full-size temporary).

    Per chunk: ``b = |x| - floor`` clamped to 0 below (``x > y`` implies ``x - y > 0`` in IEEE arithmetic, so
    the test is exact; NaN stays NaN); the sums of groups of ``GROUP`` entries are non-zero exactly where a
    group holds a hit or a NaN, and only those groups' entries are looked at (a float -> bool compare and
    nonzero cost about twice as much in torch). On the CPU the scan runs in numpy (:func:`numpy_scan`)."""
    n = x.shape[0]
    if n == 0 or not bool(torch.as_tensor(floor) < float("inf")):  # +inf or NaN: no |x| is above it
        return torch.nonzero(torch.isnan(x) & nan).flatten()
    if numpy_scan(x):
        return torch.from_numpy(_positions_above_numpy(x.detach().contiguous().numpy(), floor, nan))
    buf = torch.empty(min(n, CHUNK), dtype=torch.float32, device=x.device)
    lanes = torch.arange(GROUP, device=x.device)
    parts = []
    for a in range(0, n, CHUNK):
        c = x[a : a + CHUNK]
        b = buf[: c.shape[0]]
        torch.abs(c, out=b).sub_(floor).clamp_(min=0.0)  # NaN stays NaN (torch.clamp propagates it)
        m = b.shape[0] - b.shape[0] % GROUP
        groups = torch.nonzero(b[:m].view(-1, GROUP).sum(1)).flatten()  # a group with a hit or a NaN
        cand = torch.cat([(groups[:, None] * GROUP + lanes).flatten(), torch.arange(m, b.shape[0], device=x.device)])
        got = b[cand]
        parts.append(cand[(got != 0) if nan else (got > 0)] + a)  # NaN != 0, not NaN > 0
    return torch.cat(parts) if len(parts) != 1 else parts[0]


def _positions_above_numpy(x: np.ndarray, floor, nan: bool) -> np.ndarray:
    """:func:`positions_above` for a float32 array on the host: ``|x|`` into one reused chunk buffer, compared with
    ``floor`` as float32 (as torch compares a float32 tensor with a scalar), flatnonzero per chunk."""
    floor = np.float32(floor.item() if isinstance(floor, torch.Tensor) else floor)
    buf = np.empty(min(x.shape[0], CHUNK), dtype=np.float32)
    mask = np.empty(buf.shape[0], dtype=np.bool_)
    parts = []
    for a in range(0, x.shape[0], CHUNK):
        c = x[a : a + CHUNK]
        b, m = buf[: c.shape[0]], mask[: c.shape[0]]
        np.abs(c, out=b)
        if nan:
            np.logical_not(np.less_equal(b, floor, out=m), out=m)  # NaN <= floor is False: NaN passes
        else:
            np.greater(b, floor, out=m)
        parts.append(np.flatnonzero(m) + a)
    return np.concatenate(parts)


def below(value: float | torch.Tensor) -> float | torch.Tensor:
    """The largest float32 below ``value``: ``|x| > below(t)`` is ``|x| >= t``."""
    t = torch.as_tensor(value, dtype=torch.float32)
    low = torch.nextafter(t, torch.full_like(t, -float("inf")))
    return low if isinstance(value, torch.Tensor) else float(low)


def full_topk_positions(block: torch.Tensor, k: int) -> torch.Tensor:
    """``block`` ``[K, n]`` -> sorted int64 positions ``[K, k]`` of the k largest ``|block|`` per row (torch.topk
    over every entry: the reference :func:`topk_positions` equals)."""
    return block.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values


def prefilter_threshold(block: torch.Tensor, k: int) -> torch.Tensor:
    """``block`` ``[K, n]`` -> ``[K, 1]`` thresholds of |block| that about 2k entries per row reach: the
    ceil(2 s k / n)-th largest |x| of a strided sample of s >= 16 n / k entries (s >= 1024): a rank of >= 32 in
    the sample, so that fewer than k pass (and :func:`topk_positions` falls back to the full top-k) is about a
    Poisson(16) >= 32 event (~1e-4) on an unstructured tensor; a sparser sample touches fewer cache lines."""
    n = block.shape[1]
    stride = max(1, n // max(1024, 16 * -(-n // k)))
    sample = block[:, ::stride].abs()
    rank = min(sample.shape[1], -(-2 * sample.shape[1] * k // n))
    return sample.topk(rank, dim=1, sorted=False).values.min(dim=1, keepdim=True).values


def topk_positions(block: torch.Tensor, k: int) -> torch.Tensor:
    """``block`` ``[K, n]`` -> sorted int64 positions ``[K, k]`` of the k largest ``|block|`` per row, on
    ``block``'s device; always equal to :func:`full_topk_positions` (ties at the k-th magnitude included).

    For k << n (16 k <= n) it is faster: a threshold from a strided sample (:func:`prefilter_threshold`),
    then torch.topk among the entries that reach it (about 2k). A row falls back to the full top-k where
    fewer than k reach it (a sample that misleads: about 8 standard deviations away for an unstructured
    one) or where the k-th magnitude is tied with an entry left out (torch.topk's own choice among ties
    is then the answer). NaN compares as the largest, as in torch.topk.
    """
    K, n = block.shape
    if 16 * k > n:
        return full_topk_positions(block, k)
    thr = prefilter_threshold(block, k)
    out = []
    for row in range(K):
        idx = positions_above(block[row], below(thr[row]), nan=True)  # NaN passes (torch.topk ranks it first)
        if idx.numel() >= k:
            cand = block[row, idx].abs()
            top = cand.topk(k, sorted=False)
            kth = top.values.min()
            # exact unless an entry equal to the k-th magnitude was left out, or the k-th is NaN (1 byte to the host)
            if not bool(((cand == kth).sum() != (top.values == kth).sum()) | torch.isnan(kth)):
                out.append(idx[cand >= kth])  # the top k, already ascending
                continue
        out.append(full_topk_positions(block[row : row + 1], k)[0])
    return torch.stack(out)


@register
class TopK(Sparsifier):
    name = "topk"
    summary = "the k = R n largest magnitudes per tensor"
    paper = "Aji & Heafield, EMNLP 2017; Stich et al., NeurIPS 2018"

    def select(self, v: torch.Tensor, counts) -> list[Message]:
        """Top-``counts[t]`` of every tensor t of every row of ``v`` ``[K, P]`` -> K sparse messages.
        Selection and gathering run on ``v``'s device; positions (int64) and values (float32) cross to the host."""
        idx_parts, val_parts = [], []
        for seg, k in zip(self.layout.segments, counts):
            block = v[:, seg.start : seg.stop]
            idx = topk_positions(block, k)
            idx_parts.append(idx)
            val_parts.append(block.gather(1, idx))
        idx_all = torch.cat(idx_parts, dim=1).cpu()
        val_all = torch.cat(val_parts, dim=1).detach().float().cpu()
        return [Message.sparse(self.sizes, counts, idx_all[i], val_all[i]) for i in range(v.shape[0])]

    def compress(self, v, ctx):
        return self.select(v, self.counts)
