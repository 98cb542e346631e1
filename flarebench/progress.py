"""Live progress of a run, as an ``on_round`` callback for :func:`flarebench.run`.

On a terminal: a rich progress bar with rounds done / planned, the smoothed rate, elapsed time, ETA,
the latest test accuracy and test loss with the round they are from, and the cumulative uplink bits;
while the run is set up, the bar's label says what is happening (auto's engine probe). Not a terminal
(CI logs, pipes): one plain line per evaluated round, and the probe's first and last word. ``quiet``:
nothing. Warnings (divergence) go above the bar or as their own line.

The rate is an exponential moving average of seconds per round (weight ``SMOOTHING`` on the newest
round, about the last ``1 / SMOOTHING`` rounds), shown as "rounds/s (smoothed)"; the ETA follows it.

    with RunProgress(cfg.rounds) as progress:
        run(cfg, on_round=progress)
"""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .units import human_bits, human_seconds

SMOOTHING = 0.2  # weight of the newest round in the smoothed seconds per round
PROBE_LOGGER = "flarebench.engine.probe"


class _StatusHandler(logging.Handler):
    """Forwards the engine probe's records to :meth:`RunProgress.status` (debug records: the bar only)."""

    def __init__(self, progress: "RunProgress"):
        super().__init__(logging.DEBUG)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.status(record.getMessage(), detail=record.levelno < logging.INFO)


class RunProgress:
    """Callable ``(row, stats)`` that reports a run's metrics rows; use it as a context manager.

    ``mode``: "bar", "lines" or "quiet"; default: "bar" when ``console`` is a terminal, else "lines".
    The first row seen sets the starting round (a resumed run starts past 0; its rate counts new rounds only).
    """

    def __init__(self, total_rounds: int, *, quiet: bool = False, console: Console | None = None, mode: str | None = None):
        self.total = total_rounds
        self.console = console or Console()
        self.mode = "quiet" if quiet else mode or ("bar" if self.console.is_terminal else "lines")
        if self.mode not in {"bar", "lines", "quiet"}:
            raise ValueError(f"unknown progress mode {self.mode!r}")
        self._last: tuple[int, float] | None = None  # (last round seen, its time)
        self._sec_per_round: float | None = None  # smoothed
        self._eval: tuple[int, float, float] | None = None  # (round, test accuracy, test loss) of the latest evaluation
        self._bar: Progress | None = None
        self._task = None
        self._handler: _StatusHandler | None = None

    # ------------------------------------------------------------------ context
    def __enter__(self) -> "RunProgress":
        if self.mode == "bar":
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                TextColumn("{task.fields[evaluated]}"),
                TextColumn("uplink {task.fields[bits]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("round", total=self.total, evaluated="test acc -", bits="0 bit",
                                            rate="- rounds/s", eta="-", start=False)
            self._bar.start()
        if self.mode != "quiet":
            self._handler = _StatusHandler(self)
            logging.getLogger(PROBE_LOGGER).addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            logging.getLogger(PROBE_LOGGER).removeHandler(self._handler)
        if self._bar is not None:
            self._bar.stop()

    # ------------------------------------------------------------------ status and warnings
    def status(self, text: str, detail: bool = False) -> None:
        """What the run is doing before its first round (e.g. timing the engines): the bar's label on a
        terminal; in lines mode a line, unless ``detail`` (a step of it)."""
        if self.mode == "bar":
            self._bar.update(self._task, description=escape(text))
        elif self.mode == "lines" and not detail:
            self._write(text)

    def warn(self, text: str) -> None:
        """A warning (e.g. divergence) above the bar, or as a line."""
        if self.mode == "bar":
            self._bar.console.print(f"[bold yellow]warning:[/] {escape(text)}")
        elif self.mode == "lines":
            self._write(f"warning: {text}")

    def _write(self, text: str) -> None:
        self.console.file.write(text + "\n")
        self.console.file.flush()

    # ------------------------------------------------------------------ callback
    def __call__(self, row: dict, stats=None) -> None:
        if self.mode == "quiet":
            return
        rnd, now = int(row["round"]), time.perf_counter()
        first = self._last is None
        if not first and rnd > self._last[0]:
            per_round = (now - self._last[1]) / (rnd - self._last[0])
            prev = self._sec_per_round
            self._sec_per_round = per_round if prev is None else SMOOTHING * per_round + (1 - SMOOTHING) * prev
        self._last = (rnd, now)
        if row.get("test_accuracy") is not None:
            self._eval = (rnd, row["test_accuracy"], row.get("test_loss"))
        if self.mode == "bar":
            fields = {"bits": human_bits(row.get("cumulative_uplink_bits") or 0), "evaluated": self._evaluated(),
                      "rate": self._rate(), "eta": human_seconds(self._eta(rnd))}
            if first:
                self._bar.reset(self._task, start=True, completed=rnd, description="round", **fields)
            else:
                self._bar.update(self._task, completed=rnd, **fields)
            return
        if row.get("test_accuracy") is not None:
            self._write(self.line(row))

    def _rate(self) -> str:
        s = self._sec_per_round
        return f"{1 / s:.2f} rounds/s (smoothed)" if s else "- rounds/s"

    def _eta(self, rnd: int) -> float | None:
        return (self.total - rnd) * self._sec_per_round if self._sec_per_round else None

    def _evaluated(self) -> str:
        if self._eval is None:
            return "test acc -"
        rnd, acc, loss = self._eval
        loss_text = f" loss {loss:.4f}" if loss is not None else ""
        return f"test acc {acc:.4f}{loss_text} (round {rnd})"

    def line(self, row: dict) -> str:
        """The plain-text report of one evaluated row (what non-terminal output prints)."""
        rnd = int(row["round"])
        return (
            f"round {rnd:>5}/{self.total}  test acc {row['test_accuracy']:.4f}  test loss {row['test_loss']:.4f}  "
            f"uplink {human_bits(row.get('cumulative_uplink_bits') or 0)}  {row['wall_time_s']:.1f}s  "
            f"{self._rate()}  ETA {human_seconds(self._eta(rnd))}"
        )


__all__ = ["RunProgress", "SMOOTHING"]
