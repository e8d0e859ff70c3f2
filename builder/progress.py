"""A one-line progress bar for terminals: device counts, rate and ETA, redrawn in place on stderr.

Callers decide whether to show it (only on a TTY, never with --json or --quiet); it never
writes to stdout, so machine-readable output stays clean.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, noun: str, *, stream: TextIO | None = None, width: int = 28, min_interval: float = 0.1):
        self.noun = noun
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        filled = int(self.width * done / total) if total else self.width
        eta = (total - done) / rate if rate > 0 else 0.0
        line = (f"\r[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {self.noun} "
                f"{rate:,.0f}/s ETA {_clock(eta)}")
        self.stream.write(line + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60:d}:{seconds % 60:02d}"
