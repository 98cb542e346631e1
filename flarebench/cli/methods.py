"""``flarebench methods``: every method (preset), its parts, their parameters with defaults and units, and the paper."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .app import app


@app.command("methods")
def methods_command(
    method: Optional[str] = typer.Argument(None, help="One method only. [default: all]"),
    as_json: bool = typer.Option(False, "--json", help="Print the catalog as JSON."),
) -> None:
    """Every method: its regularizer, compressor, memory and aggregator, their parameters (-p KIND.NAME=VALUE) and papers."""
    from rich.console import Console
    from rich.markup import escape

    from ..methods.presets import catalog

    entries = catalog(method)
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    console = Console(highlight=False, soft_wrap=True)
    for e in entries:
        sparsity = "  [uses --sparsity]" if e["uses_sparsity"] else ""
        console.print(f"[bold]{escape(e['method'])}[/bold]: {escape(e['description'])}{sparsity}")
        console.print(f"  paper: {escape(e['paper'])}")
        for part in e["parts"]:
            console.print(f"  {part['kind']:<11} [cyan]{escape(part['name'])}[/cyan]: {escape(part['summary'])}"
                          + (f" ({escape(part['paper'])})" if part["paper"] and part["paper"] != e["paper"] else ""))
            for q in part["params"]:
                unit = f" {q['unit']}" if q["unit"] else ""
                rule = f"; {q['rule']}" if q["rule"] else ""
                console.print(f"      -p {part['kind']}.{q['name']}={q['value']!r}{escape(unit)}  ({q['type']}{escape(rule)}) {escape(q['help'])}")
        console.print()
