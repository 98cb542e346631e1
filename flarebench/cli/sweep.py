"""``flarebench sweep`` (run a config's [sweep] grid, then compare) and ``flarebench figures`` (the paper's figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .app import app


def _numbers(values, kind, name):
    from ..errors import ConfigError
    from ..sweep import split_csv

    items = split_csv(values)
    if not items:
        return None
    try:
        return [kind(v) for v in items]
    except ValueError:
        raise ConfigError(f"--{name} takes {kind.__name__}s, got {', '.join(items)}") from None


def _check_ray_options(address: str | None, jobs: int, cpus_per_run: int | None, gpus_per_run: float | None) -> None:
    """ConfigError for options of a Ray sweep given without --ray, or --jobs given with it; ray importable."""
    from ..errors import ConfigError

    if address is None:
        given = [n for n, v in (("--cpus-per-run", cpus_per_run), ("--gpus-per-run", gpus_per_run)) if v is not None]
        if given:
            raise ConfigError(f"{given[0]} applies to a sweep on Ray: add --ray auto|ADDRESS")
        return
    if jobs != 1:
        raise ConfigError("--jobs applies to a local sweep; with --ray the cluster's CPUs and --cpus-per-run decide how many runs go at a time")
    if cpus_per_run is not None and cpus_per_run < 1:
        raise ConfigError(f"--cpus-per-run must be >= 1, got {cpus_per_run}")
    if gpus_per_run is not None and not gpus_per_run >= 0:
        raise ConfigError(f"--gpus-per-run must be >= 0, got {gpus_per_run:g}")
    from ..sweep_ray import import_ray

    import_ray()  # a missing extra is said before anything runs


@app.command("sweep")
def sweep_command(
    config: Path = typer.Argument(..., help="TOML config with a [sweep] table (methods, sparsities, seeds).", show_default=False),
    methods: Optional[list[str]] = typer.Option(None, "--methods", help="Methods to run instead of [sweep].methods (comma-separated or repeated).", metavar="M1,M2"),
    sparsities: Optional[list[str]] = typer.Option(None, "--sparsities", help="Sparsities (fraction NOT sent) instead of [sweep].sparsities.", metavar="S1,S2"),
    seeds: Optional[list[str]] = typer.Option(None, "--seeds", help="Seeds instead of [sweep].seeds.", metavar="N1,N2"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds per run instead of the config's (a quick try; use another --out: runs of another length are not mixed in).", show_default=False),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs at a time (processes; CPU threads are split between them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the runs. [default: [sweep].out or results/CONFIG_STEM]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start every run over, even complete ones."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and what would happen to each (run, skip, resume, restart), then exit."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run each run as a task on the Ray cluster at ADDRESS (auto: the running local one; needs the ray extra and OUT on a filesystem shared by all nodes).", metavar="auto|ADDRESS", show_default=False),
    cpus_per_run: Optional[int] = typer.Option(None, "--cpus-per-run", help="With --ray: CPUs (and torch threads) per run. [default: 1]", show_default=False),
    gpus_per_run: Optional[float] = typer.Option(None, "--gpus-per-run", help="With --ray: GPUs per run (fractions share one). [default: 1 if the device is cuda, else 0]", show_default=False),
    grid: Optional[list[str]] = typer.Option(None, "--grid", help="Sweep KEY over these values, repeatable: a config key (--grid lr=0.03,0.1,0.3, --grid local-epochs=1,2) or a part parameter (--grid compressor.levels=2,4); replaces the config's values of KEY. Run names carry them (flare-s0.999-lr0.1-seed0).", metavar="KEY=V1,V2", show_default=False),
    tune: Optional[str] = typer.Option(None, "--tune", help="Tune these grid keys per method and sparsity on the validation set (needs validation-fraction > 0): their grid runs with the first seed, without the test set, into OUT/tune; then the pick runs with every seed (docs/tuning.md).", metavar="KEY1,KEY2", show_default=False),
    select: str = typer.Option("val-accuracy", "--select", help="With --tune: val-accuracy (mean validation accuracy over the last 3 evaluations, highest wins) or val-bits-to=ACC (uplink bits to validation accuracy ACC, fewest wins). Ties: fewer uplink bits, then grid order.", metavar="CRITERION"),
) -> None:
    """Run every (method, sparsity, grid values, seed) of CONFIG's [sweep] into OUT/RUN_NAME (complete runs are skipped, interrupted ones resumed or restarted), then compare them (OUT/compare/compare.csv: groups of seeds; runs.csv: runs)."""
    from ..sweep import compare_sweep, load_sweep, parse_grid_options, plan, run_sweep
    from ..tuning import describe_cell, parse_criterion, tune as tune_sweep, tuned_keys, tuning_sweep
    from .compare import print_table
    from ..units import human_bits, human_seconds

    from ..errors import ConfigError
    from ..config import check_config_path
    from ..sweep import split_csv

    if jobs < 1:
        raise ConfigError(f"jobs must be >= 1, got {jobs}")
    check_config_path(config)
    criterion = parse_criterion(select)
    sweep = load_sweep(config, _numbers(methods, str, "methods"), _numbers(sparsities, float, "sparsities"), _numbers(seeds, int, "seeds"),
                       out, rounds, parse_grid_options(grid))
    keys = tuned_keys(sweep, split_csv([tune])) if tune is not None else None
    _check_ray_options(ray, jobs, cpus_per_run, gpus_per_run)
    if dry_run:
        for cfg, action in plan(tuning_sweep(sweep, keys) if keys else sweep, overwrite):
            typer.echo(f"{action:<8} {Path(cfg.out) / cfg.name}")
        if keys:
            typer.echo(f"then the pick of each method by {criterion}, with seeds {', '.join(map(str, sweep.seeds))}, into {sweep.out}")
        return
    total = 0
    count = {"n": 0}
    grid_state: dict[str, str] = {}  # run name -> done | running | failed (printed on every line of a Ray sweep)

    def where(kind: str) -> str:
        if ray is None:
            return f" [{count['n']}/{total}]" if kind != "done" else ""
        states = list(grid_state.values())
        return f" [{states.count('done')} done, {states.count('running')} running, {states.count('failed')} failed of {total}]"

    def event(kind: str, cfg, info) -> None:
        if kind in ("skip", "start") and (info or {}).get("attempt", 1) == 1:
            count["n"] += 1
        grid_state[cfg.name] = {"skip": "done", "start": "running"}.get(kind, kind)
        if kind == "skip":
            typer.echo(f"skip     {cfg.name} (complete){where(kind)}")
        elif kind == "start":
            worker = f" on {info['node']}, pid {info['pid']}" if "pid" in info else ""
            attempt = f", attempt {info['attempt']}" if info.get("attempt", 1) > 1 else ""
            typer.echo(f"{info['action']:<8} {cfg.name} ({cfg.rounds} rounds{attempt}){worker}{where(kind)}")
        elif kind == "failed":
            typer.echo(f"failed   {cfg.name}: {info['error']}{where(kind)}")
        else:
            resumed = f" (attempt {info['attempt']}: {info['action']})" if info.get("attempt", 1) > 1 else ""
            acc = (f"final accuracy {info['final_accuracy']:.4f}" if info.get("final_accuracy") is not None
                   else f"validation accuracy {info['val_accuracy']:.4f}" if info.get("val_accuracy") is not None else "not evaluated")
            typer.echo(f"done     {cfg.name}: {acc}, uplink {human_bits(info['uplink_bits'])}, "
                       f"{human_seconds(info['wall_time_s'])}{resumed}{where(kind)}")

    def run_all(s) -> None:
        nonlocal total
        total, count["n"] = len(s.configs()), 0
        grid_state.clear()
        if ray is None:
            run_sweep(s, jobs=jobs, overwrite=overwrite, on_event=event)
        else:
            from ..sweep_ray import run_sweep_ray

            run_sweep_ray(s, ray, cpus_per_run=cpus_per_run or 1, gpus_per_run=gpus_per_run, overwrite=overwrite, on_event=event)

    if keys:
        typer.echo(f"tuning {', '.join(keys)} on the validation set (seed {sweep.seeds[0]}, no test evaluation) in {sweep.out / 'tune'}")
        sweep = tune_sweep(sweep, keys, criterion, run_all,
                           on_pick=lambda cell, pick: typer.echo(f"picked   {describe_cell(cell)}: {pick.describe(criterion)}"))
    run_all(sweep)
    result = compare_sweep(sweep)
    typer.echo(f"\n{sweep.experiment}: {len(result.table)} runs ({len(result.groups)} groups of seeds) in {sweep.out}; "
               f"tables in {result.csv_path} (groups) and {result.runs_csv_path.name} (runs)")
    print_table(result.groups)


@app.command("figures")
def figures_command(
    target: Path = typer.Argument(..., help="A sweep config (.toml; its runs are found where `flarebench sweep` puts them) or a results directory.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the figures go. [default: RUNS/figures or DIR/figures]"),
    runs: Optional[Path] = typer.Option(None, "--runs", help="With a config: where its runs are, if it was swept with --out. [default: [sweep].out or results/CONFIG_STEM]"),
    format: str = typer.Option("png,pdf", "--format", help="Comma-separated: png, pdf, svg."),
) -> None:
    """The paper's figure of an experiment: accuracy vs round and vs uplink bits, one line per method, one figure per sparsity, as OUT/EXPERIMENT-sSPARSITY.{png,pdf} (stable names)."""
    from ..errors import ConfigError
    from ..figures import paper_figures

    formats = [f.strip().lower().lstrip(".") for f in format.split(",") if f.strip()]
    bad = [f for f in formats if f not in {"png", "pdf", "svg"}]
    if bad or not formats:
        raise ConfigError(f"--format takes png, pdf, svg (comma-separated), got {format!r}")
    paths, warnings = paper_figures(target, out, formats, runs=runs)
    for w in warnings:
        typer.echo(f"flarebench: warning: {w}", err=True)
    for p in paths:
        typer.echo(str(p))
