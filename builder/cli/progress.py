"""A one-line progress bar for terminals: device counts, rate and ETA, redrawn in place on stderr.

It is for people watching a terminal, so `wanted()` shows it only on a TTY and never with --json
or --quiet; it never writes to stdout, so machine-readable output stays clean. Messages printed
while it is drawn go through `write()`, which clears the bar, prints the line and redraws it.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Callable, TextIO

_CLEAR = "\x1b[K"  # erase to end of line (VT100; every terminal emulator in use has it)


def wanted(stream: TextIO | None = None, *, as_json: bool = False, quiet: bool = False) -> bool:
    """Show a bar on `stream` (default stderr)? Only for a person at a real terminal."""
    if as_json or quiet:
        return False
    stream = stream or sys.stderr
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # closed or odd streams
        return False
    return tty and os.environ.get("TERM") != "dumb"


def format_line(done: int, total: int, rate: float | None, elapsed: float, noun: str, width: int) -> str:
    """`[#####.....] 120/1000 devices 85/s ETA 0:10`; `width` is the whole line's budget.

    `rate` (items per second) is None until it can be measured."""
    done = max(0, min(done, total))
    if rate is None:
        rate = done / elapsed if done >= total and elapsed > 0 else 0.0
    if done >= total:
        tail = f"{done}/{total} {noun} {rate:,.0f}/s in {_clock(elapsed)}"
    else:
        eta = _clock((total - done) / rate) if rate > 0 else "--:--"
        tail = f"{done}/{total} {noun} {rate:,.0f}/s ETA {eta}"
    bar_width = min(30, width - len(tail) - 3)
    if bar_width < 5:
        return tail[:max(width, 1)]
    filled = bar_width * done // total if total else bar_width
    return f"[{'#' * filled}{'.' * (bar_width - filled)}] {tail}"


class ProgressBar:
    """update(done, total) as work completes; close() when done (also on errors: it ends the line)."""

    def __init__(self, noun: str, *, stream: TextIO | None = None, width: int | None = None,
                 min_interval: float = 0.1, clock: Callable[[], float] = time.monotonic):
        self.noun = noun
        self.stream = stream or sys.stderr
        self.width = width or max(20, _columns(self.stream) - 1)
        self.min_interval = min_interval
        self.clock = clock
        self.started = clock()
        self._last_draw: float | None = None
        self._state: tuple[int, int] | None = None
        self._first: tuple[int, float] | None = None  # rate is measured from the first update:
        self._drawn = False  # whatever ran before the first item (start-up, vendor) is not work
        self._shown: tuple[int, int] | None = None  # the state on screen
        self._finished: float | None = None  # when done reached total: rate and time freeze

    def update(self, done: int, total: int) -> None:
        self._state = (done, total)
        now = self.clock()
        if self._first is None:
            self._first = (done, now)
        if done >= total and self._finished is None:
            self._finished = now
        if done < total and self._last_draw is not None and now - self._last_draw < self.min_interval:
            return  # redraw at most every min_interval, but always show the last step
        self._last_draw = now
        self._draw(now)

    def write(self, message: str) -> None:
        """Print a whole line above the bar (the bar is redrawn below it)."""
        if self._drawn:
            self.stream.write("\r" + _CLEAR)
        self.stream.write(message + "\n")
        if self._drawn:
            self._draw(self.clock())
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            if self._state != self._shown:  # a throttled last step
                self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _draw(self, now: float) -> None:
        if self._state is None:
            return
        done, total = self._state
        if self._finished is not None:
            now = self._finished
        rate = None
        if self._first is not None and done > self._first[0] and now > self._first[1]:
            rate = (done - self._first[0]) / (now - self._first[1])
        line = format_line(done, total, rate, now - self.started, self.noun, self.width)
        self.stream.write("\r" + line + _CLEAR)
        self.stream.flush()
        self._drawn = True
        self._shown = self._state


def _columns(stream: TextIO) -> int:
    """The width of the terminal the bar is drawn on (stderr's, not stdout's: stdout may be a pipe)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return shutil.get_terminal_size((80, 24)).columns


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60:d}:{seconds % 60:02d}"
