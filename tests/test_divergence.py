"""Divergence: detected (test loss, training loss, weights), warned, recorded in config.json, marked by
``list`` and ``compare``; ``--on-divergence continue`` runs every round, ``stop`` ends at the round found."""

import csv
import json
import math

import pytest
import torch

from conftest import cli
from flarebench.divergence import FACTOR, DivergenceCheck, marked

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the README's example (unbiased random-k without error feedback) on a small federation: diverges within a few rounds
RANDK = ["run", "--method", "randk", "--memory", "none", "-p", "scale=true", "--clients", "3", "--samples-per-client", "100",
         "--batch-size", "20", "--eval-every", "1", "--rounds", "6", "--engine", "sequential", "--device", "cpu"]


def test_the_rule_test_loss_training_loss_and_weights():
    w = torch.ones(4)  # norm 2
    c = DivergenceCheck()
    c.start([], float(w.norm()))
    assert c.check(0, test_loss=2.0, w=w) is None
    assert c.check(1, train_loss=1.5, test_loss=2.0 * FACTOR, w=w) is None  # at the limit, not above it
    assert c.check(2, train_loss=1.5 * FACTOR * 1.01) is not None and "training loss" in c.found.reason
    assert c.check(3, test_loss=math.nan) is None  # once per run
    for seen, what in [({"test_loss": math.inf}, "test loss"), ({"train_loss": math.nan}, "training loss"),
                       ({"w": torch.tensor([0.0, math.nan])}, "norm"), ({"w": torch.full((4,), 2.0 * FACTOR)}, "norm")]:
        c = DivergenceCheck("stop")
        c.start([{"round": 0, "test_loss": 2.0}, {"round": 1, "train_loss": 1.0}], 2.0)
        found = c.check(5, **seen)
        assert found is not None and found.round == 5 and what in found.reason and c.stopping
    with pytest.raises(ValueError):
        DivergenceCheck("pause")


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_both_policies_warn_record_and_are_marked_by_list_and_compare(tmp_path, capsys, policy):
    code, out, err = cli(capsys, *RANDK, "--out", tmp_path, "--name", "randk", "--on-divergence", policy)
    assert code == 0, err
    meta = json.loads((tmp_path / "randk" / "config.json").read_text())
    assert meta["status"] == "complete" and meta["diverged"]["policy"] == policy
    r = meta["diverged"]["round"]
    assert 1 <= r < 6, meta["diverged"]  # this example blows up within a few rounds
    assert f"flarebench: warning: run randk diverged at round {r}: " in err, err
    assert f"warning: this run diverged at round {r}" in out
    rows = list(csv.DictReader((tmp_path / "randk" / "metrics.csv").open()))
    assert [int(row["round"]) for row in rows] == list(range(7 if policy == "continue" else r + 1))  # stop: none after r
    assert rows[-1]["test_loss"] != ""  # a stopped run is evaluated where it stops
    code, out, err = cli(capsys, "list", tmp_path)
    assert code == 0 and f"DIVERGED at round {r}" in out and ("(stopped)" in out) == (policy == "stop"), out + err
    code, out, err = cli(capsys, "compare", tmp_path, "--out", tmp_path / "cmp", "--format", "none")
    assert code == 0 and f"run randk: DIVERGED at round {r}" in err, err
    assert f"DIVERGED at round {r}" in (tmp_path / "cmp" / "runs.csv").read_text()


def test_a_healthy_run_is_not_marked(tmp_path, capsys):
    code, out, err = cli(capsys, "run", "--method", "topk-ef", "--clients", "3", "--samples-per-client", "60", "--rounds", "2",
                         "--engine", "sequential", "--device", "cpu", "--out", tmp_path, "--name", "ok")
    assert code == 0 and "diverged" not in out + err
    assert "diverged" not in json.loads((tmp_path / "ok" / "config.json").read_text())
    assert marked("complete", {}) == "complete"


def test_a_bad_policy_is_one_line(tmp_path, capsys):
    code, out, err = cli(capsys, *RANDK, "--out", tmp_path, "--on-divergence", "pause")
    assert code == 2 and err.strip().splitlines() == ["flarebench: error: --on-divergence takes continue or stop, got 'pause'"]
    assert not any(tmp_path.iterdir())
