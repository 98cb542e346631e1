"""The run directory ``OUT/NAME/``: its lock, its config.json, its status, and the "same run" rule.

Files: ``config.json`` (the resolved config and what the run recorded), ``metrics.csv`` (one row
per round), ``checkpoint.pt`` (the state for ``--resume``; kept after the last round, so that
``--resume DIR --rounds N`` can extend a finished run).

- Lock: a run holds an exclusive ``flock`` on its directory while it runs (the OS drops it when
  the process dies, even by SIGKILL), so no second process resumes or overwrites it meanwhile.
- :func:`read_meta`: the one reader of config.json; ResultsError naming the file and what is
  wrong with it (missing, not JSON, no ``config`` object, a value of the wrong type).
- :func:`run_status`: ``running`` / ``complete`` / ``interrupted`` / ``failed``; a run that says
  ``running`` while no process holds its lock was killed.
- :func:`config_diffs`: the one rule that decides whether a stored run was made with a config, used
  by ``--resume`` (:func:`check_same_run`) and by ``flarebench sweep`` (``sweep.run_state``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError, ResultsError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no run-directory lock
    fcntl = None

log = logging.getLogger("flarebench.checkpoint")  # the logger resume warnings have always used

CONFIG_FILE, METRICS_FILE, CHECKPOINT_FILE = "config.json", "metrics.csv", "checkpoint.pt"
# config.json keys that may differ between an interrupted run and its resumption
VOLATILE_META = {"status", "wall_time_s", "checkpoints", "resumed_at_rounds", "diverged"}
# config.json keys that may differ with a warning: the code that continues the run
CODE_VERSION_META = {"flarebench_version", "torch_version", "python_version", "git_commit"}
# config keys that do not make a stored run another run: where it lives and what it is called
NOT_THE_RUN = {"out", "name"}
# config.json keys added since runs were first recorded: a stored run without one had this value
ADDED_META = {"validation_samples": 0}


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


NAME_MAX_BYTES = 255  # a directory name's limit on Linux, macOS and Windows file systems


def check_run_name(name: str) -> None:
    """ConfigError unless ``name`` is one plain directory name: not empty, ``.`` or ``..``, no ``/``,
    no control characters (NUL, tab, newline, ...), at most NAME_MAX_BYTES bytes in UTF-8."""
    import unicodedata

    bad = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ConfigError(f"name must not contain control characters, got {name!r} (has {bad!r})")
    if not name or "/" in name or name in {".", ".."}:
        raise ConfigError(f"name must be a plain directory name, got {name!r}")
    if len(name.encode()) > NAME_MAX_BYTES:
        raise ConfigError(f"name must be at most {NAME_MAX_BYTES} bytes (a directory name), got {len(name.encode())}")


# ---------------------------------------------------------------------------------------- config.json
def read_meta(run_dir: str | Path) -> dict:
    """``RUN_DIR/config.json``, type-checked (:func:`check_meta`). ResultsError saying which file of
    which run is missing or damaged, and how."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ResultsError(f"{run_dir} is not a flarebench run ({CONFIG_FILE} is missing)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"run {run_dir}: {CONFIG_FILE} is damaged (not readable JSON: {e})") from None
    problem = check_meta(meta)
    if problem:
        raise ResultsError(f"run {run_dir}: {CONFIG_FILE} is damaged ({problem})")
    from .config import upgrade_config

    meta["config"] = upgrade_config(meta["config"])  # runs made before the part API: parts named, params filled
    return meta


def check_meta(meta: Any) -> str | None:
    """What is wrong with a config.json object, or None: not an object, no ``config`` object, a config
    value whose type is not its RunConfig field's (keys this version does not know are not checked),
    or a recorded value of the wrong type."""
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        return "it has no 'config' object"
    from .config import RunConfig

    for f in dataclasses.fields(RunConfig):
        if f.name in meta["config"]:
            problem = _type_problem(meta["config"][f.name], str(f.type))
            if problem:
                return f"config.{f.name} {problem}"
    recorded = {"num_params": "int", "status": "str", "device": "str", "wall_time_s": "float",
                "client_samples": "list[int]", "validation_samples": "int", "resumed_at_rounds": "list[int]", "engine_resolved": "dict | None"}
    for key, kind in recorded.items():
        if key in meta:
            problem = _type_problem(meta[key], kind)
            if problem:
                return f"{key} {problem}"
    return None


_CHECKS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "dict": (lambda v: isinstance(v, dict), "an object"),
    "list[int]": (lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
                  "a list of integers"),
}


def _type_problem(value: Any, annotation: str) -> str | None:
    """``"should be an integer, got 'five'"`` if ``value`` does not fit ``annotation`` (e.g. ``int | None``);
    None if it fits or the annotation is not one of the simple kinds checked here."""
    kinds = [k.strip() for k in annotation.split("|")]
    if "None" in kinds and value is None:
        return None
    kinds = [k for k in kinds if k != "None"]
    if len(kinds) != 1 or kinds[0] not in _CHECKS:
        return None
    ok, want = _CHECKS[kinds[0]]
    return None if ok(value) else f"should be {want}, got {_short(value)}"


# ---------------------------------------------------------------------------------------- status
def run_status(run_dir: str | Path, meta: dict) -> tuple[str, bool, bool]:
    """(status, killed, resumable). A run whose config.json says "running" but whose lock no live
    process holds was killed: ("interrupted", True, ...). Resumable: not complete/running, with a checkpoint."""
    status, killed = meta.get("status", "unknown"), False
    if status == "running" and fcntl is not None and not is_locked(run_dir):
        status, killed = "interrupted", True
    resumable = status not in ("complete", "running") and (Path(run_dir) / CHECKPOINT_FILE).is_file()
    return status, killed, resumable


def check_new_run_dir(run_dir: Path, overwrite: bool = False) -> None:
    """ResultsError if ``run_dir`` is not a directory, or holds files and ``overwrite`` is not given;
    the message says what can be done with the run there (resume, extend, or only start over)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ResultsError(f"{run_dir} exists and is not a run directory; choose another --name or --out")
    if not run_dir.is_dir() or not any(run_dir.iterdir()) or overwrite:
        return
    try:
        status = read_meta(run_dir).get("status")
    except ResultsError:
        status = None
    has_checkpoint = (run_dir / CHECKPOINT_FILE).is_file()
    if status == "complete":
        extend = f"extend it with --resume {run_dir} --rounds N (N more than its rounds), " if has_checkpoint else ""
        raise ResultsError(f"run {run_dir} exists and is complete; {extend}start over with --overwrite, or choose another --name")
    if has_checkpoint:
        raise ResultsError(f"run {run_dir} exists; resume it with --resume {run_dir} or start over with --overwrite")
    raise ResultsError(f"run {run_dir} exists but has no checkpoint to resume from (it stopped before its first "
                       "checkpoint, or is not a flarebench run); start it over with --overwrite, or choose another --name")


# ---------------------------------------------------------------------------------------- the same run
def pinned_engine(meta: dict) -> dict:
    """``--engine auto`` resolves by timing; a resumed run must use the engine the run started with
    (engines may differ in the last float bits): ``{"engine": ..., "client_chunk": ...}`` as recorded, or {}."""
    resolved, cfg = meta.get("engine_resolved"), meta["config"]
    if not isinstance(resolved, dict) or cfg.get("engine") != "auto" or "engine" not in resolved:
        return {}
    pinned = {"engine": resolved["engine"]}
    if "client_chunk" in cfg and cfg["client_chunk"] is None:
        pinned["client_chunk"] = resolved.get("client_chunk")
    return pinned


def config_diffs(stored: dict, new: dict, pinned: dict | None = None, extend: bool = False) -> list[str]:
    """``["lr: 0.1 -> 0.05", ...]``: where config ``new`` makes another run than the stored config.

    The one rule: ``out`` and ``name`` do not count (where the run lives); ``sparsity`` does not count
    for method ``none`` (nothing is sparsified); a key the stored config lacks (made before the key
    existed) counts as its default; ``pinned`` (an ``auto`` engine's recorded choice) may stand for
    the stored value; ``extend``: ``rounds`` may grow (the run is extended, not changed). Values are
    compared as JSON stores them.
    """
    from .config import RunConfig

    defaults, pinned = RunConfig().to_dict(), pinned or {}
    ignored = NOT_THE_RUN | ({"sparsity"} if new.get("method") == "none" else set())
    out = []
    for key, value in new.items():
        if key in ignored:
            continue
        old = stored.get(key, defaults.get(key))
        if _norm(old) == _norm(value) or (key in pinned and _norm(pinned[key]) == _norm(value)):
            continue
        if key == "rounds" and extend and isinstance(old, int) and isinstance(value, int) and value > old:
            continue
        out.append(f"{key}: {_short(old)} -> {_short(value)}")
    return out


def check_same_run(stored: dict, meta: dict, run_dir: Path, extend: bool = False) -> None:
    """ResultsError unless ``meta`` (what this setup would write to config.json) describes the run whose
    config.json is ``stored``: the config by :func:`config_diffs`; the recorded keys (parameters,
    client sizes, device, engine) equal, apart from VOLATILE_META and engine timings. A different
    code version (CODE_VERSION_META) is logged as a warning."""
    diffs, versions = [], []
    for key, value in meta.items():
        if key in VOLATILE_META:
            continue
        if key in CODE_VERSION_META:
            if _norm(stored.get(key)) != _norm(value):
                versions.append(f"{key} {stored.get(key)} -> {value}")
            continue
        if key == "config":
            diffs += [f"config.{d}" for d in config_diffs(stored.get("config", {}), value, pinned_engine(stored), extend)]
        elif key == "engine_resolved" and isinstance(value, dict):  # timings and reasons vary; the engine may not
            old = stored.get(key) or {}
            diffs += [f"{key}.{k}: {old.get(k)!r} -> {value.get(k)!r}" for k in ("engine", "client_chunk") if old.get(k) != value.get(k)]
        elif key == "columns" and isinstance(value, list):  # a run made before the validation columns keeps its own
            from .results import run_columns

            old = run_columns(stored)
            if old != value and old != [c for c in value if c not in _validation_columns()]:
                diffs.append(f"columns: {_short(old)} -> {_short(value)}")
        elif _norm(stored.get(key, ADDED_META.get(key))) != _norm(value):
            diffs.append(f"{key}: {_short(stored.get(key))} -> {_short(value)}")
    if diffs:
        raise ResultsError(f"cannot resume {run_dir}: this setup differs from its config.json ({'; '.join(diffs)})")
    if versions:
        log.warning("resuming %s with a different code version: %s; results may differ from an uninterrupted run",
                    run_dir, ", ".join(versions))


def _validation_columns() -> list[str]:
    """The metrics columns a run made before the validation split lacks."""
    from .results import COLUMNS, LEGACY_COLUMNS

    return COLUMNS[len(LEGACY_COLUMNS):]


def _norm(v: Any) -> Any:
    """JSON round-trip, so tuples/lists and ints/floats compare as they are stored (NaN as a string)."""
    v = json.loads(json.dumps(v, default=str))
    return "nan" if isinstance(v, float) and math.isnan(v) else v


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 3] + "..."


__all__ = [
    "CONFIG_FILE", "METRICS_FILE", "CHECKPOINT_FILE", "VOLATILE_META", "CODE_VERSION_META",
    "lock_run", "unlock_run", "locked_run", "is_locked", "read_meta", "check_meta", "run_status",
    "check_new_run_dir", "check_run_name", "pinned_engine", "config_diffs", "check_same_run",
]
