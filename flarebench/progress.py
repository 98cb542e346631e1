"""Live progress of a run, as an ``on_round`` callback for :func:`flarebench.run`.

On a terminal: a rich progress bar with rounds done / planned, rounds/s, elapsed time, ETA, and the
latest test accuracy and cumulative uplink bits. Not a terminal (CI logs, pipes): one plain line per
evaluated round. ``quiet``: nothing.

    with RunProgress(cfg.rounds) as progress:
        run(cfg, on_round=progress)
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
)
from rich.text import Text

from .units import human_bits, human_seconds


class _RateColumn(ProgressColumn):
    """Rounds per second over rich's recent-speed window."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.2f} rounds/s" if task.speed else "- rounds/s", style="progress.data.speed")


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
        self._start: tuple[int, float] | None = None  # (first round seen, its time)
        self._bar: Progress | None = None
        self._task = None

    # ------------------------------------------------------------------ context
    def __enter__(self) -> "RunProgress":
        if self.mode == "bar":
            self._bar = Progress(
                TextColumn("[bold]round"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("acc [bold]{task.fields[acc]}"),
                TextColumn("uplink {task.fields[bits]}"),
                console=self.console,
            )
            self._task = self._bar.add_task("run", total=self.total, acc="-", bits="0 bit", start=False)
            self._bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    # ------------------------------------------------------------------ callback
    def __call__(self, row: dict, stats=None) -> None:
        if self.mode == "quiet":
            return
        rnd, now = int(row["round"]), time.perf_counter()
        first = self._start is None
        if first:
            self._start = (rnd, now)
        acc = row.get("test_accuracy")
        if self.mode == "bar":
            fields = {"bits": human_bits(row.get("cumulative_uplink_bits") or 0)}
            if acc is not None:
                fields["acc"] = f"{acc:.4f}"
            if first:
                self._bar.reset(self._task, start=True, completed=rnd, **fields)
            else:
                self._bar.update(self._task, completed=rnd, **fields)
            return
        if acc is not None:
            self.console.file.write(self.line(row, now) + "\n")
            self.console.file.flush()

    def line(self, row: dict, now: float | None = None) -> str:
        """The plain-text report of one evaluated row (what non-terminal output prints)."""
        rnd = int(row["round"])
        r0, t0 = self._start or (rnd, now)
        done, elapsed = rnd - r0, (now or time.perf_counter()) - t0
        rate = done / elapsed if done and elapsed > 0 else None
        eta = (self.total - rnd) / rate if rate else None
        return (
            f"round {rnd:>5}/{self.total}  acc {row['test_accuracy']:.4f}  loss {row['test_loss']:.4f}  "
            f"uplink {human_bits(row.get('cumulative_uplink_bits') or 0)}  {row['wall_time_s']:.1f}s  "
            f"{f'{rate:.2f}' if rate else '-'} rounds/s  ETA {human_seconds(eta)}"
        )


__all__ = ["RunProgress"]
