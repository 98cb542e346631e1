"""Sweeps: the grid of runs a TOML config's ``[sweep]`` table asks for, run once each.

A sweep config is a run config (top-level keys = RunConfig fields) plus::

    [sweep]
    methods = ["flare", "topk-ef", "ef21", "fedprox-ef", "none"]
    sparsities = [0.99999]      # fraction NOT sent; one run per seed for compressors that ignore it (none, qsgd, ...)
    seeds = [0]
    out = "results/NAME"        # optional; default results/<config file stem>

    [meta]                      # optional, for figures and the reference table
    title = "..."
    reference = { flare = 0.761, ... }   # the paper's / reference code's final accuracies

Runs go to ``OUT/<run name>``; names are stable (:func:`run_name`), so running the sweep again
skips complete runs, resumes interrupted ones from their checkpoint (where the runner supports
``--resume``) or restarts them.
"""

from __future__ import annotations

import inspect
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from .config import FIELD_NAMES, RunConfig, load_toml, make_config
from .errors import ConfigError, ResultsError
from .methods.presets import method_label, uses_sparsity
from .rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, config_diffs, read_meta

SWEEP_KEYS = {"methods", "sparsities", "seeds", "out"}


@dataclass
class Sweep:
    """A resolved sweep: the experiment name, its base values, the grid axes and where runs go."""

    experiment: str
    base: dict
    methods: list[str]
    sparsities: list[float]
    seeds: list[int]
    out: Path
    meta: dict = field(default_factory=dict)

    def configs(self) -> list[RunConfig]:
        """One validated RunConfig per grid point (``name`` and ``out`` set), in a stable order."""
        out = []
        for method in self.methods:
            sparsities = self.sparsities if uses_sparsity(method) else self.sparsities[:1]
            for sparsity in sparsities:
                for seed in self.seeds:
                    values = {**self.base, "method": method, "sparsity": sparsity, "seed": seed, "out": str(self.out)}
                    cfg = make_config(**values)
                    out.append(cfg.replace(name=run_name(cfg)))
        return out


def run_name(cfg: RunConfig) -> str:
    """``{method}-s{sparsity}-seed{seed}``, e.g. ``flare-s0.99999-seed0``; ``none-seed0`` where the
    compressor ignores the sparsity (FedAvg, qsgd, ...); replaced parts named (``flare+stc-s0.999-seed0``)."""
    if not uses_sparsity(cfg):
        return f"{method_label(cfg)}-seed{cfg.seed}"
    return f"{method_label(cfg)}-s{cfg.sparsity:.10g}-seed{cfg.seed}"


def _list(value, name: str, kind: type) -> list:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"[sweep] {name} must be a non-empty list")
    out = []
    for v in value:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConfigError(f"[sweep] {name} must hold {kind.__name__}s, got {v!r}")
        out.append(v)
    return out


def split_csv(values: list[str] | None) -> list[str] | None:
    """CLI lists: ``--methods a,b --methods c`` -> ``[a, b, c]`` (None stays None)."""
    if not values:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


def load_sweep(
    path: str | Path,
    methods: list[str] | None = None,
    sparsities: list[float] | None = None,
    seeds: list[int] | None = None,
    out: str | Path | None = None,
    rounds: int | None = None,
) -> Sweep:
    """Read a sweep config; arguments override its ``[sweep]`` table (``rounds``: the config's
    ``rounds``, for a quick try; runs of another round count are refused, not mixed). Every grid
    point is validated."""
    path = Path(path)
    raw = load_toml(path)
    table = raw.get("sweep")
    if table is None:
        raise ConfigError(f"{path} has no [sweep] table (methods, sparsities, seeds)")
    unknown = set(table) - SWEEP_KEYS
    if unknown:
        raise ConfigError(f"unknown key '{sorted(unknown)[0]}' in [sweep] of {path} (allowed: {', '.join(sorted(SWEEP_KEYS))})")
    base = {k: v for k, v in raw.items() if k in FIELD_NAMES and k not in {"method", "sparsity", "seed", "name", "out"}}
    if rounds is not None:
        base["rounds"] = rounds
    sweep = Sweep(
        experiment=path.stem,
        base=base,
        methods=list(methods) if methods else _list(table.get("methods"), "methods", str),
        sparsities=list(sparsities) if sparsities else _list(table.get("sparsities", [raw.get("sparsity", RunConfig.sparsity)]), "sparsities", float),
        seeds=list(seeds) if seeds is not None and len(seeds) else _list(table.get("seeds", [0]), "seeds", int),
        out=Path(out if out is not None else table.get("out", f"results/{path.stem}")).expanduser(),
        meta=raw.get("meta", {}),
    )
    sweep.configs()  # validate every grid point now: bad input fails before any run starts
    return sweep


# ------------------------------------------------------------------------------------------- state
def run_state(cfg: RunConfig) -> str:
    """``missing`` | ``complete`` | ``partial`` for the run directory of ``cfg``.

    ResultsError if the directory holds a run made with a different config (it would be mixed up).
    """
    run_dir = Path(cfg.out) / cfg.name
    if not (run_dir / CONFIG_FILE).is_file():
        return "missing"
    try:
        meta = read_meta(run_dir)
    except ResultsError:
        return "partial"  # damaged: restart it
    diffs = config_diffs(meta["config"], cfg.to_dict())  # the rule --resume uses (rundir.py)
    if diffs:
        raise ResultsError(f"{run_dir} was made with a different config ({'; '.join(diffs[:3])}); use another --out or --overwrite")
    if meta.get("status") == "complete" and (run_dir / METRICS_FILE).is_file():
        return "complete"
    return "partial"


def _can_resume(cfg: RunConfig) -> bool:
    """Whether the runner offers resuming and this run has a checkpoint to resume from."""
    from . import launch

    return "resume" in inspect.signature(launch.run).parameters and (Path(cfg.out) / cfg.name / CHECKPOINT_FILE).is_file()


def execute(cfg: RunConfig, action: str, threads: int | None = None) -> dict:
    """Run (``run``/``restart``) or resume one grid point; returns a summary dict. Used in worker processes."""
    import torch

    from .launch import run

    if threads:
        torch.set_num_threads(threads)
    if action == "resume":
        try:
            result = run(cfg, resume=Path(cfg.out) / cfg.name)
        except ResultsError as e:  # e.g. made by another flarebench version: start it over
            action = f"restart ({e})"
            result = run(cfg, overwrite=True)
    else:
        result = run(cfg, overwrite=(action == "restart"))
    return {"name": cfg.name, "action": action, "final_accuracy": result.final_accuracy,
            "uplink_bits": result.total_uplink_bits, "wall_time_s": result.wall_time_s}


def plan(sweep: Sweep, overwrite: bool = False) -> list[tuple[RunConfig, str]]:
    """``(cfg, action)`` per grid point: ``skip`` (complete), ``resume``, ``restart`` or ``run``."""
    return [(cfg, action_for(cfg, overwrite)) for cfg in sweep.configs()]


def action_for(cfg: RunConfig, overwrite: bool = False) -> str:
    """What :func:`plan` does with one grid point, from its run directory's state now (a Ray task
    retried after its worker died asks again: ``resume``)."""
    if overwrite:
        return "restart" if (Path(cfg.out) / cfg.name).exists() else "run"
    state = run_state(cfg)
    if state == "complete":
        return "skip"
    if state == "partial":
        return "resume" if _can_resume(cfg) else "restart"
    return "run"


def pending(sweep: Sweep, overwrite: bool = False, on_event=None) -> list[tuple[RunConfig, str]]:
    """The grid points to execute, ``(cfg, action)`` from :func:`plan`; complete runs are announced to
    ``on_event("skip", cfg, None)`` and left out. Local and Ray sweeps start from this list."""
    todo = []
    for cfg, action in plan(sweep, overwrite):
        if action == "skip":
            if on_event:
                on_event("skip", cfg, None)
        else:
            todo.append((cfg, action))
    return todo


def run_sweep(
    sweep: Sweep,
    jobs: int = 1,
    overwrite: bool = False,
    on_event: Callable[[str, RunConfig, dict | None], None] | None = None,
) -> list[dict]:
    """Run the grid (``jobs`` processes at a time, torch threads split between them).

    ``on_event(kind, cfg, info)``: kind ``skip`` | ``start`` | ``done``. Returns one summary per run
    that was executed. A failing run raises after the other running jobs finish.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    todo = pending(sweep, overwrite, on_event)
    done: list[dict] = []
    if jobs == 1 or len(todo) <= 1:
        for cfg, action in todo:
            if on_event:
                on_event("start", cfg, {"action": action})
            info = execute(cfg, action)
            done.append(info)
            if on_event:
                on_event("done", cfg, info)
        return done
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {}
        for cfg, action in todo:
            if on_event:
                on_event("start", cfg, {"action": action})
            futures[pool.submit(execute, cfg, action, threads)] = cfg
        for fut in as_completed(futures):
            info = fut.result()
            done.append(info)
            if on_event:
                on_event("done", futures[fut], info)
    return done


# ------------------------------------------------------------------------------------------- summary
def run_dirs(sweep: Sweep, complete_only: bool = True) -> list[Path]:
    """The grid's run directories that exist (and are complete, by default), in grid order."""
    out = []
    for cfg in sweep.configs():
        d = Path(cfg.out) / cfg.name
        if not (d / CONFIG_FILE).is_file():
            continue
        if complete_only:
            try:
                if read_meta(d).get("status") != "complete":
                    continue
            except ResultsError:
                continue
        out.append(d)
    return out


def compare_sweep(sweep: Sweep, out_dir: str | Path | None = None):
    """Compare the sweep's complete runs with :func:`flarebench.compare.compare` (no figures):
    writes ``OUT/compare/compare.csv`` (groups of seeds) and ``runs.csv`` (runs) and returns the
    CompareResult (``.table``: one row per run; ``.groups``: one row per group of seeds)."""
    from .compare import compare

    dirs = run_dirs(sweep)
    if not dirs:
        raise ResultsError(f"no complete runs of {sweep.experiment} under {sweep.out}")
    return compare(dirs, out_dir if out_dir is not None else sweep.out / "compare", formats=[])


__all__ = ["Sweep", "load_sweep", "run_name", "run_state", "plan", "action_for", "run_sweep", "run_dirs", "compare_sweep", "split_csv"]
