"""Carrying out guarded decisions: every decision audited, executions recorded in the action history, one at a
time per action and target across every process that shares the state store.

Decisions not taken are audited when they change (a new outcome or new triggers for the same action and
target), not on every collection pass, so the audit log reads as a history instead of a heartbeat; the counter
`pgbackup_actions_total` counts the same audited decisions plus each execution's end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from actions.guards import DRY_RUN, EXECUTE, INTERRUPTED, Decision, Intent
from actions.planner import TakenAction
from daemon.audit import AuditLog
from daemon.errors import GuardianError, StoppedByShutdown
from daemon.redact import REDACTOR
from daemon.statestore import LockBusy, StateStore

#: A skipped decision that stays the same is audited again after this long (it is still being declined).
REPEAT_AFTER = timedelta(hours=6)


@dataclass(frozen=True)
class Outcome:
    """How an execution ended: `done` or `failed`, a one-line detail, and details for the audit record."""

    ok: bool
    detail: str
    details: dict[str, Any] = field(default_factory=dict)


class ActionRunner:
    """Audits decisions and runs the executions; `count(action, outcome)` feeds the metrics."""

    def __init__(self, store: StateStore, audit: AuditLog, count: Callable[[str, str], None],
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.audit = audit
        self.count = count
        self.clock = clock
        self.last_taken: dict[str, datetime] = {}  # action -> the end of its newest execution (a metric)
        self._said: dict[tuple[str, str], tuple[str, tuple[str, ...], datetime]] = {}
        self._running: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def history(self, action: str, target: str, within: timedelta) -> list[TakenAction]:
        """Executions of `action` on `target` that started within `within` (any replica, any restart).
        Raises StateStoreError: a guard must not decide blind, so callers decline when it is unreadable."""
        records = self.store.actions(action=action, target=target, since=self.clock() - within)
        return [TakenAction(r.started_at, r.outcome, str(r.details.get("detail", ""))) for r in records]

    def running_here(self, action: str, target: str) -> bool:
        with self._lock:
            return (action, target) in self._running

    def note(self, decision: Decision) -> None:
        """Audit and count a decision that is not executed (skipped or dry run), when it changed."""
        intent = decision.intent
        if decision.outcome == EXECUTE:
            return
        key = (intent.action, intent.target)
        now = self.clock()
        said = self._said.get(key)
        if (said is not None and not intent.manual and said[0] == decision.outcome and said[1] == intent.triggers
                and now - said[2] < REPEAT_AFTER):
            return
        self._said[key] = (decision.outcome, intent.triggers, now)
        log = logger.warning if decision.outcome == DRY_RUN else logger.info
        log("action {} {}: {}", intent.action, intent.target, decision.reason)
        self.audit.record(intent.action, intent.target, decision.outcome, decision.reason,
                          triggers=list(intent.triggers) or None, manual=intent.manual or None, **intent.params)
        self.count(intent.action, decision.outcome)

    def execute(self, decision: Decision, fn: Callable[[int], Outcome],
                recheck: Callable[[], Decision] | None = None) -> Outcome | None:
        """Run `fn(action_id)` for a decision that goes, single-flight per action and target across processes.

        `recheck` decides again once the cross-process lock is held (a pause, a lost leadership, or another
        replica's action since the first decision must stop it). Returns None when the action did not run:
        another process or thread runs it (skipped_busy), the recheck declined, or the state store is
        unavailable (nothing is done without a history record)."""
        assert decision.outcome == EXECUTE
        intent = decision.intent
        key = (intent.action, intent.target)
        with self._lock:
            if key in self._running:
                return None
            self._running.add(key)
        try:
            with self.store.exclusive(f"{intent.action}:{intent.target}"):
                if recheck is not None:
                    again = recheck()
                    if not again.go:
                        self.note(again)
                        return None
                return self._execute(decision, fn)
        except LockBusy as exc:
            self.note(Decision(intent, "skipped_busy", f"{exc} ({decision.reason})"))
            return None
        except GuardianError as exc:  # the state store failed around the lock or the history record
            self.note(Decision(intent, "skipped_unavailable", f"state store unavailable, not acting: {exc} "
                               f"({decision.reason})"))
            return None
        finally:
            with self._lock:
                self._running.discard(key)

    def _execute(self, decision: Decision, fn: Callable[[int], Outcome]) -> Outcome:
        intent = decision.intent
        self._said.pop((intent.action, intent.target), None)
        started = self.clock()
        logger.warning("action {} {}: {}", intent.action, intent.target, decision.reason)
        action_id = self.store.begin_action(intent.action, intent.target, started, REDACTOR(decision.reason),
                                            {"triggers": list(intent.triggers), "manual": intent.manual,
                                             **intent.params})  # raises before anything is done: no blind act
        self.audit.record(intent.action, intent.target, "started", decision.reason,
                          triggers=list(intent.triggers) or None, manual=intent.manual or None, **intent.params)
        try:
            result = fn(action_id)
        except StoppedByShutdown as exc:
            return self._interrupted(intent, action_id, started, str(exc))
        except GuardianError as exc:
            result = Outcome(False, REDACTOR(str(exc)))
        except Exception as exc:  # an action's bug must not take the daemon down; it is recorded as failed
            logger.opt(exception=exc).error("action {} {} crashed", intent.action, intent.target)
            result = Outcome(False, REDACTOR(f"{type(exc).__name__}: {exc}"))
        outcome = "done" if result.ok else "failed"
        ended = self.clock()
        try:
            self.store.finish_action(action_id, ended, outcome, {"detail": REDACTOR(result.detail), **result.details})
        except GuardianError as exc:
            logger.error("action history not updated: {}", exc)
        (logger.info if result.ok else logger.error)("action {} {} {}: {}", intent.action, intent.target, outcome,
                                                     result.detail)
        self.audit.record(intent.action, intent.target, outcome, result.detail,
                          seconds=round((ended - started).total_seconds(), 1), **result.details)
        self.count(intent.action, outcome)
        self.last_taken[intent.action] = ended
        return result

    def _interrupted(self, intent: Intent, action_id: int, started: datetime, detail: str) -> Outcome:
        """Close the history record of an execution the shutdown stopped: "interrupted", not "failed" (an
        orderly stop, such as a dyno's daily restart, says nothing about the action or its target)."""
        ended = self.clock()
        try:
            self.store.finish_action(action_id, ended, INTERRUPTED, {"detail": REDACTOR(detail)})
        except GuardianError as exc:
            logger.error("action history not updated: {}", exc)
        logger.warning("action {} {} interrupted: {}", intent.action, intent.target, detail)
        self.audit.record(intent.action, intent.target, INTERRUPTED, detail,
                          seconds=round((ended - started).total_seconds(), 1))
        self.count(intent.action, INTERRUPTED)
        return Outcome(False, detail, {INTERRUPTED: True})
