"""What the unbiased quantizers (qsgd, terngrad, natural) share: draws on the update's device, stochastic
rounding, and the ``coder`` parameter (the entropy coder of wire/entropy.py, or the compressor's fixed packing).

Draws: client ``ids[row]`` of round r gets a torch generator on the update's device seeded with
``ctx.seed_for(row, name)`` (derived from run seed, round and client): the same draws for the same seed on
the same device, and on resume. The dense float update never leaves its device; what crosses to the host
is the coder's input (one byte per block of symbols, wire/entropy.py) and a few scales.
"""

from __future__ import annotations

import torch

from ..registry import Param, RoundContext
from .base import Compressor

CODER_HELP = ("ans = the symbols entropy-coded against the message's own histogram (its table travels): "
              "within ~0.5% of the empirical-entropy floor; ")


def coder_param(fixed: str, fixed_help: str) -> Param:
    """The ``coder`` parameter: ``ans`` (default) or the compressor's fixed packing ``fixed``."""
    return Param("coder", str, "ans", CODER_HELP + f"{fixed} = {fixed_help}", choices=("ans", fixed))


def generator_for(ctx: RoundContext, row: int, purpose: str, device) -> torch.Generator:
    """A torch generator on ``device`` for client ``ctx.ids[row]`` in this round."""
    return torch.Generator(device=device).manual_seed(ctx.seed_for(row, purpose))


def uniforms(ctx: RoundContext, row: int, purpose: str, n: int, device) -> torch.Tensor:
    """float32 ``[n]`` uniform in [0, 1) (a 24-bit grid) on ``device``, from :func:`generator_for`."""
    return torch.rand(n, generator=generator_for(ctx, row, purpose, device), device=device)


def stochastic_round_(y: torch.Tensor, u: torch.Tensor, limit: float) -> torch.Tensor:
    """``floor(y + u)`` in place, clipped to ``[-limit, limit]``: with u uniform in [0, 1) every entry becomes
    ``floor(y)`` or ``floor(y) + 1``, the latter with probability ``y - floor(y)``, so ``E = y`` (both signs).
    The clip only catches float rounding of ``y + u`` at ``|y| = limit``."""
    return y.add_(u).floor_().clamp_(-limit, limit)


def scaled(x: torch.Tensor, norm: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * x / norm`` per row (``x`` ``[m, d]``, ``norm`` ``[m]``; 0 where norm is 0), as
    ``x * (factor / norm)`` unless that overflows (a subnormal norm), then by division."""
    inv = torch.where(norm > 0, factor / norm, torch.zeros_like(norm))
    if bool(torch.isfinite(inv).all()):
        return x * inv[:, None]
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    return torch.where(norm[:, None] > 0, x / safe[:, None], torch.zeros_like(x)) * factor


class Quantizer(Compressor):
    """Base of qsgd, terngrad, natural: ``coder`` is ``ans`` (wire/entropy.py) or the fixed packing."""

    unbiased = True

    @property
    def entropy_coded(self) -> bool:
        return self.coder == "ans"


__all__ = ["Quantizer", "coder_param", "generator_for", "uniforms", "stochastic_round_", "scaled"]
