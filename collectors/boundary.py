"""The collectors' error boundary: a collector that fails becomes data (`CollectorStatus`), never an exception.

A failure is logged once per change of reason (an expected `GuardianError` as a warning, anything else with its
traceback), the status keeps the last success (across restarts, from the state store) and how long the
collector's facts stay fresh, so the policy can say `collector_down` and `check` can say UNKNOWN.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from daemon.core.errors import GuardianError
from daemon.core.redact import REDACTOR
from daemon.core.snapshot import CollectorStatus, StateHolder


class CollectorBoundary:
    """Runs collectors for one guardian; `successes` are the last successes read back from the state store."""

    def __init__(self, holder: StateHolder, successes: dict[tuple[str, str], datetime],
                 stale_after: Callable[[str], timedelta], clock: Callable[[], datetime]) -> None:
        self.holder = holder
        self.successes = successes
        self.stale_after = stale_after
        self.clock = clock

    def run(self, collector: str, database: str, fn: Callable[[], Any]) -> tuple[Any, CollectorStatus]:
        """Run one collector; returns its result (None when it failed) and its new status."""
        prev = self.holder.current().collectors.get((collector, database)) or CollectorStatus(
            collector, database, last_success_at=self.successes.get((collector, database)))
        prev = replace(prev, stale_after_seconds=self.stale_after(collector).total_seconds())
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            expected = isinstance(exc, GuardianError)
            reason = REDACTOR(str(exc) if expected else f"{type(exc).__name__}: {exc}")
            if prev.up or prev.last_error != reason:
                if expected:
                    logger.warning("collector {} for {} is down: {}", collector, database, reason)
                else:
                    logger.opt(exception=exc).error("collector {} for {} crashed", collector, database)
            return None, replace(prev, up=False, last_duration_seconds=time.monotonic() - t0,
                                 errors_total=prev.errors_total + 1, last_error=reason)
        if not prev.up and prev.errors_total:
            logger.info("collector {} for {} is up again", collector, database)
        return result, replace(prev, up=True, last_success_at=self.clock(),
                               last_duration_seconds=time.monotonic() - t0, last_error=None)
