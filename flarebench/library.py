"""Parts outside a flarebench run: build any registered part for your own tensors and call it yourself.

The objects are the ones a run builds (same classes, same parameters, same bytes); this module only
supplies the :class:`PartContext` a run would. Shapes: ``P`` = entries of all tensors together; a batch of
client updates is float32 ``[K, P]`` (one flattened update per row, tensors concatenated in ``shapes``
order: ``Layout.flatten`` / ``Layout.unflatten`` convert). Bits are ``8 * len(bytes)`` of what ``encode`` returns.

docs/api.md, "A compressor in your own code", shows a round in ten lines; tests/test_library.py runs exactly that.
"""

from __future__ import annotations

from typing import Any, Iterable

from torch import nn

from .flat import Layout
from .methods.presets import Parts, assemble, resolve
from .methods.registry import KINDS, WORLD_KINDS, Part, PartContext, RoundContext, make_part, part_class, resolve_params


def layout_of(shapes: Layout | nn.Module | Iterable) -> Layout:
    """A Layout from a model (its trainable tensors), a Layout, or a list of shapes (an int is a vector's length)."""
    if isinstance(shapes, Layout):
        return shapes
    if isinstance(shapes, nn.Module):
        return Layout.of(shapes)
    return Layout.from_shapes(list(shapes))


def context(shapes, *, clients: int = 1, sparsity: float = 0.999, seed: int = 0, device=None) -> PartContext:
    """The PartContext a run with ``clients`` clients, ``--sparsity`` and ``--seed`` would give its parts."""
    return PartContext(layout_of(shapes), clients, sparsity, seed, device)


def build(kind: str, name: str, shapes=None, *, clients: int = 1, sparsity: float = 0.999, seed: int = 0, device=None,
          **params: Any) -> Part:
    """Part ``name`` of ``kind`` for tensors ``shapes``: a compressor, memory, aggregator or regularizer (built
    with the context a run gives it), or a model, dataset or partition (``shapes`` unused: these are built from
    their parameters alone; ``model.build(input_shape, num_classes)``, ``dataset.load(root, download, seed)``).

    ``name`` may be an import reference (``pkg.mod:Name``, ``file.py:Name``) as on the command line. ``params``:
    the part's declared parameters (``flarebench parts`` lists them), checked as on the command line
    (ConfigError on an unknown name or bad value). ``sparsity``: fraction of entries NOT sent (the run's
    ``--sparsity``; sparsifiers send ``1 - sparsity`` of each tensor).
    """
    if kind in WORLD_KINDS:
        return make_part(kind, name, params)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS + WORLD_KINDS)}, got {kind!r}")
    ctx = context(shapes, clients=clients, sparsity=sparsity, seed=seed, device=device)
    return part_class(kind, name)(ctx, **resolve_params(kind, name, params))


def build_method(method: str, shapes, *, clients: int = 1, sparsity: float = 0.999, seed: int = 0, device=None,
                 params: dict[str, dict] | None = None, **parts: str) -> Parts:
    """The four parts of preset ``method`` (e.g. ``topk-ef``: topk + residual memory + weighted mean), with
    ``parts`` replacing some (``compressor="stc"``) and ``params`` ``{kind: {param: value}}`` as in a TOML file."""
    names, resolved = resolve(method, parts, params)
    ctx = context(shapes, clients=clients, sparsity=sparsity, seed=seed, device=device)
    return assemble(names, resolved, ctx)


__all__ = ["build", "build_method", "context", "layout_of", "RoundContext", "Layout"]
