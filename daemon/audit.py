"""The audit log: one JSON line per decision an action takes or declines (time, action, target, outcome, reason).

Kept as a file in the state directory until the state store lands; every line is flushed and fsynced, so an
audit line is never lost to a crash that follows the action it describes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger

from daemon.redact import REDACTOR


class AuditLog:
    """Append-only JSON lines at `path`; `read()` returns them for the CLI."""

    def __init__(self, path: Path, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()

    def record(self, action: str, target: str, outcome: str, reason: str, **details: Any) -> dict[str, Any]:
        entry = {"time": self.clock().isoformat(), "action": action, "target": target, "outcome": outcome,
                 "reason": REDACTOR(reason), **{k: v for k, v in details.items() if v is not None}}
        line = json.dumps(entry, default=str, sort_keys=True) + "\n"
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                logger.error("audit log {} not writable ({}); the decision was: {}", self.path, exc.strerror,
                             line.strip())
        return entry

    def read(self) -> list[dict[str, Any]]:
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out
