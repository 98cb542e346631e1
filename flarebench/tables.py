"""The comparison table as text: a rich table that fits the terminal, CSV, or Markdown.

    render(table, "table")     # rich: one table per dataset/model group, fitted to the console's width
    render(table, "csv")       # the raw numbers (bits, fractions, seconds), as compare.csv
    render(table, "markdown")  # GitHub Markdown, human units (as the docs' tables)

``table`` is :func:`flarebench.compare.summarize`'s DataFrame (one row per run). Run names are printed
in full: where two runs of different directories share a name, the path from their common directory
tells them apart; a name too long for its column is wrapped, never cut. On a terminal the table takes
its width; piped or redirected (or ``width`` given), it is the compact form: no vertical rules, at most
:data:`COMPACT_WIDTH` columns. Where even that is too wide, the least telling columns are left out
(:data:`DROP_ORDER`), then names are folded; a number is never cut. Columns are specs (:data:`COLUMNS`), so a table of seed groups (mean
and interval per experiment) can add its own.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass, replace
from typing import Callable

import pandas as pd

from .errors import ConfigError
from .units import human_bits, human_seconds

FORMATS = ("table", "csv", "markdown")
COMPACT_WIDTH = 120  # characters: piped output never exceeds it


def _na(v) -> bool:
    return v is None or bool(pd.isna(v))


def _acc(v) -> str:
    return "-" if _na(v) else f"{v:.4f}"


def _density(d) -> str:
    """Fraction of entries sent, e.g. ``0.1%`` or ``0.0021%``."""
    return "-" if _na(d) else f"{100 * d:.3g}%"


def _to_target(r) -> str:
    if _na(r.bits_to_target):
        return "not reached" if not _na(r.target_accuracy) else "-"
    return human_bits(r.bits_to_target)


def _to_target_at(r) -> str:
    """Bits and round to the target in one cell: ``1.74 Mib @50``."""
    return _to_target(r) + ("" if _na(r.rounds_to_target) else f" @{r.rounds_to_target}")


@dataclass(frozen=True)
class Column:
    """One printed column: header, the cell text of a row (a namedtuple of the table), alignment, and
    whether the compact (piped) form keeps it."""

    header: str
    cell: Callable
    justify: str = "right"
    wrap: bool = False  # text that may be wrapped (names); numbers never are


_RUN = Column("run", lambda r: r.run_shown, "left", wrap=True)
_METHOD = Column("method", lambda r: r.label, "left", wrap=True)
_SENT = Column("sent", lambda r: _density(r.sent_density))
_ROUNDS = Column("rounds", lambda r: f"{r.rounds_done}/{r.rounds_planned}")
_FINAL = Column("final acc", lambda r: _acc(r.final_accuracy))
_BEST = Column("best acc", lambda r: _acc(r.best_accuracy))
_UPLINK = Column("uplink", lambda r: human_bits(r.total_uplink_bits))
_DOWNLINK = Column("downlink", lambda r: human_bits(r.total_downlink_bits))
COLUMNS = [  # the full table (a wide terminal, Markdown)
    _RUN, _METHOD, _SENT, _ROUNDS, _FINAL, _BEST, _UPLINK,
    Column("vs dense", lambda r: "-" if _na(r.compression_ratio) else f"{r.compression_ratio:,.0f}x"),
    Column("bits to target", _to_target),
    Column("rounds to target", lambda r: "-" if _na(r.rounds_to_target) else str(r.rounds_to_target)),
    _DOWNLINK,
    Column("wall", lambda r: human_seconds(r.wall_time_s)),
]
COMPACT = [  # piped or narrow: short headers, bits and round to target in one cell, rounds only if a run is short
    _RUN, _METHOD, _SENT, _ROUNDS, replace(_FINAL, header="final"), replace(_BEST, header="best"), _UPLINK,
    Column("x dense", lambda r: "-" if _na(r.compression_ratio) else f"{r.compression_ratio:,.0f}"),
    Column("to target @round", _to_target_at),
    _DOWNLINK,
]


def shown_names(paths: list[str]) -> list[str]:
    """The shortest path suffixes (whole directory names) that tell the runs apart: ``flare-seed0``, or
    ``a/flare-seed0`` and ``b/flare-seed0`` for two runs of that name in different directories."""
    parts = [str(p).replace("\\", "/").rstrip("/").split("/") for p in paths]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(p[-d:]) for p, d in zip(parts, depth)]
        seen: dict[str, list[int]] = {}
        for i, n in enumerate(names):
            seen.setdefault(n, []).append(i)
        clashes = [i for ids in seen.values() if len(ids) > 1 for i in ids if depth[i] < len(parts[i])]
        if not clashes:
            return names
        for i in clashes:
            depth[i] += 1


def _rows(table: pd.DataFrame) -> pd.DataFrame:
    t = table.copy()
    t["run_shown"] = shown_names(list(t["path"])) if "path" in t and len(t) else list(t.get("run", []))
    return t


def _targets(table: pd.DataFrame) -> list[str]:
    out = []
    for g, sub in table.groupby("group", sort=True):
        target, source = sub["target_accuracy"].iloc[0], sub["target_source"].iloc[0]
        if not _na(target) and not math.isnan(target):
            out.append(f"target accuracy for {g}: {target:.4f} ({source})")
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown: the COLUMNS (and the group, if more than one), then each group's target."""
    t = _rows(table)
    cols = list(COLUMNS)
    if t["group"].nunique() > 1:
        cols.insert(2, Column("dataset/model", lambda r: r.group, "left"))
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(c.header for c in cols) + " |",
             "|" + "|".join("---" if c.justify == "left" else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(esc(c.cell(r)) for c in cols) + " |" for r in t.itertuples(index=False)]
    return "\n".join(lines + [""] + _targets(table)) + "\n"


def to_csv(table: pd.DataFrame) -> str:
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    return buf.getvalue()


DROP_ORDER = ["wall", "downlink", "sent", "rounds to target", "vs dense", "x dense", "best acc", "best", "rounds",
              "to target @round", "bits to target", "uplink"]  # first left out; run, method and final accuracy stay


def _rich_table(title: str, rows, cols: list[Column], compact: bool, name_width: int):
    from rich import box
    from rich.table import Table

    tab = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
                pad_edge=not compact, collapse_padding=compact,
                caption=None if compact else "sent: entries sent / dense entries, whole run; uplink: encoded bits, all "
                "clients; vs dense: 32-bit dense uplink / uplink; downlink: as --downlink counts it", caption_justify="left")
    for c in cols:  # names: whole where they fit, folded anywhere (never cut) if not; numbers: never folded
        tab.add_column(c.header, justify=c.justify, overflow="fold", no_wrap=not c.wrap, min_width=_least(c, rows, name_width))
    for r in rows:
        tab.add_row(*(c.cell(r) for c in cols))
    return tab


def _least(c: Column, rows, name_width: int) -> int:
    longest = max(len(str(c.cell(r))) for r in rows)
    return min(longest, name_width) if c.wrap else max(longest, len(c.header))


def _needs(cols: list[Column], rows, name_width: int) -> int:
    """Characters the table needs at least: its columns' least widths, a space each side of every cell."""
    return sum(_least(c, rows, name_width) + 2 for c in cols) + 1


def rich_tables(table: pd.DataFrame, compact: bool, width: int | None = None):
    """One rich Table per dataset/model group (title: the group and its run count). With ``width``
    (characters), columns are left out, least telling first (DROP_ORDER), until the table fits."""
    t = _rows(table)
    cols = COMPACT if compact else COLUMNS
    if compact and (t["rounds_done"] == t["rounds_planned"]).all():
        cols = [c for c in cols if c is not _ROUNDS]
    out = []
    for g, sub in t.groupby("group", sort=False):
        rows, kept = list(sub.itertuples(index=False)), list(cols)
        title = f"{g}: {len(rows)} run{'s' * (len(rows) != 1)}"
        for name_width in (28, 16, 8):
            while width and _needs(kept, rows, name_width) > width and any(c.header in DROP_ORDER for c in kept):
                kept.remove(min((c for c in kept if c.header in DROP_ORDER), key=lambda c: DROP_ORDER.index(c.header)))
            if not width or _needs(kept, rows, name_width) <= width:
                break
        out.append(_rich_table(title, rows, kept, compact, name_width))
    return out


def console_for(width: int | None = None):
    """A rich Console: the terminal's width on a terminal; else ``width`` or $COLUMNS, at most COMPACT_WIDTH."""
    from rich.console import Console

    c = Console()
    if width is None and c.is_terminal:
        return c
    cols = width or int(os.environ.get("COLUMNS", "0") or 0) or COMPACT_WIDTH
    return Console(width=min(cols, COMPACT_WIDTH), soft_wrap=False)


def render(table: pd.DataFrame, fmt: str = "table", console=None) -> None:
    """Print ``table`` in ``fmt`` (one of FORMATS) on ``console`` (default: :func:`console_for`)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format takes {', '.join(FORMATS)}; got {fmt!r}")
    console = console or console_for()
    if fmt == "csv":
        console.file.write(to_csv(table))
        return
    if fmt == "markdown":
        console.file.write(to_markdown(table))
        return
    compact = not console.is_terminal or console.width <= COMPACT_WIDTH + 20
    for tab in rich_tables(table, compact, console.width):
        console.print(tab)
    for line in _targets(table):
        console.print(line, highlight=False)


__all__ = ["render", "to_csv", "to_markdown", "rich_tables", "console_for", "shown_names", "COLUMNS", "COMPACT", "FORMATS", "Column"]
