"""Paper-style figures of runs (matplotlib, Agg backend: no display needed).

Public API::

    save_figures(records, out_dir, formats=("png", "pdf"), x=("bits", "round")) -> list[Path]

``records``: :class:`flarebench.results.RunRecord` (``load_run`` / ``compare.collect_runs``).
Runs are grouped by dataset/model, one set of figures per group ``G = "{dataset}-{model}"``; the
file names are stable:

- ``G-accuracy-vs-bits.{fmt}``: test accuracy (%) vs cumulative uplink bits, all clients (log x);
- ``G-accuracy-vs-round.{fmt}``: test accuracy (%) vs communication round;
- ``G-loss-vs-round.{fmt}``: test loss (cross-entropy) vs round (``x=("bits",)``: ``G-loss-vs-bits``);
- ``G-summary.{fmt}``: those panels side by side, lettered (a), (b), ..., with one shared legend;
- ``G-frontier.{fmt}``: one point per run at (total uplink bits, final test accuracy), coloured by
  method, with the Pareto frontier (best accuracy for at most that many bits) drawn through the best.

With ``targets``, accuracy panels show the group's target accuracy as a dotted line.

One line per experiment (method + sparsity, plus any other differing option); runs that differ only
in seed are drawn as their mean with a shaded min-max band. A method has the same colour in every
figure (:data:`PALETTE` by preset order, Okabe-Ito first); experiments of one method (sparsities,
other options) differ by line style. Legends sit outside the axes, so they never cover data. :func:`plot_panel` draws one
panel on a given axes, for custom layouts.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .compare import experiment_key, group_of, labels, sort_key  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .results import RunRecord  # noqa: E402

# A method's colour is its preset's position (methods/presets.py) in this palette: Okabe-Ito (colour-blind
# safe) for the first eight (none black, then the paper's methods), then tab20's darker and lighter tones.
PALETTE = ["#000000", "#E69F00", "#0072B2", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F", "#BCBD22",
           "#17BECF", "#AEC7E8", "#FFBB78", "#98DF8A", "#FF9896", "#C5B0D5", "#C49C94"]
LINESTYLES = ["-", "--", ":", "-."]
FORMATS = {"png", "pdf", "svg"}
X_AXES = {"bits": "bits", "round": "round", "rounds": "round"}

STYLE = {
    "font.family": "serif",
    "font.serif": ["DejaVu Serif"],
    "mathtext.fontset": "dejavuserif",
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.5,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.5,
    "legend.frameon": False,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embed TrueType: editable text in the PDF
}

_YLABEL = {"accuracy": "Test accuracy (%)", "loss": "Test loss (cross-entropy)"}
_XLABEL = {"bits": "Cumulative uplink (bits, all clients)", "round": "Communication round"}
_COLUMN = {"accuracy": "test_accuracy", "loss": "test_loss"}


def method_color(method: str) -> str:
    """The colour of ``method`` in every figure: its preset's position in PALETTE (others: from a hash of the name)."""
    from .methods.presets import method_names

    names = method_names()
    if method in names:
        return PALETTE[names.index(method) % len(PALETTE)]
    return PALETTE[int(hashlib.md5(method.encode()).hexdigest(), 16) % len(PALETTE)]


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


def _series(records: Sequence[RunRecord], metric: str, x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeds of one experiment -> (x, mean y, min y, max y) over the evaluated rounds they share."""
    col = _COLUMN[metric]
    frames = []
    for r in records:
        ev = r.metrics[r.metrics[col].notna()].set_index("round")
        frames.append(ev[[col, "cumulative_uplink_bits"]])
    rounds = sorted(set.intersection(*(set(f.index) for f in frames)))
    ys = np.array([f.loc[rounds, col].to_numpy(dtype=float) for f in frames])
    if metric == "accuracy":
        ys = 100.0 * ys
    if x == "bits":
        xs = np.array([f.loc[rounds, "cumulative_uplink_bits"].to_numpy(dtype=float) for f in frames]).mean(axis=0)
    else:
        xs = np.array(rounds, dtype=float)
    keep = xs > 0 if x == "bits" else np.ones_like(xs, dtype=bool)  # log axis: no point at 0 bits
    return xs[keep], ys.mean(axis=0)[keep], ys.min(axis=0)[keep], ys.max(axis=0)[keep]


def experiments(records: Sequence[RunRecord]) -> list[tuple[str, str, str, list[RunRecord]]]:
    """Runs of one group -> [(label, colour, line style, seeds)] in a stable order."""
    records = sorted(records, key=sort_key)
    by_key: dict[tuple, list[RunRecord]] = defaultdict(list)
    label_of = {}
    for rec, lab in zip(records, labels(records)):
        by_key[experiment_key(rec)].append(rec)
        label_of.setdefault(experiment_key(rec), lab)
    seen: dict[str, int] = defaultdict(int)  # experiments drawn so far per method -> line style
    out = []
    for key, runs in by_key.items():
        c = runs[0].config
        ls = LINESTYLES[seen[c["method"]] % len(LINESTYLES)]
        seen[c["method"]] += 1
        lab = label_of[key] + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
        out.append((lab, method_color(c["method"]), ls, runs))
    return out


def plot_panel(ax, records: Sequence[RunRecord], metric: str = "accuracy", x: str = "bits", target: float | None = None) -> None:
    """Draw ``metric`` ("accuracy" | "loss") vs ``x`` ("bits" | "round") for ``records`` (one group) on ``ax``;
    ``target``: a test accuracy (fraction) drawn as a dotted line on accuracy panels."""
    for label, color, ls, runs in experiments(records):
        xs, mean, lo, hi = _series(runs, metric, x)
        if not len(xs):
            continue
        ax.plot(xs, mean, color=color, linestyle=ls, label=label)
        if len(runs) > 1:
            ax.fill_between(xs, lo, hi, color=color, alpha=0.18, linewidth=0)
    if metric == "accuracy" and target is not None and np.isfinite(target):
        ax.axhline(100.0 * target, color="0.45", linestyle=(0, (1, 2)), linewidth=1.0, label=f"target {100.0 * target:.1f}%", zorder=0)
    if x == "bits":
        ax.set_xscale("log")
    ax.set_xlabel(_XLABEL[x])
    ax.set_ylabel(_YLABEL[metric])


def figure_legend(fig, ax, max_cols: int = 6) -> None:
    """One legend below the figure with ``ax``'s lines, in as many columns as fit the figure's width."""
    handles, names = ax.get_legend_handles_labels()
    if not handles:
        return
    size = float(STYLE["legend.fontsize"])
    entry_pt = 0.55 * size * max(len(n) for n in names) + 3.5 * size  # text + handle and padding, in points
    ncols = max(1, min(len(names), max_cols, int(72 * fig.get_figwidth() // entry_pt)))
    fig.legend(handles, names, loc="outside lower center", ncols=ncols)


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


def plot_frontier(ax, records: Sequence[RunRecord], target: float | None = None) -> None:
    """Each run a point at (total uplink bits, final test accuracy), coloured by method; the Pareto
    frontier (the best accuracy any run reached for at most that many bits) as a staircase through the best."""
    from .compare import evaluated, method_label

    from .methods.presets import method_label as part_label

    pts = []
    for rec in sorted(records, key=sort_key):
        ev = evaluated(rec.metrics)
        bits = float(rec.metrics["cumulative_uplink_bits"].iloc[-1])
        if ev.empty or bits <= 0:
            continue
        pts.append((bits, 100.0 * float(ev["test_accuracy"].iloc[-1]), method_label(rec), rec.config["method"], part_label(rec.config)))
    if not pts:
        return
    sparsities = sorted({lab.split(" s=")[1] for _, _, lab, _, _ in pts if " s=" in lab}, key=float)
    markers = "o^sDv"  # by sparsity (circle: the smallest, or a compressor that ignores it)
    seen = set()
    for bits, acc, label, method, name in pts:
        m = markers[sparsities.index(label.split(" s=")[1]) % len(markers)] if " s=" in label else "o"
        ax.scatter([bits], [acc], s=18, marker=m, color=method_color(method), label=None if name in seen else name, zorder=3,
                   edgecolors="white", linewidths=0.4)
        seen.add(name)
    front = pareto_front([p[0] for p in pts], [p[1] for p in pts])
    fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
    ax.step(fx + [max(p[0] for p in pts) * 1.5], fy + [fy[-1]], where="post", color="0.35", linewidth=1.0, zorder=2,
            label="Pareto frontier")
    for j, i in enumerate(front):  # labels of the frontier's runs, alternately below and above it
        ax.annotate(pts[i][2], (pts[i][0], pts[i][1]), textcoords="offset points", xytext=(4, -9 if j % 2 == 0 else 5),
                    fontsize=5.5, color="0.2")
    if sparsities:
        for k, sp in enumerate(sparsities):
            ax.scatter([], [], marker=markers[k % len(markers)], color="0.5", s=18, label=f"sparsity {sp}")
    if target is not None and np.isfinite(target):
        ax.axhline(100.0 * target, color="0.45", linestyle=(0, (1, 2)), linewidth=1.0, label=f"target {100.0 * target:.1f}%", zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("Total uplink (bits, all clients, whole run)")
    ax.set_ylabel("Final test accuracy (%)")


def save_frontier(records: Sequence[RunRecord], out_dir: str | Path, formats: Sequence[str] = ("png", "pdf"),
                  targets: Mapping[str, float] | None = None) -> list[Path]:
    """``G-frontier.{fmt}`` per group: accuracy vs uplink bits, one point per run, the Pareto frontier drawn."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with plt.rc_context(STYLE):
        for group, runs in by_group(records):
            fig, ax = plt.subplots(figsize=(7.0, 4.0), layout="constrained")
            plot_frontier(ax, runs, (targets or {}).get(group))
            ax.set_title(f"{group}: final accuracy per uplink bit (one point per run)")
            handles, names = ax.get_legend_handles_labels()
            if handles:
                ax.legend(handles, names, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=6.5,
                          ncols=2 if len(names) > 14 else 1)
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
) -> list[Path]:
    """Write the figures described in the module docstring under ``out_dir``; returns their paths.

    ``targets``: group (``"dataset/model"``) -> target test accuracy (fraction), drawn on accuracy panels.
    """
    formats = normalize_formats(formats)
    xs = normalize_x(x)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with plt.rc_context(STYLE):
        for group, runs in by_group(records):
            slug, panels = group_slug(group), panels_for(xs)
            for metric, ax_x in panels:
                fig, ax = plt.subplots(figsize=(3.5, 3.0), layout="constrained")
                plot_panel(ax, runs, metric, ax_x, (targets or {}).get(group))
                ax.set_title(group)
                figure_legend(fig, ax)
                paths += _save(fig, out / f"{slug}-{metric}-vs-{ax_x}", formats)
            if summary:
                fig, axes = plt.subplots(1, len(panels), figsize=(2.45 * len(panels), 2.6), layout="constrained")
                for i, (ax, (metric, ax_x)) in enumerate(zip(np.atleast_1d(axes), panels)):
                    plot_panel(ax, runs, metric, ax_x, (targets or {}).get(group))
                    ax.set_title(f"({chr(ord('a') + i)})", loc="left", fontsize=9)
                fig.suptitle(f"{group}", fontsize=9)
                figure_legend(fig, np.atleast_1d(axes)[0])
                paths += _save(fig, out / f"{slug}-summary", formats)
    if frontier:
        paths += save_frontier(records, out, formats, targets)
    return paths


__all__ = ["save_figures", "figure_legend", "plot_panel", "experiments", "method_color", "normalize_x", "normalize_formats", "panels_for", "PALETTE", "STYLE", "save_frontier", "pareto_front"]
