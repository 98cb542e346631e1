"""A method's look in every figure, and its family: derived from the registries, never listed by hand.

A :class:`Style` is a colour x marker x line style. :data:`POOL_SIZE` (224) distinct styles exist;
the first :data:`SPAN` (56) each have their own (colour, marker) pair, so they are told apart even
without lines (the frontier), and the later ones repeat those pairs with another line style. The built-in presets take styles 0, 1, 2, ... in preset order
(methods/presets.py), so ``none`` is always black circles on a solid line; any other method name (a
preset from a plug-in package or a user config, a preset with a replaced part such as ``flare+stc``)
takes the style at a hash of its name in the part of the first 56 that no preset uses (of all 224 once
those are taken), moved on to the next free style where another method of the same figure already has
it (:func:`method_styles`).

Colours: the Okabe-Ito palette without its yellow (too light on white): colour-blind safe; the
markers and line styles tell apart methods that share a colour.

A method's family is its compressor's ``family`` (a class attribute of the compressor part:
``dense``, ``sparsifier``, ``quantizer``, ``sign``, ``low-rank/sketch``, or ``other``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable

# Okabe-Ito without its yellow, ordered so that neighbours (which share a marker 8 styles apart) differ most
COLORS = ("#000000", "#E69F00", "#0072B2", "#009E73", "#D55E00", "#56B4E9", "#CC79A7")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
DASHES = ("-", "--", ":", "-.")
SPAN = len(COLORS) * len(MARKERS)  # 56 styles of distinct (colour, marker) pairs (7 and 8 are coprime)
POOL_SIZE = SPAN * len(DASHES)  # 224 distinct (colour, marker, line style)
FILLS = ("full", "none", "left", "bottom", "right", "top")  # variants of one method (e.g. its sparsities)

FAMILY_ORDER = ("dense", "sparsifier", "quantizer", "sign", "low-rank/sketch", "other")
FAMILY_TITLES = {"dense": "uncompressed", "sparsifier": "sparsifiers", "quantizer": "quantizers", "sign": "sign",
                 "low-rank/sketch": "low-rank / sketch", "other": "other"}


@dataclass(frozen=True)
class Style:
    """How one method is drawn: ``color`` (hex), ``marker`` (matplotlib marker), ``dash`` (line style)."""

    color: str
    marker: str
    dash: str

    def line_kwargs(self, fill: str = "full") -> dict:
        """Keyword arguments for ``ax.plot`` (line + a marker at every point); ``fill``: one of FILLS."""
        return {"color": self.color, "marker": self.marker, "linestyle": self.dash, "fillstyle": fill,
                "markerfacecolor": "white" if fill == "none" else self.color, "markerfacecoloralt": "white",
                "markeredgecolor": self.color}


def style_at(i: int) -> Style:
    """The pool's style ``i`` (0 <= i < POOL_SIZE); distinct for distinct ``i``."""
    if not 0 <= i < POOL_SIZE:
        raise ValueError(f"style index {i} is outside 0..{POOL_SIZE - 1}")
    dash = (i // len(COLORS) + i // SPAN) % len(DASHES)  # shifts by one per block of 56: triples unique below POOL_SIZE
    return Style(COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)], DASHES[dash])


def builtin_methods() -> list[str]:
    """The presets that own styles 0, 1, ...: every preset of the registry, in preset order."""
    from .methods.presets import method_names

    return method_names()


def _hash_slot(name: str, taken: set[int]) -> int:
    """A free style for a name that is not a built-in preset: its hash, then the next one free; among
    the first SPAN styles (each its own colour and marker, so told apart without lines) while any is free."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    for size in (SPAN, POOL_SIZE):
        free = [i for i in range(size) if i not in taken]
        if free:
            start = h % size
            return min(free, key=lambda i: (i - start) % size)
    raise ValueError(f"more than {POOL_SIZE} methods in one figure")


def method_styles(names: Iterable[str]) -> dict[str, Style]:
    """A distinct style per method name of one figure: built-in presets by preset order, others by hash
    (in sorted order of their names, so the result does not depend on the order they are passed in)."""
    names = list(dict.fromkeys(names))
    builtin = builtin_methods()
    index = {n: i for i, n in enumerate(builtin)}
    taken = set(range(len(builtin)))  # the presets' styles are never given to another name
    out = {n: style_at(index[n]) for n in names if n in index}
    for n in sorted(n for n in names if n not in index):
        slot = _hash_slot(n, taken)
        taken.add(slot)
        out[n] = style_at(slot)
    return {n: out[n] for n in names}


def method_style(name: str) -> Style:
    """The style of one method drawn alone (a figure with other non-preset names may move it: method_styles)."""
    return method_styles([name])[name]


def method_color(name: str) -> str:
    """The colour of ``name`` (see method_style)."""
    return method_style(name).color


def family_of(config: dict) -> str:
    """The family of a run's config (config.json's ``config``): its compressor part's ``family``."""
    from .methods.presets import _compressor_of
    from .methods.registry import REGISTRY, load_parts

    load_parts()
    cls = REGISTRY["compressor"].get(_compressor_of(config))
    return str(getattr(cls, "family", "") or "other")


def family_rank(family: str) -> tuple:
    """Sort key of families: FAMILY_ORDER, then any other family a plug-in declares, by name."""
    return (FAMILY_ORDER.index(family), "") if family in FAMILY_ORDER else (len(FAMILY_ORDER), family)


def family_title(family: str) -> str:
    return FAMILY_TITLES.get(family, family)


__all__ = ["Style", "style_at", "method_styles", "method_style", "method_color", "family_of", "family_rank", "family_title", "builtin_methods",
           "COLORS", "MARKERS", "DASHES", "FILLS", "POOL_SIZE", "SPAN", "FAMILY_ORDER", "FAMILY_TITLES"]
