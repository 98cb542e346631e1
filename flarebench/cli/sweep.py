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


@app.command("sweep")
def sweep_command(
    config: Path = typer.Argument(..., help="TOML config with a \\[sweep] table (methods, sparsities, seeds).", show_default=False),
    methods: Optional[list[str]] = typer.Option(None, "--methods", help="Methods to run instead of \\[sweep].methods (comma-separated or repeated).", metavar="M1,M2"),
    sparsities: Optional[list[str]] = typer.Option(None, "--sparsities", help="Sparsities (fraction NOT sent) instead of \\[sweep].sparsities.", metavar="S1,S2"),
    seeds: Optional[list[str]] = typer.Option(None, "--seeds", help="Seeds instead of \\[sweep].seeds.", metavar="N1,N2"),
    rounds: Optional[int] = typer.Option(None, "--rounds", help="Rounds per run instead of the config's (a quick try; use another --out: runs of another length are not mixed in).", show_default=False),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Runs at a time (processes; CPU threads are split between them)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for the runs. \\[default: \\[sweep].out or results/CONFIG_STEM]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start every run over, even complete ones."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the runs and what would happen to each (run, skip, resume, restart), then exit."),
) -> None:
    r"""Run every (method, sparsity, seed) of CONFIG's \[sweep] into OUT/RUN_NAME (complete runs are skipped, interrupted ones resumed or restarted), then compare them (OUT/compare/compare.csv)."""
    from ..sweep import compare_sweep, load_sweep, plan, run_sweep
    from .compare import print_table
    from ..units import human_bits, human_seconds

    sweep = load_sweep(config, _numbers(methods, str, "methods"), _numbers(sparsities, float, "sparsities"), _numbers(seeds, int, "seeds"), out, rounds)
    if dry_run:
        for cfg, action in plan(sweep, overwrite):
            typer.echo(f"{action:<8} {Path(cfg.out) / cfg.name}")
        return
    total = len(sweep.configs())
    count = {"n": 0}

    def event(kind: str, cfg, info) -> None:
        if kind != "done":
            count["n"] += 1
        if kind == "skip":
            typer.echo(f"skip     {cfg.name} (complete) [{count['n']}/{total}]")
        elif kind == "start":
            typer.echo(f"{info['action']:<8} {cfg.name} ({cfg.rounds} rounds) [{count['n']}/{total}]")
        else:
            typer.echo(f"done     {cfg.name}: final accuracy {info['final_accuracy']:.4f}, uplink {human_bits(info['uplink_bits'])}, "
                       f"{human_seconds(info['wall_time_s'])}")

    run_sweep(sweep, jobs=jobs, overwrite=overwrite, on_event=event)
    result = compare_sweep(sweep)
    typer.echo(f"\n{sweep.experiment}: {len(result.table)} runs in {sweep.out}; table in {result.csv_path}")
    print_table(result.table)


@app.command("figures")
def figures_command(
    target: Path = typer.Argument(..., help="A sweep config (.toml; its runs are found where `flarebench sweep` puts them) or a results directory.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", help="Where the figures go. \\[default: RUNS/figures or DIR/figures]"),
    runs: Optional[Path] = typer.Option(None, "--runs", help="With a config: where its runs are, if it was swept with --out. \\[default: \\[sweep].out or results/CONFIG_STEM]"),
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
