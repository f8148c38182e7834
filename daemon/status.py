"""The status document (served at /api/status and printed by `backup-guardian check`).

Built from a snapshot and `now` only; nothing here does I/O or holds a secret (no URLs, only names).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon import __version__
from daemon.core.check_guide import guide
from daemon.core.policy import data_at_risk_seconds, format_duration_s, newest_good_backup
from daemon.core.provider import ProviderStatus, incident_text
from daemon.core.snapshot import Backup, DatabaseState, DrillResult, Snapshot

#: How many UTC days the backup timeline covers, the day of `now` included.
TIMELINE_DAYS = 30


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def backup_doc(b: Backup | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {
        "id": b.backup_id, "source": b.source, "kind": b.kind, "recovery_point": _iso(b.recovery_point),
        "finished_at": _iso(b.finished_at), "succeeded": b.succeeded, "size_bytes": b.size_bytes,
        "duration_seconds": b.duration_seconds, "sha256": b.sha256, "error": b.error,
    }


STALE_AFTER = timedelta(hours=1)


def _stale(db: DatabaseState, source: str, snap: Snapshot | None, now: datetime) -> bool:
    """A source is stale while its collector is down or has not succeeded within its expected interval, or
    when it was last read over an hour ago (a deferred or rate-limited poll): its numbers are the last ones
    known."""
    src = db.sources.get(source)
    if src is not None and src.observed_at is not None and now - src.observed_at > STALE_AFTER:
        return True
    if snap is None:
        return False
    status = snap.collectors.get((source, db.name))
    return status is not None and (not status.up or status.stale(now))


def database_status(db: DatabaseState, now: datetime, snap: Snapshot | None = None) -> dict[str, Any]:
    risk = data_at_risk_seconds(db, now)
    active = [f for f in db.findings if f.active]
    worst = "critical" if any(f.severity == "critical" for f in active) else ("warning" if active else "ok")
    if db.evaluated_at is None or not db.sources or (risk is None and any(
            not s.listed for s in db.sources.values())):
        worst = "unknown"
    newest = newest_good_backup(db)
    breach_at = (newest.recovery_point + timedelta(seconds=db.rpo_seconds + db.rpo_tolerance_seconds)
                 if newest is not None and db.rpo_seconds else None)
    expected = min(db.next_expected.values()) if db.next_expected else None
    return {
        "name": db.name,
        "status": worst,
        "data_at_risk_seconds": risk,
        "data_at_risk": format_duration_s(risk) if risk is not None else None,
        "rpo_seconds": db.rpo_seconds,
        "rto_seconds": db.rto_seconds,
        # a breach begins past the RPO plus the schedule's normal start jitter and capture time
        "rpo_tolerance_seconds": db.rpo_tolerance_seconds,
        "breach_at": _iso(breach_at),
        # when the next good backup is expected to start (its recovery point), per scheduled source
        "next_expected_backup": _iso(expected),
        "next_expected_by_source": {name: _iso(at) for name, at in sorted(db.next_expected.items())},
        "newest_good_backup": backup_doc(newest),
        "sources": {
            name: {
                "stale": _stale(db, name, snap, now),
                "observed_at": _iso(src.observed_at),
                "backups_good": len(src.good),
                "attempts": len(src.backups),
                "in_progress": src.in_progress,
                "last_attempt": backup_doc(src.last_attempt),
                "schedule_interval_seconds": src.schedule_interval_seconds,
                "schedule_next_at": _iso(src.schedule_next_at),
                "schedules": [{"hour": s.hour, "timezone": s.timezone, "name": s.name} for s in src.schedules],
                "backups": [backup_doc(b) for b in reversed(src.backups[-10:])],
            }
            for name, src in db.sources.items()
        },
        "provider": None if db.provider is None else {
            "plan": db.provider.plan, "continuous_protection": db.provider.continuous_protection,
            "rollback_earliest": _iso(db.provider.rollback_earliest), "offers_pitr": db.provider.offers_pitr,
            "family": db.provider.family, "rollback_latest": _iso(db.provider.rollback_latest),
        },
        "live": None if db.live is None else {
            "size_bytes": db.live.size_bytes, "tables": db.live.table_count,
            "server_version": db.live.server_version, "observed_at": _iso(db.live.observed_at),
        },
        "archive": None if db.archive is None else {
            "kind": db.archive.kind,
            "tiers": {tier: {"count": t.count, "newest": _iso(t.newest), "bytes": t.bytes}
                      for tier, t in sorted(db.archive.tiers.items())},
        },
        "drills": [drill_doc(d) for d in db.drills],
        # the newest remedial decisions about this database (taken, declined, dry run), newest first
        "decisions": [{"time": _iso(d.time), "action": d.action, "target": d.target, "outcome": d.outcome,
                       "reason": d.reason}
                      for d in (snap.control.decisions.get(db.name, ()) if snap is not None else ())[::-1]
                      [:DECISIONS_SHOWN]],
        "timeline": backup_timeline(db, now),
        "findings": [
            {"check": f.check, "severity": f.severity, "active": f.active, "hint": f.hint,
             "value": f.value, "threshold": f.threshold, **guide(f.check)}
            for f in db.findings
        ],
        "evaluated_at": _iso(db.evaluated_at),
    }


#: Remedial decisions per database in the status document (and on its card).
DECISIONS_SHOWN = 5


def drill_doc(d: DrillResult) -> dict[str, Any]:
    """The latest drill of one scenario: when, whether it restored, and its recovery time against the RTO."""
    return {"scenario": d.scenario, "started_at": _iso(d.started_at), "succeeded": d.succeeded, "reason": d.reason,
            "recovery_seconds": d.recovery_seconds, "rto_seconds": d.rto_seconds, "checks_failed": d.checks_failed,
            "backup_id": d.backup_id}


def backup_timeline(db: DatabaseState, now: datetime, days: int = TIMELINE_DAYS) -> list[dict[str, Any]]:
    """Backups started per UTC day over the `days` days ending with `now`'s day, oldest first: `good` counts
    those that gave a good backup (succeeded, not found unreadable), `failed` the other attempts. A backup listed
    by several sources under one id (a provider backup and its archived copy) counts once, good if good anywhere."""
    outcome: dict[str, tuple[datetime, bool]] = {}
    for src in db.sources.values():
        good_ids = {b.backup_id for b in src.good}
        for b in src.backups:
            seen = outcome.get(b.backup_id)
            outcome[b.backup_id] = (b.started_at, (seen is not None and seen[1]) or b.backup_id in good_ids)
    last = now.astimezone(UTC).date()
    counts = {last - timedelta(days=i): [0, 0] for i in range(days)}
    for started, good in outcome.values():
        day = counts.get(started.astimezone(UTC).date())
        if day is not None:
            day[0 if good else 1] += 1
    return [{"day": d.isoformat(), "good": counts[d][0], "failed": counts[d][1]} for d in sorted(counts)]


def status_document(snap: Snapshot, now: datetime) -> dict[str, Any]:
    return {
        "version": __version__,
        "generated_at": now.isoformat(),
        "ready": snap.first_collection_done,
        "demo": snap.demo,
        "actions": actions_status(snap),
        "databases": [database_status(db, now, snap) for db in snap.databases.values()],
        "collectors": [
            {"collector": c.collector, "database": c.database, "up": c.up, "stale": c.stale(now),
             "last_success_at": _iso(c.last_success_at), "errors_total": c.errors_total,
             "last_error": c.last_error}
            for c in snap.collectors.values()
        ],
        "provider": provider_doc(snap.provider),
        **({"heroku_token": heroku_token_status(snap)} if snap.heroku is not None else {}),
    }


def provider_doc(p: ProviderStatus | None) -> dict[str, Any] | None:
    """Heroku's own status as last read from its status API (None: not polled): each system's colour and the
    incidents on Data or Apps, with the text findings and actions use."""
    if p is None:
        return None
    return {"name": "heroku", "observed_at": _iso(p.observed_at), "systems": dict(p.systems),
            "incidents": [{"title": i.title, "systems": list(i.systems), "status": i.status, "url": i.url,
                           "since": _iso(i.since), "updated_at": _iso(i.updated_at)} for i in p.incidents],
            "scheduled": p.scheduled, "text": incident_text(p)}


def heroku_token_status(snap: Snapshot) -> dict[str, Any]:
    """The Heroku API token's lifetime: "unknown" until its authorization was read (or when it cannot be),
    "never expires", or the time it expires."""
    h = snap.heroku
    if h is None or not h.token_readable:
        return {"expires": "unknown", "expires_at": None}
    if h.token_expires_at is None:
        return {"expires": "never", "expires_at": None}
    return {"expires": "at", "expires_at": _iso(h.token_expires_at)}


def actions_status(snap: Snapshot) -> dict[str, Any]:
    """The action switches in words as well as flags, so nobody mistakes a dry run for protection."""
    c = snap.control
    if not c.enabled:
        mode = "off (kill switch)"
    elif c.paused is not None:
        mode = f"paused: {c.paused}"
    elif c.dry_run:
        mode = "DRY RUN: decisions are audited, nothing is done"
    else:
        mode = "live"
    return {"mode": mode, "enabled": c.enabled, "dry_run": c.dry_run, "paused": c.paused, "leader": c.leader,
            "last_taken": {a: _iso(t) for a, t in c.last_taken.items()},
            "probes": [{"name": p.name, "up": p.up, "consecutive_failures": p.consecutive_failures,
                        "latency_seconds": round(p.latency_seconds, 3), "error": p.error,
                        "scale_refused": p.scale_refused, "observed_at": _iso(p.observed_at)} for p in c.probes]}


STATUS_HEAD = ("DATABASE", "STATUS", "NEWEST GOOD BACKUP", "DATA AT RISK", "RPO")
#: Columns of STATUS_HEAD aligned right (durations).
STATUS_RIGHT = frozenset({3, 4})


def status_rows(snap: Snapshot, now: datetime, backups: int = 5) -> list[tuple[tuple[str, ...], list[str]]]:
    """One (row, detail lines) per database: the row under STATUS_HEAD, then what a person reads below it (the
    next expected backup and the breach time, each source's newest backups, the active findings)."""
    out: list[tuple[tuple[str, ...], list[str]]] = []
    for db in snap.databases.values():
        doc = database_status(db, now, snap)
        row = (db.name, doc["status"].upper(),
               f"{doc['newest_good_backup']['id']} ({doc['newest_good_backup']['source']})"
               if doc["newest_good_backup"] else "none",
               doc["data_at_risk"] or "-", format_duration_s(db.rpo_seconds))
        lines = []
        if doc["next_expected_backup"] or doc["breach_at"]:
            parts = ([f"next good backup expected {_when(db.next_expected, now)}"] if db.next_expected else []) + (
                [f"breach after {doc['breach_at'][:16].replace('T', ' ')} UTC (RPO "
                 f"{format_duration_s(db.rpo_seconds)} + {format_duration_s(db.rpo_tolerance_seconds)} tolerance)"]
                if doc["breach_at"] else [])
            lines.append(f"    {'; '.join(parts)}")
        for name, src in db.sources.items():
            stale = " (STALE: last known values, its collector is down or late)" if doc["sources"][name]["stale"] \
                else ""
            lines.append(f"    {name} backups{stale}:")
            lines.extend(f"      {_backup_line(b)}" for b in reversed(src.backups[-backups:]))
            if src.in_progress:
                lines.append(f"      {src.in_progress} capture(s) running")
        for f in db.findings:
            if f.active:
                lines.append(f"    {f.severity.upper():<8} {f.check}: {f.hint}")
        out.append((row, lines))
    return out


def aligned(head: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: frozenset[int] = frozenset()) -> list[str]:
    """Plain text columns as wide as their widest value (the header stands over its values), separated by two
    spaces, `right` ones aligned right: the header line, a rule, then one line per row."""
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(f"{c:>{w}}" if i in right else f"{c:<{w}}"
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [line(head), "-" * len(line(head)), *(line(r) for r in rows)]


def status_table(snap: Snapshot, now: datetime, backups: int = 5) -> str:
    """A readable table for any output (what `check` prints when it is not a terminal): one block per database;
    the columns are as wide as their widest value, so the header stands over its values whatever the backup
    ids' lengths."""
    blocks = status_rows(snap, now, backups)
    head, rule, *rows = aligned(STATUS_HEAD, [row for row, _ in blocks], STATUS_RIGHT)
    lines = [head, rule]
    mode = actions_status(snap)["mode"]
    if mode != "live":
        lines.insert(0, f"remedial actions: {mode}")
    for row, (_, details) in zip(rows, blocks, strict=True):
        lines.append(row)
        lines.extend(details)
    return "\n".join(lines)


def _when(expected: dict[str, datetime], now: datetime) -> str:
    source, at = min(expected.items(), key=lambda kv: kv[1])
    ahead = (at - now).total_seconds()
    return (f"from {source} at {at:%Y-%m-%d %H:%M} UTC" + (f" (in {format_duration_s(ahead)})" if ahead > 0 else
                                                          " (due now)"))


def _backup_line(b: Backup) -> str:
    """One backup the way `heroku pg:backups` lists it: id, created, status, size."""
    when = b.started_at.strftime("%Y-%m-%d %H:%M:%S %z")
    if b.succeeded:
        status = f"Completed {b.finished_at.strftime('%Y-%m-%d %H:%M:%S %z')}" if b.finished_at else "Completed"
    else:
        status = f"Failed ({b.error})" if b.error else "Failed"
    return f"{b.backup_id:<28} {when}  {status:<40} {human_size(b.size_bytes)} ({b.kind})"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.2f}{unit}" if unit != "B" else f"{n}B"
        size /= 1024
    return f"{n}B"
