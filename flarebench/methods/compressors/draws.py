"""The quantizers' random draws: a counter-based generator, the same numbers on every device and in every kernel.

Entry ``i`` of client ``ids[row]`` in round r draws ``z_i = splitmix64(key + (i + 1) * 0x9E3779B97F4A7C15)``
(Steele, Lea & Flood 2014: SplitMix64's output function applied to a Weyl sequence, which passes BigCrush) with
``key = ctx.seed_for(row, name)`` (run seed, round, client). Being a pure function of (key, i), a draw costs
a few integer operations where it is used: the compiled CPU kernels fuse it with the rounding (no ``[P]`` array
of uniforms, one pass over the update), and on another device the same numbers come from torch integer
operations (:func:`torch_bits`), so a client's message does not depend on where its update lives.

A uniform in [0, 1) is ``(z >> 40) / 2^24`` (float32, the 24-bit grid of ``torch.rand``); natural
compression's 23-bit integer is ``z >> 41``.
"""

from __future__ import annotations

import torch

from .kernels import GAMMA, MIX1, MIX2, UNIFORM_SCALE, mix, uniform  # noqa: F401 (mix, uniform: the compiled twins)


def _signed(c: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` (torch's ``>>`` is arithmetic on signed integers)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def torch_bits(key: int, start: int, stop: int, device, shift: int) -> torch.Tensor:
    """int64 ``[stop - start]`` on ``device``: ``z_i >> shift`` for i in [start, stop) (torch's int64 multiply wraps,
    as uint64 arithmetic does; the bits are those of :func:`mix`)."""
    i = torch.arange(start + 1, stop + 1, dtype=torch.int64, device=device)
    z = i * _signed(GAMMA) + _signed(key & 0xFFFFFFFFFFFFFFFF)
    z = (z ^ _shr(z, 30)) * _signed(MIX1)
    z = (z ^ _shr(z, 27)) * _signed(MIX2)
    z = z ^ _shr(z, 31)
    return _shr(z, shift)


def torch_uniforms(key: int, start: int, stop: int, device) -> torch.Tensor:
    """float32 ``[stop - start]`` on ``device``: the uniforms of :func:`uniform` for entries [start, stop)."""
    return torch_bits(key, start, stop, device, 40).to(torch.float32).mul_(float(UNIFORM_SCALE))


__all__ = ["mix", "uniform", "torch_bits", "torch_uniforms", "GAMMA"]
