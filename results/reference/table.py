"""Print the reference-results table (Markdown) from the runs under results/reference/.

    python results/reference/table.py      # from the repository root

One row per run: experiment, method, sparsity, rounds, final test accuracy, mean of the last three
evaluations, the mean over all evaluations after round 0 (a proxy for speed), the paper's / reference code's number where [meta.reference] of the experiment's
config has one, and the device. Nothing is typed in by hand: every number is read from the runs'
metrics.csv / config.json and from the configs in baselines/flare_paper/.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flarebench.results import load_run  # noqa: E402
from flarebench.sweep import load_sweep, run_dirs  # noqa: E402

ORDER = ["flare", "topk-ef", "ef21", "fedprox-ef", "none"]


def rows():
    for exp_dir in sorted(p for p in (ROOT / "results" / "reference").iterdir() if p.is_dir()):
        config = ROOT / "baselines" / "flare_paper" / f"{exp_dir.name}.toml"
        if not config.is_file():
            continue
        sweep = load_sweep(config, out=exp_dir)
        reference = sweep.meta.get("reference", {})
        records = [load_run(d) for d in run_dirs(sweep)]
        records.sort(key=lambda r: (-(r.config["sparsity"] if r.config["method"] != "none" else 0), ORDER.index(r.config["method"])))
        for rec in records:
            c, m = rec.config, rec.metrics
            acc = m["test_accuracy"].dropna()
            ref = reference.get(c["method"])  # the reference numbers are for R = 0.001% (and FedAvg)
            if c["method"] != "none" and c["sparsity"] != 0.99999:
                ref = None
            yield {
                "experiment": exp_dir.name,
                "method": c["method"],
                "sparsity": "dense" if c["method"] == "none" else f"{c['sparsity']:.10g}",
                "rounds": int(m["round"].max()),
                "final": f"{acc.iloc[-1]:.4f}",
                "last3": f"{acc.iloc[-3:].mean():.4f}",
                "auc": f"{acc.iloc[1:].mean():.4f}",
                "paper": "-" if ref is None else f"{ref:.3f}",
                "device": rec.meta.get("device", "?"),
            }


def main() -> None:
    print("| experiment | method | sparsity | rounds | flarebench final acc | mean of last 3 evals | mean of all evals | paper / reference acc | device |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows():
        print(f"| {r['experiment']} | {r['method']} | {r['sparsity']} | {r['rounds']} | {r['final']} | {r['last3']} | {r['auc']} | {r['paper']} | {r['device']} |")


if __name__ == "__main__":
    main()
