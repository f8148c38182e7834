"""The recovery point checks: rpo_breach and rpo_at_risk (data at risk against the RPO, projected from the
schedules where there are any), rpo_unachievable (a schedule that cannot meet the RPO by construction),
missed_schedule, no_schedule and continuous_protection_off.

By plan family (daemon.core.plans): an Advanced database's recovery point is also its rollback window's latest
time (the newer of it and the newest good backup), so a stale latest point is an rpo_at_risk / rpo_breach like a
stale backup; pg:backups is not established for Advanced, so no_schedule and missed_schedule never speak for its
Heroku source. Essential plans offer no continuous protection, so continuous_protection_off never fires there.
The length of an Advanced rollback window is not judged: no source says how long it should be.
"""

from __future__ import annotations

from datetime import datetime

from daemon.config import Objectives
from daemon.core.plans import ADVANCED, ESSENTIAL
from daemon.core.policy.findings import (
    data_at_risk_seconds,
    finding,
    format_duration_s,
    newest_good_backup,
    newest_recovery_point,
    rollback_latest,
)
from daemon.core.risk import cadences, clock_change_seconds, next_expected, tolerance_seconds
from daemon.core.schedules import last_due
from daemon.core.snapshot import SOURCE_HEROKU, DatabaseState, Finding


def rpo_checks(db: DatabaseState, objectives: Objectives, missed: bool, now: datetime) -> list[Finding]:
    """Breach: data at risk beyond the RPO plus the schedule's tolerance. At risk, where a schedule exists: it was
    missed, or the next expected good backup comes too late for the RPO while the data at risk has reached the
    at-risk share of it; without a schedule, the age rule (the at-risk share of the RPO)."""
    rpo, ratio = objectives.rpo.total_seconds(), objectives.rpo_at_risk_ratio
    risk = data_at_risk_seconds(db, now)
    objective = format_duration_s(rpo)
    if not db.sources:  # never read yet (a large fleet is read gradually): unknown, not a breach
        hint = "not observed yet"
        return [finding(db, "rpo_breach", False, hint, now, value=None, threshold=rpo),
                finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    unread = sorted(s.source for s in db.sources.values() if not s.listed)
    if risk is None and unread:  # a source never read may well hold good backups: unknown, not a breach
        hint = f"not known: {', '.join(unread)} not read yet (see collector_down)"
        return [finding(db, "rpo_breach", False, hint, now, value=None, threshold=rpo),
                finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    if risk is None:
        hint = ("no recovery point known: rollback reports no latest time and no good backup is listed"
                if _family(db) == ADVANCED else "no good backup exists: all data is at risk")
        return [finding(db, "rpo_breach", True, hint, now, value=None, threshold=rpo),
                finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    tolerance = tolerance_seconds(db, objectives, now)
    limit = rpo + tolerance
    breach = risk > limit
    age = format_duration_s(risk)
    shifted = clock_change_seconds(db)
    within = (f" (+ {format_duration_s(tolerance)} tolerance: the schedule's normal start jitter and capture time"
              + (f", and {format_duration_s(shifted)} the clocks going back added to the schedule's gap"
                 if shifted else "") + ")" if tolerance else "")
    newest_backup = newest_good_backup(db)
    point = newest_recovery_point(db)
    by_rollback = point is not None and point == rollback_latest(db) and (
        newest_backup is None or newest_backup.recovery_point < point)
    what = f"latest rollback point is {age} old" if by_rollback else f"newest good backup captured {age} ago"
    breach_finding = finding(db, "rpo_breach", breach, f"{what}; RPO is {objective}{within}", now, value=risk,
                             threshold=limit)
    expected = next_expected(db, objectives, now)
    if not expected:  # no schedule to project from: the age rule
        return [breach_finding, finding(db, "rpo_at_risk", not breach and risk >= rpo * ratio,
                                         f"data at risk {age} is {risk / rpo:.0%} of the {objective} RPO", now,
                                         value=risk, threshold=rpo * ratio)]
    source, start = min(expected.items(), key=lambda kv: kv[1])
    assert point is not None  # risk is not None
    projected = (start - point).total_seconds()
    # Too late, and the data at risk already at the at-risk share: an emergency capture now is timely (not one
    # right after each backup of a schedule too sparse for the RPO, which rpo_unachievable reports).
    late = projected > limit and risk >= rpo * ratio
    if missed:
        hint = "the backup schedule was missed (see missed_schedule)"
    else:
        hint = (f"next good backup expected from {source} at {start:%Y-%m-%d %H:%M} UTC: data at risk would reach "
                f"{format_duration_s(projected)} against the {objective} RPO{within}")
    return [breach_finding, finding(db, "rpo_at_risk", not breach and (missed or late), hint, now,
                                     value=projected, threshold=limit)]


def unachievable_check(db: DatabaseState, objectives: Objectives, now: datetime) -> Finding:
    """Every schedule of the database overshoots the RPO on a normal day (interval + start jitter + capture
    time > RPO): the RPO cannot be met by construction. Continuous protection (PITR) meets it regardless."""
    rpo = objectives.rpo.total_seconds()
    found = cadences(db, objectives, now)
    if not found:
        return finding(db, "rpo_unachievable", False, "no schedule to judge", now, threshold=rpo)
    if db.provider is not None and db.provider.continuous_protection:
        return finding(db, "rpo_unachievable", False, "continuous protection (PITR) covers the RPO", now,
                        threshold=rpo)
    best = min(found, key=lambda c: c.worst_exposure)
    worst = best.worst_exposure
    objective = format_duration_s(rpo)
    if worst <= rpo:
        return finding(db, "rpo_unachievable", False, f"{best.source} schedule ({best.what}) meets the {objective} "
                        f"RPO: at most {format_duration_s(worst)} of data at risk", now, value=worst, threshold=rpo)
    honest = -(-worst // 900) * 900  # rounded up to a quarter hour
    hint = (f"{best.source} schedule ({best.what}): interval {format_duration_s(best.interval)} + start jitter "
            f"{format_duration_s(best.jitter)} + capture time {format_duration_s(best.duration)} = "
            f"{format_duration_s(worst)} of data at risk before the next backup completes, more than the "
            f"{objective} RPO. To meet it: add a second scheduled backup between the existing ones, schedule "
            f"backups more often, turn on continuous protection (PITR), or set an honest RPO of at least "
            f"{format_duration_s(honest)}")
    return finding(db, "rpo_unachievable", True, hint, now, value=worst, threshold=rpo)


def missed_schedule_check(db: DatabaseState, grace: float, now: datetime) -> Finding:
    missed = []
    for src in db.sources.values():
        if src.source == SOURCE_HEROKU and _family(db) == ADVANCED:
            continue  # pg:backups is not established for Advanced: no schedule of it to miss
        if src.in_progress and not src.running_started:
            continue  # running, start unknown: give it the benefit of the doubt
        starts = [b.started_at for b in src.backups] + list(src.running_started)
        # Judge against what the source last showed: a poll deferred or failed must not invent a miss.
        seen = min(now, src.observed_at) if src.observed_at is not None else now
        for sched in src.schedules:
            due = last_due(sched, seen)
            if sched.created_at is not None and sched.created_at > due:
                continue  # the schedule did not exist yet at that time
            late = (seen - due).total_seconds()
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
        return finding(db, "missed_schedule", True, "; ".join(missed), now)
    return finding(db, "missed_schedule", False, "every schedule ran on time", now)


def no_schedule_check(db: DatabaseState, now: datetime) -> Finding:
    if not db.sources:
        return finding(db, "no_schedule", False, "no source read yet", now)
    if _family(db) == ADVANCED and all(s.source == SOURCE_HEROKU for s in db.sources.values()):
        return finding(db, "no_schedule", False, "Advanced plan: pg:backups schedules are not established for "
                        "it; continuous protection (rollback) is what protects it", now)
    unknown = [s.source for s in db.sources.values() if not s.has_schedule and s.source == SOURCE_HEROKU
               and not s.schedules_known]
    if any(s.has_schedule for s in db.sources.values()) or unknown:
        return finding(db, "no_schedule", False, "a backup schedule exists", now)
    return finding(db, "no_schedule", True,
                    "no backup schedule: backups happen only when someone remembers "
                    "(heroku pg:backups:schedule DATABASE_URL --at '02:00 UTC')", now)


def continuous_protection_check(db: DatabaseState, now: datetime) -> Finding:
    """Classic plans that offer it: active when it is off. Advanced: active when it is off, or on while the
    rollback window reports no latest point (rollback unavailable). Essential plans never offer it."""
    p = db.provider
    if p is not None and p.family == ESSENTIAL:
        return finding(db, "continuous_protection_off", False,
                        f"plan {p.plan} (Essential) does not offer continuous protection: pg:backups is its protection",
                        now)
    if p is not None and p.family == ADVANCED:
        if p.continuous_protection is False:
            return finding(db, "continuous_protection_off", True,
                            f"plan {p.plan} (Advanced): continuous protection is off", now)
        if p.continuous_protection and p.rollback_latest is None:
            return finding(db, "continuous_protection_off", True,
                            f"plan {p.plan} (Advanced): continuous protection is on but rollback reports no latest "
                            "recovery point (unavailable)", now)
        window = ""
        if p.rollback_earliest is not None and p.rollback_latest is not None:
            window = (f": rollback from {p.rollback_earliest:%Y-%m-%d %H:%M} to {p.rollback_latest:%Y-%m-%d %H:%M}"
                      " UTC")
        return finding(db, "continuous_protection_off", False, f"continuous protection on{window}", now)
    if p is not None and p.offers_pitr and p.continuous_protection is False:
        return finding(db, "continuous_protection_off", True,
                        f"plan {p.plan} offers continuous protection (rollback), but it is off", now)
    return finding(db, "continuous_protection_off", False, "continuous protection on or not offered", now)


def _family(db: DatabaseState) -> str:
    return db.provider.family if db.provider is not None else "unknown"
