"""Emergency captures after each evaluation, and a person's capture (`backup-guardian capture`). The decisions
are pure (`actions.planner`, `actions.guards`); this module gathers their facts, runs the executions on a small
pool (a Heroku capture followed to its end, or this guardian's own pg_dump) and reports them.

Only the leader acts. Followers still collect and export, and keep quiet about actions (the leader audits).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from loguru import logger

from actions.audit import person
from actions.emergency import HerokuCapture, expiring_backup, failure_text, running_capture
from actions.guards import Decision, Intent
from actions.mirror import Mirror
from actions.pipeline import EMERGENCY_CAPTURE, MANUAL_CAPTURE, Gate
from actions.planner import capture_facts, capture_source, plan_captures
from actions.runner import ActionRunner, Outcome
from collectors.archive import ArchiveReader
from collectors.fleet import HerokuSide
from collectors.heroku import transfer_name, transfer_num
from daemon.config import ActionsConfig, DatabaseConfig
from daemon.core.errors import CaptureError, GuardianError, StoppedByShutdown
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, Snapshot, StateHolder
from daemon.leadership import Leadership


@dataclass(frozen=True)
class OwnCaptures:
    """What an emergency or a person's capture needs of the rest of the guardian."""

    capture: Callable[..., tuple[bool, str]]  # (name, kind=, lock=False): a pg_dump of a self-managed database
    capturing: Callable[[str], bool]  # a pg_dump of this database runs in this process now
    refresh_heroku: Callable[[str], None]  # poll one Heroku database again now
    reread: Callable[[str], object]  # read one database's archive again now


class Remedies:
    """Plans, guards and runs emergency captures (and a person's) for one guardian."""

    def __init__(self, cfg: ActionsConfig, databases: dict[str, DatabaseConfig], runner: ActionRunner, gate: Gate,
                 paused: Callable[[], str | None], holder: StateHolder, leadership: Leadership, heroku: HerokuSide,
                 archive: ArchiveReader, mirror: Mirror | None, own: OwnCaptures, clock: Callable[[], datetime],
                 closing: threading.Event) -> None:
        """`own`: this guardian's own captures (pg_dump) and what follows one; `closing`: set at shutdown."""
        self.cfg = cfg
        self.databases = databases
        self.runner = runner
        self.gate = gate
        self.paused = paused  # why actions are paused (`backup-guardian actions pause`), or None
        self.holder = holder
        self.leadership = leadership
        self.heroku = heroku
        self.archive = archive
        self.mirror = mirror
        self.own = own
        self.clock = clock
        self.closing = closing
        self._pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="action")
        self._queued: set[tuple[str, str]] = set()
        self._futures: list[concurrent.futures.Future[Outcome | None]] = []
        self._lock = threading.Lock()

    # -- switches -----------------------------------------------------------------------------------------
    def announce(self) -> None:
        """Say loudly, once at start, what mode actions are in."""
        if not self.cfg.enabled:
            logger.warning("remedial actions are OFF (actions.enabled: false): nothing will be captured or scaled")
        elif self.cfg.dry_run:
            logger.warning("remedial actions are in DRY-RUN mode: decisions are logged and audited, nothing is "
                           "done. Set actions.dry_run: false (GUARDIAN_DRY_RUN=false) to let them act.")
        else:
            logger.info("remedial actions are live (emergency capture {}, {} scale target(s))",
                        "on" if self.cfg.capture.enabled else "off", len(self.cfg.scale))

    # -- emergency captures -------------------------------------------------------------------------------
    def after_evaluation(self, snap: Snapshot) -> None:
        """Plan captures from the findings just published and start the ones the guards let through."""
        leader = self.leadership.is_leader()
        if not leader:
            return  # the leader decides and audits; a follower would only repeat it
        paused = self.paused()
        for intent in plan_captures(snap.databases, self.databases, self.cfg):
            if self.closing.is_set():
                return  # decided during the shutdown: nothing would carry it out
            decision = self._decide_capture(intent, snap, paused)
            if decision.go:
                self._submit(decision)
            else:
                self.runner.note(decision)

    def _decide_capture(self, intent: Intent, snap: Snapshot, paused: str | None, leader: bool = True,
                        include_self: bool = True) -> Decision:
        """The guards' verdict on a capture. `include_self` False is the recheck of a capture about to run
        (its own queue entry is not "another capture running")."""
        name = intent.target
        cfg = self.databases[name]
        try:
            history = self.runner.history("capture", name, max(self.cfg.capture.cooldown, timedelta(hours=24)))
        except GuardianError as exc:
            return Decision(intent, "skipped_unavailable", f"action history unavailable, not deciding blind: {exc} "
                            f"(wanted to {intent.describe}: {intent.reason})")
        running_here = self.own.capturing(name) or (include_self and (
            self.runner.running_here("capture", name) or ("capture", name) in self._queued))
        facts = capture_facts(snap.databases[name], cfg, self.cfg, history, self.clock(), leader=leader,
                              paused=paused, running_here=running_here)
        return self.gate.decide(MANUAL_CAPTURE if intent.manual else EMERGENCY_CAPTURE, intent, base=facts)

    def _submit(self, decision: Decision) -> None:
        key = (decision.intent.action, decision.intent.target)
        with self._lock:
            if key in self._queued:
                return
            self._queued.add(key)
        future = self._pool.submit(self._run_capture, decision)
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()] + [future]

    def wait(self, timeout: float) -> bool:
        """Wait for the actions started so far (the CLI and tests); True when all ended within `timeout`."""
        with self._lock:
            pending = list(self._futures)
        _done, not_done = concurrent.futures.wait(pending, timeout)
        return not not_done

    def _run_capture(self, decision: Decision) -> Outcome | None:
        key = (decision.intent.action, decision.intent.target)
        if self.closing.is_set():  # queued before the shutdown: it never starts, so it records nothing
            with self._lock:
                self._queued.discard(key)
            return None
        try:
            return self.capture(decision)
        except Exception as exc:  # the pool's future is never read: say it here, in the log and the audit
            logger.opt(exception=exc).error("capture of {} crashed", decision.intent.target)
            self.runner.note(Decision(decision.intent, "failed", f"crashed: {type(exc).__name__}: {exc}"))
            return None
        finally:
            with self._lock:
                self._queued.discard(key)

    def _recheck(self, intent: Intent) -> Decision:
        """The guards again, under the action's cross-process lock, right before it runs: a pause, a lost
        leadership, or another replica's capture since the first decision stops it here."""
        leader = True if intent.manual else self.leadership.elect()
        return self._decide_capture(intent, self.holder.current(), self.paused(), leader=leader,
                                    include_self=False)

    def capture(self, decision: Decision) -> Outcome | None:
        """Execute a capture decision: the source is asked once more whether a capture runs, then it goes."""
        name = decision.intent.target
        cfg = self.databases[name]
        recheck = partial(self._recheck, decision.intent)
        if capture_source(cfg) == SOURCE_HEROKU:
            watcher = self.heroku.fleet.watchers[name] if self.heroku.fleet is not None else None
            if watcher is None or watcher.resolved is None or self.heroku.api is None:
                self.runner.note(Decision(decision.intent, "failed", "the Heroku database is not resolved yet "
                                          f"(no successful poll so far): {decision.reason}"))
                return None
            try:
                transfers = self.heroku.api.list_transfers(watcher.resolved.billing_app)
            except GuardianError as exc:
                self.runner.note(Decision(decision.intent, "failed", f"cannot ask Heroku whether a capture runs: "
                                          f"{exc}"))
                return None
            running = running_capture(transfers, watcher.from_names, self.clock())
            if running is not None:
                self.runner.note(Decision(decision.intent, "skipped_running",
                                          f"already running at Heroku: {running} ({decision.reason})"))
                return None
            return self.runner.execute(decision, lambda _id: self._capture_heroku(name, transfers), recheck)
        kind = "manual" if decision.intent.manual else "emergency"
        return self.runner.execute(decision, lambda _id: self._capture_self(name, kind), recheck)

    def _capture_self(self, name: str, kind: str) -> Outcome:
        ok, detail = self.own.capture(name, kind=kind, lock=False)  # the runner holds capture:<name> already
        return Outcome(ok, detail)

    def _capture_heroku(self, name: str, transfers: list[dict[str, Any]]) -> Outcome:
        assert self.heroku.fleet is not None and self.heroku.api is not None
        watcher = self.heroku.fleet.watchers[name]
        db = watcher.resolved
        assert db is not None
        details: dict[str, Any] = {}
        expiring = expiring_backup(transfers, watcher.from_names)
        if expiring.limit is None and expiring.held:
            details["expiry"] = (f"manual backup limit unknown (Heroku gave no num_keep for the {expiring.held} "
                                 "manual backups): this capture may expire the oldest one")
        if expiring.backup_id is not None:
            details["expires"] = expiring.backup_id
            details["expiry"] = self._protect(name, db.billing_app, expiring.backup_id, expiring.limit)
        follower = HerokuCapture(self.heroku.api, self.clock, self.closing,
                                 self.cfg.capture.poll_interval, self.cfg.capture.timeout)
        transfer = follower.start(db.addon_id)
        backup_id = transfer_name(transfer)
        details["backup_id"] = backup_id
        logger.info("capture {} of {} started at Heroku; following it", backup_id, name)
        try:
            final = follower.follow(db.billing_app, transfer)
        except StoppedByShutdown as exc:  # the capture goes on at Heroku: this execution did not end
            return Outcome(False, str(exc), details, interrupted=True)
        except CaptureError as exc:
            return Outcome(False, str(exc), details)
        finally:
            self.own.refresh_heroku(name)
        if final.get("succeeded"):
            size = final.get("processed_bytes")
            return Outcome(True, f"capture {backup_id} succeeded ({size} bytes)", details)
        return Outcome(False, failure_text(final), details)

    def _protect(self, name: str, app: str, backup_id: str, limit: int | None) -> str:
        """Make sure the manual backup the capture will expire is archived; say what happened."""
        held = self.holder.current().databases[name].sources.get(SOURCE_ARCHIVE)
        cfg = self.databases[name]
        if not self.archive.covers(cfg) or self.mirror is None:
            return (f"{backup_id} will expire at Heroku (manual limit {limit} reached) and no archive is "
                    "configured to keep a copy")
        if held is not None and any(b.backup_id == backup_id and b.succeeded for b in held.backups):
            return f"{backup_id} will expire at Heroku (manual limit {limit} reached); it is already archived"
        src = self.holder.current().databases[name].sources.get(SOURCE_HEROKU)
        backup = next((b for b in (src.backups if src else ()) if b.backup_id == backup_id), None)
        if backup is None:
            return f"{backup_id} will expire at Heroku and could not be archived first: not in the last poll"
        if transfer_num(backup_id) is None:
            return (f"{backup_id} will expire at Heroku and could not be archived first: a legacy name carries no "
                    "transfer number to download it by")
        try:
            self.mirror.mirror(name, app, backup)
        except Exception as exc:  # any failure here is said in the audit record; the capture still goes
            return f"{backup_id} will expire at Heroku and could not be archived first: {exc}"
        finally:
            self.own.reread(name)
        return f"{backup_id} will expire at Heroku (manual limit {limit} reached); archived it first"

    def request_capture(self, name: str, reason: str) -> Decision:
        """A person's capture request (the CLI): the same guards, run now in this thread."""
        snap = self.holder.current()
        intent = Intent("capture", name, reason, triggers=("manual",), manual=True, requested_by=person())
        decision = self._decide_capture(intent, snap, self.paused(), leader=True)
        if not decision.go:
            self.runner.note(decision)
            return decision
        outcome = self.capture(decision)
        if outcome is None:
            return Decision(intent, "skipped_running", "a capture is already running")
        return Decision(intent, outcome.outcome, outcome.detail)

    def cancel_queued(self) -> None:
        """At shutdown: cancel the captures waiting for a worker (they never start); running ones go on
        until the shutdown stops their children."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.cancel_queued()
