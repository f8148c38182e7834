"""Carrying out guarded decisions: every decision audited, executions recorded in the action history, one at a
time per action and target across every process that shares the state store.

Every execution holds `exclusive("{action}:{target}")` from before its history record ("running") until after
its end is recorded. A "running" record whose lock can be taken therefore belongs to a process that died during
it: `close_interrupted` ends it as `interrupted` (history, audit, counter, and the `on_interrupted` hook, which
records a capture's failed attempt in the archive). It runs at start and before every read of the history for
a decision, so a crash never leaves a record that blocks or misleads the guards.

Decisions not taken are audited when they change (a new outcome or new triggers for the same action and
target), not on every collection pass, so the audit log reads as a history instead of a heartbeat; the counter
`pgbackup_actions_total` counts the same audited decisions plus each execution's end.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from loguru import logger

from actions.audit import AuditLog
from actions.guards import DRY_RUN, EXECUTE, INTERRUPTED, Decision, Intent
from actions.planner import TakenAction
from daemon.adapters.statestore import ActionRecord, LockBusy, StateStore
from daemon.core.errors import GuardianError, StoppedByShutdown
from daemon.core.redact import REDACTOR

#: A skipped decision that stays the same is audited again after this long (it is still being declined).
SAID_LIMIT = 10_000  # remembered decisions before the old ones are forgotten
REPEAT_AFTER = timedelta(hours=6)


@dataclass(frozen=True)
class Outcome:
    """How an execution ended: `done` or `failed` (or `skipped`: it found it had nothing to do, e.g. a drill
    that another one is running), a one-line detail, and details for the audit record."""

    ok: bool
    detail: str
    details: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    interrupted: bool = False  # stopped by the shutdown: "interrupted", never a failure of the action
    counted: bool = True  # False: the execution's parts are counted one by one (prune: each copy), not its end

    @property
    def outcome(self) -> str:
        if self.interrupted:
            return INTERRUPTED
        return "skipped" if self.skipped else "done" if self.ok else "failed"


@dataclass(frozen=True)
class _Started:
    """An execution whose start is recorded: its history id and start time."""

    intent: Intent
    action_id: int
    started: datetime


class ActionRunner:
    """Audits decisions and runs the executions; `count(action, outcome)` feeds the metrics."""

    def __init__(self, store: StateStore, audit: AuditLog, count: Callable[[str, str], None],
                 clock: Callable[[], datetime], on_interrupted: Callable[[ActionRecord], None] | None = None
                 ) -> None:
        self.store = store
        self.audit = audit
        self.count = count
        self.clock = clock
        self.on_interrupted = on_interrupted
        self.owner = f"pid {os.getpid()} on {socket.gethostname()}"
        self.last_taken: dict[str, datetime] = {}  # action -> the end of its newest execution (a metric)
        self._said: dict[tuple[str, str], tuple[str, tuple[str, ...], datetime]] = {}
        self._running: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def history(self, action: str, target: str, within: timedelta) -> list[TakenAction]:
        """Executions of `action` on `target` that started within `within` (any replica, any restart), after
        closing the ones a dead process left "running". Raises StateStoreError: a guard must not decide blind,
        so callers decline when it is unreadable."""
        self.close_interrupted(action, target)
        records = self.store.actions(action=action, target=target, since=self.clock() - within)
        return [TakenAction(r.started_at, r.outcome, str(r.details.get("detail", "")), str(r.details.get("kind", "")))
                for r in records]

    def close_interrupted(self, action: str | None = None, target: str | None = None) -> list[ActionRecord]:
        """End as `interrupted` every "running" execution (of `action` on `target`, or all) whose process is
        gone; returns them. Decided under the action's lock: when it can be taken no live process runs it (a
        live one holds it for its whole execution), and the records are read again under it, so one that a
        live process finished meanwhile is left alone. Store failures are logged; never raises."""
        try:
            running = self.store.running_actions(action, target)
        except GuardianError as exc:
            logger.warning("could not look for interrupted actions: {}", exc)
            return []
        closed: list[ActionRecord] = []
        for act, tgt in sorted({(r.action, r.target) for r in running}):
            try:
                with self.store.exclusive(f"{act}:{tgt}"):
                    for record in self.store.running_actions(act, tgt):
                        self._close_interrupted(record)
                        closed.append(record)
            except LockBusy:
                continue  # a live process runs it
            except GuardianError as exc:
                logger.warning("could not close interrupted {} of {}: {}", act, tgt, exc)
        return closed

    def _close_interrupted(self, record: ActionRecord) -> None:
        who = f" ({record.owner})" if record.owner else ""
        detail = (f"interrupted: the process{who} stopped during this {record.action}, started "
                  f"{record.started_at.isoformat(timespec='seconds')}; it did not finish")
        self.store.finish_action(record.id, self.clock(), INTERRUPTED, {"detail": detail})
        logger.warning("action {} {}: {}", record.action, record.target, detail)
        self.audit.record(record.action, record.target, INTERRUPTED, detail, action_id=record.id,
                          started_at=record.started_at.isoformat())
        self.count(record.action, INTERRUPTED)
        if self.on_interrupted is not None:
            try:
                self.on_interrupted(record)
            except Exception as exc:  # the history is closed; what else the hook records must not stop the rest
                logger.opt(exception=exc).error("recording the interrupted {} of {} failed", record.action,
                                                record.target)

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
        with self._lock:  # decisions come from the collection thread and the action workers
            said = self._said.get(key)
            if (said is not None and not intent.manual and said[0] == decision.outcome
                    and said[1] == intent.triggers and now - said[2] < REPEAT_AFTER):
                return
            if len(self._said) >= SAID_LIMIT:  # bounded: targets such as "db/backup id" come and go
                self._said = {k: v for k, v in self._said.items() if now - v[2] < REPEAT_AFTER}
            self._said[key] = (decision.outcome, intent.triggers, now)
        log = logger.warning if decision.outcome == DRY_RUN else logger.info
        log("action {} {}: {}", intent.action, intent.target, decision.reason)
        self.audit.record(intent.action, intent.target, decision.outcome, decision.reason,
                          triggers=list(intent.triggers) or None, manual=intent.manual or None,
                          requested_by=intent.requested_by, **intent.params)
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

    def run_held(self, intent: Intent, fn: Callable[[int], Outcome], unlocked_ok: bool = True) -> Outcome | None:
        """Run `fn(action_id)` for work that passes no guards (a capture on its schedule, a drill) the way an
        execution runs: under `exclusive("{action}:{target}")`, recorded in the history and the audit log, so
        a crash in the middle leaves a record that `close_interrupted` ends. None when another process holds
        the lock. A state store that fails around the lock or the record does not stop the work (a backup
        matters more than its record): it runs unlocked and unrecorded, which is logged; with `unlocked_ok`
        False (a drill, whose lock also keeps other processes' scratch sweeps away) it is skipped instead."""
        held = contextlib.ExitStack()
        try:
            held.enter_context(self.store.exclusive(f"{intent.action}:{intent.target}"))
        except LockBusy:
            return None
        except GuardianError as exc:
            if not unlocked_ok:
                detail = f"{intent.action} of {intent.target} not run: its cross-process lock is unavailable ({exc})"
                logger.warning("{}", detail)
                return Outcome(False, REDACTOR(detail), skipped=True)
            logger.warning("{} of {} runs without its cross-process lock and history record: {}", intent.action,
                           intent.target, exc)
            return self._call(intent, fn, 0)
        with held:
            try:
                started = self._begin(intent, intent.reason)
            except GuardianError as exc:
                logger.warning("{} of {} runs without a history record: {}", intent.action, intent.target, exc)
                return self._call(intent, fn, 0)
            logger.info("{} {}: {}", intent.action, intent.target, intent.reason)
            return self._end(started, self._call(intent, fn, started.action_id))

    def _execute(self, decision: Decision, fn: Callable[[int], Outcome]) -> Outcome:
        intent = decision.intent
        with self._lock:
            self._said.pop((intent.action, intent.target), None)
        logger.warning("action {} {}: {}", intent.action, intent.target, decision.reason)
        started = self._begin(intent, decision.reason)  # raises before anything is done: no blind act
        return self._end(started, self._call(intent, fn, started.action_id))

    def _begin(self, intent: Intent, reason: str) -> _Started:
        """Record the start: history ("running", with this process as owner) and audit. StateStoreError when
        the history cannot be written."""
        started = self.clock()
        action_id = self.store.begin_action(intent.action, intent.target, started, REDACTOR(reason),
                                            {"triggers": list(intent.triggers), "manual": intent.manual,
                                             **intent.params}, owner=self.owner)
        self.audit.record(intent.action, intent.target, "started", reason,
                          triggers=list(intent.triggers) or None, manual=intent.manual or None,
                          requested_by=intent.requested_by, **intent.params)
        return _Started(intent, action_id, started)

    @staticmethod
    def _call(intent: Intent, fn: Callable[[int], Outcome], action_id: int) -> Outcome:
        try:
            return fn(action_id)
        except StoppedByShutdown as exc:  # an orderly stop says nothing about the action or its target
            return Outcome(False, REDACTOR(str(exc)), interrupted=True)
        except GuardianError as exc:
            return Outcome(False, REDACTOR(str(exc)))
        except Exception as exc:  # an action's bug must not take the daemon down; it is recorded as failed
            logger.opt(exception=exc).error("action {} {} crashed", intent.action, intent.target)
            return Outcome(False, REDACTOR(f"{type(exc).__name__}: {exc}"))

    def _end(self, run: _Started, result: Outcome) -> Outcome:
        """Record the end: history, log, audit, counter."""
        intent = run.intent
        outcome = result.outcome
        ended = self.clock()
        try:
            self.store.finish_action(run.action_id, ended, outcome, {"detail": REDACTOR(result.detail),
                                                                     **result.details})
        except GuardianError as exc:
            logger.error("action history not updated: {}", exc)
        log = logger.error if outcome == "failed" else logger.warning if result.interrupted else logger.info
        log("action {} {} {}: {}", intent.action, intent.target, outcome, result.detail)
        self.audit.record(intent.action, intent.target, outcome, result.detail,
                          seconds=round((ended - run.started).total_seconds(), 1), **result.details)
        if result.counted:
            self.count(intent.action, outcome)
        if not (result.skipped or result.interrupted):
            self.last_taken[intent.action] = ended
        return result

