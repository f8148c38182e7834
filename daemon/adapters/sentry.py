"""Telling people: Sentry events when a finding opens (and reminders while it stays open), Sentry Crons
check-ins for "healthy again", the guardian's jobs and its own heartbeat. Without a DSN, the same state changes
go to the log.

Why check-ins and not a "resolved" event: an event sent with the same fingerprint after a person resolved the
issue reopens it as a regression. So the per-database freshness monitor gets `error` check-ins while the RPO is
breached and `ok` once it is met again; Sentry closes the monitor's incident on `ok`.

Loguru's Sentry integration is configured to record breadcrumbs only (no events), so an error log line never
becomes a second report of something the notifier already sent on purpose. Every event is scrubbed of secrets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from loguru import logger

from daemon import __version__
from daemon.adapters.statestore.records import FindingEvent
from daemon.config import NotificationsConfig, SentryConfig
from daemon.core.errors import GuardianError
from daemon.core.policy import STANDING, data_at_risk_seconds, format_duration_s, newest_good_backup
from daemon.core.redact import REDACTOR, redact_tree
from daemon.core.snapshot import DatabaseState, Finding

if TYPE_CHECKING:
    from daemon.adapters.statestore import StateStore

CHECKIN_EVERY = timedelta(minutes=5)


def slug(text: str) -> str:
    """A Sentry monitor slug: lowercase letters, digits, dashes, at most 50; a long one keeps a hash of the whole
    text so two databases never share a monitor."""
    plain = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "database"
    if len(plain) <= 50:
        return plain
    return f"{plain[:41].rstrip('-')}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


class Notifier(Protocol):
    """Where findings and job outcomes go. Never raises: telling people must not break watching."""

    def on_evaluation(self, databases: dict[str, DatabaseState], now: datetime) -> None: ...

    def job_started(self, job: str, schedule: dict[str, Any] | None = None) -> str | None: ...

    def job_finished(self, job: str, token: str | None, ok: bool, seconds: float) -> None: ...

    def heartbeat(self, now: datetime) -> None: ...

    def close(self) -> None: ...


class FindingSink(Protocol):
    """Another place told of the tracker's transitions (e.g. daemon.adapters.notify.AppriseNotifier). Never
    raises, never blocks for long."""

    def told(self, databases: dict[str, DatabaseState], opened: list[Finding], remind: list[Finding],
             closed: list[str], now: datetime) -> None: ...

    def close(self) -> None: ...


#: Checks that describe a standing condition of the configuration, not an incident: said once when they
#: open, then reminded at most this often (an RPO the schedule cannot meet is one ticket, not a daily alarm).
STANDING_REMINDER: dict[str, timedelta] = {check: timedelta(days=30) for check in STANDING}


class FindingTracker:
    """Which findings are open, since when, and when they were last told (persisted, so a restart does not
    repeat every open finding).

    Hysteresis against flapping: a finding that stops being active is *closing*, not closed, for `flap_window`.
    If it comes back within the window it is the same incident (no new open, its reminder clock goes on); only
    after it stayed inactive for the whole window is it closed (and announced as such). A zero window closes at
    once.

    With a state store, every transition is also appended to the finding history (opened; resolved, at the
    moment it stopped being active; notified, by `record_told`), which `backup-guardian timeline` reads; entries
    older than `history_keep` are deleted as new ones are written."""

    def __init__(self, path: Path | None, reminder: timedelta, store: StateStore | None = None,
                 flap_window: timedelta = timedelta(0), history_keep: timedelta = timedelta(days=400)) -> None:
        self.path = path
        self.store = store  # the state store, when there is one (the file is the older way)
        self.history_keep = history_keep
        self.scope: set[str] | None = None  # the databases this guardian owns (shard groups share a store)
        self.reminder = reminder
        self.flap_window = flap_window
        self.open: dict[str, dict[str, str]] = self._load()
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict[str, str]]:
        if self.store is not None:
            try:
                return self.store.load_findings()
            except GuardianError as exc:
                logger.warning("finding states unreadable ({}); open findings will be told again", exc)
                return {}
        if self.path is None:
            return {}
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def reload(self) -> None:
        """Read the persisted states again (a replica that becomes leader takes over what the old one told)."""
        with self._lock:
            self.open = self._load()

    def save(self) -> None:
        if self.store is not None:
            try:
                self.store.save_findings(dict(self.open), self.scope)
            except GuardianError as exc:
                logger.warning("cannot save finding states: {}", exc)
            return
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.open, indent=1, sort_keys=True))
            tmp.replace(self.path)
        except OSError as exc:
            logger.warning("cannot save finding states to {}: {}", self.path, exc.strerror)

    def changes(self, findings: list[Finding], now: datetime) -> tuple[list[Finding], list[Finding], list[str]]:
        """(opened, reminders due, closed keys) for this evaluation; updates the state. Thread-safe."""
        with self._lock:
            return self._changes(findings, now)

    def _changes(self, findings: list[Finding], now: datetime) -> tuple[list[Finding], list[Finding], list[str]]:
        opened, remind, active = [], [], set()
        changed = False
        history: list[FindingEvent] = []
        for f in findings:
            if not f.active:
                continue
            key = f"{f.database}\x1f{f.check}"
            active.add(key)
            state = self.open.get(key)
            if state is None:
                self.open[key] = {"opened_at": now.isoformat(), "told_at": now.isoformat(), "severity": f.severity}
                opened.append(f)
                history.append(_event(now, f.database, f.check, "opened", f.severity, f.hint))
            elif "closed_at" in state:  # back within the flap window: the same incident, told already
                del state["closed_at"]
                changed = True
            elif now - datetime.fromisoformat(state["told_at"]) >= max(self.reminder,
                                                                       STANDING_REMINDER.get(f.check, self.reminder)):
                state["told_at"] = now.isoformat()
                remind.append(f)
        databases = {f.database for f in findings}
        closed = []
        for key, state in list(self.open.items()):
            if key.split("\x1f")[0] not in databases or key in active:
                continue
            if "closed_at" not in state:
                state["closed_at"] = now.isoformat()
                changed = True
            if now - datetime.fromisoformat(state["closed_at"]) >= self.flap_window:
                del self.open[key]
                closed.append(key)
                history.append(_resolved_event(key, state))
        if opened or remind or closed or changed:
            self.save()
        self._record(history, now)
        return opened, remind, closed

    def record_told(self, opened: list[Finding], remind: list[Finding], closed: list[str], channels: list[str],
                    now: datetime) -> None:
        """Append to the finding history who was told of this evaluation's transitions: one "notified" entry
        per finding and transition, naming the channels (e.g. "log", "sentry", "slack"), never an address."""
        told = [(f.database, f.check, f.severity, "opened") for f in opened]
        told += [(f.database, f.check, f.severity, "reminder") for f in remind]
        for key in closed:
            database, check = key.split("\x1f", 1)
            told.append((database, check, "", "resolved"))
        self._record([_event(now, db, check, "notified", severity, "",
                             {"transition": transition, "channels": channels})
                      for db, check, severity, transition in told], now)

    def _record(self, events: list[FindingEvent], now: datetime) -> None:
        """Append `events` to the finding history and prune it; a store failure is logged, never raised."""
        if self.store is None or not events:
            return
        try:
            self.store.add_finding_events(events, prune_before=now - self.history_keep)
        except GuardianError as exc:
            logger.warning("finding history not recorded: {}", exc)

    def holds(self, database: str, check: str) -> bool:
        """True while the finding is open or closing (inactive for less than the flap window): what a
        monitor check-in must still call an error, so a flap never closes and reopens an incident."""
        with self._lock:
            return f"{database}\x1f{check}" in self.open


def _event(now: datetime, database: str, check: str, kind: str, severity: str, hint: str,
           details: dict[str, Any] | None = None) -> FindingEvent:
    return FindingEvent(now, database, check, kind, severity, REDACTOR(hint), details or {})


def _resolved_event(key: str, state: dict[str, str]) -> FindingEvent:
    """The "resolved" entry of a closed finding, dated when it stopped being active (not when the flap window
    ended), with how long it was open."""
    database, check = key.split("\x1f", 1)
    ended = datetime.fromisoformat(state["closed_at"])
    details: dict[str, Any] = {}
    if "opened_at" in state:
        details["open_seconds"] = round((ended - datetime.fromisoformat(state["opened_at"])).total_seconds())
    return _event(ended, database, check, "resolved", state.get("severity", ""), "", details)


class LogNotifier:
    """No Sentry: state changes of findings go to the log, once each (and reminders). `quiet` (one-shot
    commands that print their own table) tells nothing and keeps no state."""

    channel = "log"  # how this notifier tells people, as the finding history names it

    def __init__(self, tracker: FindingTracker, quiet: bool = False) -> None:
        self.tracker = tracker
        self.quiet = quiet
        self.sinks: list[FindingSink] = []  # told the same transitions (the tracker is asked once)

    def on_evaluation(self, databases: dict[str, DatabaseState], now: datetime) -> None:
        if self.quiet:
            return
        findings = [f for db in databases.values() for f in db.findings]
        opened, remind, closed = self.tracker.changes(findings, now)
        for f in opened:
            logger.log("ERROR" if f.severity == "critical" else "WARNING", "{} on {}: {}", f.check, f.database,
                       f.hint)
        for f in remind:
            logger.warning("still open: {} on {}: {}", f.check, f.database, f.hint)
        for key in closed:
            database, check = key.split("\x1f")
            logger.info("resolved: {} on {}", check, database)
        self._tell_sinks(databases, opened, remind, closed, now)

    def _tell_sinks(self, databases: dict[str, DatabaseState], opened: list[Finding], remind: list[Finding],
                    closed: list[str], now: datetime) -> None:
        """Tell every sink, then record in the finding history who was told (this notifier and the sinks)."""
        channels = [self.channel]
        for sink in self.sinks:
            try:
                sink.told(databases, opened, remind, closed, now)
            except Exception as exc:  # telling people must not break watching
                logger.warning("notification sink failed: {}", REDACTOR(str(exc)))
                continue  # not told: not named
            channels += [c for c in getattr(sink, "channels", lambda: [])() if c not in channels]
        if opened or remind or closed:
            self.tracker.record_told(opened, remind, closed, channels, now)

    def job_started(self, job: str, schedule: dict[str, Any] | None = None) -> str | None:
        return None

    def job_finished(self, job: str, token: str | None, ok: bool, seconds: float) -> None:
        return None

    def heartbeat(self, now: datetime) -> None:
        return None

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class SentryNotifier(LogNotifier):
    """Findings as Sentry events (on open, and as reminders), freshness and job monitors as Crons check-ins."""

    channel = "sentry"

    def __init__(self, dsn: str, tracker: FindingTracker, environment: str = "production",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(tracker)
        import sentry_sdk  # imported only when a DSN is configured
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.integrations.loguru import LoggingLevels, LoguruIntegration

        REDACTOR.add(dsn)
        REDACTOR.add_url(dsn)
        self.sdk = sentry_sdk
        self.clock = clock
        self._lock = threading.Lock()
        self._checkins: dict[str, tuple[str, datetime]] = {}  # monitor -> (last status, when)
        sentry_sdk.init(
            dsn=dsn, environment=environment, release=f"pg-backup-guardian@{__version__}",
            traces_sample_rate=0.0,
            before_send=_scrub, before_breadcrumb=_scrub_crumb,  # type: ignore[arg-type]
            integrations=[
                # breadcrumbs from logs, never events: the notifier reports on purpose, once
                LoguruIntegration(level=LoggingLevels.INFO.value, event_level=None),
                LoggingIntegration(level=logging.INFO, event_level=None),
            ],
        )

    # -- findings -----------------------------------------------------------------------------------------
    def on_evaluation(self, databases: dict[str, DatabaseState], now: datetime) -> None:
        findings = [f for db in databases.values() for f in db.findings]
        opened, remind, closed = self.tracker.changes(findings, now)
        for f in opened:
            self._event(databases[f.database], f, reminder=False)
        for f in remind:
            self._event(databases[f.database], f, reminder=True)
        for key in closed:
            database, check = key.split("\x1f")
            logger.info("resolved: {} on {}", check, database)
        self._tell_sinks(databases, opened, remind, closed, now)
        for name, db in databases.items():
            breached = self.tracker.holds(name, "rpo_breach")  # open, or closed for less than the flap window
            if db.evaluated_at is not None and db.sources:
                self._checkin(f"pgbackup-rpo-{slug(name)}", "error" if breached else "ok", now,
                              {"schedule": {"type": "interval", "value": 5, "unit": "minute"},
                               "checkin_margin": 10, "max_runtime": 5})

    def _event(self, db: DatabaseState, f: Finding, reminder: bool) -> None:
        newest = newest_good_backup(db)
        risk = data_at_risk_seconds(db, f.observed_at)
        source = newest.source if newest is not None else next(iter(db.sources), "none")
        level: Literal["error", "warning"] = "error" if f.severity == "critical" else "warning"
        prefix = "Still open: " if reminder else ""
        try:
            with self.sdk.new_scope() as scope:
                scope.fingerprint = ["pg-backup-guardian", f.database, f.check]
                scope.set_level(level)
                scope.set_tag("database", f.database)
                scope.set_tag("check", f.check)
                scope.set_tag("source", source)
                scope.set_tag("severity", f.severity)
                scope.set_tag("reminder", "yes" if reminder else "no")
                scope.set_context("backup", {
                    "data_at_risk_seconds": risk,
                    "data_at_risk": format_duration_s(risk) if risk is not None else None,
                    "rpo_seconds": db.rpo_seconds,
                    "newest_good_backup": newest.backup_id if newest else None,
                    "recovery_point": newest.recovery_point.isoformat() if newest else None,
                    "value": f.value, "threshold": f.threshold,
                })
                self.sdk.capture_message(f"{prefix}{f.check} on {f.database}: {f.hint}", level=level)
        except Exception as exc:  # telling people must not break watching
            logger.warning("Sentry event not sent: {}", exc)

    # -- check-ins ----------------------------------------------------------------------------------------
    def _checkin(self, monitor: str, status: str, now: datetime, config: dict[str, Any]) -> None:
        """Send on a status change at once, otherwise every CHECKIN_EVERY."""
        with self._lock:
            last = self._checkins.get(monitor)
            if last is not None and last[0] == status and now - last[1] < CHECKIN_EVERY:
                return
            self._checkins[monitor] = (status, now)
        try:
            from sentry_sdk.crons import capture_checkin

            capture_checkin(monitor_slug=monitor, status=status, monitor_config=config)  # type: ignore[arg-type]
        except Exception as exc:
            logger.warning("Sentry check-in not sent: {}", exc)

    def job_started(self, job: str, schedule: dict[str, Any] | None = None) -> str | None:
        """`schedule` (a Sentry monitor_config) makes Sentry create the monitor and notice missed runs."""
        try:
            from sentry_sdk.crons import capture_checkin

            return capture_checkin(monitor_slug=slug(f"pgbackup-{job}"), status="in_progress",
                                   monitor_config=schedule)  # type: ignore[arg-type]
        except Exception:
            return None

    def job_finished(self, job: str, token: str | None, ok: bool, seconds: float) -> None:
        try:
            from sentry_sdk.crons import capture_checkin

            capture_checkin(monitor_slug=slug(f"pgbackup-{job}"), check_in_id=token,
                            status="ok" if ok else "error", duration=seconds)
        except Exception as exc:
            logger.warning("Sentry check-in not sent: {}", exc)

    def heartbeat(self, now: datetime) -> None:
        self._checkin("pgbackup-guardian", "ok", now,
                      {"schedule": {"type": "interval", "value": 5, "unit": "minute"}, "checkin_margin": 5,
                       "max_runtime": 1})

    def close(self) -> None:
        """Flush what is queued (the last step of the ordered shutdown) and close the client."""
        super().close()
        try:
            self.sdk.flush(timeout=3)
            self.sdk.get_client().close(timeout=2)
        except Exception:
            return


def _scrub(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """No secret leaves in an event: every string passes the redactor."""
    return redact_tree(event)


def _scrub_crumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    return redact_tree(crumb)


def make_notifier(sentry: SentryConfig, state_dir: Path, clock: Callable[[], datetime], quiet: bool = False,
                  store: StateStore | None = None, scope: set[str] | None = None,
                  notifications: NotificationsConfig | None = None,
                  history_keep: timedelta = timedelta(days=400)) -> LogNotifier:
    """Sentry when a DSN is configured, else the log; plus Apprise messages when `notifications` has URLs (the
    same tracker's transitions); `quiet` (one-shot commands): the log only, no tracker file. `scope`: the
    databases this replica group watches (the tracker leaves others' findings alone); `history_keep`: how long
    the finding history is kept."""
    if quiet:
        notifier = LogNotifier(FindingTracker(None, sentry.reminder), quiet=True)
    else:
        tracker = FindingTracker(None if store is not None else state_dir / "findings.json", sentry.reminder, store,
                                 sentry.flap_window, history_keep)
        notifier = SentryNotifier(sentry.dsn.get_secret_value(), tracker, sentry.environment, clock) if sentry.dsn \
            else LogNotifier(tracker)
    if scope is not None:
        notifier.tracker.scope = scope
    if not quiet and notifications is not None and notifications.urls:
        from daemon.adapters.notify import AppriseNotifier

        notifier.sinks.append(AppriseNotifier([u.get_secret_value() for u in notifications.urls],
                                              notifications.digest_time))
    return notifier
