"""The drill checks: drill_failed, drill_overdue, recovery_time_over_rto, and scratch_leftover (a scratch
database the sweep could not drop).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.core.policy.findings import finding, format_duration_s
from daemon.core.snapshot import DatabaseState, Finding


@dataclass(frozen=True)
class DrillPolicy:
    """What the drill checks need: each scenario's interval (from its cron), the grace, and since when the
    guardian has watched (a drill cannot be overdue before its first chance)."""

    intervals: dict[str, timedelta]
    grace: timedelta
    since: datetime | None


def drill_checks(db: DatabaseState, policy: DrillPolicy | None, now: datetime) -> list[Finding]:
    checks = ("drill_failed", "drill_overdue", "recovery_time_over_rto")
    if policy is None:
        return [finding(db, c, False, "drills are not enabled for this database", now) for c in checks]
    failed, overdue, slow = [], [], []
    for scenario, interval in policy.intervals.items():
        runs = [d for d in db.drills if d.scenario == scenario]
        last = max(runs, key=lambda d: d.started_at) if runs else None
        if last is not None and not last.succeeded:
            failed.append(f"{scenario} drill of {last.started_at:%Y-%m-%d %H:%M} failed: {last.reason}")
        good = [d for d in runs if d.succeeded]
        newest_good = max((d.started_at for d in good), default=None)
        since = newest_good or policy.since
        if since is not None and now - since > interval + policy.grace:
            what = f"last success {format_duration_s((now - since).total_seconds())} ago" if newest_good else \
                "never succeeded"
            overdue.append(f"{scenario} drill {what} (every {format_duration_s(interval.total_seconds())})")
        if last is not None and last.succeeded and last.rto_seconds and last.recovery_seconds > last.rto_seconds:
            slow.append(f"{scenario} recovery took {format_duration_s(last.recovery_seconds)}, RTO "
                        f"{format_duration_s(last.rto_seconds)}")
    return [
        finding(db, "drill_failed", bool(failed), "; ".join(failed) or "the last drills succeeded", now),
        finding(db, "drill_overdue", bool(overdue), "; ".join(overdue) or "drills on schedule", now),
        finding(db, "recovery_time_over_rto", bool(slow), "; ".join(slow) or "recovery within the RTO", now),
    ]


def scratch_leftover_check(db: DatabaseState, now: datetime) -> Finding:
    left = db.scratch_leftovers
    if not left:
        return finding(db, "scratch_leftover", False, "no scratch database left behind", now)
    return finding(db, "scratch_leftover", True, f"{len(left)} scratch database(s) not dropped: " + "; ".join(left),
                    now, value=float(len(left)))
