"""Print the reference-results table (Markdown) from the runs under results/reference/.

    python results/reference/table.py      # from the repository root: the FLARE-paper experiments
    python results/reference/table.py zoo  # the compressor zoo (baselines/zoo/)
    python results/reference/table.py unavail_cnn_k7  # one experiment, with accuracy at rounds 100 and 300

One row per (experiment, method, sparsity), aggregated over the seeds that were run: final test
accuracy (mean and min-max over seeds), the mean over all evaluations after round 0 (a proxy for
speed of learning), total uplink bits per run, the reference code's number where [meta.reference]
of the experiment's config has one (full scale: 1000 rounds, 600 samples per client), and the device.
Nothing is typed in by hand: every number is read from the runs' metrics.csv / config.json and
from the configs in baselines/flare_paper/.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flarebench.compare import find_run_dirs, method_index, summarize  # noqa: E402
from flarebench.methods.presets import uses_sparsity  # noqa: E402
from flarebench.results import load_run  # noqa: E402
from flarebench.rundir import read_meta  # noqa: E402
from flarebench.sweep import load_sweep, run_dirs  # noqa: E402
from flarebench.units import human_bits  # noqa: E402

ORDER = ["flare", "topk-ef", "ef21", "fedprox-ef", "none"]  # the paper's order; other methods after, in preset order
REFERENCE_SPARSITY = 0.99999  # the reference numbers are for R = 0.001% (and FedAvg)


AT_ROUNDS = (100, 300)  # the one-experiment table's "accuracy at round R" columns


def complete_runs(exp_dir: Path) -> list[Path]:
    """Every complete run under ``exp_dir``: the config's grid and any seeds or methods run beyond it."""
    dirs, _ = find_run_dirs([exp_dir])
    return [d for d in dirs if read_meta(d).get("status") == "complete"]


def rows(only: str | None = None):
    for exp_dir in sorted(p for p in (ROOT / "results" / "reference").iterdir() if p.is_dir()):
        config = ROOT / "baselines" / "flare_paper" / f"{exp_dir.name}.toml"
        if not config.is_file() or only not in (None, exp_dir.name):
            continue
        sweep = load_sweep(config, out=exp_dir)
        reference = sweep.meta.get("reference", {})
        groups = defaultdict(list)
        for rec in (load_run(d) for d in complete_runs(exp_dir)):
            c = rec.config
            groups[(c["method"], c["sparsity"] if uses_sparsity(c) else None)].append(rec)
        order = lambda m: ORDER.index(m) if m in ORDER else len(ORDER) + method_index(m)  # noqa: E731
        for (method, sparsity), recs in sorted(groups.items(), key=lambda kv: (-(kv[0][1] or 0), order(kv[0][0]))):
            finals = [r.metrics["test_accuracy"].dropna().iloc[-1] for r in recs]
            means = [r.metrics["test_accuracy"].dropna().iloc[1:].mean() for r in recs]
            bits = statistics.mean(r.metrics["cumulative_uplink_bits"].iloc[-1] for r in recs)
            ref = reference.get(method) if sparsity in (None, REFERENCE_SPARSITY) else None
            at = {}
            for r_at in AT_ROUNDS:
                vals = [r.metrics.set_index("round")["test_accuracy"].get(r_at) for r in recs]
                at[r_at] = "-" if any(v is None or v != v for v in vals) else f"{statistics.mean(vals):.4f}"
            yield {
                "experiment": exp_dir.name,
                "method": method,
                "sparsity": "dense" if sparsity is None else f"{sparsity:.10g}",
                "seeds": len(recs),
                "rounds": int(recs[0].metrics["round"].max()),
                "final": f"{statistics.mean(finals):.4f} ({min(finals):.4f}-{max(finals):.4f})",
                "auc": f"{statistics.mean(means):.4f}",
                "uplink": human_bits(bits),
                "paper": "-" if ref is None else f"{ref:.3f}",
                "device": recs[0].meta.get("device", "?"),
                "at": at,
            }


def main() -> None:
    print("| experiment | method | sparsity | seeds | rounds | final test acc, mean (min-max) | mean of all evals "
          "| uplink per run | reference code (full scale) | device |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|---|")
    for r in rows():
        print(f"| {r['experiment']} | {r['method']} | {r['sparsity']} | {r['seeds']} | {r['rounds']} | {r['final']} "
              f"| {r['auc']} | {r['uplink']} | {r['paper']} | {r['device']} |")


def experiment(name: str) -> None:
    """One experiment's table (the full-scale table of docs/reference-results.md): means over seeds, accuracy at AT_ROUNDS."""
    table = list(rows(name))
    if not table:
        sys.exit(f"error: no runs of {name} under results/reference/{name} (or no baselines/flare_paper/{name}.toml)")
    at = " | ".join(f"acc. round {r}" for r in AT_ROUNDS)
    print(f"| method | sparsity | seeds | final test acc | mean of all evals | {at} | uplink | reference code's log |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(AT_ROUNDS) + "---:|---:|")
    for r in table:
        final = r["final"] if r["seeds"] > 1 else r["final"].split(" ")[0]
        cells = " | ".join(r["at"][x] for x in AT_ROUNDS)
        print(f"| `{r['method']}` | {r['sparsity']} | {r['seeds']} | {final} | {r['auc']} | {cells} | {r['uplink']} | {r['paper']} |")


def zoo(config: Path = ROOT / "baselines" / "zoo" / "mnist_mlp.toml") -> None:
    """The zoo table: one row per run, in preset order; bits to target = cumulative uplink bits at the first
    evaluation reaching 95% of the uncompressed run's best accuracy (compare's default target)."""
    import pandas as pd

    sweep = load_sweep(config, out=ROOT / "results" / "reference" / f"zoo_{config.stem}")
    table = summarize([load_run(d) for d in run_dirs(sweep)])
    target = table["target_accuracy"].iloc[0]
    print(f"| method | sparsity | final test acc | uplink | bits to target ({target:.4f}) | rounds to target | downlink |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in table.itertuples(index=False):
        sparsity = "-" if pd.isna(r.sparsity) else f"{r.sparsity:g}"
        reached = not pd.isna(r.bits_to_target)
        print(f"| {r.method} | {sparsity} | {r.final_accuracy:.4f} | {human_bits(r.total_uplink_bits)} "
              f"| {human_bits(int(r.bits_to_target)) if reached else 'not reached'} "
              f"| {int(r.rounds_to_target) if reached else '-'} | {human_bits(r.total_downlink_bits)} |")


if __name__ == "__main__":
    if sys.argv[1:] == ["zoo"]:
        zoo()
    elif sys.argv[1:]:
        experiment(sys.argv[1])
    else:
        main()
