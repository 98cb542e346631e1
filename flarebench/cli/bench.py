"""``flarebench bench``: time one round of each local-training engine and print a table."""

from __future__ import annotations

from typing import Optional

import typer

from ..errors import ConfigError
from .app import app


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} must be comma-separated integers >= 1, got {text!r}")
    return values


def render(report) -> "object":
    """A rich Table of a :class:`flarebench.bench.BenchReport`."""
    from rich.table import Table

    from ..bench import auto_regret

    regret = auto_regret(report)
    table = Table(title=f"flarebench bench on {report.peak.device}", caption=(
        f"MFU peak: {report.peak.source}. s/round: best of the timed rounds, whole round (train, compress, encode, "
        "decode, aggregate); train s: local training in that round. max|Δw|, same bits: after the timed rounds, vs "
        "the sequential engine (float rounding; grows where training is chaotic, as a 1e-7 nudge of w would, and a "
        "top-k tie can then send another entry)."))
    for col, just in [("model", "left"), ("clients", "right"), ("B", "right"), ("engine", "left"), ("warm-up s", "right"), ("s/round", "right"),
                      ("train s", "right"), ("speed-up", "right"), ("samples/s", "right"), ("GFLOP/round", "right"),
                      ("MFU", "right"), ("max|Δw| vs seq", "right"), ("same bits", "center"), ("auto", "left")]:
        table.add_column(col, justify=just)
    for r in report.rows:
        key = (r.clients, r.batch_size)
        auto = ""
        if r.auto_pick:
            t = report.auto_timings[key]
            auto = "picked (" + ", ".join(f"{n[:3]} {v * 1e3:.1f} ms" for n, v in sorted(t.items())) + ")"
            if key in regret:
                auto += f", {regret[key] * 100:+.0f}% vs fastest"
        table.add_row(
            r.model, str(r.clients), str(r.batch_size), r.engine, f"{r.warmup_s:.2f}", f"{r.round_s:.3f}", f"{r.train_s:.3f}",
            f"{r.speedup:.2f}x", f"{r.samples_per_s:,.0f}", f"{r.flops / 1e9:.2f}",
            "n/a" if r.mfu is None else f"{r.mfu * 100:.2f}%", f"{r.max_abs_diff:.1e}", "yes" if r.same_bits else "NO", auto,
        )
    return table


@app.command("bench")
def bench_command(
    model: str = typer.Option("cnn", help="Model to train (cnn | mlp | fc | ...)."),
    clients: str = typer.Option("10,100", help="Comma-separated client counts (all clients train every round)."),
    batch_size: str = typer.Option("32,600", help="Comma-separated local batch sizes (samples)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    rounds: int = typer.Option(1, help="Timed rounds per engine (after one warm-up round)."),
    dataset: str = typer.Option("mnist-embedded", help="Dataset (mnist-embedded works offline)."),
    method: str = typer.Option("flare", help="Method whose round is timed."),
    samples_per_client: Optional[int] = typer.Option(None, help="Samples per client (default: training set / clients)."),
    local_epochs: int = typer.Option(1, help="Local epochs per round."),
    lr: Optional[float] = typer.Option(None, help="Client learning rate (default: flarebench run's; the CNN diverges at lr 0.1 with B=32, which makes max|Δw| meaningless)."),
    client_chunk: Optional[int] = typer.Option(None, help="Vectorized engine: clients per vmapped batch (default: auto)."),
    compile: bool = typer.Option(False, "--compile", help="Also time both engines with their step under torch.compile (warm-up round = compile time, not counted)."),
) -> None:
    """Time one round of the sequential and the vectorized engine on the same config (one process, after a warm-up round)."""
    from rich.console import Console

    from ..bench import bench

    ks, bs = _ints(clients, "clients"), _ints(batch_size, "batch-size")
    if rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {rounds}")
    err = Console(stderr=True)
    report = bench(model, ks, bs, device, rounds, dataset, method, samples_per_client, local_epochs, client_chunk, compile,
                   progress=lambda msg: err.print(f"[dim]timing {msg}[/dim]"), lr=lr)
    Console(width=max(160, Console().width)).print(render(report))
