"""Print the reference-results table (Markdown) from the runs under results/reference/.

    python results/reference/table.py      # from the repository root

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

from flarebench.results import load_run  # noqa: E402
from flarebench.sweep import load_sweep, run_dirs  # noqa: E402
from flarebench.units import human_bits  # noqa: E402

ORDER = ["flare", "topk-ef", "ef21", "fedprox-ef", "none"]
REFERENCE_SPARSITY = 0.99999  # the reference numbers are for R = 0.001% (and FedAvg)


def rows():
    for exp_dir in sorted(p for p in (ROOT / "results" / "reference").iterdir() if p.is_dir()):
        config = ROOT / "baselines" / "flare_paper" / f"{exp_dir.name}.toml"
        if not config.is_file():
            continue
        sweep = load_sweep(config, out=exp_dir)
        reference = sweep.meta.get("reference", {})
        groups = defaultdict(list)
        for rec in (load_run(d) for d in run_dirs(sweep)):
            c = rec.config
            groups[(c["method"], None if c["method"] == "none" else c["sparsity"])].append(rec)
        for (method, sparsity), recs in sorted(groups.items(), key=lambda kv: (-(kv[0][1] or 0), ORDER.index(kv[0][0]))):
            finals = [r.metrics["test_accuracy"].dropna().iloc[-1] for r in recs]
            means = [r.metrics["test_accuracy"].dropna().iloc[1:].mean() for r in recs]
            bits = statistics.mean(r.metrics["cumulative_uplink_bits"].iloc[-1] for r in recs)
            ref = reference.get(method) if sparsity in (None, REFERENCE_SPARSITY) else None
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
            }


def main() -> None:
    print("| experiment | method | sparsity | seeds | rounds | final test acc, mean (min-max) | mean of all evals "
          "| uplink per run | reference code (full scale) | device |")
    print("|---|---|---|---:|---:|---|---:|---:|---:|---|")
    for r in rows():
        print(f"| {r['experiment']} | {r['method']} | {r['sparsity']} | {r['seeds']} | {r['rounds']} | {r['final']} "
              f"| {r['auc']} | {r['uplink']} | {r['paper']} | {r['device']} |")


if __name__ == "__main__":
    main()
