"""Crash-safe resume: SIGKILL mid-run then --resume equals an uninterrupted run; clear errors otherwise."""

import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from flarebench import ResultsError, load_run, run
from flarebench.checkpoint import AUTO_FACTOR, Checkpointer, capture_rng, load_checkpoint, restore_rng, resume_config
from flarebench.rundir import CHECKPOINT_FILE
from conftest import cli, lock_held_elsewhere

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# a config that exercises every piece of state: EF memories (flare), persistent momentum, client sampling
TINY = ["--model", "mlp", "--clients", "4", "--samples-per-client", "120", "--batch-size", "50", "--device", "cpu",
        "--method", "flare", "--clients-per-round", "3", "--keep-optimizer-state", "--eval-every", "2"]




def same_metrics(a, b):
    pd.testing.assert_frame_equal(
        load_run(a).metrics.drop(columns="wall_time_s"), load_run(b).metrics.drop(columns="wall_time_s"), check_exact=True
    )


def interrupt_at(round_):
    """An on_round callback that presses Ctrl-C once ``round_`` is written."""

    def callback(row, stats):
        if row["round"] == round_:
            raise KeyboardInterrupt

    return callback


def rows_on_disk(run_dir):
    try:
        return (run_dir / "metrics.csv").read_text().count("\n") - 1
    except FileNotFoundError:
        return 0


def test_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys, monkeypatch):
    out, rounds = tmp_path / "results", 40
    # one thread, as in this process (the reference run below): same arithmetic, same floats
    env = {**os.environ, "FLAREBENCH_ENGINE_CACHE": str(tmp_path / "engine.json"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "flarebench", "run", *TINY, "--rounds", str(rounds), "--out", str(out),
           "--name", "killed", "--checkpoint-every", "4", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    run_dir, deadline = out / "killed", time.monotonic() + 240
    while rows_on_disk(run_dir) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    written = rows_on_disk(run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["status"] == "running" and 8 <= written < rounds + 1, (meta["status"], written)
    ckpt = load_checkpoint(run_dir)
    assert ckpt.round % 4 == 0 and ckpt.round < written

    # resume (in this process: the state comes from disk); no engine cache, so `--engine auto` must
    # reuse the engine recorded in config.json rather than time the engines again
    monkeypatch.setenv("FLAREBENCH_ENGINE_CACHE", "off")
    code, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert code == 0, err
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["status"] == "complete" and meta["resumed_at_rounds"] == [ckpt.round]
    assert load_checkpoint(run_dir).round == rounds  # the final state is kept, for extending the run

    # the uninterrupted reference, same seed, same device, the engine the killed run used
    engine = meta.get("engine_resolved", {}).get("engine", meta["config"]["engine"])
    code, _, err = cli(capsys, "run", *TINY, "--rounds", rounds, "--out", out, "--name", "reference",
                       "--engine", engine, "--quiet")
    assert code == 0, err
    same_metrics(run_dir, out / "reference")


def test_ctrl_c_marks_interrupted_truncates_and_resumes(tiny_config, tmp_path):
    cfg = tiny_config(method="flare", rounds=8, clients_per_round=3, keep_optimizer_state=True, eval_every=3,
                      engine="sequential", name="a", samples_per_client=120)

    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=interrupt_at(6), checkpoint_every=4)
    run_dir = tmp_path / "results" / "a"
    assert json.loads((run_dir / "config.json").read_text())["status"] == "interrupted"
    assert rows_on_disk(run_dir) == 7 and load_checkpoint(run_dir).round == 4
    with open(run_dir / "metrics.csv", "a") as f:  # a torn last line, as a crash mid-write leaves it
        f.write("7,3,0.51")

    result = run(resume_config(run_dir), resume=run_dir, checkpoint_every=4)
    assert [r["round"] for r in result.rows] == list(range(9))  # rows 5, 6 and the torn 7 were redone
    assert result.total_uplink_bits == load_run(run_dir).metrics["cumulative_uplink_bits"].iloc[-1]
    reference = run(cfg.replace(name="b"))
    same_metrics(run_dir, reference.path)
    wall = load_run(run_dir).metrics["wall_time_s"]
    assert wall.is_monotonic_increasing  # time continues from the checkpoint


def test_resume_errors_are_one_line(capsys, tmp_path, tiny_config):
    cfg = tiny_config(rounds=5, name="r", engine="sequential", samples_per_client=100)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=interrupt_at(3),
            checkpoint_every=2)
    run_dir = tmp_path / "results" / "r"
    good = (run_dir / CHECKPOINT_FILE).read_bytes()

    def resume_fails(fragment, *extra):
        code, out, err = cli(capsys, "run", "--resume", run_dir, "--quiet", *extra)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("flarebench: error:"), err
        assert fragment in lines[0] and "Traceback" not in err, err

    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF  # one flipped byte in the tensors
    (run_dir / CHECKPOINT_FILE).write_bytes(bytes(corrupt))
    resume_fails("corrupt (checksum mismatch)")
    (run_dir / CHECKPOINT_FILE).write_bytes(good[: len(good) // 3])
    resume_fails("corrupt")
    (run_dir / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    resume_fails("corrupt")
    (run_dir / CHECKPOINT_FILE).unlink()
    resume_fails("no checkpoint")
    code, _, err = cli(capsys, "run", "--resume", tmp_path / "nowhere", "--quiet")
    assert code == 2 and "config.json is missing" in err and err.count("\n") == 1

    (run_dir / CHECKPOINT_FILE).write_bytes(good)
    resume_fails("give more than its 5 rounds, got 4", "--rounds", "4")
    resume_fails("these options differ: lr 0.05", "--lr", "0.05")
    resume_fails("Invalid value for '--checkpoint-every'", "--checkpoint-every", "0")
    # a run still going in another process (it holds the directory's lock) is not resumed under it
    with lock_held_elsewhere(run_dir):
        resume_fails("in progress in another process")
    resume_fails("give one of them", "--overwrite")
    # the intact checkpoint resumes, and a complete run has nothing to resume
    code, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert code == 0, err
    resume_fails("is complete; nothing to resume")


def test_api_resume_with_the_original_config_and_refusal_of_another(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAREBENCH_ENGINE_CACHE", str(tmp_path / "engine.json"))
    cfg = tiny_config(rounds=4, name="r", engine="auto", samples_per_client=100)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=interrupt_at(1))
    run_dir = tmp_path / "results" / "r"
    with pytest.raises(ResultsError, match="config.lr"):
        run(cfg.replace(lr=0.05), resume=run_dir)
    monkeypatch.setenv("FLAREBENCH_ENGINE_CACHE", "off")  # auto is not re-timed: the recorded engine is reused
    result = run(cfg, resume=run_dir)  # as flarebench sweep calls it: the original config, engine auto
    assert [r["round"] for r in result.rows] == list(range(5))


def test_another_code_version_warns_and_another_config_refuses(tiny_config, tmp_path, caplog):
    cfg = tiny_config(rounds=4, name="r", engine="sequential", samples_per_client=100)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=interrupt_at(2), checkpoint_every=1)
    run_dir = tmp_path / "results" / "r"
    meta = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**meta, "git_commit": "0123abc", "torch_version": "1.0.0"}))
    with pytest.raises(ResultsError, match="config.lr") as refused:  # the config still has to agree
        run(cfg.replace(lr=0.05), resume=run_dir)
    assert "git_commit" not in str(refused.value)
    with caplog.at_level(logging.WARNING, logger="flarebench.checkpoint"):
        result = run(cfg, resume=run_dir)
    said = [r.getMessage() for r in caplog.records if "different code version" in r.getMessage()]
    assert len(said) == 1 and "git_commit 0123abc -> " in said[0] and "torch_version 1.0.0 -> " in said[0], said
    assert "results may differ from an uninterrupted run" in said[0]
    assert [r["round"] for r in result.rows] == list(range(5))


def test_extending_a_complete_run_equals_a_run_planned_that_long(tiny_config, tmp_path, capsys):
    """3 rounds, then ``--resume DIR --rounds 5``: metrics.csv equals a run planned with 5 rounds (wall time
    apart), config.json records 5. eval_every 2: round 3 was evaluated only because it was the last; the
    extension blanks it, as the 5-round run never evaluated it."""
    cfg = tiny_config(method="flare", rounds=3, eval_every=2, name="short", engine="sequential", samples_per_client=100,
                      clients_per_round=3, keep_optimizer_state=True)
    run(cfg)
    run_dir = tmp_path / "results" / "short"
    assert load_checkpoint(run_dir).round == 3  # the final state is kept
    assert load_run(run_dir).metrics["test_accuracy"].notna().tolist() == [True, False, True, True]
    code, _, err = cli(capsys, "run", "--resume", run_dir, "--rounds", "5", "--quiet")
    assert code == 0, err
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["config"]["rounds"] == 5 and meta["status"] == "complete" and meta["resumed_at_rounds"] == [3]
    assert load_checkpoint(run_dir).round == 5
    straight = run(cfg.replace(rounds=5, name="straight"))
    same_metrics(run_dir, straight.path)

    for rounds, fragment in [("4", "--rounds with --resume extends a run: give more than its 5 rounds, got 4"),
                             ("5", "is complete; nothing to resume (to extend it, give --rounds N with N more than its 5 rounds)")]:
        before = (run_dir / "metrics.csv").read_bytes(), (run_dir / "config.json").read_bytes()
        code, _, err = cli(capsys, "run", "--resume", run_dir, "--rounds", rounds, "--quiet")
        assert code == 2 and err.count("\n") == 1 and fragment in err, err
        assert ((run_dir / "metrics.csv").read_bytes(), (run_dir / "config.json").read_bytes()) == before
    # rerunning the name points to extending it
    code, _, err = cli(capsys, "run", *TINY, "--rounds", "3", "--out", tmp_path / "results", "--name", "short", "--quiet")
    assert code == 2 and f"extend it with --resume {run_dir} --rounds N" in err and "--overwrite" in err, err


def test_rng_states_round_trip():
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_auto_policy_bounds_checkpoint_cost(tmp_path):
    saver = Checkpointer(tmp_path)
    saver._last_cost, saver._last_end = 0.1, time.perf_counter()  # a save that took 100 ms just ended
    assert not saver.due(3, 100)  # too soon: under AUTO_FACTOR x 100 ms since
    saver._last_end -= AUTO_FACTOR * 0.1
    assert saver.due(3, 100)
    assert not saver.due(100, 100)  # never after the last round (the run completes instead)
    every = Checkpointer(tmp_path, every=4)
    assert [r for r in range(1, 13) if every.due(r, 12)] == [4, 8]


def test_cli_prints_the_code_version_warning_as_one_prefixed_line(tmp_path, capsys):
    code, out, err = cli(capsys, "run", *TINY, "--rounds", "4", "--out", tmp_path, "--name", "r", "--checkpoint-every", "1", "--quiet")
    assert code == 0, err
    run_dir = tmp_path / "r"
    meta = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**meta, "status": "interrupted", "git_commit": "0123abc"}))
    (run_dir / CHECKPOINT_FILE).write_bytes(b"")  # not needed for the warning: it comes before the checkpoint is read
    code, out, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    lines = [line for line in err.splitlines() if "different code version" in line]
    assert len(lines) == 1 and lines[0].startswith("flarebench: warning: resuming ") and "git_commit 0123abc -> " in lines[0], err


def dir_hashes(run_dir):
    """sha256 of every file under ``run_dir`` (names relative to it)."""
    import hashlib

    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_refused_resume_leaves_the_run_directory_byte_for_byte_as_it_was(capsys, tmp_path, tiny_config):
    """A topk-ef run killed after round 3 (checkpoint every round). A checkpoint rewritten to say round 1
    (sha256 recomputed, so it passes the hash check), or whose global weights or client memories have
    another shape, is refused with one line, and every file of the run is as it was; the intact
    checkpoint then resumes and the run equals an uninterrupted one."""
    from flarebench.checkpoint import save_checkpoint

    cfg = tiny_config(method="topk-ef", rounds=5, name="r", samples_per_client=100)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=interrupt_at(3), checkpoint_every=1)
    run_dir = tmp_path / "results" / "r"
    meta = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps({**meta, "status": "running"}))  # as SIGKILL leaves it
    good = load_checkpoint(run_dir)
    assert good.round == 3 and rows_on_disk(run_dir) == 4
    intact = (run_dir / CHECKPOINT_FILE).read_bytes()

    def fed(**server):
        return {**good.federation, "server": {**good.federation["server"], **server}}

    memory = good.federation["clients"]
    cases = [
        (dataclasses.replace(good, round=1), "checkpoint counters disagree with metrics.csv round 1"),
        (dataclasses.replace(good, federation=fed(w=torch.zeros(10))),
         "checkpoint does not fit this run (server.w has shape [10], this run's is ["),
        (dataclasses.replace(good, federation={**good.federation, "clients": {k: v[:, :10] for k, v in memory.items()}}),
         "checkpoint does not fit this run (clients."),
        (dataclasses.replace(good, federation={"server": good.federation["server"]}), "checkpoint does not fit this run (clients is missing)"),
    ]
    for bad, fragment in cases:
        save_checkpoint(run_dir, bad)
        before = dir_hashes(run_dir)
        code, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in err, err
        assert dir_hashes(run_dir) == before, fragment
    (run_dir / CHECKPOINT_FILE).write_bytes(intact)
    code, _, err = cli(capsys, "run", "--resume", run_dir, "--quiet")
    assert code == 0, err
    assert json.loads((run_dir / "config.json").read_text())["resumed_at_rounds"] == [3]
    same_metrics(run_dir, run(cfg.replace(name="straight")).path)


STATEFUL = ["topk-ef", "randk", "ef21", "fedprox-ef", "threshold", "dgc", "signum", "ef-signsgd", "onebit", "qsgd"]


@pytest.mark.parametrize("method", STATEFUL)
def test_every_stateful_method_resumes_to_the_uninterrupted_run(tiny_config, tmp_path, method):
    """Interrupted after round 3 of 4 (checkpoint at round 2, so round 3 is redone), resumed: metrics.csv
    equals an uninterrupted run's. flare, stc, powersgd and fetchsgd have their own resume tests; qsgd
    keeps no part state (momentum only), a control."""
    cfg = tiny_config(method=method, rounds=4, clients_per_round=3, keep_optimizer_state=True, samples_per_client=100,
                      name="cut")
    with pytest.raises(KeyboardInterrupt):
        run(cfg, on_round=interrupt_at(3), checkpoint_every=2)
    run_dir = tmp_path / "results" / "cut"
    assert load_checkpoint(run_dir).round == 2
    assert [r["round"] for r in run(resume_config(run_dir), resume=run_dir).rows] == list(range(5))
    same_metrics(run_dir, run(cfg.replace(name="straight")).path)
