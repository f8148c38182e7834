"""Pure evaluation of one database against its objectives. No I/O, no clock: `now` is an argument.

Checks (each yields a `Finding`, active or not, so every check has a value in the metrics):
  rpo_breach           critical  data at risk > RPO, or no good backup at all
  rpo_at_risk          warning   data at risk >= rpo_at_risk_ratio * RPO (and not yet breached)
  last_attempt_failed  critical  the newest backup attempt of any source failed
  size_anomaly         warning   newest good backup < size_anomaly_ratio * median of the previous ones
  collector_down       warning   a collector for this database failed its last run
  missed_schedule      critical  a schedule's time (in its own timezone) passed by more than the grace and no
                                 backup started since (fires hours before an RPO breach)
  no_schedule          warning   no source has any backup schedule
  continuous_protection_off  warning  the plan offers continuous protection (PITR) but it is off
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime

from daemon.config import Objectives
from daemon.durations import format_duration
from daemon.schedules import last_due
from daemon.state import Backup, CollectorStatus, DatabaseState, Finding

CHECKS: dict[str, str] = {
    "rpo_breach": "critical",
    "rpo_at_risk": "warning",
    "last_attempt_failed": "critical",
    "size_anomaly": "warning",
    "collector_down": "warning",
    "missed_schedule": "critical",
    "no_schedule": "warning",
    "continuous_protection_off": "warning",
}
#: How many previous good backups the size median looks at.
SIZE_HISTORY = 7


def newest_good_backup(db: DatabaseState) -> Backup | None:
    """The good backup with the latest recovery point across every source of the database."""
    candidates = [s.newest_good for s in db.sources.values() if s.newest_good is not None]
    return max(candidates, key=lambda b: b.recovery_point) if candidates else None


def data_at_risk_seconds(db: DatabaseState, now: datetime) -> float | None:
    """now - recovery point of the newest good backup; None when there is no good backup."""
    newest = newest_good_backup(db)
    if newest is None:
        return None
    return (now - newest.recovery_point).total_seconds()


def evaluate(
    db: DatabaseState, objectives: Objectives, collectors: Iterable[CollectorStatus], now: datetime
) -> tuple[Finding, ...]:
    """All findings for one database at `now`. `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    rpo = objectives.rpo.total_seconds()
    findings = [
        *_rpo(db, rpo, objectives.rpo_at_risk_ratio, now),
        _last_attempt(db, now),
        _size_anomaly(db, objectives, now),
        _collectors(db, collectors, now),
        _missed_schedule(db, objectives.schedule_grace.total_seconds(), now),
        _no_schedule(db, now),
        _continuous_protection(db, now),
    ]
    return tuple(findings)


def _finding(db: DatabaseState, check: str, active: bool, hint: str, now: datetime, **kw: float | None) -> Finding:
    return Finding(database=db.name, check=check, severity=CHECKS[check], active=active, hint=hint,
                   observed_at=now, **kw)


def _rpo(db: DatabaseState, rpo: float, ratio: float, now: datetime) -> list[Finding]:
    risk = data_at_risk_seconds(db, now)
    objective = format_duration_s(rpo)
    if risk is None:
        hint = "no good backup exists: all data is at risk"
        return [_finding(db, "rpo_breach", True, hint, now, value=None, threshold=rpo),
                _finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    breach = risk > rpo
    at_risk = not breach and risk >= rpo * ratio
    age = format_duration_s(risk)
    return [
        _finding(db, "rpo_breach", breach,
                 f"newest good backup captured {age} ago; RPO is {objective}", now, value=risk, threshold=rpo),
        _finding(db, "rpo_at_risk", at_risk,
                 f"data at risk {age} is {risk / rpo:.0%} of the {objective} RPO", now,
                 value=risk, threshold=rpo * ratio),
    ]


def _last_attempt(db: DatabaseState, now: datetime) -> Finding:
    attempts = [s.last_attempt for s in db.sources.values() if s.last_attempt is not None]
    if not attempts:
        return _finding(db, "last_attempt_failed", False, "no backup attempt seen yet", now)
    last = max(attempts, key=lambda b: b.started_at)
    if last.succeeded:
        return _finding(db, "last_attempt_failed", False, f"last attempt {last.backup_id} succeeded", now)
    why = f": {last.error}" if last.error else ""
    return _finding(db, "last_attempt_failed", True, f"last attempt {last.backup_id} ({last.source}) failed{why}", now)


def _size_anomaly(db: DatabaseState, objectives: Objectives, now: datetime) -> Finding:
    newest = newest_good_backup(db)
    if newest is None:
        return _finding(db, "size_anomaly", False, "no good backup to compare", now)
    source = db.sources[newest.source]
    previous = [b.size_bytes for b in sorted(source.good, key=lambda b: b.started_at) if b is not newest]
    previous = previous[-max(SIZE_HISTORY, objectives.size_anomaly_min_history):]
    if len(previous) < objectives.size_anomaly_min_history:
        return _finding(db, "size_anomaly", False,
                        f"only {len(previous)} previous good backups; sizes compared from "
                        f"{objectives.size_anomaly_min_history}", now, value=newest.size_bytes)
    median = statistics.median(previous)
    limit = median * objectives.size_anomaly_ratio
    active = newest.size_bytes < limit
    hint = (f"newest good backup {newest.backup_id} is {newest.size_bytes} bytes, "
            f"{(newest.size_bytes / median) if median else 0:.0%} of the median {median:.0f} of the previous "
            f"{len(previous)}")
    return _finding(db, "size_anomaly", active, hint, now, value=newest.size_bytes, threshold=limit)


def _collectors(db: DatabaseState, collectors: Iterable[CollectorStatus], now: datetime) -> Finding:
    down = sorted(c.collector for c in collectors if c.database == db.name and not c.up)
    if down:
        return _finding(db, "collector_down", True, f"collector down: {', '.join(down)}", now)
    return _finding(db, "collector_down", False, "all collectors up", now)


def _missed_schedule(db: DatabaseState, grace: float, now: datetime) -> Finding:
    missed = []
    for src in db.sources.values():
        if src.in_progress:
            continue
        starts = [b.started_at for b in src.backups]
        for sched in src.schedules:
            due = last_due(sched, now)
            if sched.created_at is not None and sched.created_at > due:
                continue  # the schedule did not exist yet at that time
            late = (now - due).total_seconds()
            if late > grace and not any(s >= due for s in starts):
                missed.append(f"{src.source} schedule {sched.hour:02d}:00 {sched.timezone} was due "
                              f"{format_duration_s(late)} ago and no backup started since")
        if src.schedule_interval_seconds and starts:
            interval = src.schedule_interval_seconds
            due_at = max(starts).timestamp() + interval
            late = now.timestamp() - due_at
            if late > min(grace, max(60.0, interval / 2)):
                missed.append(f"{src.source} capture every {format_duration_s(interval)} was due "
                              f"{format_duration_s(late)} ago and none started since")
    if missed:
        return _finding(db, "missed_schedule", True, "; ".join(missed), now)
    return _finding(db, "missed_schedule", False, "every schedule ran on time", now)


def _no_schedule(db: DatabaseState, now: datetime) -> Finding:
    if not db.sources:
        return _finding(db, "no_schedule", False, "no source read yet", now)
    unknown = [s.source for s in db.sources.values() if not s.has_schedule and s.source == "heroku"
               and not s.schedules_known]
    if any(s.has_schedule for s in db.sources.values()) or unknown:
        return _finding(db, "no_schedule", False, "a backup schedule exists", now)
    return _finding(db, "no_schedule", True,
                    "no backup schedule: backups happen only when someone remembers "
                    "(heroku pg:backups:schedule DATABASE_URL --at '02:00 UTC')", now)


def _continuous_protection(db: DatabaseState, now: datetime) -> Finding:
    p = db.provider
    if p is not None and p.offers_pitr and p.continuous_protection is False:
        return _finding(db, "continuous_protection_off", True,
                        f"plan {p.plan} offers continuous protection (rollback), but it is off", now)
    return _finding(db, "continuous_protection_off", False, "continuous protection on or not offered", now)


def format_duration_s(seconds: float) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=round(seconds)))


def is_healthy(findings: Iterable[Finding]) -> bool:
    """True when no critical finding is active and every collector is up (what `check`'s exit code means:
    a database the guardian cannot read is a failure, whatever its backups say)."""
    return not any(f.active and (f.severity == "critical" or f.check == "collector_down") for f in findings)
