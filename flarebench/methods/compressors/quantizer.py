"""What the unbiased quantizers (qsgd, terngrad, natural) share: draws on the update's device, stochastic
rounding, and the ``coder`` parameter (the entropy coders of wire/rans.py and wire/entropy.py, or the
compressor's fixed packing).

Draws: entry i of client ``ids[row]`` in round r uses the counter-based draw of draws.py keyed by
``ctx.seed_for(row, name)`` (run seed, round, client): the same numbers on every device and on resume. On the
CPU the draw, the scaling and the rounding are one compiled pass (kernels.py); on another device they
are torch operations there with the same draws, so the message is the same. The dense float update never
leaves its device; what crosses to the host is the coder's input (one byte per block of symbols) and a few
scales.
"""

from __future__ import annotations

import numpy as np
import torch

from ...wire import entropy, rans
from ...wire.frame import ByteReader, ByteWriter
from ..registry import Param
from .base import Compressor

CODER_HELP = ("the symbols entropy-coded against the message's own histogram (its table travels): "
              "rans = flarebench's compiled rANS (16-bit model, ~0.2% above the empirical-entropy floor, ~10x faster "
              "than ans); ans = constriction's ANS (24-bit model, ~0.01% above); ")
CODERS = {"rans": rans, "ans": entropy}  # coder name -> module with encode_symbols / decode_symbols


def coder_param(fixed: str, fixed_help: str) -> Param:
    """The ``coder`` parameter: ``rans`` (default), ``ans`` or the compressor's fixed packing ``fixed``."""
    return Param("coder", str, "rans", CODER_HELP + f"{fixed} = {fixed_help}", choices=(*CODERS, fixed))


def stochastic_round_(y: torch.Tensor, u: torch.Tensor, limit: float) -> torch.Tensor:
    """``floor(y + u)`` in place, clipped to ``[-limit, limit]``: with u uniform in [0, 1) every entry becomes
    ``floor(y)`` or ``floor(y) + 1``, the latter with probability ``y - floor(y)``, so ``E = y`` (both signs).
    The clip only catches float rounding of ``y + u`` at ``|y| = limit``; NaN (a diverged update) becomes 0."""
    return y.add_(u).floor_().clamp_(-limit, limit).nan_to_num_(0.0)


def inverse_norms(norm: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor / norm`` (0 where norm is not > 0), float32 like ``norm``: what :func:`scaled` multiplies by."""
    return torch.where(norm > 0, factor / norm, torch.zeros_like(norm))


def scaled(x: torch.Tensor, norm: torch.Tensor, factor: float) -> torch.Tensor:
    """``factor * x / norm`` per row (``x`` ``[m, d]``, ``norm`` ``[m]``): ``x * (factor / norm)``, by division
    ``(x / norm) * factor`` in a row where ``factor / norm`` overflows (a subnormal norm), 0 where norm is not > 0.
    The compiled kernels (kernels.py) compute the same per row."""
    inv = inverse_norms(norm, factor)
    ok = torch.isfinite(inv)  # no branch on it: that would wait for the device (the CPU runs the compiled kernels)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    divided = torch.where(norm[:, None] > 0, x / safe[:, None] * factor, torch.zeros_like(x))
    return torch.where(ok[:, None], x * inv[:, None], divided)


class Quantizer(Compressor):
    """Base of qsgd, terngrad, natural: ``coder`` is ``rans`` (wire/rans.py), ``ans`` (wire/entropy.py) or the
    fixed packing."""

    unbiased = True

    def compress(self, v: torch.Tensor, ctx) -> list:
        """Each client's row of ``v`` ``[K, P]`` with its own draws (key ``ctx.seed_for(row, name)``)."""
        x = v.detach().float()
        return [self.compress_row(x[row], ctx.seed_for(row, self.name)) for row in range(x.shape[0])]

    def compress_row(self, x: torch.Tensor, key: int):
        """One client's update ``x`` ``[P]`` float32 and its draws' key (draws.py) -> its payload."""
        raise NotImplementedError

    @property
    def entropy_coded(self) -> bool:
        return self.coder in CODERS

    def encode_symbols(self, w: ByteWriter, symbols: torch.Tensor, alphabet: int) -> None:
        """``symbols`` (int ``[count]`` in ``[0, alphabet)``, any device) through the entropy coder ``coder``."""
        CODERS[self.coder].encode_symbols(w, symbols, alphabet)

    def decode_symbols(self, r: ByteReader, count: int, alphabet: int) -> np.ndarray:
        """Inverse of :meth:`encode_symbols`: ``count`` symbols (uint8, or int32 past 256); DecodeError if malformed."""
        return CODERS[self.coder].decode_symbols(r, count, alphabet)


__all__ = ["Quantizer", "coder_param", "stochastic_round_", "inverse_norms", "scaled"]
