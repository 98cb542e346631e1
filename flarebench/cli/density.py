"""``flarebench density``: rounds to a target and accuracy at a round versus the density R (flarebench/density.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .app import app


@app.command("density")
def density_command(
    paths: List[Path] = typer.Argument(..., help="Run directories and/or results directories (searched recursively for runs).", show_default=False),
    target_accuracy: Optional[float] = typer.Option(None, help="Test accuracy (fraction in (0,1]) to reach. [default: 95% of the best uncompressed (method none) run among PATHS]", show_default=False),
    at_round: int = typer.Option(100, "--at-round", help="Round whose test accuracy panel (b) shows."),
    horizon: Optional[int] = typer.Option(None, "--horizon", help="Rounds read per run: a seed not at the target by then has not reached it. [default: the longest run's length]", show_default=False),
    out: Path = typer.Option(Path("density"), "--out", help="Directory for density.csv and the figure."),
    figures: str = typer.Option("png,pdf", "--figures", help="Figure formats, comma-separated (png, pdf, svg); 'none' for no figure."),
) -> None:
    """Per method and density R = 1 - sparsity, over seeds: rounds to the target accuracy and test accuracy at a round, with 95% intervals (density.csv and GROUP-density.png)."""
    from ..density import describe_rows, reaching_density, save_density

    formats = [] if figures.strip().lower() == "none" else [f for f in figures.split(",") if f.strip()]
    table, written, warnings = save_density(paths, out, target_accuracy, at_round, horizon, formats)
    for w in warnings:
        typer.echo(f"flarebench: warning: {w}", err=True)
    for line in describe_rows(table):
        typer.echo(line)
    for (group, method), (ok, stop) in reaching_density(table).items():
        typer.echo(f"{group} {method}: every seed reaches the target down to R = {ok:.3g}" if ok is not None
                   else f"{group} {method}: not every seed reaches the target at any R tried", nl=False)
        typer.echo(f"; not at R = {stop:.3g}" if stop is not None and ok is not None else "")
    typer.echo(f"wrote {', '.join(str(p) for p in written)}")
