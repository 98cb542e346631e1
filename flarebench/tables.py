"""The comparison table as text: a rich table that fits the terminal, CSV, or Markdown.

    render(table, "table")     # rich: one table per dataset/model group, fitted to the console's width
    render(table, "csv")       # the raw numbers (bits, fractions, seconds), as compare.csv
    render(table, "markdown")  # GitHub Markdown, human units (as the README's tables)

``table`` is :func:`flarebench.compare.summarize`'s DataFrame (one row per run) or the grouped table of
:func:`flarebench.compare.summarize_groups` (one row per group of seeds: a metric as ``mean ±h``, h the
half-width of its 95% t-interval; ``> X`` where some seeds never reached the target). Run names are printed
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
from .units import human_bits, human_bits_pm, human_seconds

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


def _at_budget(r) -> str:
    return _acc(r.accuracy_at_budget)


def _has(column: str) -> Callable[[pd.DataFrame], bool]:
    """A Column's ``show``: the table has ``column`` with a value somewhere (e.g. only with --budget)."""
    return lambda t: column in t and bool(t[column].notna().any())


@dataclass(frozen=True)
class Column:
    """One printed column: header, the cell text of a row (a namedtuple of the table), alignment,
    whether it may wrap, and when it is shown (``show(table)``; default always)."""

    header: str
    cell: Callable
    justify: str = "right"
    wrap: bool = False  # text that may be wrapped (names); numbers never are
    show: Callable[[pd.DataFrame], bool] | None = None


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
    Column("acc at budget", _at_budget, show=_has("budget_bits")),
    _DOWNLINK,
    Column("wall", lambda r: human_seconds(r.wall_time_s)),
]
COMPACT = [  # piped or narrow: short headers, bits and round to target in one cell, rounds only if a run is short
    _RUN, _METHOD, _SENT, _ROUNDS, replace(_FINAL, header="final"), replace(_BEST, header="best"), _UPLINK,
    Column("x dense", lambda r: "-" if _na(r.compression_ratio) else f"{r.compression_ratio:,.0f}"),
    Column("to target @round", _to_target_at),
    Column("@budget", _at_budget, show=_has("budget_bits")),
    _DOWNLINK,
]


# ---------------------------------------------------------------------------------------- groups of seeds
def _ends(r, m: str) -> tuple[float, float, float]:
    return getattr(r, f"{m}_mean"), getattr(r, f"{m}_low"), getattr(r, f"{m}_high")


def mean_pm(mean: float, low: float, high: float) -> str:
    """An accuracy over seeds: ``0.9572 ±0.0041`` (±: half the 95% interval), no interval ``0.9572``."""
    if _na(mean):
        return "-"
    return _acc(mean) if _na(low) else f"{mean:.4f} ±{(high - low) / 2:.4f}"


def _pm(r, m: str) -> str:
    return mean_pm(*_ends(r, m))


def to_target(r, m: str) -> str:
    """Bits (``m = 'bits_to_target'``) or rounds to target of a grouped row: ``mean ±h``; not every seed
    reached the target: ``> X``; none did: ``not reached``."""
    return _censored(r, m, human_bits_pm if m == "bits_to_target" else _rounds_pm)


def _censored(r, m: str, fmt: Callable[[float, float], str]) -> str:
    """Bits/rounds to target over seeds: ``mean ±h``; some seeds not reached: ``> X``; none: ``not reached``."""
    mean, low, high = _ends(r, m)
    if _na(mean):
        return "-"
    if math.isinf(mean):
        bound = getattr(r, f"{m}_censored_mean")
        return "not reached" if math.isinf(low) else "> " + fmt(bound, math.nan)
    return fmt(mean, math.nan if _na(low) else (high - low) / 2)


def _of(r) -> str:
    """`` (k/n)`` after bits to target where some seed did not reach it."""
    k, n = (r.reached or "/").split("/")
    return f" ({r.reached})" if k and k != n else ""


def _rounds_pm(mean: float, half: float) -> str:
    return f"{mean:.0f}" if _na(half) else f"{mean:.0f} ±{half:.0f}"


def _diff(r) -> str:
    if _na(r.diff_mean):
        return "-"
    return f"{r.diff_mean:+.4f}" if _na(r.diff_low) else f"{r.diff_mean:+.4f} ±{(r.diff_high - r.diff_low) / 2:.4f}"


_SEEDS = Column("seeds", lambda r: str(r.seeds))
_G_METHOD = Column("method", lambda r: r.label, "left", wrap=True)
_G_UPLINK = Column("uplink", lambda r: human_bits(r.total_uplink_bits_mean))
_G_BITS = Column("bits to target", lambda r: to_target(r, "bits_to_target"))
_G_ROUNDS = Column("rounds to target", lambda r: to_target(r, "rounds_to_target"))
_REACHED = Column("reached", lambda r: r.reached or "-", show=lambda t: bool((t["reached"].fillna("") != "").any()))
_G_BUDGET = Column("acc at budget", lambda r: _pm(r, "accuracy_at_budget"), show=_has("budget_bits"))
_VS = Column("diff vs baseline", _diff, show=_has("verdict"))
_VERDICT = Column("verdict", lambda r: "-" if _na(r.verdict) else r.verdict, "left", wrap=True, show=_has("verdict"))
GROUP_COLUMNS = [
    _G_METHOD, _SEEDS,
    Column("final acc", lambda r: _pm(r, "final_accuracy")),
    Column("best acc", lambda r: _pm(r, "best_accuracy")),
    Column("mean acc", lambda r: _pm(r, "mean_accuracy")),
    _G_BUDGET, _G_UPLINK, _G_BITS, _G_ROUNDS, _REACHED, _VS, _VERDICT,
]
GROUP_COMPACT = [
    _G_METHOD, _SEEDS,
    Column("final", lambda r: _pm(r, "final_accuracy")),
    Column("best", lambda r: _pm(r, "best_accuracy")),
    Column("mean", lambda r: _pm(r, "mean_accuracy")),
    Column("@budget", lambda r: _pm(r, "accuracy_at_budget"), show=_has("budget_bits")),
    _G_UPLINK, Column("to target (reached)", lambda r: _G_BITS.cell(r) + _of(r)), Column("rounds", _G_ROUNDS.cell),
    Column("diff", _diff, show=_has("verdict")),
    Column("verdict", lambda r: _VERDICT.cell(r).replace("no significant difference", "not significant"), "left", wrap=True,
           show=_has("verdict")),
]


def is_grouped(table: pd.DataFrame) -> bool:
    """A grouped table (one row per group of seeds) rather than one row per run."""
    return "seeds" in table.columns and "run" not in table.columns


def _columns(table: pd.DataFrame, compact: bool) -> list[Column]:
    cols = (GROUP_COMPACT if compact else GROUP_COLUMNS) if is_grouped(table) else (COMPACT if compact else COLUMNS)
    return [c for c in cols if c.show is None or c.show(table)]


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
    if "path" in t and len(t):
        t["run_shown"] = shown_names(list(t["path"]))
    elif "run" in t:
        t["run_shown"] = list(t["run"])
    return t


def _targets(table: pd.DataFrame) -> list[str]:
    """The lines under the table: each group's target, the budget, what ± and the verdicts mean."""
    out = []
    for g, sub in table.groupby("group", sort=True):
        target, source = sub["target_accuracy"].iloc[0], sub["target_source"].iloc[0]
        if not _na(target) and not math.isnan(target):
            out.append(f"target accuracy for {g}: {target:.4f} ({source})")
    if "budget_bits" in table and table["budget_bits"].notna().any():
        b = float(table["budget_bits"].dropna().iloc[0])
        out.append(f"accuracy at budget: at the last evaluation within {human_bits(b)} ({b:.6g} bits) of cumulative uplink")
    if is_grouped(table) and (table["seeds"] > 1).any():
        out.append("±: half-width of the 95% Student-t interval over seeds; > X: not every seed reached the target "
                   "(X: the mean, those at their horizon)")
    if "verdict" in table and table["verdict"].notna().any():
        base = table.loc[table["verdict"] == "baseline", "method"]
        metric = table["diff_metric"].dropna().iloc[0]
        out.append(f"diff: {metric} minus its baseline's{' (' + base.iloc[0] + ')' if len(base) else ''}, 95% t-interval "
                   f"(paired by seed if >= 2 seeds are common, else Welch's)")
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown: the full columns (and the group, if more than one), then the notes (targets, ...)."""
    t = _rows(table)
    cols = _columns(table, compact=False)
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


DROP_ORDER = ["wall", "downlink", "sent", "best acc", "best", "mean acc", "mean", "rounds to target", "vs dense", "x dense",
              "rounds", "reached", "uplink", "acc at budget", "@budget", "to target @round", "bits to target", "to target (reached)",
              "diff vs baseline", "diff"]  # first left out; run, method, seeds, final accuracy and verdict stay


CAPTION = ("sent: entries sent / dense entries, whole run; uplink: encoded bits, all clients; vs dense: 32-bit dense "
           "uplink / uplink; downlink: as --downlink counts it")
GROUP_CAPTION = "uplink: encoded bits of a run, all clients, mean over seeds; reached: seeds reaching the target"


def _rich_table(title: str, rows, cols: list[Column], compact: bool, name_width: int, caption: str = CAPTION):
    from rich import box
    from rich.table import Table

    tab = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
                pad_edge=not compact, collapse_padding=compact, caption=None if compact else caption, caption_justify="left")
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
    cols = _columns(table, compact)
    if compact and not is_grouped(t) and (t["rounds_done"] == t["rounds_planned"]).all():
        cols = [c for c in cols if c is not _ROUNDS]
    out = []
    for g, sub in t.groupby("group", sort=False):
        rows, kept = list(sub.itertuples(index=False)), list(cols)
        runs = int(sub["seeds"].sum()) if is_grouped(t) else len(rows)
        title = f"{g}: {runs} run{'s' * (runs != 1)}" + (f" in {len(rows)} group{'s' * (len(rows) != 1)} of seeds" if is_grouped(t) else "")
        for name_width in (28, 16, 8):
            while width and _needs(kept, rows, name_width) > width and any(c.header in DROP_ORDER for c in kept):
                kept.remove(min((c for c in kept if c.header in DROP_ORDER), key=lambda c: DROP_ORDER.index(c.header)))
            if not width or _needs(kept, rows, name_width) <= width:
                break
        out.append(_rich_table(title, rows, kept, compact, name_width, GROUP_CAPTION if is_grouped(t) else CAPTION))
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


__all__ = ["render", "to_csv", "to_markdown", "rich_tables", "console_for", "shown_names", "is_grouped", "mean_pm", "to_target", "COLUMNS", "COMPACT",
           "GROUP_COLUMNS", "GROUP_COMPACT", "FORMATS", "Column"]
