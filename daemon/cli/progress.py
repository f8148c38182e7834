"""A one-line progress display for the command line (`drill`, `archive mirror`)."""

from __future__ import annotations

import sys
import time

from daemon.status import human_size


class ProgressLine:
    """A one-line progress display on a terminal (nothing when stderr is not a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.phase = ""
        self._last = 0.0

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if phase == self.phase and now - self._last < 0.1:
            return
        self.phase, self._last = phase, now
        if total:
            width = 30
            filled = int(width * min(done, total) / total)
            bar = "#" * filled + "-" * (width - filled)
            text = f"{phase} [{bar}] {human_size(done)} of {human_size(total)}"
        elif done:
            text = f"{phase} {human_size(done)}"
        else:
            text = f"{phase} ..."
        sys.stderr.write(f"\r{text:<72}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 72 + "\r")
