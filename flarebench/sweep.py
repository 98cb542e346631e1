"""Sweeps: the grid of runs a TOML config's ``[sweep]`` table asks for, run once each.

A sweep config is a run config (top-level keys = RunConfig fields) plus::

    [sweep]
    methods = ["flare", "topk-ef", "ef21", "fedprox-ef", "none"]
    sparsities = [0.99999]      # fraction NOT sent; one run per seed for compressors that ignore it (none, qsgd, ...)
    seeds = [0]
    out = "results/NAME"        # optional; default results/<config file stem>
    lr = [0.03, 0.1, 0.3]       # optional: any config key (TOML spelling) or part parameter "KIND.PARAM", a
    "compressor.levels" = [2, 4]  # non-empty list each; the grid is the product (run names carry the values)

    [sweep.signsgd]             # optional: a method's own values of keys (replacing the shared ones) or its own keys
    lr = [0.001, 0.01]

    [meta]                      # optional, for figures and the reference table
    title = "..."
    reference = { flare = 0.761, ... }   # the paper's / reference code's final accuracies

``flarebench sweep --grid KEY=V1,V2`` replaces a key's values. Runs go to ``OUT/<run name>``
(``flare-s0.999-lr0.1-seed0``); names are stable (:func:`run_name`), so running the sweep again
skips complete runs, resumes interrupted ones from their checkpoint (where the runner supports
``--resume``) or restarts them.
"""

from __future__ import annotations

import copy
import inspect
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from itertools import product
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

from .config import FIELD_NAMES, PART_KINDS, RunConfig, load_toml, make_config
from .errors import ConfigError, ResultsError
from .methods.presets import method_label, method_names, uses_sparsity
from .rundir import CHECKPOINT_FILE, CONFIG_FILE, METRICS_FILE, check_run_name, config_diffs, read_meta

SWEEP_KEYS = {"methods", "sparsities", "seeds", "out"}
# RunConfig fields that are not grid keys: where a run goes and what it records (method, sparsity and seed
# are swept by the lists methods, sparsities and seeds)
NOT_GRID_KEYS = {"name", "out", "params", "sources", "tuned"}
AXIS_LISTS = {"method": "methods", "sparsity": "sparsities", "seed": "seeds"}


@dataclass
class Point:
    """One grid point: its method, sparsity, seed, the values of the extra grid keys, and its config."""

    method: str
    sparsity: float
    seed: int
    values: dict
    cfg: RunConfig


@dataclass
class Sweep:
    """A resolved sweep: the experiment name, its base values, the grid axes and where runs go.

    ``grid``: the extra axes every method sweeps, ``{key: [values]}`` (keys: RunConfig fields as
    :func:`grid_key` spells them, or part parameters ``KIND.PARAM`` / ``KIND.PART.PARAM``);
    ``method_grids``: per method, its own axes (replacing the shared values of a key, or adding keys).
    ``tuning``: set on the sweep of a ``--tune`` (tuning.py): only each cell's picked values run."""

    experiment: str
    base: dict
    methods: list[str]
    sparsities: list[float]
    seeds: list[int]
    out: Path
    meta: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    method_grids: dict = field(default_factory=dict)
    tuning: object | None = None

    def axes(self, method: str) -> dict:
        """The extra grid axes of ``method``, ``{key: [values]}``: the shared ones, then its own."""
        return {**self.grid, **self.method_grids.get(method, {})}

    def points(self) -> list[Point]:
        """Every grid point, validated, in a stable order: method, sparsity, extra keys, seed (innermost).
        ConfigError for a value the config refuses or two points that would get the same run name."""
        out: list[Point] = []
        for method in self.methods:
            axes = self.axes(method)
            sparsities = self.sparsities if uses_sparsity(method) else self.sparsities[:1]
            for sparsity in sparsities:
                for combo in product(*axes.values()):
                    values = dict(zip(axes, combo))
                    for seed in self.seeds:
                        point = Point(method, sparsity, seed, values, self._config(method, sparsity, seed, values))
                        if self.tuning is not None:
                            point = self.tuning.apply(point)
                            if point is None:
                                continue
                        out.append(point)
        _check_names(out)
        return out

    def configs(self) -> list[RunConfig]:
        """One validated RunConfig per grid point (``name`` and ``out`` set), in a stable order."""
        return [p.cfg for p in self.points()]

    def _config(self, method: str, sparsity: float, seed: int, values: dict) -> RunConfig:
        """The named, validated config of one grid point: the base, the point's config keys, and its part
        parameters merged into the base's ``params`` (``KIND.PARAM`` / ``KIND.PART.PARAM``)."""
        params = copy.deepcopy(self.base.get("params") or {})
        fields_ = {}
        for key, value in values.items():
            path = key.split(".")
            if len(path) == 1:
                fields_[key] = value
            else:
                table = params.setdefault(path[0], {})
                for p in path[1:-1]:
                    table = table.setdefault(p, {})
                table[path[-1]] = value
        given = {**self.base, **fields_, "params": params, "method": method, "sparsity": sparsity, "seed": seed, "out": str(self.out)}
        try:
            cfg = make_config(**given)
        except ConfigError as e:
            if not values:
                raise
            raise ConfigError(f"grid point {method} {_describe(values)}: {e}") from None
        cfg = cfg.replace(name=run_name(cfg, _name_values(values, cfg)))
        check_run_name(cfg.name)
        return cfg


def _check_names(points: list[Point]) -> None:
    """ConfigError naming two grid points that would get the same run name (one directory, two runs)."""
    seen: dict[str, Point] = {}
    for p in points:
        if p.cfg.name in seen:
            q = seen[p.cfg.name]
            raise ConfigError(f"grid points {q.method} {_describe(q.values) or '(base)'} and {p.method} {_describe(p.values) or '(base)'} "
                              f"would both be named {p.cfg.name}: remove one value")
        seen[p.cfg.name] = p


def _describe(values: dict) -> str:
    """``lr=0.1 compressor.levels=4``: a grid point's extra values, in words."""
    return " ".join(f"{shown_key(k)}={value_text(v)}" for k, v in values.items())


def shown_key(key: str) -> str:
    """A grid key as written in TOML: ``local_epochs`` -> ``local-epochs``; ``compressor.levels`` as it is."""
    return key.replace("_", "-")


def value_text(value) -> str:
    """A grid value in a run name: floats as ``%.10g``, booleans ``true``/``false``, None ``none``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10g}"
    return "none" if value is None else str(value)


def _name_values(values: dict, cfg: RunConfig) -> list[tuple[str, object]]:
    """``[(short key, value as the config resolved it)]`` for a run name: a part parameter by its own name
    (``levels``) unless another key of the point, or a config key, has that name (then ``compressor.levels``)."""
    last = [k.split(".")[-1] for k in values]
    out = []
    for key, value in values.items():
        path = key.split(".")
        if len(path) == 1:
            out.append((shown_key(key), getattr(cfg, key)))
            continue
        resolved = (cfg.params.get(path[0]) or {}).get(path[-1], value) if len(path) == 2 else value
        short = path[-1] if last.count(path[-1]) == 1 and path[-1] not in FIELD_NAMES else key
        out.append((shown_key(short), resolved))
    return out


def run_name(cfg: RunConfig, values: list[tuple[str, object]] = ()) -> str:
    """``{method}-s{sparsity}[-{key}{value}...]-seed{seed}``, e.g. ``flare-s0.99999-seed0``,
    ``flare-s0.999-lr0.1-seed0`` (``values``: the extra grid keys and their values); ``none-seed0`` where
    the compressor ignores the sparsity (FedAvg, qsgd, ...); replaced parts named (``flare+stc-s0.999-seed0``)."""
    swept = "".join(f"-{k}{value_text(v)}" for k, v in values)
    if not uses_sparsity(cfg):
        return f"{method_label(cfg)}{swept}-seed{cfg.seed}"
    return f"{method_label(cfg)}-s{cfg.sparsity:.10g}{swept}-seed{cfg.seed}"


def grid_key(key: str, where: str) -> str:
    """A grid key in its normal form (``local-epochs`` -> ``local_epochs``; ``compressor.levels``,
    ``compressor.qsgd.levels``); ConfigError naming ``where`` for a key that is not one."""
    path = [p.strip().replace("-", "_") for p in key.split(".")]
    if len(path) > 1:
        if len(path) > 3 or not all(path) or path[0] not in PART_KINDS:
            raise ConfigError(f"unknown grid key '{key}'{where}: a part parameter is KIND.PARAM or KIND.PART.PARAM "
                              f"with KIND one of {', '.join(PART_KINDS)}")
        return ".".join(path)
    name = path[0]
    if name in AXIS_LISTS:
        raise ConfigError(f"unknown key '{key}'{where}: the {name} values are the list {AXIS_LISTS[name]}")
    if name in NOT_GRID_KEYS:
        raise ConfigError(f"'{key}'{where} is not a grid key (where runs go and what they record; allowed: the "
                          f"config's keys but {', '.join(sorted(NOT_GRID_KEYS))}, and part parameters KIND.PARAM)")
    if name not in FIELD_NAMES:
        raise ConfigError(f"unknown grid key '{key}'{where} (a config key such as lr or local-epochs, or a part "
                          f"parameter KIND.PARAM such as compressor.levels)")
    return name


def grid_values(key: str, value, where: str) -> list:
    """The non-empty list of values of grid key ``key``; ConfigError otherwise."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{shown_key(key)}{where} must be a non-empty list of values, got {value!r}")
    bad = next((v for v in value if isinstance(v, (list, dict))), None)
    if bad is not None:
        raise ConfigError(f"{shown_key(key)}{where} must hold single values, got {bad!r}")
    return list(value)


def _flatten(table: dict, prefix: str = "") -> dict:
    """TOML's dotted keys (``compressor.levels = [...]`` parses as a table) back to ``{"compressor.levels": [...]}``."""
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_grid(table: dict, where: str) -> dict:
    """``{grid key: [values]}`` from a ``[sweep]`` (or ``[sweep.METHOD]``) table's grid entries."""
    out = {}
    for key, value in _flatten(table).items():
        k = grid_key(key, where)
        out[k] = grid_values(k, value, where)
    return out


def parse_grid_options(items: list[str] | None) -> dict:
    """``--grid lr=0.03,0.1 --grid compressor.levels=2,4`` -> ``{"lr": [0.03, 0.1], "compressor.levels": ["2", "4"]}``:
    a config key's values typed as its field (int, float, true/false, text; ``none`` for an optional one), a
    part parameter's left as text (its declaration types it, as for ``-p``)."""
    out = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(f"--grid takes KEY=V1,V2,... (e.g. --grid lr=0.03,0.1,0.3), got {item!r}")
        k = grid_key(key.strip(), " (--grid)")
        out[k] = values if "." in k else [_typed(k, v) for v in values]
    return out


def _typed(key: str, text: str):
    """``text`` as the value of RunConfig field ``key`` (ConfigError naming the field if it is not one)."""
    kind = next(f.type for f in fields(RunConfig) if f.name == key)
    if kind.endswith("| None") and text.lower() == "none":
        return None
    kind = kind.replace("| None", "").strip()
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"--grid {shown_key(key)}: true or false, got {text!r}")
        return text.lower() == "true"
    try:
        return {"int": int, "float": float}.get(kind, str)(text)
    except ValueError:
        raise ConfigError(f"--grid {shown_key(key)} takes {kind} values, got {text!r}") from None


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
    grid: dict | None = None,
) -> Sweep:
    """Read a sweep config; arguments override its ``[sweep]`` table (``rounds``: the config's
    ``rounds``, for a quick try; runs of another round count are refused, not mixed; ``grid``:
    ``{key: [values]}`` (:func:`parse_grid_options`) replacing the config's values of those keys, per-method
    ones included). Every grid point is validated."""
    path = Path(path)
    raw = load_toml(path)
    table = raw.get("sweep")
    if table is None:
        raise ConfigError(f"{path} has no [sweep] table (methods, sparsities, seeds)")
    known = set(method_names())
    own = {k: v for k, v in table.items() if isinstance(v, dict) and k in known}  # [sweep.METHOD]
    shared = read_grid({k: v for k, v in table.items() if k not in SWEEP_KEYS and k not in own}, f" in [sweep] of {path}")
    method_grids = {m: read_grid(t, f" in [sweep.{m}] of {path}") for m, t in own.items()}
    for key, values in (grid or {}).items():
        shared[key] = values
        for t in method_grids.values():
            t.pop(key, None)
    base = {k: v for k, v in raw.items() if k in FIELD_NAMES and k not in {"method", "sparsity", "seed", "name", "out"}}
    if rounds is not None:
        base["rounds"] = rounds
        shared.pop("rounds", None)
    sweep = Sweep(
        experiment=path.stem,
        base=base,
        methods=list(methods) if methods else _list(table.get("methods"), "methods", str),
        sparsities=list(sparsities) if sparsities else _list(table.get("sparsities", [raw.get("sparsity", RunConfig.sparsity)]), "sparsities", float),
        seeds=list(seeds) if seeds is not None and len(seeds) else _list(table.get("seeds", [0]), "seeds", int),
        out=Path(out if out is not None else table.get("out", f"results/{path.stem}")).expanduser(),
        meta=raw.get("meta", {}),
        grid=shared,
        method_grids={m: g for m, g in method_grids.items() if g},
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
    val = [r["val_accuracy"] for r in result.rows if r.get("val_accuracy") is not None]
    return {"name": cfg.name, "action": action, "final_accuracy": result.final_accuracy, "val_accuracy": val[-1] if val else None,
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


__all__ = ["Sweep", "Point", "load_sweep", "parse_grid_options", "grid_key", "run_name", "run_state", "plan", "action_for", "run_sweep", "run_dirs", "compare_sweep", "split_csv"]
