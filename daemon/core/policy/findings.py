"""What every check of the policy shares: the catalogue of checks and their severities (`CHECKS`), how a
finding is made, and the facts several checks read (the newest good backup, the data at risk).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from daemon.core.durations import format_duration
from daemon.core.snapshot import Backup, DatabaseState, Finding

CHECKS: dict[str, str] = {
    "rpo_breach": "critical",
    "rpo_at_risk": "warning",
    "rpo_unachievable": "warning",
    "last_attempt_failed": "critical",
    "size_anomaly": "warning",
    "collector_down": "warning",
    "missed_schedule": "critical",
    "no_schedule": "warning",
    "continuous_protection_off": "warning",
    "archive_gap": "warning",
    "copy_lag": "warning",
    "unencrypted_object": "critical",
    "bucket_posture": "warning",
    "retention": "warning",
    "unreadable_backup": "critical",
    "drill_failed": "critical",
    "drill_overdue": "warning",
    "recovery_time_over_rto": "critical",
    "scratch_leftover": "warning",
    "client_tools_too_old": "warning",
    "heroku_token_expiring": "warning",  # critical once expired (daemon.core.policy.token)
    "compliance_export_overdue": "warning",
}
#: Checks that describe a standing condition of the configuration, not an incident (an RPO the schedule cannot
#: meet by construction): said once and reminded rarely, never a daily alarm, and no WARNING in `check`'s exit
#: code on their own (the table still shows them).
STANDING: frozenset[str] = frozenset({"rpo_unachievable"})


def newest_good_backup(db: DatabaseState) -> Backup | None:
    """The good backup with the latest recovery point across every source of the database."""
    candidates = [s.newest_good for s in db.sources.values() if s.newest_good is not None]
    return max(candidates, key=lambda b: b.recovery_point) if candidates else None


def rollback_latest(db: DatabaseState) -> datetime | None:
    """The newest moment the provider's rollback can reach (only Advanced databases report one), else None."""
    return db.provider.rollback_latest if db.provider is not None else None


def newest_recovery_point(db: DatabaseState) -> datetime | None:
    """The latest moment the database can be recovered to: the newest good backup's recovery point, or the
    rollback window's latest time where the provider reports one and it is later; None when neither exists."""
    newest = newest_good_backup(db)
    points = [p for p in (newest.recovery_point if newest else None, rollback_latest(db)) if p is not None]
    return max(points) if points else None


def data_at_risk_seconds(db: DatabaseState, now: datetime) -> float | None:
    """now - the newest recovery point (`newest_recovery_point`); None when there is none."""
    point = newest_recovery_point(db)
    if point is None:
        return None
    return (now - point).total_seconds()


def finding(db: DatabaseState, check: str, active: bool, hint: str, now: datetime, **kw: float | None) -> Finding:
    """The finding of `check` on `db` at `now`, with the check's severity from CHECKS."""
    return Finding(database=db.name, check=check, severity=CHECKS[check], active=active, hint=hint,
                   observed_at=now, **kw)


def format_duration_s(seconds: float) -> str:
    """A duration in seconds as people read it (rounded to the second): "1h30m"."""
    return format_duration(timedelta(seconds=round(seconds)))
