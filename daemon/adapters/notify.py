"""Telling people where the team already is: Slack, Teams, email, Telegram, Discord, PagerDuty, webhooks, through
Apprise URLs (`notifications.urls`).

Design: the one `FindingTracker` of the notifier (daemon.adapters.sentry) decides what changed; the log or Sentry
notifier asks it once per evaluation and passes the same transitions (opened, reminders due, closed) to every
attached sink, of which `AppriseNotifier` is one. So Sentry and Apprise, both configured, tell the same
incidents at the same moments, a flap inside the flap window is silent for both, and asking the tracker twice
(which would give the second asker nothing) cannot happen.

Batching: per evaluation and per database, one message for what opened, one for reminders due, one for what
resolved (a database whose five checks open at once gets one message listing five, not five messages).

Sending never blocks the evaluation: messages go to a bounded queue read by one background thread; Apprise's
own socket timeouts bound each call. A failed send is logged (the service's scheme only, never its URL) and
dropped; the next transition is sent afresh. Nothing here raises into the caller.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from loguru import logger

from daemon import __version__
from daemon.core.check_guide import title as title_of
from daemon.core.policy import data_at_risk_seconds, format_duration_s
from daemon.core.redact import REDACTOR
from daemon.core.snapshot import DatabaseState, Finding

QUEUE_SIZE = 100  # messages waiting to be sent; beyond this a burst is dropped (logged), never blocking
CLOSE_WAIT_S = 10.0  # how long shutdown waits for queued messages


@dataclass(frozen=True)
class Message:
    """One message to every configured URL. `kind` is Apprise's notify type (info, success, warning, failure)."""

    title: str
    body: str
    kind: str


class AppriseNotifier:
    """Sends finding transitions (and the optional daily digest) to Apprise URLs, in the background.

    `urls` are the endpoints (secrets: only their schemes are ever logged); `digest` the UTC time of day of the
    daily digest, or None."""

    def __init__(self, urls: Iterable[str], digest: time | None = None) -> None:
        import apprise  # imported only when URLs are configured

        self.targets: list[tuple[str, Any]] = []  # (scheme, Apprise object holding one URL)
        for url in urls:
            REDACTOR.add(url)
            one = apprise.Apprise()
            if one.add(url):
                self.targets.append((url.split("://", 1)[0], one))
            else:  # the config checks every URL: this is only a guard
                logger.warning("notification URL not usable ({}://...)", url.split("://", 1)[0])
        self.digest = digest
        self._digest_sent: date | None = None
        self._digest_seen = False
        self._queue: queue.Queue[Message | None] = queue.Queue(QUEUE_SIZE)
        self._worker = threading.Thread(target=self._run, name="apprise-notifier", daemon=True)
        self._worker.start()

    def channels(self) -> list[str]:
        """The services told, by URL scheme (e.g. "slack", "mailto"): what the finding history records, never
        the URLs themselves (they hold tokens)."""
        return sorted({scheme for scheme, _ in self.targets})

    # -- what to say --------------------------------------------------------------------------------------
    def told(self, databases: dict[str, DatabaseState], opened: list[Finding], remind: list[Finding],
             closed: list[str], now: datetime) -> None:
        """The tracker's transitions of one evaluation: queue one message per database and kind of change."""
        for name, group in _by_database(opened).items():
            self._put(_message(databases.get(name), name, group, "", now))
        for name, group in _by_database(remind).items():
            self._put(_message(databases.get(name), name, group, "Still open: ", now))
        resolved: dict[str, list[str]] = {}
        for key in closed:
            database, check = key.split("\x1f")
            resolved.setdefault(database, []).append(check)
        for name, checks in resolved.items():
            self._put(_resolved(name, checks))
        self._maybe_digest(databases, now)

    def _maybe_digest(self, databases: dict[str, DatabaseState], now: datetime) -> None:
        """Once a day, at the first evaluation past the digest time. A guardian started after today's time
        waits for tomorrow's (a restart does not send a second digest)."""
        if self.digest is None:
            return
        due = datetime.combine(now.date(), self.digest)
        if not self._digest_seen:  # the first evaluation: today's digest counts as sent if its time is past
            self._digest_seen = True
            self._digest_sent = now.date() if now >= due else None
        if now >= due and self._digest_sent != now.date():
            self._digest_sent = now.date()
            self._put(digest_message(databases, now))

    # -- sending ------------------------------------------------------------------------------------------
    def _put(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            logger.warning("notification dropped, {} already waiting: {}", QUEUE_SIZE, message.title)

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            try:
                for scheme, target in self.targets:
                    self._send(scheme, target, message)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def flush(self, timeout: float = CLOSE_WAIT_S) -> bool:
        """Wait until every queued message was sent (or failed); False if that took longer than `timeout`."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout)

    def _send(self, scheme: str, target: Any, message: Message) -> None:
        """One message to one URL; a failure is logged by scheme (never the URL) and not retried."""
        try:
            ok = target.notify(title=message.title, body=message.body, notify_type=message.kind)
        except Exception as exc:  # a plugin's bug must not end the sender thread
            logger.warning("notification to {}:// not sent ({}): {}", scheme, type(exc).__name__,
                           REDACTOR(str(exc)))
            return
        if not ok:
            logger.warning("notification to {}:// not sent (the service refused it or did not answer): {}",
                           scheme, message.title)

    def close(self) -> None:
        """Send what is queued (waiting at most CLOSE_WAIT_S), then stop the sender."""
        try:
            self._queue.put(None, timeout=CLOSE_WAIT_S)
        except queue.Full:
            return
        self._worker.join(timeout=CLOSE_WAIT_S)


def _by_database(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.database, []).append(f)
    return out


_RANK = {"critical": 0, "warning": 1, "info": 2}


def _message(db: DatabaseState | None, name: str, findings: list[Finding], prefix: str, now: datetime) -> Message:
    """`[CRITICAL] shop: Data at risk is past the RPO` (`(+2 more)` when several opened together), then every
    finding's hint, value and threshold, the database, its data at risk and the guardian's version."""
    findings = sorted(findings, key=lambda f: _RANK.get(f.severity, 3))  # the gravest leads the title
    severity = findings[0].severity
    more = f" (+{len(findings) - 1} more)" if len(findings) > 1 else ""
    what = f"{title_of(findings[0].check)}{more}"
    lines = []
    for f in findings:
        lines.append(f"{title_of(f.check)} ({f.check}, {f.severity}): {f.hint}")
        if f.value is not None or f.threshold is not None:
            lines.append(f"  value: {_number(f.value)}, threshold: {_number(f.threshold)}")
    lines += _footer(db, name, now)
    kind = "failure" if severity == "critical" else "warning"
    return Message(f"[{severity.upper()}] {prefix}{name}: {what}", "\n".join(lines), kind)


def _resolved(name: str, checks: list[str]) -> Message:
    what = title_of(checks[0]) + (f" (+{len(checks) - 1} more)" if len(checks) > 1 else "")
    body = [f"Resolved: {title_of(c)} ({c})" for c in checks]
    return Message(f"[RESOLVED] {name}: {what}", "\n".join([*body, f"pg-backup-guardian {__version__}"]),
                   "success")


def digest_message(databases: dict[str, DatabaseState], now: datetime) -> Message:
    """Every database's state: its open findings and its data at risk."""
    lines, troubled = [], 0
    for name in sorted(databases):
        db = databases[name]
        active = [f for f in db.findings if f.active]
        troubled += bool(active)
        lines.append(f"{name}: {_risk_text(db, now)}; " + (
            ", ".join(f"{f.check} ({f.severity})" for f in active) if active else "no open finding"))
    lines.append(f"pg-backup-guardian {__version__}")
    plural = "" if len(databases) == 1 else "s"
    title = f"[DIGEST] {len(databases)} database{plural}, {troubled} with open findings"
    return Message(title, "\n".join(lines), "warning" if troubled else "info")


def _footer(db: DatabaseState | None, name: str, now: datetime) -> list[str]:
    rpo = f", RPO {format_duration_s(db.rpo_seconds)}" if db is not None else ""
    risk = _risk_text(db, now) if db is not None else "data at risk unknown"
    return [f"Database: {name} ({risk}{rpo})", f"pg-backup-guardian {__version__}"]


def _risk_text(db: DatabaseState, now: datetime) -> str:
    risk = data_at_risk_seconds(db, now)
    return "no good backup" if risk is None else f"data at risk {format_duration_s(risk)}"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
