"""`backup-guardian drill [--database X] [--scenario full|table]`: a drill now, with progress on a terminal."""

from __future__ import annotations

import sys
import time

from actions.drill import FULL, SCENARIOS
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.errors import GuardianError
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


def run(config: GuardianConfig, database: str | None, scenario: str) -> int:
    guardian = Guardian(config)
    try:
        names = [database] if database else list(guardian.databases)
        unknown = [n for n in names if n not in guardian.databases]
        if unknown:
            raise GuardianError(f"unknown database {unknown[0]!r}; known: {', '.join(guardian.databases)}")
        guardian.collect_all(one_shot=True)
        guardian.sweep_scratch()
        worst = 0
        for name in names:
            bar = ProgressLine()
            result = guardian.drill(name, SCENARIOS.get(scenario, FULL), bar)
            bar.done()
            if result.skipped:
                sys.stdout.write(f"{name}: {result.scenario} drill skipped: {result.reason}\n")
                worst = max(worst, 1)
                continue
            verdict = "succeeded" if result.succeeded else "FAILED"
            rto = f" (RTO {result.rto_seconds:.0f}s)" if result.rto_seconds else ""
            sys.stdout.write(f"{name}: {result.scenario} drill {verdict} in {result.recovery_seconds:.1f}s{rto}: "
                             f"{result.reason}\n")
            for check in result.checks:
                sys.stdout.write(f"  {'ok    ' if check.ok else 'FAILED'} {check.name}: {check.detail}\n")
            report = guardian.holder.current().databases[name].drills[-1].report
            sys.stdout.write(f"  report: {report}\n")
            worst = max(worst, 0 if result.succeeded else 1)
        return worst
    finally:
        guardian.stop()
