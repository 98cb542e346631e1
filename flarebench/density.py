"""How far can R go? Rounds to a target and accuracy at a round, versus the density R, with intervals over seeds.

    from flarebench.density import density_table, save_density
    table, warnings = density_table(records, target=0.9272, at_round=100, horizon=300)
    save_density(["results/reference/unavail_cnn_k7_claim"], "out", target_accuracy=0.9272)

This is the figure behind FLARE's claim ("about 10x fewer sent entries than error correction"): for each
method, at each density R = 1 - sparsity (fraction of entries sent, log axis), over its seeds:

- ``rounds_to_target``: the first evaluated round whose test accuracy is >= the target, within the first
  ``horizon`` rounds (a longer run is read up to the horizon only). Seeds that do not reach it are
  censored at the horizon by compare's rule (verdicts.censored_interval; a run may stop early once it has
  reached the target): with every seed reaching, the mean and its 95% Student-t interval; with k < n
  reaching, the mean is infinite (``inf``), ``_low`` is the interval's lower end computed with the
  censored seeds at the horizon (a lower bound) and ``_high`` is infinite; the figure draws that lower
  bound with an arrow and "k/n".
- ``accuracy_at_round``: the test accuracy evaluated at round ``at_round``, mean with its 95% t-interval.

``reaching_density``: per method, the smallest R at which every seed reaches the target within the
horizon (None if it never does), and ``stops_below``: the next smaller R tried (where it stopped reaching).
Seeds of one point are runs equal in everything but seed, name, output and round count.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .compare import collect_runs, experiment_key, first_reaching, group_of, sort_key, targets
from .errors import ConfigError, ResultsError
from .methods import presets
from .results import RunRecord, check_writable
from .stats import mean_interval
from .verdicts import censored_interval

COLUMNS = [
    "group", "method", "sparsity", "density", "seeds", "seed_list", "reached", "target_accuracy", "horizon",
    "rounds_to_target_mean", "rounds_to_target_low", "rounds_to_target_high", "at_round",
    "accuracy_at_round_mean", "accuracy_at_round_low", "accuracy_at_round_high", "runs",
]


def _point_key(rec: RunRecord) -> tuple:
    """Runs of one point: equal but for seed, name, output and ``rounds`` (a longer run is read to the horizon)."""
    return tuple(kv for kv in experiment_key(rec) if kv[0] != "rounds")


def rounds_to(rec: RunRecord, target: float, horizon: int) -> int | None:
    """The first evaluated round <= ``horizon`` with test accuracy >= ``target``; None if none."""
    hit = first_reaching(rec.metrics[rec.metrics["round"] <= horizon], target)
    return None if hit is None else int(hit["round"])


def accuracy_at(rec: RunRecord, rnd: int) -> float:
    """Test accuracy evaluated at round ``rnd`` (NaN if the run did not evaluate there)."""
    m = rec.metrics
    row = m[(m["round"] == rnd) & m["test_accuracy"].notna()]
    return float(row["test_accuracy"].iloc[0]) if not row.empty else math.nan


def density_table(records: Sequence[RunRecord], target: float | None = None, at_round: int = 100,
                  horizon: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """One row per (group, method, sparsity) point (COLUMNS), sorted by group, method and density;
    ``target``: test accuracy (fraction; None: compare's default, 95% of the best uncompressed run of the
    group); ``horizon``: rounds read per run (None: the longest run's last round); a run may end before it
    only if it reached the target (runs extended in stages until they reach it: ``run --resume DIR --rounds N``)."""
    if not isinstance(at_round, int) or at_round < 1:
        raise ConfigError(f"at-round must be a round number >= 1, got {at_round}")
    if horizon is not None and (not isinstance(horizon, int) or horizon < at_round):
        raise ConfigError(f"horizon must be a round count >= at-round ({at_round}), got {horizon}")
    goals = targets(records, target)
    compressed = [r for r in records if presets.uses_sparsity(r.config) and not presets.is_uncompressed(r.config)]
    if not compressed:
        raise ResultsError("no runs of a method that uses --sparsity: nothing to draw against density")
    warnings: list[str] = []
    for group in {group_of(r) for r in compressed}:
        if math.isnan(goals[group][0]):
            raise ResultsError(f"group {group} has no uncompressed run to set a target: pass --target-accuracy")
    h = horizon if horizon is not None else max(int(r.metrics["round"].max()) for r in compressed)
    short = [r.path.name for r in compressed  # a run that stopped once it reached the target is read in full
             if int(r.metrics["round"].max()) < h and rounds_to(r, goals[group_of(r)][0], h) is None]
    if short:
        raise ResultsError(f"{len(short)} run(s) end before the horizon {h} without reaching the target (e.g. {short[0]}): "
                           f"extend them (run --resume DIR --rounds {h}) or pass a smaller --horizon")
    points: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in sorted(compressed, key=sort_key):
        points[(group_of(r), _point_key(r))].append(r)
    rows = []
    for (group, _), recs in points.items():
        goal = goals[group][0]
        c = recs[0].config
        hits = [rounds_to(r, goal, h) for r in recs]
        accs = [accuracy_at(r, at_round) for r in recs]
        if any(math.isnan(a) for a in accs):
            warnings.append(f"{presets.method_label(c)} s={c['sparsity']:g}: some seeds were not evaluated at round {at_round}")
            accs = [a for a in accs if not math.isnan(a)]
        acc = mean_interval(accs)
        mean, low, high, _, _ = censored_interval(hits, [h] * len(hits))
        rows.append({
            "group": group, "method": presets.method_label(c), "sparsity": float(c["sparsity"]),
            "density": 1.0 - float(c["sparsity"]), "seeds": len(recs),
            "seed_list": " ".join(str(r.config.get("seed")) for r in recs), "reached": sum(v is not None for v in hits),
            "target_accuracy": goal, "horizon": h,
            "rounds_to_target_mean": mean, "rounds_to_target_low": low, "rounds_to_target_high": high,
            "at_round": at_round, "accuracy_at_round_mean": acc.mean, "accuracy_at_round_low": acc.low,
            "accuracy_at_round_high": acc.high, "runs": " ".join(str(r.path) for r in recs),
        })
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["group", "method", "density"], kind="stable", ignore_index=True)
    return table, warnings


def reaching_density(table: pd.DataFrame) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """Per (group, method): (the smallest density R at which every seed reached the target, the next
    smaller density tried, where not every seed did; None where there is none)."""
    out = {}
    for (group, method), rows in table.groupby(["group", "method"], sort=False):
        rows = rows.sort_values("density", ascending=False)
        ok = None
        stop = None
        for _, row in rows.iterrows():
            if row["reached"] == row["seeds"] and stop is None:
                ok = float(row["density"])
            elif stop is None:
                stop = float(row["density"])
        out[(group, method)] = (ok, stop)
    return out


def _span(mean: float, low: float, high: float, fmt: str) -> str:
    if math.isinf(mean):
        return "not reached" if math.isinf(low) else f"> {low:{fmt}}"
    return f"{mean:{fmt}}" if math.isnan(low) else f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def describe_rows(table: pd.DataFrame) -> list[str]:
    """One line per point: method, R, seeds reaching, rounds to target and accuracy at the round with 95% intervals."""
    out = []
    for _, r in table.iterrows():
        out.append(f"{r['group']}  {r['method']:<10} R = {r['density']:<8.3g} reached {int(r['reached'])}/{int(r['seeds'])} "
                   f"in {int(r['horizon'])} rounds  rounds to {r['target_accuracy']:.4g}: "
                   f"{_span(r['rounds_to_target_mean'], r['rounds_to_target_low'], r['rounds_to_target_high'], '.0f')}  "
                   f"accuracy at round {int(r['at_round'])}: "
                   f"{_span(r['accuracy_at_round_mean'], r['accuracy_at_round_low'], r['accuracy_at_round_high'], '.4f')}")
    return out


def density_figure(table: pd.DataFrame, title: str):
    """Two panels per group row: (a) rounds to target vs R, (b) accuracy at ``at_round`` vs R; log R axis."""
    import matplotlib.pyplot as plt

    from .styles import method_styles

    styles = method_styles(table["method"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.6), squeeze=True)
    horizon, at_round = int(table["horizon"].iloc[0]), int(table["at_round"].iloc[0])
    target = float(table["target_accuracy"].iloc[0])
    methods = list(table.groupby("method", sort=False))
    for k, (method, rows) in enumerate(methods):
        st = styles[method]
        shift = 1.12 ** (k - (len(methods) - 1) / 2)  # side by side at one R, so the bars do not hide each other
        x = rows["density"].to_numpy() * shift
        n = int(rows["seeds"].max())
        label = f"{method} ({n} seed{'s' * (n != 1)})"
        ax = axes[0]
        full = (rows["reached"] == rows["seeds"]).to_numpy()
        y = rows["rounds_to_target_mean"].where(full, rows["rounds_to_target_low"]).clip(upper=horizon).to_numpy()
        ax.plot(x, y, color=st.color, linestyle=st.dash, marker=None, linewidth=1.2)
        for xi, (_, row), yi, is_full in zip(x, rows.iterrows(), y, full):
            if is_full:
                lo, hi = row["rounds_to_target_low"], row["rounds_to_target_high"]
                err = None if math.isnan(lo) else [[yi - lo], [hi - yi]]
                ax.errorbar([xi], [yi], yerr=err, color=st.color, marker=st.marker, capsize=3, linestyle="none")
            else:
                ax.plot([xi], [yi], color=st.color, marker=st.marker, fillstyle="none", linestyle="none")
                ax.annotate("", xy=(xi, min(yi * 1.25, horizon * 1.1)), xytext=(xi, yi),
                            arrowprops={"arrowstyle": "->", "color": st.color, "lw": 1.0})
                ax.annotate(f"{int(row['reached'])}/{int(row['seeds'])}", (xi, yi), textcoords="offset points",
                            xytext=(5, -10), fontsize=7, color=st.color)
        acc = rows["accuracy_at_round_mean"].to_numpy()
        lo, hi = rows["accuracy_at_round_low"].to_numpy(), rows["accuracy_at_round_high"].to_numpy()
        err = None if all(math.isnan(v) for v in lo) else [acc - lo, hi - acc]
        axes[1].errorbar(x, acc, yerr=err, color=st.color, marker=st.marker, linestyle=st.dash, capsize=3, label=label)
    axes[0].axhline(horizon, color="0.5", linewidth=0.8, linestyle=":")
    axes[0].text(0.02, horizon, f" not reached in {horizon} rounds", transform=axes[0].get_yaxis_transform(),
                 fontsize=7, color="0.4", va="bottom")
    axes[0].set_ylim(0, horizon * 1.12)
    axes[0].set_ylabel(f"rounds to {target:.4g} test accuracy")
    axes[1].set_ylabel(f"test accuracy at round {at_round}")
    from matplotlib.ticker import LogLocator, NullFormatter

    lo_d, hi_d = float(table["density"].min()), float(table["density"].max())
    for ax, letter in zip(axes, "ab"):
        ax.set_xscale("log")
        ax.set_xlim(lo_d / 2.5, hi_d * 2.5)
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("density R (fraction of entries sent)")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(f"({letter})", loc="left", fontsize=9)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_density(paths: Iterable[str | Path], out_dir: str | Path, target_accuracy: float | None = None,
                 at_round: int = 100, horizon: int | None = None, formats: Sequence[str] = ("png", "pdf"),
                 title: str | None = None) -> tuple[pd.DataFrame, list[Path], list[str]]:
    """Collect the runs under ``paths``, write ``OUT/density.csv`` and ``OUT/{group}-density.{fmt}``;
    returns (table, files written, warnings). Every check runs before anything is written."""
    from .plots import STYLE, _save, describe, group_slug, normalize_formats

    formats = normalize_formats(formats) if formats else []
    out = Path(out_dir)
    check_writable(out, create=False)
    records, warnings = collect_runs(paths)
    table, more = density_table(records, target_accuracy, at_round, horizon)
    warnings += more
    check_writable(out)
    csv = out / "density.csv"
    table.to_csv(csv, index=False)
    written = [csv]
    if formats:
        import matplotlib.pyplot as plt

        with plt.rc_context(STYLE):
            for group, rows in table.groupby("group", sort=True):
                recs = [r for r in records if group_of(r) == group]
                head = title or describe(recs)
                fig = density_figure(rows, f"{head}\n(a) rounds to target, (b) accuracy at round {at_round}, "
                                           f"versus density; 95% t-intervals over seeds")
                written += _save(fig, out / f"{group_slug(group)}-density", formats)
    return table, written, warnings


__all__ = ["COLUMNS", "density_table", "describe_rows", "reaching_density", "density_figure", "save_density", "rounds_to", "accuracy_at"]
