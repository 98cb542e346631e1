"""Crash-safe run state: ``RUN_DIR/checkpoint.pt``, saved atomically, and resuming from it.

A checkpoint taken after round ``r`` holds:

- ``round``: ``r``, rounds completed; metrics.csv rows 0..r are on disk (fsynced) before it is written;
- ``federation``: ``Federation.state_dict()``: global weights ``[P]``, the parts' state (error-feedback
  memories ``[C, P]``), persistent client momentum ``[C, P]`` (or None);
- ``counters``: the cumulative bit counters after round ``r`` (bits, not bytes);
- ``elapsed_s``: run time up to round ``r`` (``wall_time_s`` continues from it);
- ``rng``: the global torch (and CUDA), numpy and python RNG states.

The client-sampling generator is not saved: it is derived afresh each round from (seed, round), as
are shuffling and random-k positions (engine/seeds.py), so a resumed run draws what an uninterrupted
one would. The global torch RNG is re-seeded per round as well; it is saved anyway, for code that
draws outside the round.

File: ``b"flarebench-checkpoint 1\\n"``, the sha256 of the payload in hex and ``b"\\n"``, then the
payload (``torch.save`` bytes). It is written to ``checkpoint.pt.tmp``, fsynced and renamed, so a
crash leaves either the previous checkpoint or the new one, never half of one. Loading uses
``torch.load(weights_only=True)``: a checkpoint cannot run code. A complete run keeps the checkpoint
of its last round, so ``--resume DIR --rounds N`` can extend it. The run directory's lock, config.json
reading and the "same run" rule are in rundir.py (re-exported here).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import ConfigError, ResultsError
from .results import RunWriter
from .rundir import CHECKPOINT_FILE, check_same_run, lock_run, locked_run, pinned_engine, unlock_run
from .rundir import read_meta as _read_meta

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .runner import Setup

log = logging.getLogger("flarebench.checkpoint")

MAGIC = b"flarebench-checkpoint 1\n"
AUTO_FACTOR = 40  # auto policy: wait >= 40x the last save's duration between saves -> saving <= 1/41 (2.4%) of run time


@dataclass
class Checkpoint:
    """The state of a run after ``round`` rounds (see the module docstring)."""

    round: int
    federation: dict
    counters: dict[str, int]
    elapsed_s: float
    rng: dict


# ---------------------------------------------------------------------------------------- RNG states
def capture_rng() -> dict:
    """The global RNG states (torch, CUDA if initialised, numpy, python) as tensors and plain lists."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ---------------------------------------------------------------------------------------- save / load
def save_checkpoint(run_dir: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``RUN_DIR/checkpoint.pt`` atomically (temp file, fsync, rename, fsync of the directory)."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    torch.save({"round": ckpt.round, "federation": ckpt.federation, "counters": dict(ckpt.counters),
                "elapsed_s": float(ckpt.elapsed_s), "rng": ckpt.rng}, buf)
    payload = buf.getbuffer()
    path, tmp = run_dir / CHECKPOINT_FILE, run_dir / (CHECKPOINT_FILE + ".tmp")
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(hashlib.sha256(payload).hexdigest().encode() + b"\n")
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(run_dir)
    return path


def load_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read and verify ``RUN_DIR/checkpoint.pt``; ResultsError if it is missing, corrupt or malformed."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise ResultsError(f"cannot resume {run_dir}: no checkpoint ({path} is missing)")
    bad = f"cannot resume {run_dir}: checkpoint {path} is corrupt"
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ResultsError(f"cannot resume {run_dir}: cannot read {path}: {e.strerror}") from None
    head = len(MAGIC) + 65
    if not data.startswith(MAGIC) or len(data) < head or data[head - 1 : head] != b"\n":
        raise ResultsError(f"{bad} (not a flarebench checkpoint, or truncated)")
    payload = memoryview(data)[head:]
    if hashlib.sha256(payload).hexdigest().encode() != data[len(MAGIC) : head - 1]:
        raise ResultsError(f"{bad} (checksum mismatch)")
    try:
        obj = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        ckpt = Checkpoint(int(obj["round"]), obj["federation"], {k: int(v) for k, v in obj["counters"].items()},
                          float(obj["elapsed_s"]), obj["rng"])
    except Exception as e:  # torch/pickle raise many types on malformed payloads
        raise ResultsError(f"{bad} ({type(e).__name__})") from None
    return ckpt


def remove_checkpoint(run_dir: str | Path) -> None:
    """Delete the checkpoint (and a stale temp file) of a finished run."""
    for name in (CHECKPOINT_FILE, CHECKPOINT_FILE + ".tmp"):
        try:
            (Path(run_dir) / name).unlink()
        except FileNotFoundError:
            pass


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- when to save
class Checkpointer:
    """Decides when to save and saves; keeps the count and seconds spent (for config.json).
    The runner also saves the state after the last round (kept for extending the run).

    ``every=N``: after every N-th round. ``every=None`` (auto, the default): after a round once the
    time since the last save is at least AUTO_FACTOR times what that save took, so checkpointing
    costs at most ~1/(AUTO_FACTOR+1) of the run time whatever the model size and disk speed.
    The initial state (round 0) is always saved, so a run that has started can always be resumed.
    """

    def __init__(self, run_dir: Path, every: int | None = None):
        self.check_every(every)
        self.run_dir, self.every = Path(run_dir), every
        lock_run(self.run_dir)  # held until close(): a second process cannot resume this run meanwhile
        self.saves, self.seconds = 0, 0.0
        self.saved_round: int | None = None  # the round of the state on disk, once this saver wrote or found one
        self._last_cost, self._last_end = 0.0, time.perf_counter()

    @staticmethod
    def check_every(every: int | None) -> None:
        """ConfigError unless ``every`` is None (auto) or >= 1."""
        if every is not None and every < 1:
            raise ConfigError(f"checkpoint-every must be >= 1 round, got {every}")

    def due(self, round_done: int, total_rounds: int) -> bool:
        """Whether to save after ``round_done`` (never after the last round: the run completes instead)."""
        if round_done >= total_rounds:
            return False
        if self.every is not None:
            return round_done % self.every == 0
        return time.perf_counter() - self._last_end >= AUTO_FACTOR * self._last_cost

    def save(self, round_done: int, federation, counters: dict[str, int], elapsed_s: float) -> None:
        """Save the state after ``round_done`` rounds (call after that round's metrics row is written)."""
        start = time.perf_counter()
        save_checkpoint(self.run_dir, Checkpoint(round_done, federation.state_dict(), counters, elapsed_s, capture_rng()))
        self._last_end = time.perf_counter()
        self._last_cost = self._last_end - start
        self.saves += 1
        self.seconds += self._last_cost
        self.saved_round = round_done

    def close(self) -> None:
        """Release the run directory's lock."""
        unlock_run(self.run_dir)

    def summary(self) -> dict:
        """``{"checkpoints": {"saves": n, "seconds": s, "every": N or "auto"}}`` for config.json."""
        return {"checkpoints": {"saves": self.saves, "seconds": round(self.seconds, 4), "every": self.every or "auto"}}


# ---------------------------------------------------------------------------------------- resuming
@dataclass
class Resumed:
    """An interrupted run reopened at its checkpoint: append to ``writer`` from ``checkpoint.round + 1``."""

    writer: RunWriter
    checkpoint: Checkpoint
    rows: list[dict]  # metrics rows 0..checkpoint.round as kept on disk


def read_meta(run_dir: str | Path) -> dict:
    """``RUN_DIR/config.json`` (rundir.read_meta); ResultsError "cannot resume ..." if missing or damaged."""
    try:
        return _read_meta(run_dir)
    except ResultsError as e:
        raise ResultsError(f"cannot resume: {e}") from None


def resume_config(run_dir: str | Path, **overrides) -> "RunConfig":
    """The RunConfig stored in ``RUN_DIR/config.json``; ``overrides`` (None = not given) must agree with
    it, except ``rounds``: more than the run's rounds extends the run (fewer is a ConfigError)."""
    from .config import make_config

    meta = read_meta(run_dir)
    stored = meta["config"]
    try:
        cfg = make_config(**stored)
    except ConfigError as e:
        raise ResultsError(f"cannot resume {run_dir}: its config.json is not valid for this version ({e})") from None
    rounds = overrides.pop("rounds", None)
    if rounds is not None and rounds < cfg.rounds:
        raise ConfigError(f"--rounds with --resume extends a run: give more than its {cfg.rounds} rounds, got {rounds}")
    changed = [k for k, v in overrides.items() if v is not None and k in stored and _norm(v) != _norm(stored[k])]
    if changed:
        diffs = ", ".join(f"{k.replace('_', '-')} {overrides[k]!r} (run has {stored[k]!r})" for k in changed)
        raise ConfigError(f"--resume continues a run with its own config; these options differ: {diffs}")
    if rounds is not None and rounds > cfg.rounds:  # what the parts' values imply over the longer run (e.g. a schedule)
        from .methods.presets import check_combination

        check_combination(cfg.replace(rounds=rounds))
    return cfg.replace(rounds=max(cfg.rounds, rounds or 0), **pinned_engine(meta))


def pin_engine(cfg: "RunConfig", run_dir: str | Path) -> "RunConfig":
    """``cfg`` with ``engine auto`` replaced by the engine the run in ``run_dir`` started with."""
    return cfg.replace(**pinned_engine(read_meta(run_dir)))


def check_resumable(run_dir: str | Path, rounds: int, stored: dict | None = None) -> bool:
    """Whether resuming ``run_dir`` to ``rounds`` rounds extends it; ResultsError if it is complete and
    ``rounds`` is not more than it had (nothing to resume). ``stored``: its config.json, if read already."""
    stored = read_meta(run_dir) if stored is None else stored
    planned = stored["config"].get("rounds")
    extend = isinstance(planned, int) and rounds > planned
    if stored.get("status") == "complete" and not extend:
        raise ResultsError(f"run {run_dir} is complete; nothing to resume (to extend it, give --rounds N with N more than its {planned} rounds)")
    return extend


def resume_run(s: "Setup", run_dir: str | Path) -> Resumed:
    """Check ``run_dir`` belongs to setup ``s``, load its checkpoint into ``s.federation`` and the RNGs,
    truncate metrics.csv to the checkpoint's round and reopen it for appending. ``s.cfg.rounds`` above
    the run's rounds extends it (a complete run too: its checkpoint of the last round is kept)."""
    run_dir = Path(run_dir)
    stored = read_meta(run_dir)
    planned = stored["config"].get("rounds")
    extend = check_resumable(run_dir, s.cfg.rounds, stored)
    check_same_run(stored, s.meta(), run_dir, extend=extend)
    with locked_run(run_dir):  # kept by the run's Checkpointer
        return _reopen(s, run_dir, stored, planned if extend else None)


def _reopen(s: "Setup", run_dir: Path, stored: dict, extended_from: int | None) -> Resumed:
    """Load the checkpoint and reopen metrics.csv at its round. ``extended_from``: the run's rounds
    before this extension; that round's evaluation is blanked unless it is on the ``eval_every``
    schedule, so metrics.csv equals a run planned with ``s.cfg.rounds`` rounds from the start."""
    if extended_from is not None and stored.get("status") == "complete" and not (run_dir / CHECKPOINT_FILE).is_file():
        raise ResultsError(f"cannot extend {run_dir}: its final state was not kept ({CHECKPOINT_FILE} is missing: "
                           "earlier flarebench versions deleted it); start it over with more --rounds")
    ckpt = load_checkpoint(run_dir)
    if not 0 <= ckpt.round <= s.cfg.rounds:
        raise ResultsError(f"cannot resume {run_dir}: checkpoint round {ckpt.round} is outside 0..{s.cfg.rounds}")
    misfit = state_misfit(s.federation.state_dict(), ckpt.federation)
    if misfit:
        raise ResultsError(f"cannot resume {run_dir}: checkpoint does not fit this run ({misfit})")

    def counters_agree(rows: list[dict]) -> None:  # called by RunWriter.reopen before it writes anything
        stale = {k: (rows[-1].get(k), v) for k, v in ckpt.counters.items() if rows[-1].get(k) != v}
        if stale:
            raise ResultsError(f"cannot resume {run_dir}: checkpoint counters disagree with metrics.csv round {ckpt.round}: {stale}")

    try:
        s.federation.load_state_dict(ckpt.federation)
        restore_rng(ckpt.rng)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise ResultsError(f"cannot resume {run_dir}: checkpoint does not fit this run ({type(e).__name__}: {e})") from None
    resumes = [*stored.get("resumed_at_rounds", []), ckpt.round]
    meta = {**stored, "config": {**stored["config"], "rounds": s.cfg.rounds}, "status": "running", "resumed_at_rounds": resumes}
    off_schedule = extended_from if extended_from is not None and extended_from % s.cfg.eval_every else None
    writer, rows = RunWriter.reopen(run_dir, meta, ckpt.round, blank_eval_at=off_schedule, check=counters_agree)
    return Resumed(writer, ckpt, rows)


def state_misfit(expected, got, path: str = "") -> str | None:
    """Where checkpoint state ``got`` does not fit this run's fresh state ``expected`` (nested dicts of
    tensors, as ``Federation.state_dict()``), or None: a missing key, or a tensor whose shape differs
    from the fresh one's. Only tensors that are not empty at the start are compared: they are sized by
    the model or the clients (weights ``[P]``, memories ``[C, P]``) and keep their shape over a run;
    state that grows (histories, empty at the start) is left to the parts' ``load_state_dict``."""
    where = path or "state"
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{where} is {type(got).__name__}, not a table"
        for key, value in expected.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in got:
                if isinstance(value, torch.Tensor) and value.numel() or isinstance(value, dict) and value:
                    return f"{sub} is missing"
                continue
            problem = state_misfit(value, got[key], sub)
            if problem:
                return problem
        return None
    if isinstance(expected, torch.Tensor) and expected.numel():
        if not isinstance(got, torch.Tensor):
            return f"{where} is {type(got).__name__}, this run has a tensor {list(expected.shape)}"
        if got.shape != expected.shape:
            return f"{where} has shape {list(got.shape)}, this run's is {list(expected.shape)}"
    return None


def _norm(v):
    """JSON round-trip, so tuples/lists and ints/floats compare as they are stored."""
    return json.loads(json.dumps(v))


__all__ = [
    "Checkpoint", "Checkpointer", "Resumed", "capture_rng", "restore_rng", "save_checkpoint", "load_checkpoint",
    "remove_checkpoint", "read_meta", "resume_config", "check_resumable", "pin_engine", "resume_run", "state_misfit",
]
