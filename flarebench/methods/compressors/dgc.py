"""``dgc``: Deep Gradient Compression's sparsifier (Lin et al., ICLR 2018), on the round's update.

The preset pairs it with the ``dgc`` memory (momentum correction, momentum factor masking, optional
clipping: memory.py); this module is the selection and its warm-up:

- **Warm-up of densities** over the first ``warmup_rounds`` rounds W (the paper: sparsity 75%, 93.75%,
  98.4375%, 99.6%, 99.9% over the first epochs). Round r (0-based) sends density
  ``D^((r+1)/(W+1))`` for r < W and the run's density D = 1 - ``--sparsity`` after, the authors'
  code's geometric rule (``warmup_coeff = D^(1/(W+1))``); W = 4 at sparsity 0.999 gives the paper's
  sequence (74.9%, 93.7%, 98.4%, 99.6%, then 99.9%). One FL round (every client, one local epoch
  in the main job) stands for one of the paper's epochs. W = 0: no warm-up.
- **Sampled threshold, then refined** (the paper's implementation notes, the authors' code): per tensor of n
  entries sending k = tensor_k(n, density_r), draw s = max(ceil(f n), ceil(2 / density_r)) positions
  uniformly with replacement (f = ``sample_fraction``; the paper samples 0.1% to 1%; s >= n: all
  entries, no sampling); thr = the ceil(s k / n)-th largest |v| of the sample; entries with
  |v| >= thr pass. More than k pass: the exact top-k among them (the hierarchical selection: exactly
  k sent). Fewer than ``lower_bound`` * k pass: thr <- ``lower_bound`` * thr and count again, at
  most 10 times (the authors' code's adaptation; 0: never); then all that pass are sent (<= k).
  (The authors' code refines only above 1.3 k and otherwise cuts to the first k by position.)
  ``exact = true``: the exact top-k of every tensor instead (topk.topk_positions).
- Draws come from ``ctx.generator(row, "dgc", v.device)``, on the update's device: the same on every run on
  that device and on resume (the server never repeats them). Everything runs on the update's device; the
  positions (int64) and values (float32) sent cross to the host.

Payload: a sparse Message (positions with ``position_codec``, default the smallest per message;
values with ``value_codec``, default fp32); k varies per tensor and round. Bits per message:
header + positions + 32 bits per sent value (fp32).
``bound_bits``: sum_t log2 C(n_t, k_t) + 32 sum_t k_t (fp32 values; headers and padding not counted).

Deviations from the paper: the "gradient" is the client's round update d = w_i - w (the memory's
momentum and clipping act on d); the warm-up counts rounds, not epochs; the paper's learning-rate
warm-up is not part of the compressor. With clients that already train with momentum (the main job:
0.9), d is a sum of velocity steps, i.e. the paper's v += u already happens inside the round; the
memory's round-level m = 0.9 then adds a second momentum at server step 1 (about 10x the step) and
the main job diverges after ~10 rounds; ``-p memory.momentum=0`` learns (see docs/zoo.md).
"""

from __future__ import annotations

import math

import torch

from ...wire.message import Message
from ..registry import Param, in_unit_interval, non_negative, register
from .base import Sparsifier
from .topk import below, positions_above, topk_positions

MAX_ADAPTATION = 10  # the authors' code's max_adaptation_iters


def warmup_density(density: float, round_idx: int, warmup_rounds: int) -> float:
    """Density of round ``round_idx`` (0-based): ``density^((r+1)/(W+1))`` for r < W, ``density`` after."""
    if round_idx >= warmup_rounds:
        return density
    return density ** ((round_idx + 1) / (warmup_rounds + 1))


def sample_size(n: int, k: int, density: float, fraction: float) -> tuple[int, int]:
    """-> (entries sampled s, top entries of the sample k_s) for a tensor of ``n`` entries sending ``k``.

    s = min(n, max(ceil(fraction n), ceil(2 / density))); k_s = min(s, max(1, ceil(s k / n))).
    s == n means no sampling (the threshold comes from every entry).
    """
    s = min(n, max(math.ceil(fraction * n), math.ceil(2.0 / density)))
    return s, min(s, max(1, math.ceil(s * k / n)))


def in_fraction(x) -> bool:
    return 0 < x <= 1


@register
class DGC(Sparsifier):
    name = "dgc"
    summary = "DGC's selection: warm-up densities, top-k threshold from a random sample, refined to k"
    paper = "Lin et al., ICLR 2018"
    fixed_k = False  # the warm-up's k_t and the refined selection's (<= k) travel
    params = Sparsifier.params + (
        Param("warmup_rounds", int, 4, "rounds of exponentially decreasing density before the run's sparsity (0: none)",
              unit="rounds", check=non_negative, rule=">= 0", paper="Lin et al. 2018: 4 epochs, 75% ... 99.9%"),
        Param("sample_fraction", float, 0.01, "fraction of each tensor sampled to estimate the top-k threshold",
              check=in_fraction, rule="in (0, 1]", paper="Lin et al. 2018: 0.1% to 1%; authors' code: 1%"),
        Param("lower_bound", float, 0.8, "fewer than lower_bound * k pass: threshold *= lower_bound, count again "
              "(10 times at most; 0: never)", check=in_unit_interval, rule="in [0, 1)", paper="authors' code"),
        Param("exact", bool, False, "exact top-k per tensor instead of the sampled threshold"),
    )

    def round_counts(self, round_idx: int) -> tuple[int, ...]:
        """Entries sent per tensor in round ``round_idx`` (the warm-up's density, then the run's)."""
        return self.counts_at(self.round_density(round_idx))

    def round_density(self, round_idx: int) -> float:
        return warmup_density(self.density, round_idx, self.warmup_rounds)

    def threshold(self, block: torch.Tensor, k: int, density: float, g: torch.Generator) -> torch.Tensor | None:
        """The sampled threshold of one tensor ``block`` ``[n]`` (|v| >= thr pass), or None: no sampling (s == n)."""
        n = block.numel()
        s, ks = sample_size(n, k, density, self.sample_fraction)
        if s >= n:
            return None
        idx = torch.randint(n, (s,), generator=g, device=block.device)
        return block[idx].abs().topk(ks, sorted=False).values.min()

    def select_one(self, block: torch.Tensor, k: int, density: float, g: torch.Generator) -> torch.Tensor:
        """Sorted int64 positions sent of one tensor ``block`` ``[n]`` (see the module docstring)."""
        n = block.numel()
        if self.exact or k >= n:
            return topk_positions(block[None], k)[0]
        thr = self.threshold(block, k, density, g)
        if thr is None:
            return topk_positions(block[None], k)[0]
        passed = positions_above(block, below(thr))
        for _ in range(MAX_ADAPTATION if self.lower_bound > 0 else 0):
            if passed.numel() >= self.lower_bound * k:
                break
            thr = thr * self.lower_bound
            passed = positions_above(block, below(thr))
        if passed.numel() > k:  # hierarchical selection: the exact top-k of those that passed
            mag = block[passed].abs()
            keep = mag >= mag.kthvalue(passed.numel() - k + 1).values  # >= the k-th largest: ascending, no sort
            if int(keep.sum()) == k:
                return passed[keep]
            passed = passed[mag.topk(k, sorted=False).indices].sort().values  # ties at the k-th: torch.topk's choice
        return passed

    def compress(self, v, ctx):
        density = self.round_density(ctx.round_idx)
        counts = self.counts_at(density)
        out = []
        for row in range(v.shape[0]):
            g = ctx.generator(row, "dgc", v.device)
            idx, val = [], []
            for seg, k in zip(self.layout.segments, counts):
                block = v[row, seg.start : seg.stop]
                pos = self.select_one(block, k, density, g)
                idx.append(pos)
                val.append(block[pos])
            indices = torch.cat(idx).cpu()
            values = torch.cat(val).detach().float().cpu()
            out.append(Message.sparse(self.sizes, [p.numel() for p in idx], indices, values))
        return out
