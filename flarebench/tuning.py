"""Tuning without the test set: ``flarebench sweep CONFIG --tune lr --select val-accuracy`` (docs/tuning.md).

1. :func:`tuning_sweep`: per method (and sparsity, and values of the other grid keys: a *cell*), the grid
   over the tuned keys, with the sweep's first seed, evaluated on the validation rows only
   (``evaluate_test = False``: the test set is never evaluated), into ``OUT/tune/<run name>``.
2. :func:`select`: per cell, the point with the best score by a :class:`Criterion` read from the tuning
   runs' metrics.csv; ties go to fewer total uplink bits, then to the earlier grid point.
3. :class:`Tuning` on the sweep: only each cell's pick runs, with all the sweep's seeds and the test set,
   into ``OUT/<run name with the picked values>``; its config's ``tuned`` records the pick.

Methods whose grid has none of the tuned keys are not tuned (nothing to choose): they run as swept.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import ConfigError
from .methods.presets import uses_sparsity
from .sweep import Point, Sweep, grid_key, shown_key, value_text

LAST_EVALUATIONS = 3  # val-accuracy: the mean validation accuracy over this many last evaluations
CRITERIA = ("val-accuracy", "val-bits-to=ACC")


@dataclass(frozen=True)
class Criterion:
    """How a tuning run is scored from its metrics.csv (validation columns only).

    ``val-accuracy``: the mean ``val_accuracy`` over the last LAST_EVALUATIONS evaluations (all of them if
    fewer), higher is better, NaN (diverged) worst. ``val-bits-to=ACC``: ``cumulative_uplink_bits`` at the
    first evaluation with ``val_accuracy >= ACC``, lower is better, not reached = infinity (worst)."""

    name: str
    target: float | None = None

    def __str__(self) -> str:
        return self.name if self.target is None else f"{self.name}={self.target:g}"

    def score(self, metrics) -> float:
        """The run's score (see the class); ``metrics``: its metrics.csv as a DataFrame."""
        ev = metrics[metrics["val_accuracy"].notna()]
        if self.name == "val-accuracy":
            value = float(ev["val_accuracy"].tail(LAST_EVALUATIONS).mean()) if len(ev) else math.nan
            return -math.inf if math.isnan(value) else value
        hit = ev[ev["val_accuracy"] >= self.target]
        return float(hit["cumulative_uplink_bits"].iloc[0]) if len(hit) else math.inf

    def rank(self, score: float) -> float:
        """Smaller is better: the sort key of a score."""
        return -score if self.name == "val-accuracy" else score


def parse_criterion(text: str) -> Criterion:
    """``val-accuracy`` or ``val-bits-to=ACC`` (ACC a fraction in (0, 1]); ConfigError otherwise."""
    name, sep, value = text.strip().partition("=")
    if name == "val-accuracy" and not sep:
        return Criterion(name)
    if name == "val-bits-to" and sep:
        try:
            target = float(value)
        except ValueError:
            target = math.nan
        if 0 < target <= 1:
            return Criterion(name, target)
        raise ConfigError(f"--select val-bits-to=ACC takes an accuracy in (0, 1], got {value!r}")
    raise ConfigError(f"--select takes {' or '.join(CRITERIA)}, got {text!r}")


def tuned_keys(sweep: Sweep, keys: list[str]) -> list[str]:
    """``keys`` in grid-key form; ConfigError unless each is swept (by some method) and every run of the
    sweep holds out a validation set."""
    if not keys:
        raise ConfigError("--tune takes the grid keys to tune, e.g. --tune lr")
    out = [grid_key(k, " (--tune)") for k in keys]
    swept = {k for m in sweep.methods for k in sweep.axes(m)}
    missing = [k for k in out if k not in swept]
    if missing:
        raise ConfigError(f"--tune {shown_key(missing[0])}: not swept; give its values with --grid "
                          f"{shown_key(missing[0])}=V1,V2 or in [sweep]")
    if any(cfg.validation_fraction <= 0 for cfg in sweep.configs()):
        raise ConfigError("--tune picks on a validation set: set validation-fraction > 0 (e.g. validation-fraction = 0.1 "
                          "in the config)")
    return out


def tuning_sweep(sweep: Sweep, keys: list[str]) -> Sweep:
    """The tuning runs: the methods with a tuned key, the first seed, no test evaluation, into OUT/tune."""
    methods = [m for m in sweep.methods if set(keys) & set(sweep.axes(m))]
    return dataclasses.replace(sweep, methods=methods, seeds=sweep.seeds[:1], out=sweep.out / "tune",
                               base={**sweep.base, "evaluate_test": False}, tuning=None)


def cell_of(point: Point, keys: list[str]) -> tuple:
    """What is tuned separately: the method, its sparsity (if it uses one), the values of untuned keys."""
    rest = tuple((k, repr(v)) for k, v in point.values.items() if k not in keys)
    return point.method, point.sparsity if uses_sparsity(point.method) else None, rest


@dataclass
class Pick:
    """A cell's choice: the tuned keys' values, the score, and every candidate ``(values, score, bits, run)``."""

    values: dict
    score: float
    grid: dict
    candidates: list[tuple[dict, float, int, str]]

    def describe(self, criterion: Criterion) -> str:
        """``lr=0.1 of [0.03, 0.1, 0.3] by val-accuracy (score 0.9012)``."""
        chosen = ", ".join(f"{shown_key(k)}={value_text(v)} of [{', '.join(value_text(x) for x in self.grid[k])}]" for k, v in self.values.items())
        return f"{chosen} by {criterion} (score {self.score:.6g})"


def select(tuning: Sweep, keys: list[str], criterion: Criterion) -> dict[tuple, Pick]:
    """Per cell, the pick from the complete tuning runs of ``tuning`` (:func:`tuning_sweep`): best
    :meth:`Criterion.rank`, then fewer total uplink bits, then the earlier grid point."""
    from .results import load_run

    cells: dict[tuple, list] = {}
    for order, point in enumerate(tuning.points()):
        m = load_run(Path(point.cfg.out) / point.cfg.name).metrics
        score, bits = criterion.score(m), int(m["cumulative_uplink_bits"].iloc[-1])
        values = {k: v for k, v in point.values.items() if k in keys}
        cells.setdefault(cell_of(point, keys), []).append((criterion.rank(score), bits, order, values, score, point.cfg.name))
    picks = {}
    for cell, found in cells.items():
        _, _, _, values, score, _ = min(found, key=lambda c: c[:3])
        grid = {k: list(dict.fromkeys(c[3][k] for c in found)) for k in values}
        picks[cell] = Pick(values, score, grid, [(c[3], c[4], c[1], c[5]) for c in found])
    return picks


@dataclass
class Tuning:
    """On a Sweep: keep only each cell's picked point, its config's ``tuned`` saying what was picked
    (``runs``: the tuning runs' directory, ``seed``: the seed they ran with)."""

    keys: list[str]
    criterion: Criterion
    picks: dict
    runs: Path
    seed: int

    def apply(self, point: Point) -> Point | None:
        """``point`` with its ``tuned`` record if it is its cell's pick; None if it is another value of a tuned key."""
        pick = self.picks.get(cell_of(point, self.keys))
        if pick is None:  # a method with no tuned key: nothing chosen, it runs as swept
            return point
        if any(repr(point.values.get(k)) != repr(v) for k, v in pick.values.items()):
            return None
        record = {"keys": {k: {"value": v, "grid": pick.grid[k]} for k, v in pick.values.items()},
                  "criterion": str(self.criterion), "score": pick.score, "seed": self.seed, "tuning_runs": str(self.runs)}
        return dataclasses.replace(point, cfg=point.cfg.replace(tuned=record))


def tune(sweep: Sweep, keys: list[str], criterion: Criterion, run: Callable[[Sweep], object],
         on_pick: Callable[[tuple, Pick], None] | None = None) -> Sweep:
    """Run the tuning sweep with ``run`` (e.g. ``lambda s: run_sweep(s, jobs=2)``), pick per cell, and return the
    sweep of the picked points (all seeds, test evaluation as configured) for ``run`` to run next. ``on_pick(cell, pick)``
    per cell, in grid order."""
    keys = tuned_keys(sweep, keys)
    tuning = tuning_sweep(sweep, keys)
    run(tuning)
    picks = select(tuning, keys, criterion)
    for cell, pick in picks.items():
        if on_pick:
            on_pick(cell, pick)
    return dataclasses.replace(sweep, tuning=Tuning(keys, criterion, picks, tuning.out, tuning.seeds[0]))


def describe_cell(cell: tuple) -> str:
    """``flare s=0.999`` (plus untuned grid values) for a cell."""
    method, sparsity, rest = cell
    parts = [method] + ([f"s={sparsity:g}"] if sparsity is not None else []) + [f"{shown_key(k)}={v}" for k, v in rest]
    return " ".join(parts)


__all__ = ["Criterion", "parse_criterion", "tuned_keys", "tuning_sweep", "select", "Pick", "Tuning", "tune", "cell_of",
           "describe_cell", "LAST_EVALUATIONS"]
