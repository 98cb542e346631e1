"""rundir.py: one reader of config.json, one "same run" rule for --resume and sweep, what a taken name says."""

import json

import pytest

from flarebench import ResultsError
from flarebench.rundir import CHECKPOINT_FILE, check_new_run_dir, config_diffs, read_meta
from conftest import tiny


def test_the_same_run_rule():
    stored = tiny(out="/a", name="x").to_dict()
    same = {**stored, "out": "/elsewhere", "name": "y"}
    assert config_diffs(stored, same) == []  # where a run lives and what it is called do not make it another run
    assert config_diffs(stored, {**stored, "lr": 0.05}) == ["lr: 0.1 -> 0.05"]
    assert config_diffs(stored, {**stored, "rounds": 5}) == ["rounds: 3 -> 5"]
    assert config_diffs(stored, {**stored, "rounds": 5}, extend=True) == []  # extending: more rounds only
    assert config_diffs(stored, {**stored, "rounds": 2}, extend=True) == ["rounds: 3 -> 2"]
    dense = {**stored, "method": "none"}
    assert config_diffs(dense, {**dense, "sparsity": 0.5}) == []  # FedAvg sends everything: sparsity is no part of it
    auto = {**stored, "engine": "auto"}
    assert config_diffs(auto, {**auto, "engine": "vectorized"}, pinned={"engine": "vectorized"}) == []
    assert config_diffs(auto, {**auto, "engine": "sequential"}, pinned={"engine": "vectorized"}) == ['engine: "auto" -> "sequential"']
    older = {k: v for k, v in stored.items() if k != "server_lr"}  # made before the key existed: its default
    assert config_diffs(older, stored) == [] and config_diffs(older, {**stored, "server_lr": 0.5}) == ["server_lr: 1.0 -> 0.5"]


def test_sweep_and_resume_use_that_rule(tmp_path):
    from flarebench import run
    from flarebench.sweep import run_state

    cfg = tiny(rounds=1, out=str(tmp_path), name="r")
    run(cfg)
    assert run_state(cfg) == "complete" and run_state(cfg.replace(out=str(tmp_path) + "/")) == "complete"
    with pytest.raises(ResultsError, match=r"different config \(lr: 0.1 -> 0.05\)"):
        run_state(cfg.replace(lr=0.05))
    with pytest.raises(ResultsError, match=r"config.lr: 0.1 -> 0.05"):
        run(cfg.replace(lr=0.05, rounds=2), resume=tmp_path / "r")


@pytest.mark.parametrize("text,fragment", [
    ("", "not readable JSON"), ("{", "not readable JSON"), ("[1, 2]", "it has no 'config' object"),
    ('{"config": 3}', "it has no 'config' object"),
    ('{"config": {"rounds": "five"}}', 'config.rounds should be an integer, got "five"'),
    ('{"config": {"sparsity": true}}', "config.sparsity should be a number, got true"),
    ('{"config": {"name": 3}}', "config.name should be a string, got 3"),
    ('{"config": {}, "num_params": 1.5}', "num_params should be an integer, got 1.5"),
    ('{"config": {}, "resumed_at_rounds": [1, "x"]}', "resumed_at_rounds should be a list of integers"),
])
def test_config_json_is_read_in_one_place_with_type_checks(tmp_path, text, fragment):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ResultsError) as e:
        read_meta(tmp_path)
    assert str(e.value).startswith(f"run {tmp_path}: config.json is damaged (") and fragment in str(e.value), str(e.value)
    assert read_meta.__module__ == "flarebench.rundir"
    ok = {"config": {"rounds": 3, "name": None, "future_key": [1]}, "status": "complete"}  # unknown keys are not checked
    (tmp_path / "config.json").write_text(json.dumps(ok))
    assert read_meta(tmp_path) == ok


def test_a_taken_name_says_what_can_be_done_with_the_run(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    check_new_run_dir(run_dir)  # empty: free
    (run_dir / "config.json").write_text(json.dumps({"config": {}, "status": "running"}))
    with pytest.raises(ResultsError, match="has no checkpoint to resume from .* start it over with --overwrite"):
        check_new_run_dir(run_dir)
    (run_dir / CHECKPOINT_FILE).write_bytes(b"x")
    with pytest.raises(ResultsError, match=f"resume it with --resume {run_dir} or start over with --overwrite"):
        check_new_run_dir(run_dir)
    (run_dir / "config.json").write_text(json.dumps({"config": {}, "status": "complete"}))
    with pytest.raises(ResultsError, match=f"is complete; extend it with --resume {run_dir} --rounds N"):
        check_new_run_dir(run_dir)
    check_new_run_dir(run_dir, overwrite=True)
