"""The results contract: ``DIR/NAME/config.json`` and ``DIR/NAME/metrics.csv``.

config.json: the resolved RunConfig under "config", plus num_params, per-tensor sizes, device,
flarebench/torch versions, git commit, status ("running" / "complete").

metrics.csv: one row per round, flushed when the round ends. Row 0 is the initial model
(evaluated, nothing sent). Columns (bits are bits, not bytes):
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ResultsError

COLUMNS = [
    "round",  # rounds completed (0 = initial model)
    "clients",  # participating clients this round
    "train_loss",  # mean local cross-entropy over the round's local steps (no regularizer term)
    "test_loss",  # mean cross-entropy on the test set (empty on rounds without evaluation)
    "test_accuracy",  # fraction in [0, 1] (empty on rounds without evaluation)
    "nnz",  # entries sent by all clients this round
    "uplink_bits",  # sum over client messages of 8 * len(encoded bytes)
    "cumulative_uplink_bits",
    "downlink_bits",  # dense fp32 broadcast: 32 * num_params per participating client
    "cumulative_downlink_bits",
    "position_codecs",  # e.g. "minwidth:10" (codec: messages) this round
    "wall_time_s",  # seconds since the run started (training + evaluation + I/O)
]
__doc__ += "\n".join(f"    {c}" for c in COLUMNS)

CONFIG_FILE, METRICS_FILE = "config.json", "metrics.csv"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to a temp file, fsync, rename: readers never see half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def git_commit() -> str | None:
    """The commit of the flarebench source tree, if it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def check_writable(out_dir: Path) -> None:
    """ResultsError unless ``out_dir`` exists or can be created, and is writable."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ResultsError(f"output directory {out_dir} is not writable")


class RunWriter:
    """Creates a run directory and appends one metrics row per round (flushed and fsynced)."""

    def __init__(self, run_dir: Path, meta: dict, overwrite: bool = False):
        self.dir = Path(run_dir)
        if self.dir.exists() and any(self.dir.iterdir()) and not overwrite:
            raise ResultsError(
                f"run {self.dir} exists; resume it with --resume {self.dir} or start over with --overwrite"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        write_json_atomic(self.dir / CONFIG_FILE, meta)
        self._file = open(self.dir / METRICS_FILE, "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._csv.writeheader()
        self._file.flush()

    def append(self, row: dict) -> None:
        self._csv.writerow({c: _fmt(row.get(c)) for c in COLUMNS})
        self._file.flush()
        os.fsync(self._file.fileno())

    def set_status(self, status: str, **extra) -> None:
        self.meta = {**self.meta, "status": status, **extra}
        write_json_atomic(self.dir / CONFIG_FILE, self.meta)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


@dataclass
class RunRecord:
    """A run read back from disk: its config.json and metrics.csv (as a pandas DataFrame)."""

    path: Path
    meta: dict
    metrics: "Any"

    @property
    def config(self) -> dict:
        return self.meta["config"]


def load_run(run_dir: str | Path) -> RunRecord:
    """Read a run directory; ResultsError if it is not one."""
    import pandas as pd

    p = Path(run_dir)
    cfg_path, met_path = p / CONFIG_FILE, p / METRICS_FILE
    if not cfg_path.is_file() or not met_path.is_file():
        raise ResultsError(f"{p} is not a flarebench run (needs {CONFIG_FILE} and {METRICS_FILE})")
    try:
        meta = json.loads(cfg_path.read_text())
        metrics = pd.read_csv(met_path)
    except (json.JSONDecodeError, ValueError, OSError) as e:
        raise ResultsError(f"cannot read run {p}: {e}") from None
    return RunRecord(p, meta, metrics)
