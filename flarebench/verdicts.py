"""Seeds of one experiment as one row, with 95% Student-t intervals, and verdicts against a baseline.

    from flarebench.verdicts import seed_groups, group_table, baseline_verdicts
    groups = seed_groups(records)                 # records sorted as the per-run table (compare.summarize)
    frame = group_table(table, groups)            # one row per group: <metric>_mean/_low/_high, seeds, reached
    cols, warnings = baseline_verdicts(table, groups, "topk-ef", "final_accuracy")

A group is the runs whose configs differ only in :data:`flarebench.compare.NOT_EXPERIMENT_KEYS` (seed,
name, out, ...): :func:`flarebench.compare.experiment_key`. The rules (intervals, runs that do not reach
the target, the baseline and its test) are in :mod:`flarebench.compare`'s docstring and docs/verdicts.md.
Intervals come from :mod:`flarebench.stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import pandas as pd

from . import stats
from .errors import ConfigError
from .methods import presets
from .methods.registry import KINDS

METRICS = ("final_accuracy", "best_accuracy", "mean_accuracy", "bits_to_target", "rounds_to_target", "accuracy_at_budget")
HORIZON = {"bits_to_target": "total_uplink_bits", "rounds_to_target": "rounds_done"}  # censored at: the run's whole uplink / last round
VERDICT_METRICS = ("final_accuracy", "best_accuracy", "mean_accuracy", "accuracy_at_budget")  # higher is better, never censored
CARRY = ["group", "label", "method", "compressor", "uncompressed", "sparsity", "dataset", "model", "rounds_planned", "tuned"]  # equal within a group
VERDICT_COLUMNS = ["vs_baseline", "diff_metric", "diff_mean", "diff_low", "diff_high", "test", "verdict"]


@dataclass
class SeedGroup:
    """Runs of one experiment: their positions in the per-run table, seeds, and method label (``flare+stc``)."""

    key: tuple
    rows: list[int]
    seeds: list
    method: str


def seed_groups(records: Sequence) -> list[SeedGroup]:
    """``records`` in the per-run table's order (compare.sort_key) -> groups in order of first appearance."""
    from .compare import experiment_key

    out: dict[tuple, SeedGroup] = {}
    for i, rec in enumerate(records):
        key = experiment_key(rec)
        g = out.setdefault(key, SeedGroup(key, [], [], presets.method_label(rec.config)))
        g.rows.append(i)
        g.seeds.append(rec.config.get("seed"))
    return list(out.values())


def duplicate_seed_warnings(table: pd.DataFrame, groups: Sequence[SeedGroup]) -> list[str]:
    """A group that holds one seed twice (the same config run into two directories): its interval treats them as two."""
    out = []
    for g in groups:
        twice = sorted({s for s in g.seeds if g.seeds.count(s) > 1}, key=repr)
        if twice:
            runs = ", ".join(table["run"].iloc[g.rows])
            out.append(f"{table['label'].iloc[g.rows[0]]}: seed {', '.join(map(str, twice))} more than once ({runs}); "
                       f"each run counts as a seed of the interval")
    return out


def _finite(values) -> list[float]:
    return [float(v) for v in values if not pd.isna(v) and math.isfinite(float(v))]


def interval_of(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) over the values that are numbers (NaN ends with one value; all NaN with none)."""
    iv = stats.mean_interval(_finite(values))
    return iv.mean, iv.low, iv.high


def censored_interval(values: Sequence, horizons: Sequence[float]) -> tuple[float, float, float, float, int]:
    """Bits or rounds to target over seeds, ``values`` NaN/None where a seed never reached it:
    (mean, low, high, mean with the unreached at their horizon, seeds reached). All reached: the
    t-interval; some: mean and high inf, low the t-interval's lower end of the censored values; none: inf."""
    reached = [not pd.isna(v) for v in values]
    k = sum(reached)
    censored = [float(v) if hit else float(h) for v, h, hit in zip(values, horizons, reached)]
    at_horizon = sum(censored) / len(censored) if censored else math.nan
    if k == len(values):
        return (*interval_of(censored), at_horizon, k)
    if k == 0:
        return math.inf, math.inf, math.inf, at_horizon, 0
    return math.inf, stats.mean_interval(censored).low, math.inf, at_horizon, k


def group_table(table: pd.DataFrame, groups: Sequence[SeedGroup]) -> pd.DataFrame:
    """One row per group, in the per-run table's order: what the runs share (CARRY), ``seeds`` (count),
    ``seed_list``, ``<metric>_mean/_low/_high`` for METRICS, ``<metric>_censored_mean`` for the two
    to-target metrics, ``reached`` (``k/n``; empty without a target), total uplink and downlink bits
    (means), the target, the budget."""
    carry = [c for c in CARRY if c in table.columns]
    rows = []
    for g in groups:
        sub = table.iloc[g.rows]
        row = {c: sub[c].iloc[0] for c in carry}
        row.update(seeds=len(g.rows), seed_list=" ".join(str(s) for s in g.seeds))
        target = sub["target_accuracy"].iloc[0]
        for m in METRICS:
            if m not in HORIZON:
                mean, low, high = interval_of(sub[m])
            elif pd.isna(target):
                mean = low = high = row[f"{m}_censored_mean"] = math.nan
            else:
                mean, low, high, row[f"{m}_censored_mean"], _ = censored_interval(list(sub[m]), list(sub[HORIZON[m]]))
            row.update({f"{m}_mean": mean, f"{m}_low": low, f"{m}_high": high})
        row["reached"] = "" if pd.isna(target) else f"{int(sub['rounds_to_target'].notna().sum())}/{len(g.rows)}"
        row["total_uplink_bits_mean"] = float(sub["total_uplink_bits"].mean())
        row["total_downlink_bits_mean"] = float(sub["total_downlink_bits"].mean())
        row.update(target_accuracy=target, target_source=sub["target_source"].iloc[0], budget_bits=sub["budget_bits"].iloc[0])
        rows.append(row)
    columns = carry + ["seeds", "seed_list"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "low", "high")]
    columns += [f"{m}_censored_mean" for m in HORIZON] + ["reached", "total_uplink_bits_mean", "total_downlink_bits_mean", "target_accuracy", "target_source", "budget_bits"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------- baseline
def check_metric(metric: str, budget: float | None) -> None:
    """ConfigError (one line) for a metric the verdicts cannot use."""
    if metric in HORIZON:
        raise ConfigError(f"--metric {metric} is not supported for verdicts: seeds that never reach the target have no value "
                          f"for a t-test (see its '> X' bound in the table); use one of {', '.join(VERDICT_METRICS)}")
    if metric not in VERDICT_METRICS:
        raise ConfigError(f"--metric takes {', '.join(VERDICT_METRICS)}; got {metric!r}")
    if metric == "accuracy_at_budget" and budget is None:
        raise ConfigError("--metric accuracy_at_budget needs --budget BITS")


def check_baseline(baseline: str, groups: Sequence[SeedGroup]) -> None:
    """ConfigError (one line) if no group's method is ``baseline``."""
    if any(g.method == baseline for g in groups):
        return
    here = ", ".join(dict.fromkeys(g.method for g in groups))
    if baseline not in presets.method_names():
        raise ConfigError(f"--baseline {baseline}: no such method (the runs here are of {here})")
    raise ConfigError(f"--baseline {baseline}: no run of {baseline} among the runs compared (they are of {here})")


def _shared_keys(key: tuple) -> tuple:
    """An experiment key without what makes the method (method, sparsity, parts and their parameters)."""
    own = {"method", "sparsity", *KINDS}
    return tuple((k, v) for k, v in key if k not in own and k.split(".")[0] not in KINDS)


def _sparsity(table: pd.DataFrame, g: SeedGroup):
    s = table["sparsity"].iloc[g.rows[0]]
    return None if pd.isna(s) else float(s)


def baseline_of(table: pd.DataFrame, groups: Sequence[SeedGroup], g: SeedGroup, baseline: str) -> tuple[SeedGroup | None, str | None]:
    """The baseline group ``g`` is compared with (same dataset/model; same sparsity where both use one;
    of several, the one equal on the other keys), or (None, why not)."""
    where = table["group"].iloc[g.rows[0]]
    s = _sparsity(table, g)
    found = [b for b in groups if b.method == baseline and table["group"].iloc[b.rows[0]] == where
             and (s is None or _sparsity(table, b) is None or _sparsity(table, b) == s)]
    if len(found) > 1:
        found = [b for b in found if _shared_keys(b.key) == _shared_keys(g.key)]
    if len(found) == 1:
        return found[0], None
    label = table["label"].iloc[g.rows[0]]
    if not found:
        return None, f"{where} {label}: no {baseline} run of the same dataset/model and sparsity, so no verdict"
    return None, f"{where} {label}: {len(found)} {baseline} experiments match it equally, so no verdict (compare fewer runs)"


def difference(values: dict, base: dict) -> tuple[stats.Interval, str]:
    """(group - baseline) of one metric, ``{seed: value}`` each: paired t on the common seeds (>= 2),
    else Welch's t (>= 2 seeds each), else the difference of means without an interval."""
    common = [s for s in values if s in base]
    if len(common) >= 2:
        return stats.paired_difference([values[s] for s in common], [base[s] for s in common]), f"paired t, {len(common)} seeds"
    a, b = list(values.values()), list(base.values())
    if len(a) >= 2 and len(b) >= 2:
        return stats.welch_difference(a, b), "Welch t"
    return stats.welch_difference(a, b), "none"


def _by_seed(table: pd.DataFrame, g: SeedGroup, metric: str) -> dict:
    """``{seed: value}`` of ``metric`` over the group's runs (runs without a value left out)."""
    return {s: float(v) for s, v in zip(g.seeds, table[metric].iloc[g.rows]) if not pd.isna(v)}


def baseline_verdicts(table: pd.DataFrame, groups: Sequence[SeedGroup], baseline: str, metric: str) -> tuple[list[dict], list[str]]:
    """Per group, VERDICT_COLUMNS against ``baseline`` for ``metric`` (check_baseline/check_metric first);
    and warnings for the groups left without a verdict."""
    out, warnings = [], []
    for g in groups:
        b, why = baseline_of(table, groups, g, baseline)
        row = dict.fromkeys(VERDICT_COLUMNS, None)
        row.update(diff_metric=metric, diff_mean=math.nan, diff_low=math.nan, diff_high=math.nan)
        if b is None:
            warnings.append(why)
        elif b is g:
            row.update(vs_baseline=table["label"].iloc[g.rows[0]], verdict="baseline")
        else:
            diff, test = difference(_by_seed(table, g, metric), _by_seed(table, b, metric))
            row.update(vs_baseline=table["label"].iloc[b.rows[0]], diff_mean=diff.mean, diff_low=diff.low, diff_high=diff.high,
                       test=test, verdict=stats.verdict(diff))
        out.append(row)
    return out, warnings


__all__ = ["METRICS", "VERDICT_METRICS", "VERDICT_COLUMNS", "HORIZON", "SeedGroup", "seed_groups", "group_table", "interval_of",
           "censored_interval", "check_metric", "check_baseline", "baseline_of", "difference", "baseline_verdicts",
           "duplicate_seed_warnings"]
