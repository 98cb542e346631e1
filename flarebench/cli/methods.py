"""``flarebench methods``: every method (preset), its parts, their parameters with defaults and units, and the paper.
``flarebench parts``: every registered part of every kind (models, datasets, partitions too), plug-ins' included."""

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
    from rich.markup import escape

    from ..methods.presets import catalog

    entries = catalog(method)
    console = _console_unless_json(entries, as_json)
    if console is None:
        return
    for e in entries:
        sparsity = "  [uses --sparsity]" if e["uses_sparsity"] else ""
        console.print(f"[bold]{escape(e['method'])}[/bold]: {escape(e['description'])}{sparsity}")
        console.print(f"  paper: {escape(e['paper'])}")
        if e.get("plugin"):
            console.print(f"  from plug-in {escape(e['plugin'])}")
        for part in e["parts"]:
            _print_part(console, part, paper_shown=e["paper"])
        console.print()


@app.command("parts")
def parts_command(
    kind: Optional[str] = typer.Argument(None, help="One kind only: regularizer, compressor, memory, aggregator, model, dataset, partition. [default: all]"),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """Every part by kind (built-ins, then installed plug-ins') with its parameters (-p KIND.NAME=VALUE, TOML [KIND]).
    Any part may also be an import reference: MODULE:NAME or PATH.py:NAME."""
    from ..methods.presets import parts_catalog

    entries = parts_catalog(kind)
    console = _console_unless_json(entries, as_json)
    if console is None:
        return
    for e in entries:
        _print_part(console, e)


def _console_unless_json(entries: list[dict], as_json: bool):
    """With ``--json``: print ``entries`` as JSON and return None; else a rich Console to print them on."""
    from rich.console import Console

    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return None
    return Console(highlight=False, soft_wrap=True)


def _print_part(console, part: dict, paper_shown: str = "") -> None:
    from rich.markup import escape

    paper = f" ({escape(part['paper'])})" if part["paper"] and part["paper"] != paper_shown else ""
    plugin = escape(f" [plug-in {part['plugin']}]") if part.get("plugin") else ""
    console.print(f"  {part['kind']:<11} [cyan]{escape(part['name'])}[/cyan]: {escape(part['summary'])}{paper}{plugin}")
    for q in part["params"]:
        unit = f" {q['unit']}" if q["unit"] else ""
        rule = f"; {q['rule']}" if q["rule"] else ""
        console.print(f"      -p {part['kind']}.{q['name']}={q['value']!r}{escape(unit)}  ({q['type']}{escape(rule)}) {escape(q['help'])}")
