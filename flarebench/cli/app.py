"""The Typer app that every command module registers on."""

import typer

app = typer.Typer(
    name="flarebench",
    help="Benchmark communication-efficient federated learning: which sparsifier reaches which accuracy for how many bits.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """flarebench: accuracy per communicated bit for federated learning. See `flarebench COMMAND --help`."""
