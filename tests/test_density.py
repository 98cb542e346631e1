"""flarebench density: rounds to target and accuracy at a round versus density, on the committed reference runs,
recomputed here from their metrics.csv with the t table value (not via flarebench.stats)."""

import math
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli

REF = Path(__file__).resolve().parents[1] / "results" / "reference" / "unavail_cnn_k7"
T2 = 4.302652729  # t_{0.975, 2}: three seeds


def _by_hand(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, mean - T2 * sd / math.sqrt(n), mean + T2 * sd / math.sqrt(n)


def _seeds(method):
    return [pd.read_csv(REF / f"{method}-s0.99999-seed{s}" / "metrics.csv") for s in range(3)]


@pytest.mark.parametrize("target", [0.8, 0.9272])
def test_density_table_recomputed_from_the_reference_runs(capsys, tmp_path, target):
    code, out, err = cli(capsys, "density", str(REF), "--horizon", "300", "--target-accuracy", str(target),
                        "--out", str(tmp_path / "d"), "--figures", "png" if target > 0.9 else "none")
    assert code == 0, err
    table = pd.read_csv(tmp_path / "d" / "density.csv").set_index("method")
    assert target < 0.9 or (tmp_path / "d" / "mnist-embedded-cnn-density.png").stat().st_size > 10_000
    for method in ("flare", "topk-ef"):
        runs, row = _seeds(method), table.loc[method]
        ev = [m[m["test_accuracy"].notna() & (m["round"] <= 300)] for m in runs]
        hits = [e.loc[e["test_accuracy"] >= target, "round"] for e in ev]
        hits = [int(h.iloc[0]) if len(h) else None for h in hits]
        assert row["reached"] == sum(h is not None for h in hits) and row["seeds"] == 3
        if all(h is not None for h in hits):
            assert (row["rounds_to_target_mean"], row["rounds_to_target_low"], row["rounds_to_target_high"]) == pytest.approx(_by_hand(hits))
        else:  # censored at the horizon: infinite mean and upper end, the lower end computed with 300 for the misses
            assert math.isinf(row["rounds_to_target_mean"]) and math.isinf(row["rounds_to_target_high"])
            assert row["rounds_to_target_low"] == pytest.approx(_by_hand([300 if h is None else h for h in hits])[1])
            assert f"{method:<10} R = 1e-05" in out and "> " in out
        at100 = [float(m.loc[m["round"] == 100, "test_accuracy"].iloc[0]) for m in runs]
        assert (row["accuracy_at_round_mean"], row["accuracy_at_round_low"], row["accuracy_at_round_high"]) == pytest.approx(_by_hand(at100))
    assert target != 0.9272 or table.loc["topk-ef", "reached"] == 2  # seeds reach at 280, 290 and 430 (see the reference compare.csv)


def test_bad_density_input_is_one_line_and_writes_nothing(capsys, tmp_path):
    for args, says in ((["--at-round", "0"], "at-round"), (["--horizon", "50"], "horizon"), (["--horizon", "2000"], "end before the horizon"),
                       (["--target-accuracy", "1.5"], "target-accuracy")):
        code, out, err = cli(capsys, "density", str(REF), "--out", str(tmp_path / "d"), *args)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "d").exists()


def test_a_run_shorter_than_the_horizon_counts_where_it_reached_the_target(capsys, tmp_path):
    """Runs extended in stages stop once they reach the target: read in full, not refused (all reach 0.8 by round 1000)."""
    code, out, err = cli(capsys, "density", str(REF), "--horizon", "2000", "--target-accuracy", "0.8", "--out", str(tmp_path / "d"), "--figures", "none")
    table = pd.read_csv(tmp_path / "d" / "density.csv").set_index("method")
    assert code == 0 and table.loc["flare", "reached"] == 3 and table.loc["flare", "horizon"] == 2000
