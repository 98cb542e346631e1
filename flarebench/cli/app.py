"""The Typer app that every command module registers on."""

import typer

app = typer.Typer(
    name="flarebench",
    help="Benchmark communication-efficient federated learning: which sparsifier reaches which accuracy for how many bits.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """flarebench: accuracy per communicated bit for federated learning. See `flarebench COMMAND --help`."""


def check_config_path(path) -> None:
    """ConfigError saying what ``path`` is, unless it is a regular file (``--config`` / a sweep config):
    missing, a directory, or another kind of file such as ``/dev/null`` (a character device)."""
    import stat
    from pathlib import Path

    from ..errors import ConfigError

    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"config file {p} is a directory, not a TOML file")
    if not stat.S_ISREG(mode):
        kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
                else "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ConfigError(f"config file {p} is {kind}, not a TOML file")
