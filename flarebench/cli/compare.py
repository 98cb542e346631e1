"""``flarebench compare``, ``list`` and ``show``: read run directories, print tables, write compare.csv, runs.csv and figures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import typer

from ..methods.presets import method_label, uses_sparsity
from .app import app


def _console():
    """``list`` and ``show``: the terminal's width; pipes/CI: wide, so their lines do not fold."""
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=max(c.width, 180))


def _warn(message: str) -> None:
    typer.echo(f"flarebench: warning: {message}", err=True)


def _status(run_dir: Path, meta: dict, hint: bool = False) -> str:
    """config.json's status with notes, e.g. ``interrupted (killed, resumable)``; ``hint``: how to resume."""
    from ..divergence import marked
    from ..rundir import run_status

    status, killed, resumable = run_status(run_dir, meta)
    notes = ["killed"] * killed + [f"resumable: flarebench run --resume {run_dir}" if hint else "resumable"] * resumable
    return marked(status, meta) + (f" ({', '.join(notes)})" if notes else "")


def _under(run_dir: Path, root: Path) -> str:
    """``run_dir`` relative to ``root`` (runs of different sub-directories stay apart), else its name."""
    run_dir, root = run_dir.resolve(), root.resolve()
    return str(run_dir.relative_to(root)) if run_dir != root and run_dir.is_relative_to(root) else run_dir.name


def _acc(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def print_table(t, fmt: str = "table") -> None:
    """A comparison table (one row per run of ``compare.summarize``, or per group of seeds of
    ``compare.summarize_groups``) and its notes (targets, ...): ``fmt`` table (rich, fitted to the
    terminal; compact when piped), csv or markdown."""
    from ..tables import render

    render(t, fmt)


_FIGURE_FORMATS = {"png", "pdf", "svg", "none"}


def _split_formats(format: str, figures: str) -> tuple[str, list[str]]:
    """(table format, figure formats) from --format and --figures; an old-style --format of figure
    formats (png,pdf / none) still works, with a warning that says where they go now."""
    items = [f.strip().lower().lstrip(".") for f in format.split(",") if f.strip()]
    if items and set(items) <= _FIGURE_FORMATS:
        _warn(f"--format {format} names figure formats: use --figures {format} (--format picks the table: table, csv or markdown)")
        format, figures = "table", format
    from ..tables import FORMATS

    if format.strip().lower() not in FORMATS:
        from ..errors import ConfigError

        raise ConfigError(f"--format takes {', '.join(FORMATS)} (figure formats go to --figures); got {format!r}")
    return format.strip().lower(), [] if figures.strip().lower() == "none" else [f for f in figures.split(",") if f.strip()]


@app.command("compare")
def compare_command(
    paths: List[Path] = typer.Argument(..., help="Run directories and/or results directories (searched recursively for runs).", show_default=False),
    target_accuracy: Optional[float] = typer.Option(None, help="Test accuracy (fraction in (0,1]) for the bits/rounds-to-target columns. [default: 95% of the best uncompressed (method none) run of each dataset/model]"),
    out: Path = typer.Option(Path("compare"), help="Directory for compare.csv (groups), runs.csv (runs) and the figures."),
    x: str = typer.Option("bits,rounds", "--x", help="x axes of the figures: bits (cumulative uplink, log scale), rounds, or bits,rounds."),
    format: str = typer.Option("table", "--format", help="How the table is printed: table (fits the terminal; compact when piped), csv or markdown."),
    figures: str = typer.Option("png,pdf", "--figures", help="Figure formats, comma-separated (png, pdf, svg); 'none' for no figures."),
    budget: Optional[str] = typer.Option(None, "--budget", metavar="BITS", help="Uplink bits (e.g. 1e6 or 2.5Mib) for the accuracy-at-budget column: test accuracy at the last evaluation within that cumulative uplink."),
    baseline: Optional[str] = typer.Option(None, "--baseline", metavar="METHOD", help="A method (e.g. topk-ef): each group's difference from it, with a 95% interval and a verdict (docs/verdicts.md)."),
    metric: str = typer.Option("final_accuracy", "--metric", help="What --baseline compares: final_accuracy, best_accuracy, mean_accuracy or accuracy_at_budget."),
    runs: bool = typer.Option(False, "--runs", help="Print one row per run (runs.csv) instead of one row per group of seeds (compare.csv)."),
) -> None:
    """Compare runs: one row per group of seeds (accuracy, uplink bits, bits and rounds to a target accuracy, as means with 95% intervals; verdicts against --baseline) and paper-style figures."""
    from ..compare import compare

    fmt, formats = _split_formats(format, figures)
    result = compare(paths, out, target_accuracy=target_accuracy, x=x, formats=formats, budget=budget, baseline=baseline,
                     metric=metric)  # logs its warnings (stderr)
    print_table(result.table if runs else result.groups, fmt)
    wrote = f"wrote {result.csv_path}, {result.runs_csv_path.name}" + (f" and {len(result.figures)} figure files to {out}" if result.figures else "")
    if fmt == "table":
        typer.echo(wrote)
    else:  # stdout is the CSV / Markdown alone
        typer.echo(wrote, err=True)


def _na(v) -> bool:
    import pandas as pd

    return v is None or bool(pd.isna(v))


@app.command("list")
def list_command(
    results_dir: Path = typer.Argument(Path("results"), help="Directory searched recursively for runs."),
) -> None:
    """One line per run: its path under RESULTS_DIR, method, sparsity, seed, rounds done / planned, final accuracy, uplink, status."""
    from rich.table import Table

    from ..compare import find_run_dirs
    from ..errors import ResultsError
    from ..results import load_run
    from ..units import human_bits

    dirs, warnings = find_run_dirs([results_dir])
    for w in warnings:
        _warn(w)
    table = Table(header_style="bold", box=None, pad_edge=False)
    for name, justify in [("run", "left"), ("method", "left"), ("sparsity", "right"), ("seed", "right"), ("dataset/model", "left"),
                          ("rounds", "right"), ("final acc", "right"), ("uplink", "right"), ("status", "left")]:
        table.add_column(name, justify=justify)
    for d in dirs:
        try:
            rec = load_run(d)
            c, m = rec.config, rec.metrics
            ev = m[m["test_accuracy"].notna()] if "test_accuracy" in m else m.iloc[0:0]
            status = _status(d, rec.meta)
            table.add_row(
                _under(d, results_dir), method_label(c), f"{c['sparsity']:g}" if uses_sparsity(c) else "-", str(c.get("seed", "-")),
                f"{c['dataset']}/{c['model']}",
                f"{int(m['round'].iloc[-1]) if len(m) else 0}/{c['rounds']}",
                _acc(float(ev["test_accuracy"].iloc[-1]) if len(ev) else None),
                human_bits(int(m["cumulative_uplink_bits"].iloc[-1]) if len(m) else 0), status,
            )
        except ResultsError as e:  # a damaged config.json or metrics.csv: say which and how, go on with the others
            _warn(str(e))
            table.add_row(_under(d, results_dir), "?", "?", "?", "?", "?", "?", "?", "damaged (see warning)")
        except (KeyError, ValueError, TypeError) as e:
            _warn(f"run {d}: cannot be listed ({type(e).__name__}: {e})")
            table.add_row(_under(d, results_dir), "?", "?", "?", "?", "?", "?", "?", f"unreadable ({type(e).__name__})")
    _console().print(table)


@app.command("show")
def show_command(run_dir: Path = typer.Argument(..., help="A run directory (config.json + metrics.csv).")) -> None:
    """A run's config, status, and its last metrics row and last evaluation."""
    from rich.table import Table

    from ..results import load_run
    from ..units import human_bits, human_seconds

    rec = load_run(run_dir)
    console = _console()
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    m = rec.metrics
    info.add_row("status", _status(run_dir, rec.meta, hint=True))
    for key in ["num_params", "device", "flarebench_version", "torch_version", "git_commit", "method_description"]:
        if key in rec.meta:
            info.add_row(key, str(rec.meta[key]))
    info.add_row("rounds", f"{int(m['round'].iloc[-1]) if len(m) else 0} / {rec.config.get('rounds', '?')}")
    console.print(f"[bold]{rec.path}[/bold]")
    console.print(info)
    cfg = Table(title="config", title_justify="left", header_style="bold", box=None, pad_edge=False)
    cfg.add_column("option")
    cfg.add_column("value")
    for k, v in rec.config.items():
        cfg.add_row(k.replace("_", "-"), json.dumps(v) if not isinstance(v, str) else v)
    console.print(cfg)
    if not len(m):
        console.print("no metrics rows yet")
        return
    ev = m[m["test_accuracy"].notna()]
    rows = [("last row", m.iloc[-1])] + ([("last evaluation", ev.iloc[-1])] if len(ev) and ev.index[-1] != m.index[-1] else [])
    met = Table(title="metrics", title_justify="left", header_style="bold", box=None, pad_edge=False)
    met.add_column("")
    for label, _ in rows:
        met.add_column(label, justify="right")
    for col in m.columns:
        vals = []
        for _, row in rows:
            v = row[col]
            if col.endswith("bits") and not _na(v):
                vals.append(f"{human_bits(int(v))} ({int(v)})")
            elif col == "wall_time_s" and not _na(v):
                vals.append(human_seconds(float(v)))
            else:
                vals.append("-" if _na(v) else str(v))
        met.add_row(col, *vals)
    console.print(met)
