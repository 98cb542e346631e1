"""Print the reference-results table (Markdown) from the runs under results/reference/.

    python results/reference/table.py      # from the repository root: the FLARE-paper experiments
    python results/reference/table.py zoo  # the compressor zoo (baselines/zoo/)
    python results/reference/table.py unavail_cnn_k7  # one experiment, with accuracy at rounds 100 and 300

One row per group of seeds (runs that differ only in seed: flarebench compare's groups, the same code):
the mean over seeds with the half-width of its 95% Student-t interval (``mean ± h``; one seed: the
value alone) of the final test accuracy and of the mean over the evaluations after round 0 (a proxy for
speed of learning), total uplink bits per run (mean), the reference code's number where
[meta.reference] of the experiment's config has one (full scale: 1000 rounds, 600 samples per
client), and the device. Nothing is typed in by hand: every number is read from the runs'
metrics.csv / config.json and from the configs in baselines/flare_paper/.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from flarebench.compare import find_run_dirs, method_index, sort_key, summarize, summarize_groups  # noqa: E402
from flarebench.results import load_run  # noqa: E402
from flarebench.rundir import read_meta  # noqa: E402
from flarebench.stats import mean_interval  # noqa: E402
from flarebench.sweep import load_sweep, run_dirs  # noqa: E402
from flarebench.tables import mean_pm, to_target  # noqa: E402
from flarebench.units import human_bits  # noqa: E402
from flarebench.verdicts import seed_groups  # noqa: E402

ORDER = ["flare", "topk-ef", "ef21", "fedprox-ef", "none"]  # the paper's order; other methods after, in preset order
REFERENCE_SPARSITY = 0.99999  # the reference numbers are for R = 0.001% (and FedAvg)


AT_ROUNDS = (100, 300)  # the one-experiment table's "accuracy at round R" columns
# read with `flarebench density` instead: its runs stop once they reach the target, so their finals are not comparable
DENSITY_EXPERIMENTS = {"unavail_cnn_k7_claim"}


def complete_runs(exp_dir: Path) -> list[Path]:
    """Every complete run under ``exp_dir``: the config's grid and any seeds or methods run beyond it."""
    dirs, _ = find_run_dirs([exp_dir])
    return [d for d in dirs if read_meta(d).get("status") == "complete"]


def grouped(dirs) -> list[tuple]:
    """(grouped row, its runs) per group of seeds of the runs in ``dirs``, in compare's order."""
    records = sorted((load_run(d) for d in dirs), key=sort_key)
    table = summarize(records)
    frame, _ = summarize_groups(records, table)
    return [(row, [records[i] for i in g.rows]) for row, g in zip(frame.itertuples(index=False), seed_groups(records))]


def _at_round(recs, r_at: int) -> str:
    """Test accuracy at round ``r_at``: mean ± h over the seeds; '-' if a seed has no evaluation there."""
    vals = [rec.metrics.set_index("round")["test_accuracy"].get(r_at) for rec in recs]
    if any(v is None or v != v for v in vals):
        return "-"
    iv = mean_interval(vals)
    return mean_pm(iv.mean, iv.low, iv.high)


def rows(only: str | None = None):
    for exp_dir in sorted(p for p in (ROOT / "results" / "reference").iterdir() if p.is_dir()):
        config = ROOT / "baselines" / "flare_paper" / f"{exp_dir.name}.toml"
        if not config.is_file() or only not in (None, exp_dir.name) or (only is None and exp_dir.name in DENSITY_EXPERIMENTS):
            continue
        sweep = load_sweep(config, out=exp_dir)
        reference = sweep.meta.get("reference", {})
        order = lambda m: ORDER.index(m) if m in ORDER else len(ORDER) + method_index(m)  # noqa: E731
        sparsity = lambda row: None if pd.isna(row.sparsity) else float(row.sparsity)  # noqa: E731
        for row, recs in sorted(grouped(complete_runs(exp_dir)), key=lambda gr: (-(sparsity(gr[0]) or 0), order(gr[0].method))):
            s = sparsity(row)
            ref = reference.get(row.method) if s in (None, REFERENCE_SPARSITY) else None
            yield {
                "experiment": exp_dir.name,
                "method": row.method,
                "sparsity": "dense" if s is None else f"{s:.10g}",
                "seeds": row.seeds,
                "rounds": int(row.rounds_planned),
                "final": mean_pm(row.final_accuracy_mean, row.final_accuracy_low, row.final_accuracy_high),
                "auc": mean_pm(row.mean_accuracy_mean, row.mean_accuracy_low, row.mean_accuracy_high),
                "uplink": human_bits(row.total_uplink_bits_mean),
                "paper": "-" if ref is None else f"{ref:.3f}",
                "device": recs[0].meta.get("device", "?"),
                "at": {r_at: _at_round(recs, r_at) for r_at in AT_ROUNDS},
            }


def main() -> None:
    print("| experiment | method | sparsity | seeds | rounds | final test acc, mean ± 95% CI | mean of all evals, mean ± 95% CI "
          "| uplink per run | reference code (full scale) | device |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows():
        print(f"| {r['experiment']} | {r['method']} | {r['sparsity']} | {r['seeds']} | {r['rounds']} | {r['final']} "
              f"| {r['auc']} | {r['uplink']} | {r['paper']} | {r['device']} |")


def experiment(name: str) -> None:
    """One experiment's table (the full-scale table of docs/reference-results.md): means ± 95% CI over seeds, accuracy at AT_ROUNDS."""
    table = list(rows(name))
    if not table:
        sys.exit(f"error: no runs of {name} under results/reference/{name} (or no baselines/flare_paper/{name}.toml)")
    at = " | ".join(f"acc. round {r}" for r in AT_ROUNDS)
    print(f"| method | sparsity | seeds | final test acc (± 95% CI) | mean of all evals (± 95% CI) | {at} | uplink | reference code's log |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(AT_ROUNDS) + "---:|---:|")
    for r in table:
        cells = " | ".join(r["at"][x] for x in AT_ROUNDS)
        print(f"| `{r['method']}` | {r['sparsity']} | {r['seeds']} | {r['final']} | {r['auc']} | {cells} | {r['uplink']} | {r['paper']} |")


def zoo(config: Path = ROOT / "baselines" / "zoo" / "mnist_mlp.toml") -> None:
    """The zoo table: one row per group of seeds, in preset order; bits to target = cumulative uplink bits at the
    first evaluation reaching 95% of the uncompressed run's best accuracy (compare's default target)."""
    sweep = load_sweep(config, out=ROOT / "results" / "reference" / f"zoo_{config.stem}")
    table = grouped(run_dirs(sweep))
    target = table[0][0].target_accuracy
    print(f"| method | sparsity | seeds | final test acc | uplink | bits to target ({target:.4f}) | rounds to target | downlink |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r, _ in table:
        sparsity = "-" if pd.isna(r.sparsity) else f"{r.sparsity:g}"
        print(f"| {r.method} | {sparsity} | {r.seeds} | {mean_pm(r.final_accuracy_mean, r.final_accuracy_low, r.final_accuracy_high)} "
              f"| {human_bits(r.total_uplink_bits_mean)} | {to_target(r, 'bits_to_target')} | {to_target(r, 'rounds_to_target')} "
              f"| {human_bits(r.total_downlink_bits_mean)} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["zoo"]:
        zoo()
    elif sys.argv[1:]:
        experiment(sys.argv[1])
    else:
        main()
