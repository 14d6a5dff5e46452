"""Progress on stderr: a ``rich`` bar with count, rate and ETA on a terminal, else a line every few seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich import progress as bars
from rich.console import Console

BAR_WIDTH = 30


def duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """``update(done)`` as often as you like: it redraws at most every ``interval`` seconds."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self._clock = clock
        self.started = clock()
        self._drawn = self.started
        self.done = 0
        self._bar: bars.Progress | None = None
        if self.tty:
            console = Console(file=self.stream, force_terminal=True, highlight=False)
            self._bar = bars.Progress(bars.TextColumn("{task.description}"), bars.BarColumn(bar_width=BAR_WIDTH),
                                      bars.TextColumn("{task.fields[stats]}"), console=console, auto_refresh=False,
                                      get_time=clock, redirect_stdout=False, redirect_stderr=False)
            self._task = self._bar.add_task(label, total=max(total, 1), stats=self.stats())
            self._bar.start()

    def rate(self) -> float:
        elapsed = self._clock() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def stats(self) -> str:
        """``done/total share rate/s ETA h:mm:ss``."""
        rate = self.rate()
        left = self.total - self.done
        eta = duration(left / rate) if rate > 0 else "?"
        share = self.done / self.total if self.total else 1.0
        shown = f"{rate:,.1f}" if rate < 10 else f"{rate:,.0f}"
        return f"{self.done}/{self.total} {share:4.0%} {shown}/s ETA {eta}"

    def line(self) -> str:
        """The line written off a terminal."""
        return f"{self.label}: {self.stats()}"

    def update(self, done: int) -> None:
        self.done = done
        now = self._clock()
        if now - self._drawn >= self.interval:
            self._drawn = now
            self._draw()

    def _draw(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=min(self.done, max(self.total, 1)), stats=self.stats())
            self._bar.refresh()
            return
        self.stream.write(self.line() + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self._draw()
        if self._bar is not None:
            self._bar.stop()
