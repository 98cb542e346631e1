"""Compare runs: collect run directories, summarise each run into one table row (runs.csv) and each
group of seeds into one row with 95% intervals (compare.csv), with verdicts against a baseline.

    from flarebench.compare import compare
    result = compare(["results/"], out_dir="compare", budget=2**20, baseline="topk-ef")
    result.table            # pandas DataFrame, one row per run (SUMMARY_COLUMNS): OUT/runs.csv
    result.groups           # one row per group of seeds (verdicts.group_table + VERDICT_COLUMNS): OUT/compare.csv
    result.csv_path, result.runs_csv_path, result.figures, result.warnings

Definitions (bits are bits, not bytes):

- ``total_uplink_bits``: the last metrics row's ``cumulative_uplink_bits`` (encoded bytes x 8).
- ``dense_uplink_bits``: what dense fp32 updates would have cost: ``32 * num_params`` per participating
  client per round, summed over the rounds done; ``compression_ratio = dense / total``.
- ``sent_density``: entries really sent / entries of the participants' dense updates, over the run
  (``nnz`` summed); above ``1 - sparsity`` where tensors are small (every tensor sends at least one).
- ``total_downlink_bits``: the last ``cumulative_downlink_bits`` (``--downlink dense``: the fp32 model to
  each participant; ``sparse``: the encoded update to every client).
- ``target_accuracy``: ``--target-accuracy`` if given, else 95% of the best test accuracy reached by an
  uncompressed run (method ``none``) of the same dataset/model group; none in the group: no target.
- ``bits_to_target`` / ``rounds_to_target``: cumulative uplink bits and round at the first evaluated
  round whose test accuracy is >= the target (empty if never reached).
- ``mean_accuracy``: the mean test accuracy over the evaluations after round 0 (a run's learning speed:
  with evenly spaced evaluations, the area under its accuracy-vs-round curve over the rounds).
- ``accuracy_at_budget`` (with ``budget``, bits): the test accuracy at the last evaluation whose
  cumulative uplink bits are <= the budget (round 0 counts, at 0 bits); the dual of bits to target.
- ``tuned``: for a run of a ``sweep --tune`` pick, what was picked, from which grid, by which criterion
  (``lr=0.1 of [0.03, 0.1, 0.3] by val-accuracy``; docs/tuning.md); empty otherwise.

Runs of different datasets or models are kept apart: ``group`` = ``dataset/model``, and targets and
figures are per group.

Seeds (compare.csv; docs/verdicts.md): runs whose configs differ only in NOT_EXPERIMENT_KEYS (seed,
name, out, ...) form one group. Each metric is reported as ``<metric>_mean``, ``_low``, ``_high``: the
mean over seeds and its two-sided 95% Student-t interval (``mean +- t_{0.975, n-1} s / sqrt(n)``,
:func:`flarebench.stats.mean_interval`); one seed: no interval. Not reached: for bits/rounds to target,
if all n seeds reach the target, the mean and interval of their values; if k < n do, each unreached
seed's value is censored at its horizon (its whole uplink / its last round; the true value is larger),
the mean is inf (printed as ``> X``, X = ``<metric>_censored_mean``, the mean with the censored values),
``_low`` is the t-interval's lower end of the censored values (a lower bound) and ``_high`` inf; no seed
reaching: all inf. ``reached`` = k/n. Baseline (``baseline``): each group against the baseline method's
group of the same dataset/model and, where both use one, sparsity (of several, the one equal on the other
keys; else no verdict, with a warning); the difference group - baseline of ``metric`` is a paired t-interval
on the common seeds (>= 2 common), else Welch's t (>= 2 seeds each), else none ("too few seeds");
``verdict``: better / worse (the 95% interval excludes 0), no significant difference, or too few seeds.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .divergence import marked
from .errors import ConfigError, ResultsError
from .methods import presets
from .results import CONFIG_FILE, METRICS_FILE, RunRecord, check_writable, load_run
from .verdicts import VERDICT_COLUMNS, baseline_verdicts, check_baseline, check_metric, duplicate_seed_warnings, group_table, seed_groups

log = logging.getLogger("flarebench.compare")

TARGET_FRACTION = 0.95  # default target: this fraction of the best uncompressed run's best accuracy
# config keys that do not make two runs different experiments (seeds of one config are averaged in plots)
NOT_EXPERIMENT_KEYS = {"seed", "name", "out", "data_root", "download", "device", "engine", "client_chunk", "eval_batch_size", "tuned"}

SUMMARY_COLUMNS = [
    "run", "group", "method", "compressor", "uncompressed", "sparsity", "dataset", "model", "seed", "label",
    "status", "rounds_done", "rounds_planned",
    "final_accuracy", "best_accuracy", "best_round", "mean_accuracy",
    "total_uplink_bits", "dense_uplink_bits", "compression_ratio", "total_downlink_bits", "sent_density",
    "target_accuracy", "target_source", "bits_to_target", "rounds_to_target", "budget_bits", "accuracy_at_budget",
    "wall_time_s", "num_params", "tuned", "path",
]


# ---------------------------------------------------------------------------------------- collecting
def find_run_dirs(paths: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Run directories named in ``paths`` (a run dir, or a directory searched recursively for runs).

    Returns (run dirs in sorted order without duplicates, warnings about skipped directories).
    ResultsError if a path does not exist or nothing is found.
    """
    found: dict[Path, None] = {}
    warnings: list[str] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ResultsError(f"{p} does not exist")
        if (p / CONFIG_FILE).is_file():
            found[p] = None
            continue
        if not p.is_dir():
            raise ResultsError(f"{p} is neither a run directory nor a results directory")
        for root, dirs, files in os.walk(p):
            dirs.sort()
            if CONFIG_FILE in files:
                dirs.clear()  # a run dir holds no runs
                if METRICS_FILE in files:
                    found[Path(root)] = None
                else:
                    warnings.append(f"skipped {root}: {METRICS_FILE} is missing")
    if not found:
        raise ResultsError(f"no flarebench runs (directories with {CONFIG_FILE} and {METRICS_FILE}) in {', '.join(map(str, paths))}")
    return list(found), warnings


def collect_runs(paths: Iterable[str | Path]) -> tuple[list[RunRecord], list[str]]:
    """Load every run under ``paths``. A run that cannot be read (a damaged config.json or metrics.csv)
    is skipped with a warning saying which file is damaged and how; ResultsError if none can be read."""
    paths = list(paths)
    dirs, warnings = find_run_dirs(paths)
    records = []
    for d in dirs:
        try:
            rec = load_run(d)
            _check_record(rec)
        except ResultsError as e:
            warnings.append(f"skipped {d}: {e}")
            continue
        records.append(rec)
    if not records:
        raise ResultsError("no readable runs: " + "; ".join(warnings))
    return records, warnings


def _check_record(rec: RunRecord) -> None:
    need = {"round", "clients", "test_loss", "test_accuracy", "nnz", "cumulative_uplink_bits", "cumulative_downlink_bits", "wall_time_s"}
    missing = need - set(rec.metrics.columns)
    if missing:
        raise ResultsError(f"run {rec.path}: {METRICS_FILE} lacks the column(s) {', '.join(sorted(missing))}")
    absent = [k for k in ("method", "sparsity", "dataset", "model", "rounds") if k not in rec.config]
    absent += ["num_params"] * ("num_params" not in rec.meta)
    if absent:
        raise ResultsError(f"run {rec.path}: {CONFIG_FILE} lacks {', '.join(absent)}")
    if rec.metrics.empty:
        raise ResultsError(f"{rec.path} has no metrics rows yet")


# ---------------------------------------------------------------------------------------- labels, groups
def group_of(rec: RunRecord) -> str:
    """``dataset/model``: runs are compared (targets, figures) within a group."""
    return f"{rec.config['dataset']}/{rec.config['model']}"


def flat_config(config: dict) -> dict:
    """The config with ``params`` spread out as ``kind.param`` keys (``regularizer.tau0``), and no
    sparsity where the compressor ignores it: the keys two runs may differ in."""
    out = {k: v for k, v in config.items() if k != "params"}
    for kind, table in (config.get("params") or {}).items():
        out.update({f"{kind}.{k}": v for k, v in (table or {}).items()})
    if not presets.uses_sparsity(config):
        out.pop("sparsity", None)
    return out


def experiment_key(rec: RunRecord) -> tuple:
    """The run's config without NOT_EXPERIMENT_KEYS: runs with equal keys are seeds of one experiment."""
    return tuple(sorted((k, repr(v)) for k, v in flat_config(rec.config).items() if k not in NOT_EXPERIMENT_KEYS))


def method_label(rec: RunRecord) -> str:
    """``'flare s=0.999'``, ``'flare+stc s=0.999'``, ``'qsgd'``; the uncompressed method: ``'none (dense)'``."""
    c = rec.config
    name = presets.method_label(c)
    if name == "none" and presets.is_uncompressed(c):
        return "none (dense)"
    return f"{name} s={c['sparsity']:g}" if presets.uses_sparsity(c) else name


def labels(records: Sequence[RunRecord]) -> list[str]:
    """A legend label per run: method and sparsity, plus any other config value that differs between
    experiments of its group sharing that method label (e.g. ``'flare s=0.999 lr=0.05'``)."""
    out = []
    for rec in records:
        base = method_label(rec)
        peers = [r for r in records if group_of(r) == group_of(rec) and method_label(r) == base]
        flat, peers_flat = flat_config(rec.config), [flat_config(r.config) for r in peers]
        varying = sorted(
            k for k in flat
            if k not in NOT_EXPERIMENT_KEYS | set(presets.KINDS) | {"method", "sparsity"} and len({repr(f.get(k)) for f in peers_flat}) > 1
        )
        out.append(" ".join([base, *(f"{k.replace('_', '-')}={flat[k]}" for k in varying)]))
    return out


def sort_key(rec: RunRecord) -> tuple:
    """Group, method (the order of methods/presets.py), sparsity, experiment, seed: the order of tables and legends."""
    m = rec.config["method"]
    order = method_index(m)
    sparsity = rec.config["sparsity"] if presets.uses_sparsity(rec.config) else 0.0
    return (group_of(rec), order, presets.method_label(rec.config), sparsity, experiment_key(rec), rec.config.get("seed", 0), str(rec.path))


def method_index(method: str) -> int:
    """A method's place in tables and legends: its preset's position (unknown methods last)."""
    names = presets.method_names()
    return names.index(method) if method in names else len(names)


# ---------------------------------------------------------------------------------------- the table
def evaluated(metrics: pd.DataFrame) -> pd.DataFrame:
    """The rows with a test evaluation."""
    return metrics[metrics["test_accuracy"].notna()]


def first_reaching(metrics: pd.DataFrame, target: float) -> pd.Series | None:
    """The first evaluated row with test accuracy >= ``target``, or None."""
    ev = evaluated(metrics)
    hit = ev[ev["test_accuracy"] >= target]
    return None if hit.empty else hit.iloc[0]


def targets(records: Sequence[RunRecord], target_accuracy: float | None = None) -> dict[str, tuple[float, str]]:
    """Per group: (target accuracy, where it comes from); NaN if the group has no uncompressed run."""
    if target_accuracy is not None and not (isinstance(target_accuracy, (int, float)) and 0 < target_accuracy <= 1):
        raise ConfigError(f"target-accuracy is a fraction in (0, 1], got {target_accuracy}")
    out = {}
    for g in sorted({group_of(r) for r in records}):
        if target_accuracy is not None:
            out[g] = (float(target_accuracy), "given")
            continue
        best = [evaluated(r.metrics)["test_accuracy"].max() for r in records if group_of(r) == g and presets.is_uncompressed(r.config)]
        best = [b for b in best if not math.isnan(b)]
        out[g] = (TARGET_FRACTION * max(best), f"{TARGET_FRACTION:.0%} of best none") if best else (math.nan, "")
    return out


def engine_of(rec: RunRecord) -> str:
    """The engine a run trained with: config.json's ``engine_resolved`` (what ``auto`` picked), else its config's."""
    resolved = rec.meta.get("engine_resolved")
    return str(resolved.get("engine") if isinstance(resolved, dict) and resolved.get("engine") else rec.config.get("engine", "?"))


def mix_warnings(records: Sequence[RunRecord]) -> list[str]:
    """Per group, a warning if its runs trained with different engines or on different devices: their
    numbers then differ by float rounding (which can flip a top-k or FLARE-mask tie) as well as by method."""
    out = []
    for g in sorted({group_of(r) for r in records}):
        rows = [r for r in records if group_of(r) == g]
        for what, of in (("engines", engine_of), ("devices", lambda r: str(r.meta.get("device", "?")))):
            seen: dict[str, list[str]] = {}
            for r in rows:
                seen.setdefault(of(r), []).append(r.path.name)
            if len(seen) > 1:
                listed = "; ".join(f"{k}: {', '.join(v[:3])}{' ...' if len(v) > 3 else ''}" for k, v in sorted(seen.items()))
                out.append(f"group {g}: the runs used different {what} ({listed}); their results differ by float rounding "
                           f"as well as by method (pin --engine and --device to compare like with like)")
    return out


def target_warnings(table: pd.DataFrame, goals: dict[str, float], given: bool) -> list[str]:
    """Groups with no target, and default targets that say little: every run of the group reaches one
    set by an uncompressed run that learned less than a compressed one (e.g. stopped early)."""
    out = []
    for g, t in goals.items():
        if math.isnan(t):
            out.append(f"group {g}: no uncompressed run (method none), so no target accuracy; pass --target-accuracy")
            continue
        rows = table[table["group"] == g]
        dense_best = rows.loc[rows["uncompressed"], "best_accuracy"].max()
        sparse_best = rows.loc[~rows["uncompressed"], "best_accuracy"].max()
        if not given and sparse_best > dense_best:
            out.append(f"group {g}: the best uncompressed run ({dense_best:.4f}) is below a compressed one ({sparse_best:.4f}), "
                       f"so the default target {t:.4f} says little; pass --target-accuracy")
    return out


def accuracy_at_budget(metrics: pd.DataFrame, budget: float) -> float:
    """Test accuracy at the last evaluation whose cumulative uplink bits are <= ``budget`` (NaN if none)."""
    ev = evaluated(metrics)
    within = ev[ev["cumulative_uplink_bits"] <= budget]
    return float(within["test_accuracy"].iloc[-1]) if not within.empty else math.nan


def check_budget(budget) -> float | None:
    """``budget`` (bits: a number, or text such as ``'2.5Mib'``) as a float; ConfigError if not a positive number."""
    if budget is None:
        return None
    from .units import parse_bits

    try:
        return parse_bits(budget)
    except ValueError as e:
        raise ConfigError(f"--budget takes {e}") from None


def summarize_run(rec: RunRecord, label: str, target: float, target_source: str, budget: float | None = None) -> dict:
    """One table row (SUMMARY_COLUMNS) from a run's config.json and metrics.csv (``budget``: bits)."""
    m, c = rec.metrics, rec.config
    ev = evaluated(m)
    later = ev[ev["round"] > 0]
    last = m.iloc[-1]
    best = ev.loc[ev["test_accuracy"].idxmax()] if not ev.empty else None
    total = int(last["cumulative_uplink_bits"])
    dense = 32 * int(rec.meta["num_params"]) * int(m["clients"].fillna(0).sum())
    hit = first_reaching(m, target) if not math.isnan(target) else None
    return {
        "run": rec.path.name,
        "group": group_of(rec),
        "method": c["method"],
        "compressor": c.get("compressor"),
        "uncompressed": presets.is_uncompressed(c),
        "sparsity": c["sparsity"] if presets.uses_sparsity(c) else None,
        "dataset": c["dataset"],
        "model": c["model"],
        "seed": c.get("seed"),
        "label": label,
        "status": marked(rec.meta.get("status", "unknown"), rec.meta),
        "rounds_done": int(last["round"]),
        "rounds_planned": int(c["rounds"]),
        "final_accuracy": float(ev["test_accuracy"].iloc[-1]) if not ev.empty else math.nan,
        "best_accuracy": float(best["test_accuracy"]) if best is not None else math.nan,
        "best_round": int(best["round"]) if best is not None else None,
        "mean_accuracy": float(later["test_accuracy"].mean()) if not later.empty else math.nan,
        "total_uplink_bits": total,
        "dense_uplink_bits": dense,
        "compression_ratio": dense / total if total else math.nan,
        "total_downlink_bits": int(last["cumulative_downlink_bits"]),
        "sent_density": float(m["nnz"].sum()) / (int(rec.meta["num_params"]) * float(m["clients"].fillna(0).sum()) or math.nan),
        "target_accuracy": target,
        "target_source": target_source,
        "bits_to_target": int(hit["cumulative_uplink_bits"]) if hit is not None else None,
        "rounds_to_target": int(hit["round"]) if hit is not None else None,
        "budget_bits": budget if budget is not None else math.nan,
        "accuracy_at_budget": accuracy_at_budget(m, budget) if budget is not None else math.nan,
        "wall_time_s": float(last["wall_time_s"]),
        "num_params": int(rec.meta["num_params"]),
        "tuned": tuned_text(c.get("tuned")),
        "path": str(rec.path),
    }


def tuned_text(tuned) -> str:
    """A ``--tune`` pick as config.json records it, in words: ``lr=0.1 of [0.03, 0.1, 0.3] by val-accuracy``; "" if none."""
    if not isinstance(tuned, dict) or not isinstance(tuned.get("keys"), dict):
        return ""
    keys = [f"{k.replace('_', '-')}={v.get('value')} of {v.get('grid')}" for k, v in tuned["keys"].items() if isinstance(v, dict)]
    return f"{', '.join(keys)} by {tuned.get('criterion')}"


def summarize(records: Sequence[RunRecord], target_accuracy: float | None = None, budget: float | None = None) -> pd.DataFrame:
    """The comparison table: one row per run, sorted by group, method, sparsity, seed (``budget``: bits)."""
    records = sorted(records, key=sort_key)
    tg = targets(records, target_accuracy)
    rows = [summarize_run(r, lab, *tg[group_of(r)], budget=budget) for r, lab in zip(records, labels(records))]
    table = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    for col in ("best_round", "bits_to_target", "rounds_to_target"):
        table[col] = table[col].astype("Int64")  # integers with empty cells where absent
    return table


def summarize_groups(records: Sequence[RunRecord], table: pd.DataFrame, baseline: str | None = None,
                     metric: str = "final_accuracy") -> tuple[pd.DataFrame, list[str]]:
    """The grouped table (one row per group of seeds, :func:`verdicts.group_table`) of the per-run
    ``table`` of ``records``, with VERDICT_COLUMNS against ``baseline``; and warnings. ConfigError if
    ``baseline`` has no runs here."""
    groups = seed_groups(sorted(records, key=sort_key))
    frame = group_table(table, groups)
    warnings = duplicate_seed_warnings(table, groups)
    if baseline is not None:
        check_baseline(baseline, groups)
        cols, more = baseline_verdicts(table, groups, baseline, metric)
        frame = pd.concat([frame, pd.DataFrame(cols, columns=VERDICT_COLUMNS)], axis=1)
        warnings += more
    return frame, warnings


def write_csv(table: pd.DataFrame, out_dir: str | Path, name: str = "compare.csv") -> Path:
    """``OUT/name``: a table as tidy CSV (raw numbers: bits, fractions, seconds; inf where not reached)."""
    out = Path(out_dir)
    check_writable(out)
    path = out / name
    table.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------- all of it
@dataclass
class CompareResult:
    """What :func:`compare` produced: ``table`` per run (runs.csv), ``groups`` per group of seeds (compare.csv)."""

    table: pd.DataFrame
    csv_path: Path
    figures: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    records: list[RunRecord] = field(default_factory=list, repr=False)
    groups: pd.DataFrame | None = None
    runs_csv_path: Path | None = None


def compare(
    paths: Iterable[str | Path],
    out_dir: str | Path = "compare",
    target_accuracy: float | None = None,
    x: str | Sequence[str] = ("bits", "round"),
    formats: Sequence[str] = ("png", "pdf"),
    budget: float | str | None = None,
    baseline: str | None = None,
    metric: str = "final_accuracy",
) -> CompareResult:
    """Collect the runs under ``paths``, write ``OUT/compare.csv`` (groups of seeds), ``OUT/runs.csv``
    (runs) and the figures (plots.save_figures). ``budget``: bits for accuracy_at_budget; ``baseline``:
    a method to give each group a verdict against, on ``metric`` (verdicts.VERDICT_METRICS). Bad options
    or ``out_dir`` raise a FlarebenchError before anything is written; unreadable runs are skipped.
    Warnings (skipped runs, targets, runs of different engines or devices side by side, groups without a
    verdict) are logged to the ``flarebench.compare`` logger and returned in ``.warnings``."""
    from .plots import normalize_formats, normalize_x, save_figures

    xs, formats = normalize_x(x), normalize_formats(formats)
    budget = check_budget(budget)
    check_metric(metric, budget)
    check_writable(Path(out_dir), create=False)
    records, warnings = collect_runs(paths)
    table = summarize(records, target_accuracy, budget)
    groups, group_warnings = summarize_groups(records, table, baseline, metric)
    goals = {g: t for g, (t, _) in targets(records, target_accuracy).items()}
    warnings += target_warnings(table, goals, given=target_accuracy is not None) + mix_warnings(records) + group_warnings
    warnings += [f"run {r.path.name}: {marked('', r.meta).lstrip(', ')} ({r.meta['diverged'].get('reason')})"
                 for r in records if marked("", r.meta)]
    for w in warnings:  # the CLI prints them as 'flarebench: warning: ...' (compare and sweep alike)
        log.warning("%s", w)
    csv_path = write_csv(groups, out_dir)
    runs_path = write_csv(table, out_dir, "runs.csv")
    figures = save_figures(records, out_dir, formats=formats, x=xs, targets=goals) if formats else []
    return CompareResult(table, csv_path, figures, warnings, sorted(records, key=sort_key), groups, runs_path)


__all__ = [
    "SUMMARY_COLUMNS", "CompareResult", "compare", "collect_runs", "find_run_dirs", "summarize", "summarize_run", "summarize_groups",
    "targets", "write_csv", "mix_warnings", "engine_of", "group_of", "experiment_key", "labels", "method_label", "first_reaching", "evaluated",
    "accuracy_at_budget", "check_budget",
]
