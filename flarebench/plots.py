"""Paper-style figures of runs (matplotlib, Agg backend: no display needed).

Public API::

    save_figures(records, out_dir, formats=("png", "pdf"), x=("bits", "round"), title=None) -> list[Path]

``records``: :class:`flarebench.results.RunRecord` (``load_run`` / ``compare.collect_runs``).
Runs are grouped by dataset/model, one set of figures per group ``G = "{dataset}-{model}"``; the
file names are stable:

- ``G-accuracy-vs-bits.{fmt}``: test accuracy (%) vs cumulative uplink bits, all clients (log x);
- ``G-accuracy-vs-round.{fmt}``: test accuracy (%) vs communication round;
- ``G-loss-vs-round.{fmt}``: test loss (cross-entropy, log y) vs round (``x=("bits",)``: ``G-loss-vs-bits``);
- ``G-summary.{fmt}``: those panels side by side, lettered (a), (b), ...;
- ``G-frontier.{fmt}``: one point per experiment at (total uplink bits, final test accuracy), each
  labelled, with the Pareto frontier (best accuracy for at most that many bits) drawn through them.

How they stay readable with many methods:

- Identity: a method has one style (colour x marker x line style, :mod:`flarebench.styles`) in every
  figure; experiments of one method (sparsities, other options) differ by marker fill (full, open,
  half). Markers sit at the evaluated rounds.
- Families: with more than :data:`FACET_ABOVE` compressed experiments of several families (the
  compressors' ``family``), the panels get one row per family (the uncompressed reference in every row),
  each row with its own legend to its right; the figure grows with the rows. Legends are always outside
  the axes.
- Axes: loss is drawn on a log axis; its limits and the frontier's accuracy limits come from robust
  quantiles (:func:`robust_limits`). A run beyond them is drawn as a marker at the edge and named in
  the note under the figure; a diverged run (non-finite test loss, or above :data:`DIVERGED_FACTOR`
  times its first) is marked with an ``x`` where it diverged and says so in the legend and the note.
- Seeds: runs that differ only in seed are one experiment (the legend says how many seeds), drawn as
  their mean with a shaded band: the 95% Student-t interval of the mean over seeds at each evaluated
  round (:func:`flarebench.stats.mean_intervals`; two seeds or more; accuracy bands clipped to 0-100%,
  loss axes keep their robust limits). Frontier: the mean point with
  95% t-interval bars, the seeds as small dots; the frontier runs through the experiments' means.

With ``targets``, accuracy panels show the group's target accuracy as a dotted line.
:func:`plot_panel` draws one panel on a given axes, for custom layouts.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

from .compare import evaluated, experiment_key, group_of, labels, sort_key  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .methods import presets  # noqa: E402
from .placement import place_labels  # noqa: E402
from .results import RunRecord  # noqa: E402
from .stats import mean_interval, mean_intervals  # noqa: E402
from .styles import FILLS, Style, family_of, family_rank, family_title, method_color, method_styles  # noqa: E402

FORMATS = {"png", "pdf", "svg"}
X_AXES = {"bits": "bits", "round": "round", "rounds": "round"}
FACET_ABOVE = 8  # compressed experiments in one figure above which each family gets its own row
DIVERGED_FACTOR = 100.0  # test loss above this times the run's first evaluated loss: diverged
FENCE = 3.0  # robust limits: quartiles -/+ FENCE x the inter-quartile range
FRONT_FENCE = 6.0  # the frontier's own points stay on the axes within this many IQR of the quartiles
MAX_MARKERS = 30  # markers per line at most (every evaluated round up to that, then every n-th)
ACC_FLOOR = 5.0  # percentage points: the least IQR of final accuracies (a tight cluster does not cut off a 10-point gap)

STYLE = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 7,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.5,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
}

_YLABEL = {"accuracy": "Test accuracy (%)", "loss": "Test loss (cross-entropy)"}
_XLABEL = {"bits": "Cumulative uplink (bits, all clients)", "round": "Communication round"}
_COLUMN = {"accuracy": "test_accuracy", "loss": "test_loss"}
BAND_LABEL = "band: 95% t-interval of the mean over seeds"
_PANEL_W, _ROW_H, _ENTRY_H = 2.55, 2.3, 0.135  # inches: one panel's width, a row's least height, one legend entry


# ---------------------------------------------------------------------------------------- options
def normalize_x(x: str | Sequence[str]) -> tuple[str, ...]:
    """``"bits,rounds"`` / ``["bits"]`` -> ``("bits", "round")``; ConfigError on anything else."""
    items = [s.strip() for s in (x.split(",") if isinstance(x, str) else x) if s.strip()]
    bad = [s for s in items if s not in X_AXES]
    if bad or not items:
        raise ConfigError(f"--x takes bits, rounds or bits,rounds; got {','.join(items) or 'nothing'}")
    return tuple(dict.fromkeys(X_AXES[s] for s in items))


def normalize_formats(formats: Sequence[str]) -> list[str]:
    """``[" PNG", ".pdf"]`` -> ``["png", "pdf"]``; ConfigError on a format not in FORMATS."""
    formats = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown figure format {bad[0]!r} (choose from: {', '.join(sorted(FORMATS))})")
    return formats


def panels_for(x: Sequence[str]) -> list[tuple[str, str]]:
    """(metric, x axis) of each figure: accuracy vs every x axis, then loss vs round (or vs bits)."""
    return [("accuracy", a) for a in x] + [("loss", "round" if "round" in x else "bits")]


# ---------------------------------------------------------------------------------------- experiments
@dataclass
class Experiment:
    """The seeds of one config, drawn as one line / one frontier point.

    ``label``: legend text (method, sparsity, any differing option); ``method``: the style's key
    (``presets.method_label``: ``flare``, ``flare+stc``); ``fill``: marker fill of this variant of
    its method; ``diverged``: ``{run directory: round}`` of the runs that diverged."""

    label: str
    method: str
    family: str
    uncompressed: bool
    runs: list[RunRecord]
    style: Style = None
    fill: str = "full"
    diverged: dict[str, int] = field(default_factory=dict)

    @property
    def legend_label(self) -> str:
        extra = [f"{len(self.runs)} seeds"] * (len(self.runs) > 1)
        if self.diverged:
            extra.append("diverged" if len(self.diverged) == len(self.runs) else f"{len(self.diverged)} diverged")
        return self.label + (f" ({', '.join(extra)})" if extra else "")

    def line_kwargs(self) -> dict:
        return self.style.line_kwargs(self.fill)


def diverged_round(rec: RunRecord) -> int | None:
    """The first evaluated round whose test loss is not finite or above DIVERGED_FACTOR x the first; None if none."""
    ev = evaluated(rec.metrics)
    loss = ev["test_loss"].to_numpy(dtype=float)
    if not len(loss):
        return None
    first = loss[np.isfinite(loss)][0] if np.isfinite(loss).any() else math.nan
    bad = ~np.isfinite(loss) | (loss > DIVERGED_FACTOR * first)
    return int(ev["round"].iloc[int(np.argmax(bad))]) if bad.any() else None


def experiments(records: Sequence[RunRecord]) -> list[Experiment]:
    """Runs of one group -> experiments (seeds of one config together) in a stable order, styled."""
    records = sorted(records, key=sort_key)
    by_key: dict[tuple, list[RunRecord]] = defaultdict(list)
    label_of = {}
    for rec, lab in zip(records, labels(records)):
        by_key[experiment_key(rec)].append(rec)
        label_of.setdefault(experiment_key(rec), lab)
    out = []
    for key, runs in by_key.items():
        c = runs[0].config
        div = {str(r.path): d for r in runs if (d := diverged_round(r)) is not None}
        out.append(Experiment(label_of[key], presets.method_label(c), family_of(c), presets.is_uncompressed(c), runs, diverged=div))
    styles = method_styles(e.method for e in out)
    seen: dict[str, int] = defaultdict(int)  # experiments drawn so far per method -> marker fill
    for e in out:
        e.style, e.fill = styles[e.method], FILLS[seen[e.method] % len(FILLS)]
        seen[e.method] += 1
    return out


def facet_rows(exps: Sequence[Experiment]) -> list[tuple[str | None, list[Experiment]]]:
    """(row title, experiments) per row: one row of all, or one row per family when there are more than
    FACET_ABOVE compressed experiments of several families (the uncompressed ones in every row)."""
    reference = [e for e in exps if e.uncompressed]
    rest = [e for e in exps if not e.uncompressed]
    families = sorted({e.family for e in rest}, key=family_rank)
    if len(rest) <= FACET_ABOVE or len(families) <= 1:
        return [(None, list(exps))]
    return [(family_title(f), reference + [e for e in rest if e.family == f]) for f in families]


def _series(runs: Sequence[RunRecord], metric: str, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeds of one experiment -> (x, mean y, low y, high y) over the evaluated rounds they share: the
    mean and its 95% t-interval over seeds (NaN ends with one seed; accuracy's clipped to 0-100%); accuracy
    in %; a non-finite loss is left out: the line stops where the run diverged."""
    col = _COLUMN[metric]
    frames = []
    for r in runs:
        ev = r.metrics[r.metrics[col].notna()].set_index("round")
        frames.append(ev[[col, "cumulative_uplink_bits"]])
    rounds = sorted(set.intersection(*(set(f.index) for f in frames)))
    ys = np.array([f.loc[rounds, col].to_numpy(dtype=float) for f in frames]).reshape(len(frames), len(rounds))
    if metric == "accuracy":
        ys = 100.0 * ys
    if x == "bits":
        xs = np.array([f.loc[rounds, "cumulative_uplink_bits"].to_numpy(dtype=float) for f in frames]).reshape(len(frames), -1).mean(axis=0)
    else:
        xs = np.array(rounds, dtype=float)
    keep = np.isfinite(ys).all(axis=0) & ((xs > 0) if x == "bits" else True)  # log x: no point at 0 bits
    band = mean_intervals(ys[:, keep].tolist())
    mean, low, high = (np.array([getattr(b, end) for b in band], dtype=float) for end in ("mean", "low", "high"))
    if metric == "accuracy":  # an interval wider than the possible accuracies is drawn within 0-100%
        low, high = np.clip(low, 0.0, 100.0), np.clip(high, 0.0, 100.0)
    return xs[keep], mean, low, high


# ---------------------------------------------------------------------------------------- robust axes
def robust_limits(values: Sequence[float], keep: Sequence[float] = (), log: bool = False, floor: float = 1.0,
                  fence: float = FENCE, keep_fence: float = FRONT_FENCE) -> tuple[float, float]:
    """Axis limits from the values that matter: those within ``fence`` inter-quartile ranges of the
    quartiles (the IQR at least ``floor``; on a ``log`` axis all of it in decades), plus the values of
    ``keep`` within ``keep_fence`` IQR; a small margin added. Values outside are the caller's outliers."""
    v = np.asarray([x for x in values if np.isfinite(x) and (x > 0 or not log)], dtype=float)
    k = np.asarray([x for x in keep if np.isfinite(x) and (x > 0 or not log)], dtype=float)
    if log:
        v, k = np.log10(v), np.log10(k)
    if not len(v):
        return (0.1, 10.0) if log else (0.0, 1.0)
    q1, q3 = np.percentile(v, [25, 75])
    iqr = max(q3 - q1, floor)
    inside = v[(v >= q1 - fence * iqr) & (v <= q3 + fence * iqr)]
    inside = np.concatenate([inside, k[(k >= q1 - keep_fence * iqr) & (k <= q3 + keep_fence * iqr)]])
    lo, hi = float(inside.min()), float(inside.max())
    margin = 0.06 * max(hi - lo, floor)
    lo, hi = lo - margin, hi + margin
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


@dataclass
class Note:
    """What a figure says under itself: runs drawn at an axis edge, diverged runs (one line each)."""

    lines: dict[str, tuple[Line2D, str]] = field(default_factory=dict)

    def add(self, key: str, handle: Line2D, text: str) -> None:
        self.lines.setdefault(key, (handle, text))

    def draw(self, fig) -> None:
        if self.lines:
            handles, texts = zip(*self.lines.values())
            fig.legend(handles, texts, loc="outside lower left", title="Beyond the axes (markers at the edge) and diverged runs:",
                       title_fontsize=7, fontsize=6.5, alignment="left", ncols=1 if len(texts) < 5 else 2)


def _edge_marker(ax, e: Experiment, x: float, y_edge: float, below: bool) -> Line2D:
    """The run's own marker on the axis edge, an arrow inside pointing at it (the run lies beyond)."""
    kw = {**e.line_kwargs(), "linestyle": "none", "markersize": 5.5, "clip_on": False, "zorder": 4}
    ax.plot([x], [y_edge], **kw)
    shift = ScaledTranslation(0, (8 if below else -8) / 72, ax.figure.dpi_scale_trans)
    ax.text(x, y_edge, "\u2193" if below else "\u2191", transform=ax.transData + shift, ha="center", va="center",
            fontsize=7, color=e.style.color, clip_on=False, zorder=4)
    return Line2D([], [], **kw)


def _diverged_marker(e: Experiment) -> Line2D:
    return Line2D([], [], marker="x", color=e.style.color, markersize=6, markeredgewidth=1.4, linestyle="none")


# ---------------------------------------------------------------------------------------- line panels
def plot_panel(ax, records_or_exps, metric: str = "accuracy", x: str = "bits", target: float | None = None,
               note: Note | None = None, loss_limits: tuple[float, float] | None = None) -> None:
    """Draw ``metric`` ("accuracy" | "loss") vs ``x`` ("bits" | "round") for ``records`` (one group) or
    experiments (:func:`experiments`) on ``ax``; ``target``: a test accuracy (fraction) drawn as a dotted
    line on accuracy panels; ``note``: collects the runs drawn at the edge and the diverged ones;
    ``loss_limits``: the loss axis' limits (default: :func:`loss_limits` of these experiments)."""
    exps = records_or_exps if records_or_exps and isinstance(records_or_exps[0], Experiment) else experiments(records_or_exps)
    note = note if note is not None else Note()
    drawn = []
    for e in exps:
        xs, mean, lo, hi = _series(e.runs, metric, x)
        if len(xs):
            ax.plot(xs, mean, label=e.legend_label, markevery=max(1, len(xs) // MAX_MARKERS), **e.line_kwargs())
            if len(e.runs) > 1:
                ax.fill_between(xs, lo, hi, color=e.style.color, alpha=0.15, linewidth=0)
        else:
            ax.plot([], [], label=e.legend_label, **e.line_kwargs())
        drawn.append((e, xs, mean))
    if metric == "accuracy" and target is not None and np.isfinite(target):
        ax.axhline(100.0 * target, color="0.45", linestyle=(0, (1, 2)), linewidth=1.0, label=f"target {100.0 * target:.1f}%", zorder=0)
    if x == "bits":
        ax.set_xscale("log")
    if metric == "loss":
        _robust_loss_axis(ax, drawn, x, note, loss_limits or loss_limits_of(exps, x))
    ax.set_xlabel(_XLABEL[x])
    ax.set_ylabel(_YLABEL[metric])


def loss_limits_of(exps: Sequence[Experiment], x: str) -> tuple[float, float]:
    """Log-axis limits of the experiments' test losses (:func:`robust_limits`, in decades)."""
    values = [_series(e.runs, "loss", x)[1] for e in exps]
    return robust_limits(np.concatenate([v for v in values if len(v)] or [np.array([1.0])]), log=True, floor=0.1)


def _robust_loss_axis(ax, drawn, x: str, note: Note, limits: tuple[float, float]) -> None:
    """Log y within ``limits``; a line above them gets a marker at the top edge, a diverged run an
    ``x`` where it diverged (at the edge if off the axis); both named in ``note``."""
    ax.set_yscale("log")
    lo, hi = limits
    ax.set_ylim(lo, hi)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    for e, xs, mean in drawn:
        above = np.flatnonzero(mean > hi)
        if len(above):
            i = int(above[0])
            handle = _edge_marker(ax, e, xs[i], hi, below=False)
            note.add(f"above:{e.label}", handle, f"{e.label}: test loss above the axis from {_at(x, xs[i])} (max {np.max(mean):.3g})")
        for run, rnd in e.diverged.items():
            r = next(r for r in e.runs if str(r.path) == run)
            xv = _x_at_round(r, rnd, x)
            ev = evaluated(r.metrics)
            loss = float(ev.loc[ev["round"] == rnd, "test_loss"].iloc[0])
            y = min(loss, hi) if np.isfinite(loss) else hi
            ax.plot([xv], [y], marker="x", color=e.style.color, markersize=6, markeredgewidth=1.4, linestyle="none", clip_on=False, zorder=4)
            note.add(f"diverged:{run}", _diverged_marker(e),
                     f"{r.path.name}: diverged at round {rnd} (test loss {loss:.3g})")


def _x_at_round(rec: RunRecord, rnd: int, x: str) -> float:
    if x == "round":
        return float(rnd)
    m = rec.metrics
    return float(m.loc[m["round"] == rnd, "cumulative_uplink_bits"].iloc[0])


def _at(x: str, v: float) -> str:
    return f"round {v:g}" if x == "round" else f"{v:.3g} bits"


def _legend_entries(exps: Sequence[Experiment], target: float | None) -> tuple[list, list[str]]:
    handles = [Line2D([], [], **e.line_kwargs()) for e in exps]
    names = [e.legend_label for e in exps]
    if any(len(e.runs) > 1 for e in exps):
        handles.append(Patch(facecolor="0.5", alpha=0.25, linewidth=0))
        names.append(BAND_LABEL)
    if target is not None and np.isfinite(target):
        handles.append(Line2D([], [], color="0.45", linestyle=(0, (1, 2)), linewidth=1.0))
        names.append(f"target {100.0 * target:.1f}%")
    return handles, names


def panel_figure(exps: Sequence[Experiment], panels: Sequence[tuple[str, str]], title: str, target: float | None = None,
                 letters: bool = False):
    """A figure of ``panels`` ((metric, x) each) side by side per family (:func:`facet_rows`), each
    family's legend to the right of its panels, a note under them; the families one under the other
    (a single panel: two families a row). The figure grows with the families; returns it."""
    rows = facet_rows(exps)
    per = 2 if len(panels) == 1 and len(rows) > 2 else 1  # families side by side in one grid row
    grid_rows = [rows[i:i + per] for i in range(0, len(rows), per)]
    heights = [max(max(_ROW_H, _ENTRY_H * (len(r) + 2) + 0.9) for _, r in g) for g in grid_rows]
    width = per * (_PANEL_W * len(panels) + 2.2)
    fig = plt.figure(figsize=(width, sum(heights) + 0.6), layout="constrained")
    grid = np.array(fig.subplots(len(grid_rows), per * len(panels), squeeze=False, gridspec_kw={"height_ratios": heights}))
    note = Note()
    limits = {x: loss_limits_of(exps, x) for metric, x in panels if metric == "loss"}
    columns: dict[int, list] = defaultdict(list)  # panel index -> its axes in every family
    for k, (row_title, row_exps) in enumerate(rows):
        g, off = divmod(k, per)
        for c, (metric, x) in enumerate(panels):
            ax = grid[g, off * len(panels) + c]
            columns[c].append(ax)
            plot_panel(ax, row_exps, metric, x, target, note, limits.get(x))
            head = [f"({chr(ord('a') + c)})"] * (letters and k == 0) + ([row_title] if row_title and c == 0 else [])
            if head:
                ax.set_title(" ".join(head), loc="left", fontsize=9, fontweight="bold" if row_title and c == 0 else "normal")
            if g < len(grid_rows) - 1:
                ax.set_xlabel("")
        handles, names = _legend_entries(row_exps, target)
        grid[g, off * len(panels) + len(panels) - 1].legend(handles, names, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                                                            borderaxespad=0.0, ncols=1 if len(names) <= 24 else 2, handlelength=2.6)
    for ax in grid.flat[len(rows) * len(panels):]:  # an odd family out leaves its cell empty
        fig.delaxes(ax)
    _share_limits(columns, panels)
    fig.suptitle(title, fontsize=9)
    note.draw(fig)
    return fig


def _share_limits(columns: Mapping[int, list], panels) -> None:
    """The families' axes of one panel share their limits, so families can be compared."""
    for c, col in columns.items():
        if len(col) > 1:
            lo = min(a.get_xlim()[0] for a in col), max(a.get_xlim()[1] for a in col)
            ylo = min(a.get_ylim()[0] for a in col), max(a.get_ylim()[1] for a in col)
            for a in col:
                a.set_xlim(*lo)
                if panels[c][0] == "accuracy":  # loss limits are already common (loss_limits_of all rows)
                    a.set_ylim(*ylo)


# ---------------------------------------------------------------------------------------- frontier
def pareto_front(bits: Sequence[float], acc: Sequence[float]) -> list[int]:
    """Indices of the non-dominated points, by increasing bits: no other point has at most as many bits
    and at least as high an accuracy with one of the two strictly better."""
    order = sorted(range(len(bits)), key=lambda i: (bits[i], -acc[i]))
    front, best = [], -np.inf
    for i in order:
        if acc[i] > best:
            front.append(i)
            best = acc[i]
    return front


@dataclass
class FrontierPoint:
    """One experiment on the frontier figure: mean total uplink bits and mean final accuracy (%) of its
    seeds, the 95% t-interval of that mean (NaN with one seed), and where it is drawn (``edge``:
    below/above the axis, or None)."""

    exp: Experiment
    bits: float
    acc: float
    acc_low: float
    acc_high: float
    seeds: list[tuple[float, float]]
    edge: str | None = None


def frontier_points(exps: Sequence[Experiment]) -> list[FrontierPoint]:
    """A point per experiment with an evaluation and uplink bits."""
    out = []
    for e in exps:
        seeds = []
        for r in e.runs:
            ev = evaluated(r.metrics)
            bits = float(r.metrics["cumulative_uplink_bits"].iloc[-1])
            if not ev.empty and bits > 0:
                seeds.append((bits, 100.0 * float(ev["test_accuracy"].iloc[-1])))
        if seeds:
            iv = mean_interval([s[1] for s in seeds])
            out.append(FrontierPoint(e, float(np.mean([s[0] for s in seeds])), iv.mean, iv.low, iv.high, seeds))
    return out


def plot_frontier(ax, records_or_exps, target: float | None = None, note: Note | None = None) -> list[FrontierPoint]:
    """Each experiment a point at (total uplink bits, final test accuracy), in its method's style (seeds:
    the mean, 95% t-interval bars, each seed a dot); the Pareto frontier through the points as a staircase;
    accuracy limits from :func:`robust_limits` (the frontier's points and the target kept), points beyond drawn at the
    edge and put in ``note``. Returns the points (labels come after the layout: :func:`label_frontier`)."""
    exps = records_or_exps if records_or_exps and isinstance(records_or_exps[0], Experiment) else experiments(records_or_exps)
    note = note if note is not None else Note()
    pts = frontier_points(exps)
    if not pts:
        return []
    front = pareto_front([p.bits for p in pts], [p.acc for p in pts])
    goal = [100.0 * target] if target is not None and np.isfinite(target) else []
    lo, hi = robust_limits([p.acc for p in pts], keep=[pts[i].acc for i in front] + goal, floor=ACC_FLOOR)
    hi = min(hi, 100.0 + 0.06 * (hi - lo))
    for p in pts:
        kw = p.exp.line_kwargs()
        kw["linestyle"] = "none"
        if p.acc < lo or p.acc > hi:
            p.edge = "below" if p.acc < lo else "above"
            handle = _edge_marker(ax, p.exp, p.bits, lo if p.acc < lo else hi, below=p.acc < lo)
            diverged = f", diverged at round {min(p.exp.diverged.values())}" if p.exp.diverged else ""
            note.add(f"frontier:{p.exp.label}", handle, f"{p.exp.label}: final accuracy {p.acc:.1f}% ({p.edge} the axis{diverged})")
            continue
        if p.exp.diverged:  # on the axes but diverged: an x over its marker, and a line in the note
            ax.plot([p.bits], [p.acc], marker="x", color="0.1", markersize=6.5, markeredgewidth=1.0, linestyle="none", zorder=3.5)
            note.add(f"frontier-diverged:{p.exp.label}", _diverged_marker(p.exp),
                     f"{p.exp.label}: diverged at round {min(p.exp.diverged.values())}")
        if len(p.seeds) > 1:
            ax.errorbar([p.bits], [p.acc], yerr=[[p.acc - p.acc_low], [p.acc_high - p.acc]], color=p.exp.style.color,
                        linewidth=0.8, capsize=1.5, zorder=2.5)
            ax.scatter([s[0] for s in p.seeds], [s[1] for s in p.seeds], s=4, color=p.exp.style.color, alpha=0.5, zorder=2.5, linewidths=0)
        ax.plot([p.bits], [p.acc], markersize=5.5, zorder=3, **kw)
    fx, fy = [pts[i].bits for i in front], [pts[i].acc for i in front]
    ax.step(fx + [max(p.bits for p in pts) * 1.5], fy + [fy[-1]], where="post", color="0.35", linewidth=0.9, zorder=2,
            gid="pareto-frontier")
    if target is not None and np.isfinite(target):
        ax.axhline(100.0 * target, color="0.45", linestyle=(0, (1, 2)), linewidth=1.0, zorder=0)
    ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_xlabel("Total uplink (bits, all clients, whole run)")
    ax.set_ylabel("Final test accuracy (%)")
    return pts


def frontier_legend(ax, pts: Sequence[FrontierPoint], target: float | None = None):
    """A legend outside the axes, grouped by family: a heading per family, one entry per method."""
    handles, names = [], []
    by_family: dict[str, list[Experiment]] = defaultdict(list)
    for p in pts:
        if all(p.exp.method != e.method for e in by_family[p.exp.family]):
            by_family[p.exp.family].append(p.exp)
    for fam in sorted(by_family, key=family_rank):
        handles.append(Line2D([], [], linestyle="none"))
        names.append(family_title(fam))
        for e in by_family[fam]:
            handles.append(Line2D([], [], color=e.style.color, marker=e.style.marker, linestyle="none", markersize=5))
            names.append(e.method)
    handles.append(Line2D([], [], color="0.35", linewidth=0.9))
    names.append("Pareto frontier")
    if any(len(p.exp.runs) > 1 for p in pts):
        handles.append(Line2D([], [], color="0.3", marker="o", markersize=4, linestyle="none"))
        names.append("seeds: mean, 95% t-interval bars")
    if target is not None and np.isfinite(target):
        handles.append(Line2D([], [], color="0.45", linestyle=(0, (1, 2)), linewidth=1.0))
        names.append(f"target {100.0 * target:.1f}%")
    leg = ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                    ncols=1 if len(names) <= 26 else 2, handletextpad=0.4)
    for text, name in zip(leg.get_texts(), names):
        if name in {family_title(f) for f in by_family}:
            text.set_fontweight("bold")
    return leg


def label_frontier(ax, pts: Sequence[FrontierPoint]) -> list:
    """Label every point on the axes with its experiment (after the layout is final: see place_labels);
    experiments at the very same point (e.g. two methods equal bit for bit) share one label, ``'a = b'``."""
    shown: dict[tuple[float, float], list[str]] = {}
    for p in pts:
        if p.edge is None:
            shown.setdefault((p.bits, p.acc), []).append(p.exp.label)
    seeds = [s for p in pts if p.edge is None and len(p.seeds) > 1 for s in p.seeds]
    lo, hi = ax.get_ylim()
    up = ax.figure.dpi * 8 / 72  # the edge markers' arrows: 8 points inside the axes
    for p in pts:
        if p.edge:
            y = lo if p.edge == "below" else hi
            at = ax.transData.transform((p.bits, y))
            seeds += [(p.bits, y), tuple(ax.transData.inverted().transform(at + (0, up if p.edge == "below" else -up)))]
    front = [line for line in ax.get_lines() if line.get_gid() == "pareto-frontier"]
    return place_labels(ax, list(shown), [" = ".join(names) for names in shown.values()], fontsize=5.5,
                        marker_pt=5.5, obstacles=seeds, lines=front)


def frontier_figure(exps: Sequence[Experiment], title: str, target: float | None = None):
    """The frontier figure: axes, family-grouped legend and note outside, every point labelled."""
    n = len(exps)
    fig, ax = plt.subplots(figsize=(7.0 + 0.05 * max(0, n - 12), 4.2 + 0.08 * max(0, n - 12)), layout="constrained")
    note = Note()
    pts = plot_frontier(ax, exps, target, note)
    if pts:
        frontier_legend(ax, pts, target)
    ax.set_title(title, fontsize=9)
    note.draw(fig)
    fig.canvas.draw()  # the layout, then freeze it: labels are placed in pixels
    fig.set_layout_engine("none")
    label_frontier(ax, pts)
    return fig


# ---------------------------------------------------------------------------------------- files
def _save(fig, stem: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, bbox_inches="tight", pad_inches=0.03)
        paths.append(path)
    plt.close(fig)
    return paths


def group_slug(group: str) -> str:
    """``'mnist-embedded/mlp'`` -> ``'mnist-embedded-mlp'`` (file-name safe)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", group).strip("-")


def by_group(records: Sequence[RunRecord]) -> list[tuple[str, list[RunRecord]]]:
    """``[(group, its runs)]`` sorted by group (``dataset/model``): one set of figures each."""
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[group_of(r)].append(r)
    return sorted(groups.items())


def describe(records: Sequence[RunRecord]) -> str:
    """A title from what the runs share: ``'mnist-embedded/mlp: 10 clients, 200 rounds, lr 0.1, batch 50 (28 runs)'``."""
    def shared(key):
        values = {repr(r.config.get(key)) for r in records}
        return records[0].config.get(key) if len(values) == 1 else None

    groups = sorted({group_of(r) for r in records})
    parts = []
    if shared("clients") is not None:
        k = shared("clients_per_round")
        parts.append(f"{shared('clients')} clients" + (f" ({k} a round)" if k else ""))
    for key, fmt in (("rounds", "{} rounds"), ("local_epochs", "E = {}"), ("lr", "lr {}"), ("batch_size", "batch {}")):
        if shared(key) is not None:
            parts.append(fmt.format(shared(key)))
    head = ", ".join(groups) if len(groups) <= 2 else f"{len(groups)} dataset/model groups"
    return f"{head}: {', '.join(parts)} ({len(records)} run{'s' * (len(records) != 1)})" if parts else head


def save_frontier(records: Sequence[RunRecord], out_dir: str | Path, formats: Sequence[str] = ("png", "pdf"),
                  targets: Mapping[str, float] | None = None, title: str | None = None) -> list[Path]:
    """``G-frontier.{fmt}`` per group: accuracy vs uplink bits, one labelled point per experiment, the Pareto frontier."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with plt.rc_context(STYLE):
        for group, runs in by_group(records):
            head = (title or describe(runs)) + "\nfinal test accuracy vs total uplink bits, one point per experiment"
            fig = frontier_figure(experiments(runs), head, (targets or {}).get(group))
            paths += _save(fig, out / f"{group_slug(group)}-frontier", normalize_formats(formats))
    return paths


def save_figures(
    records: Sequence[RunRecord],
    out_dir: str | Path,
    formats: Sequence[str] = ("png", "pdf"),
    x: str | Sequence[str] = ("bits", "round"),
    summary: bool = True,
    targets: Mapping[str, float] | None = None,
    frontier: bool = True,
    title: str | None = None,
) -> list[Path]:
    """Write the figures described in the module docstring under ``out_dir``; returns their paths.

    ``targets``: group (``"dataset/model"``) -> target test accuracy (fraction), drawn on accuracy panels;
    ``title``: the experiment's title (default: what the runs share, :func:`describe`).
    """
    formats = normalize_formats(formats)
    xs = normalize_x(x)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with plt.rc_context(STYLE):
        for group, runs in by_group(records):
            slug, panels = group_slug(group), panels_for(xs)
            exps, target = experiments(runs), (targets or {}).get(group)
            head = title or describe(runs)
            for metric, ax_x in panels:
                paths += _save(panel_figure(exps, [(metric, ax_x)], head, target), out / f"{slug}-{metric}-vs-{ax_x}", formats)
            if summary:
                paths += _save(panel_figure(exps, panels, head, target, letters=True), out / f"{slug}-summary", formats)
    if frontier:
        paths += save_frontier(records, out, formats, targets, title)
    return paths


__all__ = ["save_figures", "save_frontier", "plot_panel", "plot_frontier", "label_frontier", "panel_figure", "frontier_figure",
           "experiments", "Experiment", "facet_rows", "robust_limits", "diverged_round", "describe", "method_color",
           "normalize_x", "normalize_formats", "panels_for", "pareto_front", "STYLE"]
