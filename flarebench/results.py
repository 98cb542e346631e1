"""The results contract: ``DIR/NAME/config.json`` and ``DIR/NAME/metrics.csv``.

config.json: the resolved RunConfig under "config", plus num_params, per-tensor sizes, device,
flarebench/torch versions, git commit, status ("running" / "complete" / "interrupted" on Ctrl-C /
"failed" on an error; a killed run stays "running").

metrics.csv: one row per round, flushed when the round ends. Row 0 is the initial model
(evaluated, nothing sent). Columns (bits are bits, not bytes):
"""

from __future__ import annotations

import csv
import json
import io
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .errors import ResultsError
from .rundir import CONFIG_FILE, METRICS_FILE, check_new_run_dir, read_meta

COLUMNS = [
    "round",  # rounds completed (0 = initial model)
    "clients",  # participating clients this round
    "train_loss",  # mean local cross-entropy over the round's local steps (no regularizer term)
    "test_loss",  # mean cross-entropy on the test set (empty on rounds without evaluation)
    "test_accuracy",  # fraction in [0, 1] (empty on rounds without evaluation)
    "nnz",  # entries sent by all clients this round
    "uplink_bits",  # sum over client messages of 8 * len(encoded bytes)
    "uplink_bound_bits",  # floor for the same messages: sum log2 C(n_t, k_t) + value bits (wire/bounds.py)
    "cumulative_uplink_bits",
    "downlink_bits",  # dense: 32 * num_params per participant; sparse: clients * 8 * len(encoded update)
    "cumulative_downlink_bits",
    "position_codecs",  # e.g. "minwidth:10" (codec: messages) this round
    "wall_time_s",  # seconds since the run started (training + evaluation + I/O)
    "val_loss",  # mean cross-entropy on the validation rows (validation_fraction > 0; empty otherwise)
    "val_accuracy",  # fraction in [0, 1] on the validation rows (empty as test_accuracy, or without a split)
]
# the columns of runs made before the validation split: such runs still read, compare and resume
LEGACY_COLUMNS = COLUMNS[: COLUMNS.index("val_loss")]
__doc__ += "\n".join(f"    {c}" for c in COLUMNS)


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


def check_writable(out_dir: Path, create: bool = True) -> None:
    """ResultsError unless ``out_dir`` exists or can be created, and is writable. ``create=False``:
    check without creating anything (its nearest existing ancestor must be a writable directory)."""
    out_dir = Path(out_dir)
    if not create:
        return _check_creatable(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ResultsError(f"cannot create output directory {out_dir}: {e.strerror}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ResultsError(f"output directory {out_dir} is not writable")


def _check_creatable(out_dir: Path) -> None:
    """:func:`check_writable` without creating anything: look at the nearest existing ancestor."""
    base = out_dir.absolute()
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ResultsError(f"cannot create output directory {out_dir}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ResultsError(f"cannot create output directory {out_dir}: {base} is not writable"
                           if base != out_dir.absolute() else f"output directory {out_dir} is not writable")


def run_columns(meta: dict) -> list[str]:
    """A run's metrics.csv columns: COLUMNS (LEGACY_COLUMNS for a run made before the validation split), then
    any a backend adds after them (config.json's ``columns``, e.g. the Flower backend's transport bits)."""
    cols = meta.get("columns")
    if isinstance(cols, list) and cols[: len(LEGACY_COLUMNS)] == LEGACY_COLUMNS:
        return list(cols)
    return list(COLUMNS)


class RunWriter:
    """Creates a run directory and appends one metrics row per round (flushed and fsynced)."""

    def __init__(self, run_dir: Path, meta: dict, overwrite: bool = False):
        self.dir = Path(run_dir)
        check_new_run_dir(self.dir, overwrite)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        write_json_atomic(self.dir / CONFIG_FILE, meta)
        self.columns = run_columns(meta)
        self._file = open(self.dir / METRICS_FILE, "w", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
        self._csv.writeheader()
        self._file.flush()

    def append(self, row: dict) -> None:
        self._csv.writerow({c: _fmt(row.get(c)) for c in self.columns})
        self._file.flush()
        os.fsync(self._file.fileno())

    def set_status(self, status: str, **extra) -> None:
        self.meta = {**self.meta, "status": status, **extra}
        write_json_atomic(self.dir / CONFIG_FILE, self.meta)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    @classmethod
    def reopen(cls, run_dir: Path, meta: dict, last_round: int, blank_eval_at: int | None = None,
               check: Callable[[list[dict]], None] | None = None) -> tuple["RunWriter", list[dict]]:
        """Resume a run: keep metrics rows 0..``last_round`` (rewritten atomically), drop later ones,
        write ``meta`` and append from there. Returns the writer and the kept rows (values parsed).
        ``blank_eval_at``: a round whose test_loss/test_accuracy are emptied (an extended run's old last
        round, evaluated only because it was last). ResultsError if the header differs from COLUMNS or a
        row up to ``last_round`` is missing. ``check(rows)`` is called with the kept rows before anything
        is written (it raises to refuse the resume: the directory is then left as it was)."""
        self = cls.__new__(cls)
        self.dir, self.meta, self.columns = Path(run_dir), meta, run_columns(meta)
        path = self.dir / METRICS_FILE
        try:
            lines = path.read_text().splitlines(keepends=True)
        except (OSError, UnicodeDecodeError) as e:
            raise ResultsError(f"cannot resume {self.dir}: cannot read {path} ({e})") from None
        if not lines or lines[0].rstrip("\r\n").split(",") != self.columns:
            raise ResultsError(f"cannot resume {self.dir}: {path} does not have this version's columns")
        kept, rows = [lines[0]], []
        for line in lines[1 : last_round + 2]:
            values = next(csv.reader([line]))
            if not line.endswith("\n") or len(values) != len(self.columns) or values[0] != str(len(rows)):
                break
            row = {c: _parse(v) for c, v in zip(self.columns, values)}
            if row["round"] == blank_eval_at:
                row.update(test_loss=None, test_accuracy=None, val_loss=None, val_accuracy=None)
                line = _csv_line({c: _fmt(row[c]) for c in self.columns}, self.columns)
            kept.append(line)
            rows.append(row)
        if len(rows) != last_round + 1:
            raise ResultsError(f"cannot resume {self.dir}: {path} lacks the rows up to the checkpoint's round {last_round}")
        if check is not None:
            check(rows)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            f.writelines(kept)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        write_json_atomic(self.dir / CONFIG_FILE, meta)
        self._file = open(path, "a", newline="")
        self._csv = csv.DictWriter(self._file, fieldnames=self.columns)
        return self, rows


def _csv_line(cells: dict, columns: list[str] = COLUMNS) -> str:
    """One metrics.csv line, as csv.DictWriter writes it."""
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=columns).writerow(cells)
    return buf.getvalue()


def _parse(v: str):
    """A metrics.csv cell back to int / float / None / str."""
    if v == "":
        return None
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


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
    """Read a run directory; ResultsError if it is not one, or saying which of its files is damaged."""
    p = Path(run_dir)
    if not (p / CONFIG_FILE).is_file() or not (p / METRICS_FILE).is_file():
        raise ResultsError(f"{p} is not a flarebench run (needs {CONFIG_FILE} and {METRICS_FILE})")
    meta = read_meta(p)
    return RunRecord(p, meta, read_metrics(p, meta))


# metrics.csv columns that every row fills with a finite number; the others may be empty (no evaluation,
# row 0's train loss) or NaN (a diverged loss); position_codecs is text
FILLED = {"round", "clients", "nnz", "uplink_bits", "cumulative_uplink_bits", "downlink_bits", "cumulative_downlink_bits", "wall_time_s"}
TEXT = {"position_codecs"}


def read_metrics(run_dir: Path, meta: dict):
    """``RUN_DIR/metrics.csv`` as a pandas DataFrame, checked row by row: every row has the header's
    fields, numbers where numbers belong, and rounds 0, 1, 2, ... A last row cut mid-write (a killed
    run) is dropped, unless config.json says the run is complete. ResultsError naming the run, the file
    and the line otherwise; also when config.json says complete and metrics.csv stops short."""
    import pandas as pd

    path = Path(run_dir) / METRICS_FILE

    def damaged(why: str) -> ResultsError:
        return ResultsError(f"run {run_dir}: {METRICS_FILE} is damaged ({why})")

    try:
        lines = path.read_text().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as e:
        raise damaged(f"not readable: {e}") from None
    header = next(csv.reader(lines[:1]), [])
    if "round" not in header:
        raise damaged("no header with a 'round' column")
    body = lines[1:]
    complete = meta.get("status") == "complete"
    if body and not body[-1].endswith("\n"):  # cut mid-row: a run killed while writing it
        if complete:
            raise damaged(f"line {len(lines)} is cut mid-row, yet {CONFIG_FILE} says the run is complete")
        body.pop()
    for n, line in enumerate(body, start=2):
        values = next(csv.reader([line]), [])
        if len(values) != len(header):
            raise damaged(f"line {n} has {len(values)} fields, the header {len(header)}")
        cells = dict(zip(header, values))
        for col, v in cells.items():
            if col in TEXT or (v == "" and col not in FILLED):
                continue
            try:
                x = float(v)
            except ValueError:
                raise damaged(f"line {n}, column {col}: {v!r} is not a number") from None
            if col in FILLED and not math.isfinite(x):
                raise damaged(f"line {n}, column {col}: {v!r} is not a finite number")
        if float(cells["round"]) != n - 2:
            raise damaged(f"line {n} is round {cells['round']}, expected {n - 2}")
    planned = meta["config"].get("rounds")
    stopped = meta.get("diverged") or {}
    if stopped.get("policy") == "stop" and isinstance(stopped.get("round"), int):  # ended where it diverged
        planned = stopped["round"]
    if complete and isinstance(planned, int) and len(body) != planned + 1:
        raise damaged(f"{CONFIG_FILE} says the run completed {planned} rounds, {METRICS_FILE} has rows up to round {len(body) - 1}")
    return pd.read_csv(io.StringIO("".join(lines[:1] + body)))
