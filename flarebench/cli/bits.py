"""``flarebench bits``: bits per sent entry of every position codec vs the bound log2 C(n,k)/k."""

from __future__ import annotations

import typer

from ..errors import ConfigError
from .app import app

# --measure encodes one seeded draw of k of n positions: memory and time grow with n (bitmap: n bits)
# and k (~200 bytes per sent entry at the peak; k = 10^7 took ~2 GB and ~10 s on 2 CPU cores)
MEASURE_MAX_N, MEASURE_MAX_K = 10**8, 10**7  # --measure is refused above these
DEFAULT_MAX_K = 10**6  # without --measure/--no-measure: measure when n <= MEASURE_MAX_N and k <= this


@app.command("bits")
def bits_command(
    params: int = typer.Option(1_000_000, "--params", help="Entries n of the tensor (one tensor)."),
    sparsity: float = typer.Option(0.999, "--sparsity", help="Fraction of entries NOT sent, in [0,1); k = max(1, round((1-sparsity) n))."),
    measure: bool = typer.Option(None, "--measure/--no-measure", help=f"Also encode one seeded random draw and count its bytes; memory and time grow with n and k, so it is refused above n = {MEASURE_MAX_N:.0e} entries or k = {MEASURE_MAX_K:.0e} sent entries (about 2 GB). [default: measure if n <= {MEASURE_MAX_N:.0e} and k <= {DEFAULT_MAX_K:.0e}]", show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed of the measured draw."),
) -> None:
    """Bits per sent entry of each position codec for k uniformly random of n positions, vs the bound."""
    from rich.console import Console
    from rich.table import Table

    from ..wire.bounds import bits_table, entropy_bits_per_entry, sent_entries

    if params < 1:
        raise ConfigError(f"params must be >= 1, got {params}")
    if not 0.0 <= sparsity < 1.0:  # nan fails this too
        raise ConfigError(f"sparsity must be in [0, 1) (fraction of entries NOT sent), got {sparsity}")
    k = sent_entries(params, sparsity)
    if measure and (params > MEASURE_MAX_N or k > MEASURE_MAX_K):
        raise ConfigError(f"--measure is limited to n <= {MEASURE_MAX_N:,} entries and k <= {MEASURE_MAX_K:,} sent entries "
                          f"(memory and time grow with both), got n = {params:,}, k = {k:,}; use --no-measure")
    measure = params <= MEASURE_MAX_N and k <= DEFAULT_MAX_K if measure is None else measure
    k, bound, rows = bits_table(params, sparsity, measure=measure, seed=seed)

    table = Table(title=f"bits per sent entry, n={params:,} k={k:,} (density {k / params:.3g})")
    table.add_column("codec")
    table.add_column("expected", justify="right")
    if measure:
        table.add_column(f"measured (seed {seed})", justify="right")
    table.add_column("x bound", justify="right")
    for r in sorted(rows, key=lambda r: r.expected):
        cells = [r.codec, f"{r.expected:.2f}"]
        if measure:
            cells.append(f"{r.measured:.2f}")
        cells.append(f"{r.ratio:.3f}" if bound > 0 else "-")
        table.add_row(*cells)
    table.add_row("bound log2 C(n,k)/k", f"{bound:.3f}", *([""] if measure else []), "1.000" if bound > 0 else "-", style="bold")
    console = Console()
    console.print(table)
    console.print(
        "expected: exact mean codeword bits for uniformly random positions (golomb's parameter follows from k/n "
        "and does not travel). "
        + ("measured: 8 * len(bytes) / k of one real encoding (padding included). " if measure else "")
        + f"Header and values excluded. Entropy approximation n H(k/n) / k = {entropy_bits_per_entry(params, k):.3f}."
    )
