"""The incident timeline: what the guardian recorded in a window, as one list of events, oldest first, for the
post-incident review of the SuoOps backup and recovery procedures ("document the timeline of events").

Sources, all read from the state store (shared by the daemon and the commands; read while the daemon runs or
not) and, when the archive is a local directory, from the archive's records (a bucket would need the network,
which the timeline never does):
- the finding history: findings opened and resolved, and who was told (kind `notified`, channel names only);
- the audit log: every action decided, taken or declined (captures, mirrors, prunes, drills, scaling, pause);
- the drill history: each restore drill and its verdict;
- the archive records: each backup attempt the archive holds (the guardian's captures and mirror copies);
- `EventSource`s given by the caller: provider incidents (`ProviderIncidents`: what the Heroku status poller
  recorded in the state store's provider history).

Every summary and detail passes the redactor: a URL, password or token never reaches the output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger

from daemon.core.check_guide import title
from daemon.core.durations import format_duration
from daemon.core.errors import GuardianError
from daemon.core.provider import RESOLVED, ProviderEvent, event_text
from daemon.core.redact import REDACTOR

if TYPE_CHECKING:
    from daemon.adapters.archive.records import BackupRecord
    from daemon.adapters.archive.store import ArchiveStore
    from daemon.adapters.statestore import FindingEvent, StateStore

#: The kinds of event; events of the same instant are listed in this order (cause before effect: a provider
#: incident, a backup's outcome, a drill, then the findings they open or resolve, who was told, what was done).
KINDS = ("provider", "backup", "drill", "finding_opened", "finding_resolved", "notified", "action")
#: The `database` of an event that concerns every database (e.g. `actions pause`).
EVERY_DATABASE = "all"
#: The `database` of a provider incident: the provider's, not one database's (it is listed with the databases
#: that depend on the provider, see `ProviderIncidents`).
PROVIDER_WIDE = ""
_SINCE = re.compile(r"\s*(\d+)\s*([mhdw])\s*")
_UNIT = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class TimelineEvent:
    """One thing that happened: when (aware UTC), to which database, what kind (`KINDS`), a one-line summary and
    the detail a reviewer may need (already redacted)."""

    time: datetime
    database: str
    kind: str
    summary: str
    detail: str = ""

    def to_json(self) -> dict[str, str]:
        return {"time": self.time.astimezone(UTC).isoformat(), "database": self.database, "kind": self.kind,
                "summary": self.summary, "detail": self.detail}


class EventSource(Protocol):
    """A further source of timeline events: the hook for provider incidents (e.g. a Heroku status poller's
    recorded incidents, kind "provider"). `events` returns the events at or after `since` (of `database`
    only, when given; events about every database use EVERY_DATABASE), reads no network and raises only
    GuardianError (the timeline then says the source was unavailable and goes on)."""

    name: str

    def events(self, since: datetime, database: str | None) -> list[TimelineEvent]: ...


def parse_since(text: str, now: datetime) -> datetime:
    """The start of the window: "90m", "48h", "7d", "2w" before `now`, or an ISO-8601 time (a time without an
    offset is UTC). ValueError with a readable message otherwise, or for a start after `now`."""
    m = _SINCE.fullmatch(text.lower())
    if m is not None:
        return now - timedelta(**{_UNIT[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text[:64]!r} is neither a duration (90m, 48h, 7d) nor an ISO time "
                         "(2026-11-30T14:00Z)") from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when > now:
        raise ValueError(f"{text[:64]!r} is in the future")
    return when


@dataclass(frozen=True)
class Timeline:
    """The events of a window (oldest first), the databases it covers and what could not be read."""

    since: datetime
    until: datetime
    databases: list[str]
    events: list[TimelineEvent]
    sources: list[str]
    unavailable: list[str]


def gather(state: StateStore, since: datetime, now: datetime, database: str | None = None,
           configured: Iterable[str] = (), archive: ArchiveStore | None = None,
           extra: Sequence[EventSource] = (), apps: Mapping[str, Collection[str]] | None = None) -> Timeline:
    """Every recorded event from `since` to `now` (of `database` and the guardian-wide ones, when given),
    oldest first. `configured`: the configured database names (audit targets such as "shop/b001" are matched
    to them); `apps`: each Heroku app's databases, so an action on an app ("shop" for a rollback, "shop/web" for a
    scale) is listed in their timelines; `archive`: a store whose records can be read without the network, or
    None. StateStoreError when
    the state store cannot be read; an unreadable archive or extra source is named in `unavailable`."""
    findings = state.finding_history(since, database)
    drills = state.drills_since(since, database)
    known = sorted(set(configured) | {e.database for e in findings} | {str(d.get("database")) for d in drills}
                   | ({database} if database is not None else set()))
    events = [_finding_event(e) for e in findings] + [_drill_event(d) for d in drills]
    apps = apps or {}
    for r in state.audit(since=since):
        e = _audit_event(r, known, apps)
        app = str(r.get("target", "")).split("/", 1)[0]
        if database is None or e.database in (database, EVERY_DATABASE) or (
                e.database == PROVIDER_WIDE and database in apps.get(app, ())):
            events.append(e)
    sources, unavailable = [f"state store {state.describe()}"], []
    if archive is not None:
        try:
            for name in [database] if database is not None else known:
                events += [_backup_event(r) for r in archive.list_records(name)]
            sources.append(f"archive records {archive.describe()}")
        except GuardianError as exc:
            unavailable.append(f"archive records: {exc}")
    for source in extra:
        try:
            events += source.events(since, database)
            sources.append(source.name)
        except GuardianError as exc:
            logger.warning("timeline source {} unavailable: {}", source.name, exc)
            unavailable.append(f"{source.name}: {exc}")
    events = sorted((e for e in events if since <= e.time <= now), key=_order)
    named = {e.database for e in events if e.database not in (EVERY_DATABASE, PROVIDER_WIDE)}
    covered = [database] if database is not None else sorted(set(configured) | named)
    return Timeline(since, now, covered, [_redacted(e) for e in events], sources,
                    [REDACTOR(u) for u in unavailable])


class ProviderIncidents:
    """The provider's incidents as the status poller recorded them (`StateStore.provider_history`): kind
    "provider", database PROVIDER_WIDE (one row per transition, however many databases it concerns). Asked for
    one database, they are listed only when that database is one of `databases` (those that depend on the
    provider: its Heroku-backed databases); a self-managed database's timeline leaves them out."""

    def __init__(self, state: StateStore, provider: str, databases: Collection[str]) -> None:
        self.state = state
        self.provider = provider
        self.databases = set(databases)
        self.name = f"{provider.capitalize()} status incidents"

    def events(self, since: datetime, database: str | None) -> list[TimelineEvent]:
        if database is not None and database not in self.databases:
            return []
        return [_provider_event(e) for e in self.state.provider_history(since, self.provider)]


def _provider_event(e: ProviderEvent) -> TimelineEvent:
    parts = [f"status {e.status}" if e.event != RESOLVED else f"was {e.status}", f"incident {e.incident}"]
    if e.since is not None:
        parts.append(f"began {_stamp(e.since)} UTC")
    if e.event == RESOLVED and e.opened_at is not None:
        parts.append(f"open for {format_duration(e.time - e.opened_at)}")
    if e.url and e.url != e.incident:
        parts.append(e.url)
    return TimelineEvent(e.time, PROVIDER_WIDE, "provider", event_text(e), "; ".join(parts))


def _order(e: TimelineEvent) -> tuple[datetime, int]:
    return e.time, KINDS.index(e.kind) if e.kind in KINDS else len(KINDS)


def _redacted(e: TimelineEvent) -> TimelineEvent:
    return TimelineEvent(e.time, e.database, e.kind, REDACTOR(e.summary), REDACTOR(e.detail))


def _finding_event(e: FindingEvent) -> TimelineEvent:
    severity = f" ({e.severity})" if e.severity else ""
    if e.kind == "opened":
        return TimelineEvent(e.time, e.database, "finding_opened",
                             f"{e.check} opened{severity}: {title(e.check)}", e.hint)
    if e.kind == "resolved":
        seconds = e.details.get("open_seconds")
        detail = f"open for {format_duration(timedelta(seconds=seconds))}" if isinstance(seconds, int) else ""
        return TimelineEvent(e.time, e.database, "finding_resolved", f"{e.check} resolved", detail)
    channels = ", ".join(str(c) for c in e.details.get("channels", [])) or "nobody"
    transition = str(e.details.get("transition", ""))
    return TimelineEvent(e.time, e.database, "notified", f"told {channels}: {e.check} {transition}".rstrip(),
                         f"channels: {channels}")


def _database_of(target: str, known: Sequence[str]) -> str:
    """The database an audit target is about: a known name, or the name before "/<backup>"; "all" stays."""
    matches = [n for n in known if target == n or target.startswith(n + "/")]
    return max(matches, key=len) if matches else target


_SHOWN_DETAILS = ("triggers", "backup_id", "seconds", "requested_by", "by", "tier", "scenario", "kind")


def _audit_event(r: dict[str, Any], known: Sequence[str], apps: Mapping[str, Collection[str]]) -> TimelineEvent:
    """An audit record as an event: of the database its target names, or, for an action on a Heroku app (a
    rollback, a scale change), of no one database (the target is shown)."""
    target = str(r.get("target", ""))
    action, outcome = str(r.get("action", "")), str(r.get("outcome", ""))
    database = _database_of(target, known)
    if database == target and target.split("/", 1)[0] in apps:
        database = PROVIDER_WIDE
    what = f"{action} {outcome}" + (f" ({target})" if target not in (database, EVERY_DATABASE) else "")
    extras = [f"{k}: {_plain(r[k])}" for k in _SHOWN_DETAILS if r.get(k) not in (None, "", [])]
    detail = str(r.get("reason", "")) + (f" [{'; '.join(extras)}]" if extras else "")
    return TimelineEvent(datetime.fromisoformat(str(r["time"])), database, "action", what, detail)


def _plain(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _drill_event(doc: dict[str, Any]) -> TimelineEvent:
    verdict = "succeeded" if doc.get("succeeded") else "FAILED"
    parts = [str(doc.get("reason") or "")]
    if isinstance(doc.get("recovery_seconds"), int | float):
        rto = doc.get("rto_seconds")
        parts.append(f"recovery {doc['recovery_seconds']:.0f} s" + (f" (RTO {rto:.0f} s)" if rto else ""))
    backup = doc.get("backup") or {}
    if backup.get("id"):
        parts.append(f"backup {backup['id']} ({backup.get('source', '?')}, recovery point "
                     f"{backup.get('recovery_point', '?')})")
    return TimelineEvent(datetime.fromisoformat(str(doc["started_at"])), str(doc.get("database", "")), "drill",
                         f"{doc.get('scenario', '?')} restore drill {verdict}", "; ".join(p for p in parts if p))


def _backup_event(r: BackupRecord) -> TimelineEvent:
    if r.origin == "self":
        summary = f"backup {r.backup_id} {r.outcome} ({r.kind}, guardian capture)"
    else:  # a mirror copy: its record keeps the provider's times, so this is when the provider's backup ended
        summary = f"{r.origin} backup {r.backup_id} {r.outcome} ({r.kind}, copied to the archive)"
    if r.outcome == "succeeded":
        detail = (f"recovery point {r.started_at.isoformat(timespec='seconds')}, {r.size_bytes} bytes, "
                  f"{(r.finished_at - r.started_at).total_seconds():.0f} s" + (f", tier {r.tier}" if r.tier else ""))
    else:
        detail = r.error or "no error recorded"
    return TimelineEvent(r.finished_at, r.database, "backup", summary, detail)


# -- output ------------------------------------------------------------------------------------------------

def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cell(text: str) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def markdown(t: Timeline) -> str:
    """The post-incident document's timeline: a header naming the window and the databases, then a table (time
    UTC, database, what, detail), oldest first."""
    lines = [f"## Timeline: {_stamp(t.since)} to {_stamp(t.until)} UTC", "",
             f"Databases: {', '.join(t.databases) or 'none recorded'}  ",
             f"Recorded by pg-backup-guardian ({'; '.join(t.sources)}); {len(t.events)} events, oldest first."]
    lines += [f"Not read: {u}" for u in t.unavailable]
    lines.append("")
    if not t.events:
        return "\n".join([*lines, "Nothing was recorded in this window.", ""])
    lines += ["| Time (UTC) | Database | What | Detail |", "|---|---|---|---|"]
    lines += [f"| {_stamp(e.time)} | {_cell(e.database)} | {_cell(e.summary)} | {_cell(e.detail)} |"
              for e in t.events]
    return "\n".join([*lines, ""])


def as_json(t: Timeline) -> str:
    """The events as a JSON list of {time, database, kind, summary, detail}, oldest first."""
    return json.dumps([e.to_json() for e in t.events], indent=2) + "\n"


TABLE_HEAD = ("TIME (UTC)", "DATABASE", "KIND", "WHAT", "DETAIL")


def table_rows(t: Timeline) -> list[tuple[str, ...]]:
    """The events as rows of TABLE_HEAD (for a terminal)."""
    return [(_stamp(e.time), e.database, e.kind, e.summary, e.detail) for e in t.events]
