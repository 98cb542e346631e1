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
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import ConfigError, ResultsError
from .results import CONFIG_FILE, RunWriter

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no run-directory lock
    fcntl = None

if TYPE_CHECKING:  # pragma: no cover
    from .config import RunConfig
    from .runner import Setup

log = logging.getLogger("flarebench.checkpoint")

CHECKPOINT_FILE = "checkpoint.pt"
MAGIC = b"flarebench-checkpoint 1\n"
AUTO_FACTOR = 40  # auto policy: wait >= 40x the last save's duration between saves -> saving <= 1/41 (2.4%) of run time
# config.json keys that may differ between the interrupted run and its resumption
VOLATILE_META = {"status", "wall_time_s", "checkpoints", "resumed_at_rounds"}
# config.json keys that may differ with a warning: the code that continues the run
CODE_VERSION_META = {"flarebench_version", "torch_version", "python_version", "git_commit"}


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


# ---------------------------------------------------------------------------------------- one process per run
_HELD: dict[str, int] = {}  # resolved run dir -> fd holding its lock (this process)


def _try_flock(path: str, mode: int) -> int | None:
    """An fd of ``path`` holding a non-blocking flock of ``mode``, or None if another process holds a conflicting one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def lock_run(run_dir: str | Path) -> None:
    """Take an exclusive lock on the run directory (flock; the OS drops it when the process dies, even
    by SIGKILL). ResultsError if another process holds it, e.g. the run is still going."""
    key = str(Path(run_dir).resolve())
    if fcntl is None or key in _HELD:
        return
    fd = _try_flock(key, fcntl.LOCK_EX)
    if fd is None:
        raise ResultsError(f"run {run_dir} is in progress in another process (stop it first)")
    _HELD[key] = fd


def unlock_run(run_dir: str | Path) -> None:
    """Release :func:`lock_run`'s lock (no-op if this process does not hold it)."""
    fd = _HELD.pop(str(Path(run_dir).resolve()), None)
    if fd is not None:
        os.close(fd)


@contextmanager
def locked_run(run_dir: str | Path):
    """:func:`lock_run` for the block: the lock stays held if it succeeds (the run's Checkpointer
    releases it), and is released if it raises."""
    lock_run(run_dir)
    try:
        yield
    except BaseException:
        unlock_run(run_dir)
        raise


def is_locked(run_dir: str | Path) -> bool:
    """Whether a live process (this one included) holds the run directory's lock; takes and drops a
    shared lock to find out, changes nothing."""
    key = str(Path(run_dir).resolve())
    if key in _HELD:
        return True
    if fcntl is None or not os.path.isdir(key):
        return False
    fd = _try_flock(key, fcntl.LOCK_SH)
    if fd is None:
        return True
    os.close(fd)
    return False


def run_status(run_dir: str | Path, meta: dict) -> tuple[str, bool, bool]:
    """(status, killed, resumable). A run whose config.json says "running" but whose lock no live
    process holds was killed: ("interrupted", True, ...). Resumable: not complete/running, with a checkpoint."""
    status, killed = meta.get("status", "unknown"), False
    if status == "running" and fcntl is not None and not is_locked(run_dir):
        status, killed = "interrupted", True
    resumable = status not in ("complete", "running") and (Path(run_dir) / CHECKPOINT_FILE).is_file()
    return status, killed, resumable


# ---------------------------------------------------------------------------------------- when to save
class Checkpointer:
    """Decides when to save and saves; keeps the count and seconds spent (for config.json).

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
    """``RUN_DIR/config.json``; ResultsError if missing or unreadable."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ResultsError(f"cannot resume {run_dir}: not a flarebench run ({CONFIG_FILE} is missing)")
    try:
        meta = json.loads(path.read_text())
        if not isinstance(meta.get("config"), dict):
            raise ValueError("no 'config' object")
    except (OSError, ValueError) as e:
        raise ResultsError(f"cannot resume {run_dir}: {path} is unreadable ({e})") from None
    return meta


def resume_config(run_dir: str | Path, **overrides) -> "RunConfig":
    """The RunConfig stored in ``RUN_DIR/config.json``; ``overrides`` (None = not given) must agree with it."""
    from .config import make_config

    meta = read_meta(run_dir)
    stored = meta["config"]
    try:
        cfg = make_config(**stored)
    except ConfigError as e:
        raise ResultsError(f"cannot resume {run_dir}: its config.json is not valid for this version ({e})") from None
    changed = [k for k, v in overrides.items() if v is not None and k in stored and _norm(v) != _norm(stored[k])]
    if changed:
        diffs = ", ".join(f"{k.replace('_', '-')} {overrides[k]!r} (run has {stored[k]!r})" for k in changed)
        raise ConfigError(f"--resume continues a run with its own config; these options differ: {diffs}")
    return cfg.replace(**_pinned_engine(meta))


def pin_engine(cfg: "RunConfig", run_dir: str | Path) -> "RunConfig":
    """``cfg`` with ``engine auto`` replaced by the engine the run in ``run_dir`` started with."""
    return cfg.replace(**_pinned_engine(read_meta(run_dir)))


def _pinned_engine(meta: dict) -> dict:
    """``--engine auto`` resolves by timing; a resumed run must use the engine the run started with
    (engines may differ in the last float bits), so pin the recorded choice."""
    resolved, cfg = meta.get("engine_resolved"), meta["config"]
    if not isinstance(resolved, dict) or cfg.get("engine") != "auto" or "engine" not in resolved:
        return {}
    pinned = {"engine": resolved["engine"]}
    if "client_chunk" in cfg and cfg["client_chunk"] is None:
        pinned["client_chunk"] = resolved.get("client_chunk")
    return pinned


def check_same_run(stored: dict, meta: dict, run_dir: Path) -> None:
    """ResultsError unless config.json (apart from VOLATILE_META, engine timings, and ``engine auto``
    pinned to its recorded choice) equals what this setup would write; a different code version
    (CODE_VERSION_META) is logged as a warning."""
    diffs, versions = [], []
    pinned = _pinned_engine(stored)
    for key, value in meta.items():
        if key in VOLATILE_META:
            continue
        if key in CODE_VERSION_META:
            if _norm(stored.get(key)) != _norm(value):
                versions.append(f"{key} {stored.get(key)} -> {value}")
            continue
        if key == "config":
            old = stored.get("config", {})
            diffs += [f"config.{k}: {old.get(k)!r} -> {v!r}" for k, v in value.items()
                      if _norm(old.get(k)) != _norm(v) and not (k in pinned and _norm(pinned[k]) == _norm(v))]
        elif key == "engine_resolved" and isinstance(value, dict):  # timings and reasons vary; the engine may not
            old = stored.get(key) or {}
            diffs += [f"{key}.{k}: {old.get(k)!r} -> {value.get(k)!r}" for k in ("engine", "client_chunk") if old.get(k) != value.get(k)]
        elif _norm(stored.get(key)) != _norm(value):
            diffs.append(f"{key}: {_short(stored.get(key))} -> {_short(value)}")
    if diffs:
        raise ResultsError(f"cannot resume {run_dir}: this setup differs from its config.json ({'; '.join(diffs)})")
    if versions:
        log.warning("resuming %s with a different code version: %s; results may differ from an uninterrupted run",
                    run_dir, ", ".join(versions))


def resume_run(s: "Setup", run_dir: str | Path) -> Resumed:
    """Check ``run_dir`` belongs to setup ``s``, load its checkpoint into ``s.federation`` and the RNGs,
    truncate metrics.csv to the checkpoint's round and reopen it for appending."""
    run_dir = Path(run_dir)
    stored = read_meta(run_dir)
    if stored.get("status") == "complete":
        raise ResultsError(f"run {run_dir} is complete; nothing to resume")
    check_same_run(stored, s.meta(), run_dir)
    with locked_run(run_dir):  # kept by the run's Checkpointer
        return _reopen(s, run_dir, stored)


def _reopen(s: "Setup", run_dir: Path, stored: dict) -> Resumed:
    ckpt = load_checkpoint(run_dir)
    if not 0 <= ckpt.round <= s.cfg.rounds:
        raise ResultsError(f"cannot resume {run_dir}: checkpoint round {ckpt.round} is outside 0..{s.cfg.rounds}")
    try:
        s.federation.load_state_dict(ckpt.federation)
        restore_rng(ckpt.rng)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise ResultsError(f"cannot resume {run_dir}: checkpoint does not fit this run ({type(e).__name__}: {e})") from None
    resumes = [*stored.get("resumed_at_rounds", []), ckpt.round]
    writer, rows = RunWriter.reopen(run_dir, {**stored, "status": "running", "resumed_at_rounds": resumes}, ckpt.round)
    stale = {k: (rows[-1].get(k), v) for k, v in ckpt.counters.items() if rows[-1].get(k) != v}
    if stale:
        writer.close()
        raise ResultsError(f"cannot resume {run_dir}: checkpoint counters disagree with metrics.csv round {ckpt.round}: {stale}")
    return Resumed(writer, ckpt, rows)


def _norm(v: Any) -> Any:
    """JSON round-trip, so tuples/lists and ints/floats compare as they are stored."""
    return json.loads(json.dumps(v))


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v)
    return s if len(s) <= n else s[: n - 3] + "..."


__all__ = [
    "CHECKPOINT_FILE", "Checkpoint", "Checkpointer", "Resumed", "capture_rng", "restore_rng", "save_checkpoint",
    "load_checkpoint", "remove_checkpoint", "lock_run", "unlock_run", "locked_run", "is_locked", "run_status", "read_meta", "resume_config", "pin_engine", "check_same_run", "resume_run",
]
