"""Flat parameter vectors with per-tensor segments.

The whole pipeline works on one flat float32 vector ``[P]`` (or a stack ``[K, P]`` for
K clients). A :class:`Layout` remembers which slice of it belongs to which trainable
tensor, so compressors can work per tensor and a model can be evaluated from a flat vector.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def offsets(sizes) -> list[int]:
    """Where each of consecutive blocks of ``sizes`` entries starts in their concatenation: ``[0, s0, s0+s1, ...]``."""
    out, start = [], 0
    for n in sizes:
        out.append(start)
        start += int(n)
    return out


@dataclass(frozen=True)
class Segment:
    """One trainable tensor: ``name``, ``shape``, and its slice ``[start, start + numel)``."""

    name: str
    shape: tuple[int, ...]
    start: int
    numel: int

    @property
    def stop(self) -> int:
        return self.start + self.numel


class Layout:
    """Ordered segments of a model's trainable parameters (kernels and biases alike)."""

    def __init__(self, segments: list[Segment]):
        self.segments = list(segments)
        self.num_params = sum(s.numel for s in self.segments)

    @classmethod
    def of(cls, model: nn.Module) -> "Layout":
        return cls.named([(name, tuple(p.shape)) for name, p in model.named_parameters() if p.requires_grad])

    @classmethod
    def named(cls, shapes: list[tuple[str, tuple[int, ...]]]) -> "Layout":
        """Tensors ``(name, shape)`` laid end to end in this order."""
        numels = [math.prod(shape) for _, shape in shapes]
        return cls([Segment(name, shape, start, n) for (name, shape), start, n in zip(shapes, offsets(numels), numels)])

    @classmethod
    def from_shapes(cls, shapes) -> "Layout":
        """A layout of tensors ``t0, t1, ...`` with these shapes (an int is a vector's length): for tests and tools."""
        return cls.named([(f"t{i}", (shape,) if isinstance(shape, int) else tuple(int(d) for d in shape))
                          for i, shape in enumerate(shapes)])

    @property
    def sizes(self) -> list[int]:
        """Entries per tensor, in layout order."""
        return [s.numel for s in self.segments]

    def __len__(self) -> int:
        return len(self.segments)

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """Model parameters -> a new flat float32 vector ``[P]``."""
        params = dict(model.named_parameters())
        return torch.cat([params[s.name].detach().reshape(-1).float() for s in self.segments])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat ``[P]`` -> ``{name: view}``; views share memory (and autograd) with ``flat``."""
        return {s.name: flat[s.start : s.stop].view(s.shape) for s in self.segments}

    def segment_ids(self, device=None) -> torch.Tensor:
        """``[P]`` int64: the segment index of every entry."""
        sizes = torch.tensor(self.sizes, device=device)
        return torch.repeat_interleave(torch.arange(len(self.segments), device=device), sizes)

    def describe(self) -> list[dict]:
        """JSON-ready per-tensor sizes (for config.json)."""
        return [{"name": s.name, "shape": list(s.shape), "numel": s.numel} for s in self.segments]
