"""Command line: thin wrappers that parse, validate and call the library.

Every user error becomes one line on stderr (``flarebench: error: ...``) and exit code 2;
Ctrl-C exits with 130 after the completed rounds are on disk.
"""

from __future__ import annotations

import logging
import sys

import typer

from ..errors import FlarebenchError
from .app import app
from . import run as _run  # noqa: F401  (registers `run`)
from . import bench as _bench  # noqa: F401  (registers `bench`)
from . import compare as _compare  # noqa: F401  (registers `compare`, `list`, `show`)
from . import bits as _bits  # noqa: F401  (registers `bits`)
from . import sweep as _sweep  # noqa: F401  (registers `sweep` and `figures`)
from . import methods as _methods  # noqa: F401  (registers `methods`)
from . import density as _density  # noqa: F401  (registers `density`)

try:  # typer >= 0.20 vendors click
    from typer._click import exceptions as _cx
    from typer._click.formatting import HelpFormatter as _ClickFormatter
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as _cx
    from click.formatting import HelpFormatter as _ClickFormatter

_ABORTS = tuple({KeyboardInterrupt, typer.Abort, getattr(_cx, "Abort", KeyboardInterrupt)})
_EXITS = tuple({typer.Exit, getattr(_cx, "Exit", typer.Exit)})


def _fail(message: str, code: int = 2) -> None:
    print(f"flarebench: error: {message}", file=sys.stderr)
    sys.exit(code)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is when a record is emitted (tests swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _log_warnings_to_stderr() -> None:
    """The library's logged warnings (engine fallback, resuming with other code) as ``flarebench: warning: ...``."""
    log = logging.getLogger("flarebench")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("flarebench: warning: %(message)s"))
        log.addHandler(handler)


class _HelpFormatter(_ClickFormatter):
    """Click's plain help layout (it wraps at the terminal's width and never cuts a name), without the
    backslash typer puts before ``[default: ...]`` for rich, which flarebench does not use for help."""

    def __init__(self, indent_increment: int = 2, width: int | None = None, max_width: int | None = None):
        import shutil

        # the terminal's width (COLUMNS), where click stops at 80 by default
        super().__init__(indent_increment, width, max_width or shutil.get_terminal_size().columns)

    def getvalue(self) -> str:
        return super().getvalue().replace("\\[", "[")


def plain_help(command) -> None:
    """Give ``command`` and its subcommands the plain help formatter (COLUMNS-wide, nothing eaten as markup)."""
    context = command.context_class

    class _Context(context):
        formatter_class = _HelpFormatter

    for cmd in [command, *getattr(command, "commands", {}).values()]:
        cmd.context_class = _Context


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``flarebench`` command."""
    _log_warnings_to_stderr()
    command = typer.main.get_command(app)
    plain_help(command)
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
    try:
        rc = command.main(args=args, prog_name="flarebench", standalone_mode=False)
    except FlarebenchError as e:
        _fail(str(e))
    except _ABORTS:
        print("flarebench: interrupted; completed rounds are on disk", file=sys.stderr)
        sys.exit(130)
    except _EXITS as e:
        sys.exit(getattr(e, "exit_code", 0))
    except _cx.UsageError as e:
        _fail(" ".join(e.format_message().split()))
    except _cx.ClickException as e:
        _fail(" ".join(e.format_message().split()), e.exit_code or 1)
    sys.exit(rc if isinstance(rc, int) else 0)


__all__ = ["app", "main"]
