"""The validation split (world.hold_out, val columns, old runs still resume) and --tune: the pick is made
from validation only (the test set is never evaluated while tuning) and equals a recomputation from the
tuning runs' metrics.csv; the picked point then runs with every seed on the test set."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from flarebench import ConfigError, load_run, run, setup
from flarebench.compare import compare
from flarebench.engine.round import Federation
from flarebench.results import COLUMNS, LEGACY_COLUMNS
from flarebench.sweep import load_sweep, run_sweep
from flarebench.tuning import Criterion, parse_criterion, tune
from flarebench.world import hold_out
from conftest import cli

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # two threads on the shared 2 cores oversubscribe


# ---------------------------------------------------------------------------------------- the split
def test_hold_out_floor_per_client_seeded_and_disjoint():
    clients = [torch.arange(0, 10), torch.arange(10, 13), torch.arange(13, 14), torch.arange(20, 40)]
    train, val = hold_out(clients, 0.25, seed=7)
    assert [len(t) for t in train] == [8, 3, 1, 15]  # floor(0.25 n): 2, 0, 0, 5 held out; every client keeps rows
    assert len(val) == 7 and sorted(torch.cat([*train, val]).tolist()) == sorted(torch.cat(clients).tolist())
    assert all(torch.equal(t, t.sort().values) for t in train)  # partition order kept
    again, val2 = hold_out(clients, 0.25, seed=7)
    assert torch.equal(val, val2) and all(torch.equal(a, b) for a, b in zip(train, again))
    assert not torch.equal(hold_out(clients, 0.25, seed=8)[1], val)
    same, none = hold_out(clients, 0.0, seed=7)
    assert same is clients and len(none) == 0  # fraction 0: the partition as it was
    with pytest.raises(ConfigError, match="holds out no row"):
        hold_out([torch.arange(3)] * 2, 0.2, seed=0)


@pytest.mark.parametrize("value,message", [("1", "must be in [0, 1)"), ("-0.1", "must be in [0, 1)"), ("1.5", "must be in [0, 1)"),
                                           ("0.01", "0.01 holds out no row (floor(0.01 x rows) per client; the largest client has 50")])
def test_bad_validation_fraction_is_one_line(tmp_path, capsys, value, message):
    code, out, err = cli(capsys, "run", "--validation-fraction", value, "--clients", "3", "--samples-per-client", "50",
                         "--rounds", "1", "--out", tmp_path / "runs")
    assert code == 2 and err.count("\n") == 1 and f"validation-fraction {message}" in err, err
    assert not (tmp_path / "runs").exists()


def test_validation_columns_on_both_engines(tiny_config):
    runs = {e: run(tiny_config(engine=e, rounds=2, validation_fraction=0.25, name=e)) for e in ("sequential", "vectorized")}
    a, b = (load_run(r.path) for r in runs.values())
    assert list(a.metrics.columns) == COLUMNS and a.metrics.val_accuracy.notna().all()
    assert a.meta["client_samples"] == [150] * 4 and a.meta["validation_samples"] == 200
    # the engines differ by float rounding (CPU kernels: avx2, avx512, default), which may flip a sample or two
    for col, tol in (("val_loss", dict(rel=1e-3)), ("test_loss", dict(rel=1e-3)),
                     ("val_accuracy", dict(abs=3 / 200 + 1e-9)), ("test_accuracy", dict(abs=3 / 2000 + 1e-9))):
        assert a.metrics[col].tolist() == pytest.approx(b.metrics[col].tolist(), **tol), col
    s = setup(tiny_config(validation_fraction=0.25))
    assert len(s.federation.y_val) == 200 and int(s.federation.client_sizes.sum()) == 600
    plain = load_run(run(tiny_config(rounds=1, name="plain")).path)
    assert plain.metrics[["val_loss", "val_accuracy"]].isna().all().all() and plain.meta["validation_samples"] == 0


def test_a_run_made_before_the_validation_columns_resumes(tiny_config):
    """An earlier version's run (metrics without val columns) reads and resumes with its own columns."""
    cfg = tiny_config(rounds=3, name="old")

    def stop(row, stats):
        if row["round"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=stop, checkpoint_every=1)
    d = Path(cfg.out) / "old"
    meta = json.loads((d / "config.json").read_text())
    for key in ("validation_fraction", "evaluate_test", "tuned"):
        del meta["config"][key]
    del meta["validation_samples"]
    (d / "config.json").write_text(json.dumps({**meta, "columns": LEGACY_COLUMNS}))
    pd.read_csv(d / "metrics.csv")[LEGACY_COLUMNS].to_csv(d / "metrics.csv", index=False)
    result = run(cfg, resume=d)
    m = load_run(d).metrics
    assert list(m.columns) == LEGACY_COLUMNS and m["round"].tolist() == [0, 1, 2, 3] and result.final_accuracy is not None


# ---------------------------------------------------------------------------------------- tuning
GRID = """model = "mlp"
clients = 3
samples-per-client = 80
batch-size = 20
rounds = 2
eval-every = 1
device = "cpu"
engine = "sequential"
validation-fraction = 0.25
[sweep]
methods = ["topk-ef", "none"]
sparsities = [0.99]
seeds = [0, 1]
lr = [0.02, 0.2]
"""


def recompute(path) -> float:
    """The val-accuracy score, from metrics.csv with pandas: mean validation accuracy of the last 3 evaluations."""
    m = pd.read_csv(path / "metrics.csv")
    return m["val_accuracy"].dropna().iloc[-3:].mean()


def test_tune_picks_on_validation_only_then_runs_every_seed(tmp_path, monkeypatch):
    path = tmp_path / "grid.toml"
    path.write_text(GRID)
    sweep = load_sweep(path, out=tmp_path / "runs")

    def no_test_set(self):
        raise AssertionError("the test set was evaluated while tuning")

    with monkeypatch.context() as patch:
        patch.setattr(Federation, "evaluate", no_test_set)
        final = tune(sweep, ["lr"], Criterion("val-accuracy"), run=run_sweep)
    tuned_dirs = sorted(p.name for p in (tmp_path / "runs" / "tune").iterdir())
    assert tuned_dirs == ["none-lr0.02-seed0", "none-lr0.2-seed0", "topk-ef-s0.99-lr0.02-seed0", "topk-ef-s0.99-lr0.2-seed0"]
    for name in tuned_dirs:
        m = load_run(tmp_path / "runs" / "tune" / name).metrics
        assert m.test_accuracy.isna().all() and m.test_loss.isna().all() and m.val_accuracy.notna().all()
    # the pick, recomputed from the tuning runs' files: best score, ties to fewer uplink bits, then grid order
    for method, prefix in (("topk-ef", "topk-ef-s0.99"), ("none", "none")):
        scores = {lr: recompute(tmp_path / "runs" / "tune" / f"{prefix}-lr{lr}-seed0") for lr in (0.02, 0.2)}
        best = max(scores.values())
        bits = {lr: pd.read_csv(tmp_path / "runs" / "tune" / f"{prefix}-lr{lr}-seed0" / "metrics.csv").cumulative_uplink_bits.iloc[-1]
                for lr in scores if scores[lr] == best}
        want = min(bits, key=lambda lr: (bits[lr], [0.02, 0.2].index(lr)))
        cfgs = [c for c in final.configs() if c.method == method]
        assert [c.lr for c in cfgs] == [want, want] and [c.seed for c in cfgs] == [0, 1]
        assert [c.name for c in cfgs] == [f"{prefix}-lr{want}-seed{s}" for s in (0, 1)]
        assert cfgs[0].tuned == cfgs[1].tuned == {"keys": {"lr": {"value": want, "grid": [0.02, 0.2]}}, "criterion": "val-accuracy",
                                                  "score": pytest.approx(scores[want]), "seed": 0,
                                                  "tuning_runs": str(tmp_path / "runs" / "tune")}
    run_sweep(final)  # now the test set is read
    result = compare([tmp_path / "runs" / c.name for c in final.configs()], tmp_path / "cmp", formats=[])
    assert result.table.final_accuracy.notna().all() and len(result.table) == 4
    assert set(result.table.tuned) == {f"lr={c.lr} of [0.02, 0.2] by val-accuracy" for c in final.configs()}
    assert result.table.label.nunique() == 2  # the seeds of one pick are one experiment


def test_bits_criterion_and_parsing():
    m = pd.DataFrame({"val_accuracy": [0.1, None, 0.5, 0.7, 0.9], "cumulative_uplink_bits": [0, 10, 20, 30, 40]})
    assert Criterion("val-accuracy").score(m) == pytest.approx(0.7)
    assert parse_criterion("val-bits-to=0.6").score(m) == 30
    assert parse_criterion("val-bits-to=0.95").score(m) == math.inf  # not reached: worst
    assert Criterion("val-accuracy").score(m.assign(val_accuracy=float("nan"))) == -math.inf
    for bad in ("accuracy", "val-bits-to", "val-bits-to=2", "val-bits-to=x"):
        with pytest.raises(ConfigError, match="--select"):
            parse_criterion(bad)


@pytest.mark.parametrize("fraction,args,message", [
    ("0.0", ["--tune", "lr"], "--tune picks on a validation set: set validation-fraction > 0"),
    ("0.25", ["--tune", "momentum"], "--tune momentum: not swept"),
    ("0.25", ["--tune", "lr", "--select", "best"], "--select takes val-accuracy or val-bits-to=ACC"),
    ("0.25", ["--tune", "seed"], "the seed values are the list seeds"),
])
def test_bad_tune_is_one_line(tmp_path, capsys, fraction, args, message):
    path = tmp_path / "grid.toml"
    path.write_text(GRID.replace("validation-fraction = 0.25", f"validation-fraction = {fraction}")
                    .replace("[sweep]", f"[sweep]\nout = \"{tmp_path / 'runs'}\""))
    code, out, err = cli(capsys, "sweep", path, *args)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "runs").exists()
