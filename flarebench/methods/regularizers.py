"""Local regularizers: extra loss terms that pull a client's local weights toward an anchor.

A regularizer is asked once per round for an :class:`Anchor` (batched over the K clients of the
round) and the engine adds ``penalty(theta, anchor row)`` to the loss of the first
``anchor.steps`` local steps (all steps when ``steps`` is None). ``penalty`` is a pure function
of tensors, so the vectorized engine can vmap it.

- ``none``: no term.
- ``flare`` (Greidi & Cohen): ``tau_r * sum_j m_j |theta_j - (w_j + A_j)|`` on the first p steps,
  ``m`` = entries whose accumulated error ``|A|`` exceeds the per-tensor t-th percentile
  ('nearest' percentile, as tfp.stats.percentile in the reference), ``tau_r = tau0 / c**(r+1)``.
- ``prox`` (FedProx as in the FLARE reference): ``tau_r * sum_j (theta_j - w_j)**2`` on all steps,
  same schedule. Note: no 1/2 factor, as in the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..flat import Layout
from .registry import FLOAT32_MAX, Param, Part, non_negative, positive, register


@dataclass
class Anchor:
    """Batched pull for K clients. ``target``: ``[K, P]``; ``weight``: ``[K, P]`` or None (all ones)."""

    target: torch.Tensor
    weight: torch.Tensor | None
    tau: float
    steps: int | None  # local steps the term is active for; None = every step

    def active(self, step: int) -> bool:
        return self.tau != 0.0 and (self.steps is None or step < self.steps)

    def rows(self, index) -> "Anchor":
        """The anchor restricted to some clients (rows)."""
        return Anchor(self.target[index], None if self.weight is None else self.weight[index], self.tau, self.steps)


def tau_schedule(tau0: float, decay: float, round_idx: int) -> float:
    """``tau0 / decay**(round_idx + 1)``, round_idx counted from 0 (the reference decays before use).
    Where ``decay**(round_idx + 1)`` overflows float64 (decay 1.1: after 7447 rounds) it is its limit, 0."""
    try:
        return tau0 / decay ** (round_idx + 1)
    except OverflowError:
        return 0.0


def schedule_problem(tau0: float, decay: float, rounds: int) -> str | None:
    """Why ``tau_r = tau0 / decay**(r+1)`` is not finite for every round ``r < rounds``, or None:
    ``decay**(r+1)`` underflows to 0 (float64: a division by zero), or ``tau_r`` exceeds float32 (the
    loss is float32: the pull would be inf). Both are monotone in ``r``: the first failing round is
    found by bisection."""

    def problem(r: int) -> str | None:
        try:
            tau = tau_schedule(tau0, decay, r)
        except ZeroDivisionError:
            return f"decay^{r + 1} underflows to 0 at round {r + 1}"
        return f"tau_r is {tau:.3g} at round {r + 1}, above float32's {FLOAT32_MAX:.3g}" if tau > FLOAT32_MAX else None

    if problem(0) or not problem(rounds - 1):
        return problem(0)
    ok, bad = 0, rounds - 1  # problem(ok) is None, problem(bad) is not
    while bad - ok > 1:
        mid = (ok + bad) // 2
        ok, bad = (ok, mid) if problem(mid) else (mid, bad)
    return problem(bad)


_TAU0 = "regularizer weight tau_0 before decay"
_DECAY = "decay c of tau_r = tau_0 / c^(r+1), r counted from 0; tau_r must stay finite (float32) over the run's rounds"


class Regularizer(Part):
    """Base, and the ``none`` regularizer: no term. Subclasses override :meth:`anchor` and :meth:`penalty`."""

    kind = "regularizer"
    name = "none"
    summary = "no extra loss term"
    needs_residual = False  # whether the anchor is built from the memory's unsent remainder

    def anchor(self, w: torch.Tensor, residual: torch.Tensor | None, round_idx: int, num_clients: int) -> Anchor | None:
        """Anchor for this round's K clients; ``w``: ``[P]``; ``residual``: ``[K, P]`` memory remainder or None."""
        return None

    @staticmethod
    def penalty(theta: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, tau: float) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def check_run(cls, params, cfg):
        """The schedule ``tau0 / decay**(r+1)`` must stay finite over the run's rounds."""
        if "decay" not in params:
            return None
        problem = schedule_problem(params["tau0"], params["decay"], cfg.rounds)
        if problem:
            return (f"regularizer {cls.name}: tau_r = tau0 / decay^(r+1) with tau0={params['tau0']!r}, "
                    f"decay={params['decay']!r} must stay finite over the run's {cfg.rounds} rounds: {problem}")
        return None

    @classmethod
    def check(cls, parts):
        if cls.needs_residual and not parts.memory.has_residual:
            return (f"regularizer {cls.name} pulls toward w + the memory's unsent remainder, and memory "
                    f"'{parts.memory.name}' keeps none: use --memory residual (or dgc)")
        return None


register(Regularizer)


@register
class FlareRegularizer(Regularizer):
    """FLARE's masked L1 pull toward ``w + A`` (the model with the unsent update applied)."""

    name = "flare"
    summary = "tau_r * sum m |w_i - (w + A_i)| on the first p local steps, m = |A| above the t-th percentile"
    paper = "Greidi & Cohen 2023 (FLARE)"
    needs_residual = True
    params = (
        Param("tau0", float, 0.05, _TAU0, check=non_negative, rule=">= 0", paper="Greidi & Cohen 2023"),
        Param("decay", float, 1.1, _DECAY, check=positive, rule="> 0", paper="Greidi & Cohen 2023"),
        Param("steps", int, 1, "p: local steps per round with the pull", unit="steps", check=non_negative, rule=">= 0"),
        Param("percentile", float, 50.0, "t: pull entries whose |A| is above this per-tensor percentile", unit="percent",
              check=lambda x: 0 <= x <= 100, rule="in [0, 100]"),
    )

    def anchor(self, w, residual, round_idx, num_clients):
        if residual is None:
            raise ValueError("FLARE needs an error-feedback memory (its anchor is w + accumulator)")
        return Anchor(
            target=w.unsqueeze(0) + residual,
            weight=percentile_mask(residual, self.ctx.layout, self.percentile).to(residual.dtype),
            tau=tau_schedule(self.tau0, self.decay, round_idx),
            steps=self.steps,
        )

    @staticmethod
    def penalty(theta, target, weight, tau):
        return tau * (weight * (theta - target).abs()).sum()


@register
class ProxRegularizer(Regularizer):
    """FedProx's squared pull toward the round's global weights ``w`` (all local steps)."""

    name = "prox"
    summary = "tau_r * ||w_i - w||^2 on every local step (FedProx, the FLARE reference's schedule)"
    paper = "Li et al., MLSys 2020 (FedProx)"
    params = (
        Param("tau0", float, 0.05, _TAU0, check=non_negative, rule=">= 0", paper="Greidi & Cohen 2023 (reference code)"),
        Param("decay", float, 1.1, _DECAY, check=positive, rule="> 0"),
    )

    def anchor(self, w, residual, round_idx, num_clients):
        return Anchor(w.unsqueeze(0).expand(num_clients, -1), None, tau_schedule(self.tau0, self.decay, round_idx), None)

    @staticmethod
    def penalty(theta, target, weight, tau):
        return tau * (theta - target).square().sum()


def percentile_mask(acc: torch.Tensor, layout: Layout, q: float) -> torch.Tensor:
    """``[K, P]`` bool: ``|acc| > percentile_q(|acc|)`` per client and per tensor.

    'nearest' percentile: the ``round(q/100 * (n-1))``-th smallest magnitude (0-based), as
    tfp.stats.percentile's default in the reference code.
    """
    mags = acc.abs()
    mask = torch.empty_like(mags, dtype=torch.bool)
    for seg in layout.segments:
        block = mags[:, seg.start : seg.stop]
        rank = int(round(q / 100.0 * (seg.numel - 1)))
        thr = block.kthvalue(rank + 1, dim=1, keepdim=True).values
        mask[:, seg.start : seg.stop] = block > thr
    return mask
