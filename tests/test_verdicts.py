"""compare's groups of seeds, intervals, "not reached", --budget and --baseline verdicts, recomputed by hand.

Synthetic runs written with the results contract's writer (results.RunWriter): 4 rounds, every round
evaluated, a known accuracy curve and a fixed number of uplink bits per round, so that every number of
compare.csv follows from the curves below. Intervals are recomputed with the textbook formula and the
t table (t_{0.975, 2} = 4.302652729), not with flarebench.stats.
"""

import math

import pandas as pd
import pytest

from flarebench.config import make_config
from flarebench.results import RunWriter
from conftest import cli

T2 = 4.302652729  # two-sided 95% t critical value, 2 degrees of freedom (3 seeds)
TARGET = 0.8
BUDGET = 2500  # bits
# method -> bits per round, {seed: test accuracy at rounds 0..4}
RUNS = {
    "topk-ef": (1200, {0: [0.1, 0.40, 0.60, 0.75, 0.85], 1: [0.1, 0.50, 0.70, 0.80, 0.86], 2: [0.1, 0.45, 0.65, 0.82, 0.84]}),
    "flare": (1000, {0: [0.1, 0.50, 0.70, 0.80, 0.90], 1: [0.1, 0.60, 0.80, 0.85, 0.92], 2: [0.1, 0.40, 0.60, 0.70, 0.75]}),
    "randk": (1000, {0: [0.1, 0.30, 0.50, 0.70, 0.74], 1: [0.1, 0.30, 0.50, 0.70, 0.77], 2: [0.1, 0.30, 0.50, 0.70, 0.73]}),
    # seeds 3, 4: none in common with topk-ef, so Welch's t; their variance is 4/3 of topk-ef's finals: df = 2 exactly
    "ef21": (1000, {3: [0.1, 0.3, 0.5, 0.7, 0.8 - math.sqrt(0.0008 / 3) / 2], 4: [0.1, 0.3, 0.5, 0.7, 0.8 + math.sqrt(0.0008 / 3) / 2]}),
    "fedprox-ef": (1200, {0: [0.1, 0.5, 0.7, 0.8, 0.9]}),  # one seed: too few for an interval
}


def write_run(root, method, seed, bits, acc):
    cfg = make_config(method=method, sparsity=0.999, model="mlp", clients=4, rounds=len(acc) - 1, seed=seed, device="cpu",
                      engine="sequential")
    w = RunWriter(root / f"{method}-{seed}", {"config": cfg.to_dict(), "num_params": 1000, "status": "running", "device": "cpu"})
    for r, a in enumerate(acc):
        w.append({"round": r, "clients": 4 * (r > 0), "test_loss": 1.0 - a, "test_accuracy": a, "nnz": 4 * (r > 0),
                  "uplink_bits": bits * (r > 0), "cumulative_uplink_bits": bits * r, "downlink_bits": 0,
                  "cumulative_downlink_bits": 0, "wall_time_s": 0.1 * r})
    w.set_status("complete")
    w.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdicts") / "runs"
    for method, (bits, seeds) in RUNS.items():
        for seed, acc in seeds.items():
            write_run(root, method, seed, bits, acc)
    return root


def by_hand(values):
    """(mean, low, high) of the 95% t-interval of 3 values (df = 2)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T2 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def per_seed(method):
    """Every metric of each seed of ``method``, from the curves above."""
    bits, seeds = RUNS[method]
    out = {}
    for seed, acc in seeds.items():
        hit = next((r for r, a in enumerate(acc) if a >= TARGET), None)
        out[seed] = {
            "final_accuracy": acc[-1], "best_accuracy": max(acc), "mean_accuracy": sum(acc[1:]) / (len(acc) - 1),
            "accuracy_at_budget": acc[max(r for r in range(len(acc)) if bits * r <= BUDGET)],
            "rounds_to_target": hit, "bits_to_target": None if hit is None else bits * hit,
            "horizon": {"rounds_to_target": len(acc) - 1, "bits_to_target": bits * (len(acc) - 1)},
        }
    return out


def test_compare_baseline_groups_intervals_and_verdicts_recomputed_by_hand(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", runs, "--out", out, "--figures", "none", "--baseline", "topk-ef",
                            "--target-accuracy", TARGET, "--budget", BUDGET)
    assert code == 0, err
    g = pd.read_csv(out / "compare.csv").set_index("method")
    assert list(g["label"]) == ["topk-ef s=0.999", "randk s=0.999", "ef21 s=0.999", "fedprox-ef s=0.999", "flare s=0.999"]  # preset order
    assert len(pd.read_csv(out / "runs.csv")) == 12
    for method in ("topk-ef", "flare", "randk"):
        seeds = per_seed(method)
        row = g.loc[method]
        assert row["seeds"] == 3 and row["seed_list"] == "0 1 2"
        for m in ("final_accuracy", "best_accuracy", "mean_accuracy", "accuracy_at_budget"):
            want = by_hand([s[m] for s in seeds.values()])
            assert (row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"]) == pytest.approx(want, abs=1e-9), (method, m)
    # bits/rounds to target: topk-ef reaches with every seed; flare with 2 of 3 (seed 2 never); randk with none
    top = g.loc["topk-ef"]
    for m in ("rounds_to_target", "bits_to_target"):
        want = by_hand([s[m] for s in per_seed("topk-ef").values()])
        assert (top[f"{m}_mean"], top[f"{m}_low"], top[f"{m}_high"]) == pytest.approx(want, rel=1e-9)
        flare = g.loc["flare"]
        censored = [s[m] if s[m] is not None else s["horizon"][m] for s in per_seed("flare").values()]
        assert censored == ([3, 2, 4] if m == "rounds_to_target" else [3000, 2000, 4000])
        mean, low, _ = by_hand(censored)
        assert math.isinf(flare[f"{m}_mean"]) and math.isinf(flare[f"{m}_high"])
        assert flare[f"{m}_low"] == pytest.approx(low, rel=1e-9) and flare[f"{m}_censored_mean"] == pytest.approx(mean)
        assert all(math.isinf(g.loc["randk", f"{m}_{end}"]) for end in ("mean", "low", "high"))
    assert (top["reached"], g.loc["flare", "reached"], g.loc["randk", "reached"]) == ("3/3", "2/3", "0/3")
    # verdicts: paired t on the common seeds 0, 1, 2
    base = [s["final_accuracy"] for s in per_seed("topk-ef").values()]
    for method, verdict in (("flare", "no significant difference"), ("randk", "worse")):
        diffs = [s["final_accuracy"] - b for s, b in zip(per_seed(method).values(), base)]
        row = g.loc[method]
        assert (row["diff_mean"], row["diff_low"], row["diff_high"]) == pytest.approx(by_hand(diffs), abs=1e-9)
        assert (row["test"], row["verdict"], row["vs_baseline"]) == ("paired t, 3 seeds", verdict, "topk-ef s=0.999")
    # ef21: seeds 3, 4 (none common): Welch's t; its variances make df = 2 exactly
    a = [s["final_accuracy"] for s in per_seed("ef21").values()]
    va = sum((x - sum(a) / 2) ** 2 for x in a) / 1 / 2
    vb = sum((x - sum(base) / 3) ** 2 for x in base) / 2 / 3
    assert (va + vb) ** 2 / (va**2 / 1 + vb**2 / 2) == pytest.approx(2.0, rel=1e-9)
    diff, half = sum(a) / 2 - sum(base) / 3, T2 * math.sqrt(va + vb)
    row = g.loc["ef21"]
    assert (row["diff_mean"], row["diff_low"], row["diff_high"]) == pytest.approx((diff, diff - half, diff + half), abs=1e-7)
    assert (row["test"], row["verdict"]) == ("Welch t", "worse" if diff + half < 0 else "no significant difference")
    assert (g.loc["fedprox-ef", "verdict"], g.loc["topk-ef", "verdict"]) == ("too few seeds", "baseline")
    assert g.loc["fedprox-ef", "diff_mean"] == pytest.approx(0.9 - sum(base) / 3) and pd.isna(g.loc["fedprox-ef", "diff_low"])
    # the printed table: means with the half-widths, "> X" and "not reached", the verdicts
    flare_final = by_hand([s["final_accuracy"] for s in per_seed("flare").values()])
    line = next(l for l in stdout.splitlines() if l.lstrip().startswith("flare"))
    assert f"{flare_final[0]:.4f} ±{(flare_final[2] - flare_final[1]) / 2:.4f}" in line and "not significant" in line  # compact
    assert "> 2.93 Kib (2/3)" in line, line  # bits to target: > the mean of 3000, 2000, 4000 bits
    randk = next(l for l in stdout.splitlines() if l.lstrip().startswith("randk"))
    assert "not reached (0/3)" in randk and "worse" in randk, randk
    assert "95% Student-t interval" in stdout and "paired by seed" in stdout and max(map(len, stdout.splitlines())) <= 120
    code, stdout, err = cli(capsys, "compare", runs, "--out", out, "--figures", "none", "--baseline", "topk-ef",
                            "--target-accuracy", TARGET, "--format", "markdown")
    cells = {l.split(" | ")[0]: l.split(" | ") for l in stdout.splitlines() if l.startswith("| ")}
    head = cells["| method"]
    flare = dict(zip(head, cells["| flare s=0.999"]))
    assert (flare["rounds to target"], flare["reached"], flare["bits to target"]) == ("> 3", "2/3", "> 2.93 Kib"), flare
    assert dict(zip(head, cells["| topk-ef s=0.999"]))["verdict |"] == "baseline |"


def test_runs_prints_the_per_run_table_and_budget_column(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    code, stdout, err = cli(capsys, "compare", runs, "--out", out, "--figures", "none", "--runs", "--budget", "2.5Kib",
                            "--format", "csv")
    assert code == 0, err
    assert stdout == (out / "runs.csv").read_text()
    t = pd.read_csv(out / "runs.csv").set_index("run")
    assert (t["budget_bits"] == 2560).all()
    for method in ("topk-ef", "flare"):  # 2560 bits: topk-ef's round 2 (2400 bits), flare's round 2 (2000; round 3 is 3000)
        for seed, acc in RUNS[method][1].items():
            assert t.loc[f"{method}-{seed}", "accuracy_at_budget"] == pytest.approx(acc[2])
            assert t.loc[f"{method}-{seed}", "mean_accuracy"] == pytest.approx(sum(acc[1:]) / 4)
    code, stdout, err = cli(capsys, "compare", runs, "--out", out, "--figures", "none", "--budget", "100")
    assert code == 0 and "0.1000" in stdout, stdout  # below one round's bits: round 0's accuracy (cumulative 0)


def test_bad_budget_baseline_and_metric_are_one_line(runs, tmp_path, capsys):
    cases = [
        (["--budget", "0"], "--budget takes a positive number of bits"),
        (["--budget", "-5"], "--budget takes a positive number of bits"),
        (["--budget", "lots"], "--budget takes a number of bits (e.g. 1e6 or 2.5Mib"),
        (["--budget", "3MB"], "units bit, Kib, Mib, Gib, Tib"),
        (["--baseline", "no-such-method"], "--baseline no-such-method: no such method"),
        (["--baseline", "dgc"], "--baseline dgc: no run of dgc among the runs compared"),
        (["--baseline", "topk-ef", "--metric", "rounds_to_target"], "--metric rounds_to_target is not supported for verdicts"),
        (["--baseline", "topk-ef", "--metric", "loss"], "--metric takes final_accuracy, best_accuracy"),
        (["--baseline", "topk-ef", "--metric", "accuracy_at_budget"], "needs --budget BITS"),
    ]
    for args, fragment in cases:
        code, _, err = cli(capsys, "compare", runs, "--out", tmp_path / "o", *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, (args, err)
    assert not (tmp_path / "o").exists()


def test_ambiguous_or_missing_baselines_give_no_verdict_with_a_warning(runs, tmp_path, capsys):
    for seed, acc in RUNS["topk-ef"][1].items():  # topk-ef at another sparsity: flare s=0.999 still has one match
        write_run(tmp_path / "more", "topk-ef", seed, 1200, acc)
    cfg = make_config(method="none", model="mlp", clients=4, rounds=4, seed=0, device="cpu", engine="sequential")
    w = RunWriter(tmp_path / "more" / "none-0", {"config": cfg.to_dict(), "num_params": 1000, "status": "complete", "device": "cpu"})
    for r in range(5):
        w.append({"round": r, "clients": 4 * (r > 0), "test_loss": 0.5, "test_accuracy": 0.9, "nnz": 4000 * (r > 0),
                  "uplink_bits": 128000 * (r > 0), "cumulative_uplink_bits": 128000 * r, "downlink_bits": 0,
                  "cumulative_downlink_bits": 0, "wall_time_s": 0.1 * r})
    w.close()
    import json

    meta_path = tmp_path / "more" / "topk-ef-0" / "config.json"
    for seed in RUNS["topk-ef"][1]:  # the copies: sparsity 0.99
        p = tmp_path / "more" / f"topk-ef-{seed}" / "config.json"
        meta = json.loads(p.read_text())
        meta["config"]["sparsity"] = 0.99
        p.write_text(json.dumps(meta))
    assert meta_path.is_file()
    code, _, err = cli(capsys, "compare", runs, tmp_path / "more", "--out", tmp_path / "c", "--figures", "none", "--baseline", "topk-ef")
    assert code == 0, err
    g = pd.read_csv(tmp_path / "c" / "compare.csv").set_index("label")
    assert g.loc["flare s=0.999", "vs_baseline"] == "topk-ef s=0.999"  # the same sparsity
    assert pd.isna(g.loc["none (dense)", "verdict"])  # two topk-ef groups, equal on every other key
    (line,) = [l for l in err.splitlines() if "none (dense)" in l]
    assert line.startswith("flarebench: warning: ") and "2 topk-ef experiments match it equally, so no verdict" in line


def test_figures_draw_seeds_as_mean_and_95_interval_band(runs):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from flarebench.compare import collect_runs
    from flarebench.plots import STYLE, experiments, plot_frontier, plot_panel

    records, _ = collect_runs([runs])
    exps = [e for e in experiments(records) if e.method in ("flare", "fedprox-ef")]
    assert [e.legend_label for e in exps] == ["fedprox-ef s=0.999", "flare s=0.999 (3 seeds)"]
    curves = list(RUNS["flare"][1].values())
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots()
        plot_panel(ax, exps, "accuracy", "round")
        (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]  # one band: the one-seed experiment has none
        verts = band.get_paths()[0].vertices
        for r in range(1, 5):
            mean, low, high = by_hand([100 * c[r] for c in curves])
            ys = sorted({round(y, 9) for x, y in verts if abs(x - r) < 1e-12})
            assert ys == pytest.approx([max(low, 0.0), min(high, 100.0)], abs=1e-7), r  # round 4's reaches past 100%: clipped
            (line,) = [l for l in ax.get_lines() if l.get_label() == "flare s=0.999 (3 seeds)"]
            assert line.get_ydata()[r] == pytest.approx(mean)
        pts = plot_frontier(ax, exps)
        p = next(p for p in pts if p.exp.method == "flare")
        assert (p.acc, p.acc_low, p.acc_high) == pytest.approx(by_hand([100 * c[-1] for c in curves]), rel=1e-9)
        plt.close(fig)
