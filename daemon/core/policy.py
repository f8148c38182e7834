"""Pure evaluation of one database against its objectives. No I/O, no clock: `now` is an argument.

Checks (each yields a `Finding`, active or not, so every check has a value in the metrics):
  rpo_breach           critical  data at risk > RPO + tolerance (the schedule's normal start jitter and capture
                                 time, learned, bounded; 0 without a schedule), or no good backup at all (unknown,
                                 not a breach, while a source that may hold one was never read)
  rpo_at_risk          warning   with a schedule: the next expected good backup (next due time plus the usual
                                 start delay) would come too late for the RPO, or the schedule was missed;
                                 without one: data at risk >= rpo_at_risk_ratio * RPO (and not yet breached)
  rpo_unachievable     warning   every schedule's interval + start jitter + capture time exceeds the RPO: it
                                 cannot be met by construction (one finding that stays open, never a page)
  last_attempt_failed  critical  the newest backup attempt of any source failed
  size_anomaly         warning   newest good backup < size_anomaly_ratio * median of the previous ones
  collector_down       warning   a collector for this database failed its last run, or has not succeeded
                                 within its expected interval (its facts are stale)
  missed_schedule      critical  a schedule's time (in its own timezone) passed by more than the grace and no
                                 backup started since (fires hours before an RPO breach)
  no_schedule          warning   no source has any backup schedule
  continuous_protection_off  warning  the plan offers continuous protection (PITR) but it is off
  archive_gap          warning   a tier's newest copy is older than its cadence plus grace
  copy_lag             warning   the provider's newest good backup is not archived `copy_grace` after it finished
  unencrypted_object   critical  an archived copy has no server-side encryption
  bucket_posture       warning   versioning, default encryption, public access block or lifecycle missing
  retention            warning   a month of the last twelve (since the archive began) has no monthly copy
  unreadable_backup    critical  the newest good backup failed the readability check (pg_restore --list and a
                                 full read): it would not restore
  scratch_leftover     warning   a scratch database of this database's drills is still on the ledger: the sweep
                                 could not reach its server or prove it (it is kept, never guessed at)

The archive checks apply only to databases with an archive (`ArchivePolicy` given).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.config import Objectives
from daemon.core.durations import format_duration
from daemon.core.risk import cadences, next_expected, tolerance_seconds
from daemon.core.schedules import last_due
from daemon.core.snapshot import Backup, CollectorStatus, DatabaseState, Finding

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
}
#: Tier -> cadence: the newest copy at or above the tier must be younger than this (plus the grace).
TIER_CADENCE = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": timedelta(days=31)}
_AT_OR_ABOVE = {"daily": ("daily", "weekly", "monthly", "milestone"), "weekly": ("weekly", "monthly", "milestone"),
                "monthly": ("monthly", "milestone")}


@dataclass(frozen=True)
class ArchivePolicy:
    """The archive settings the checks need (from ArchiveConfig)."""

    copy_grace: timedelta
    gap_grace: timedelta
    mirrored_from: str | None = "heroku"
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
    db: DatabaseState, objectives: Objectives, collectors: Iterable[CollectorStatus], now: datetime,
    archive: ArchivePolicy | None = None, drills: DrillPolicy | None = None,
) -> tuple[Finding, ...]:
    """All findings for one database at `now`. `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    missed = _missed_schedule(db, objectives.schedule_grace.total_seconds(), now)
    findings = [
        *_rpo(db, objectives, missed.active, now),
        _unachievable(db, objectives, now),
        _last_attempt(db, now),
        _size_anomaly(db, objectives, now),
        _collectors(db, collectors, now),
        missed,
        _no_schedule(db, now),
        _continuous_protection(db, now),
        *_archive(db, archive, now),
        _unreadable(db, now),
        *_drills(db, drills, now),
        _scratch_leftover(db, now),
    ]
    return tuple(findings)


def _finding(db: DatabaseState, check: str, active: bool, hint: str, now: datetime, **kw: float | None) -> Finding:
    return Finding(database=db.name, check=check, severity=CHECKS[check], active=active, hint=hint,
                   observed_at=now, **kw)


def _rpo(db: DatabaseState, objectives: Objectives, missed: bool, now: datetime) -> list[Finding]:
    """Breach: data at risk beyond the RPO plus the schedule's tolerance. At risk, where a schedule exists: it was
    missed, or the next expected good backup comes too late for the RPO while the data at risk has reached the
    at-risk share of it; without a schedule, the age rule (the at-risk share of the RPO)."""
    rpo, ratio = objectives.rpo.total_seconds(), objectives.rpo_at_risk_ratio
    risk = data_at_risk_seconds(db, now)
    objective = format_duration_s(rpo)
    if not db.sources:  # never read yet (a large fleet is read gradually): unknown, not a breach
        hint = "not observed yet"
        return [_finding(db, "rpo_breach", False, hint, now, value=None, threshold=rpo),
                _finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    unread = sorted(s.source for s in db.sources.values() if not s.listed)
    if risk is None and unread:  # a source never read may well hold good backups: unknown, not a breach
        hint = f"not known: {', '.join(unread)} not read yet (see collector_down)"
        return [_finding(db, "rpo_breach", False, hint, now, value=None, threshold=rpo),
                _finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    if risk is None:
        hint = "no good backup exists: all data is at risk"
        return [_finding(db, "rpo_breach", True, hint, now, value=None, threshold=rpo),
                _finding(db, "rpo_at_risk", False, hint, now, value=None, threshold=rpo * ratio)]
    tolerance = tolerance_seconds(db, objectives, now)
    limit = rpo + tolerance
    breach = risk > limit
    age = format_duration_s(risk)
    within = (f" (+ {format_duration_s(tolerance)} tolerance: the schedule's normal start jitter and capture time)"
              if tolerance else "")
    breach_finding = _finding(db, "rpo_breach", breach, f"newest good backup captured {age} ago; RPO is "
                              f"{objective}{within}", now, value=risk, threshold=limit)
    expected = next_expected(db, objectives, now)
    if not expected:  # no schedule to project from: the age rule
        return [breach_finding, _finding(db, "rpo_at_risk", not breach and risk >= rpo * ratio,
                                         f"data at risk {age} is {risk / rpo:.0%} of the {objective} RPO", now,
                                         value=risk, threshold=rpo * ratio)]
    source, start = min(expected.items(), key=lambda kv: kv[1])
    newest = newest_good_backup(db)
    assert newest is not None  # risk is not None
    projected = (start - newest.recovery_point).total_seconds()
    # Too late, and the data at risk already at the at-risk share: an emergency capture now is timely (not one
    # right after each backup of a schedule too sparse for the RPO, which rpo_unachievable reports).
    late = projected > limit and risk >= rpo * ratio
    if missed:
        hint = "the backup schedule was missed (see missed_schedule)"
    else:
        hint = (f"next good backup expected from {source} at {start:%Y-%m-%d %H:%M} UTC: data at risk would reach "
                f"{format_duration_s(projected)} against the {objective} RPO{within}")
    return [breach_finding, _finding(db, "rpo_at_risk", not breach and (missed or late), hint, now,
                                     value=projected, threshold=limit)]


def _unachievable(db: DatabaseState, objectives: Objectives, now: datetime) -> Finding:
    """Every schedule of the database overshoots the RPO on a normal day (interval + start jitter + capture
    time > RPO): the RPO cannot be met by construction. Continuous protection (PITR) meets it regardless."""
    rpo = objectives.rpo.total_seconds()
    found = cadences(db, objectives, now)
    if not found:
        return _finding(db, "rpo_unachievable", False, "no schedule to judge", now, threshold=rpo)
    if db.provider is not None and db.provider.continuous_protection:
        return _finding(db, "rpo_unachievable", False, "continuous protection (PITR) covers the RPO", now,
                        threshold=rpo)
    best = min(found, key=lambda c: c.worst_exposure)
    worst = best.worst_exposure
    objective = format_duration_s(rpo)
    if worst <= rpo:
        return _finding(db, "rpo_unachievable", False, f"{best.source} schedule ({best.what}) meets the {objective} "
                        f"RPO: at most {format_duration_s(worst)} of data at risk", now, value=worst, threshold=rpo)
    honest = -(-worst // 900) * 900  # rounded up to a quarter hour
    hint = (f"{best.source} schedule ({best.what}): interval {format_duration_s(best.interval)} + start jitter "
            f"{format_duration_s(best.jitter)} + capture time {format_duration_s(best.duration)} = "
            f"{format_duration_s(worst)} of data at risk before the next backup completes, more than the "
            f"{objective} RPO. To meet it: add a second scheduled backup between the existing ones, schedule "
            f"backups more often, turn on continuous protection (PITR), or set an honest RPO of at least "
            f"{format_duration_s(honest)}")
    return _finding(db, "rpo_unachievable", True, hint, now, value=worst, threshold=rpo)


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
    """Active when a collector failed its last run or has not succeeded within its expected interval: the
    facts it provides are not fresh, so no check may pass for OK on them unflagged."""
    mine = sorted((c for c in collectors if c.database == db.name), key=lambda c: c.collector)
    down = [c.collector for c in mine if not c.up]
    stale = [stale_since(c) for c in mine if c.stale(now)]
    parts = ([f"collector down: {', '.join(down)}"] if down else []) + ([f"stale: {', '.join(stale)}"] if stale else [])
    if parts:
        return _finding(db, "collector_down", True, "; ".join(parts), now)
    return _finding(db, "collector_down", False, "all collectors up", now)


def stale_since(c: CollectorStatus) -> str:
    """"<collector> since <last success>" (or "never succeeded"), for hints and the check command."""
    since = c.last_success_at.isoformat(timespec="seconds") if c.last_success_at else "never succeeded"
    return f"{c.collector} since {since}" if c.last_success_at else f"{c.collector} ({since})"


def _missed_schedule(db: DatabaseState, grace: float, now: datetime) -> Finding:
    missed = []
    for src in db.sources.values():
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


def _unreadable(db: DatabaseState, now: datetime) -> Finding:
    bad = []
    for s in db.sources.values():
        done = [b for b in s.backups if b.succeeded]
        newest = max(done, key=lambda b: b.started_at) if done else None
        if newest is not None and newest.readable is False:
            bad.append(f"{s.source} {newest.backup_id}: {newest.readable_error or 'unreadable'}")
    if bad:
        return _finding(db, "unreadable_backup", True, "; ".join(bad), now)
    return _finding(db, "unreadable_backup", False, "the newest backups read through cleanly", now)


def _drills(db: DatabaseState, policy: DrillPolicy | None, now: datetime) -> list[Finding]:
    checks = ("drill_failed", "drill_overdue", "recovery_time_over_rto")
    if policy is None:
        return [_finding(db, c, False, "drills are not enabled for this database", now) for c in checks]
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
        _finding(db, "drill_failed", bool(failed), "; ".join(failed) or "the last drills succeeded", now),
        _finding(db, "drill_overdue", bool(overdue), "; ".join(overdue) or "drills on schedule", now),
        _finding(db, "recovery_time_over_rto", bool(slow), "; ".join(slow) or "recovery within the RTO", now),
    ]


def _scratch_leftover(db: DatabaseState, now: datetime) -> Finding:
    left = db.scratch_leftovers
    if not left:
        return _finding(db, "scratch_leftover", False, "no scratch database left behind", now)
    return _finding(db, "scratch_leftover", True, f"{len(left)} scratch database(s) not dropped: " + "; ".join(left),
                    now, value=float(len(left)))


@dataclass(frozen=True)
class DrillPolicy:
    """What the drill checks need: each scenario's interval (from its cron), the grace, and since when the
    guardian has watched (a drill cannot be overdue before its first chance)."""

    intervals: dict[str, timedelta]
    grace: timedelta
    since: datetime | None


def _archive(db: DatabaseState, policy: ArchivePolicy | None, now: datetime) -> list[Finding]:
    facts = db.archive
    if policy is None or facts is None:
        na = "no archive for this database" if policy is None else "archive not read yet"
        return [_finding(db, c, False, na, now) for c in
                ("archive_gap", "copy_lag", "unencrypted_object", "bucket_posture", "retention")]
    out = []
    gaps = []
    for tier, cadence in TIER_CADENCE.items():
        limit = cadence + policy.gap_grace
        stamps = [n for t in _AT_OR_ABOVE[tier] if t in facts.tiers and (n := facts.tiers[t].newest) is not None]
        newest = max(stamps, default=None)
        if newest is not None and now - newest > limit:
            gaps.append(f"newest {tier}-or-better copy is {format_duration_s((now - newest).total_seconds())} old "
                        f"(cadence {format_duration_s(cadence.total_seconds())})")
        elif newest is None and facts.oldest is not None and now - facts.oldest > limit:
            gaps.append(f"no {tier}-or-better copy although the archive began "
                        f"{format_duration_s((now - facts.oldest).total_seconds())} ago")
    out.append(_finding(db, "archive_gap", bool(gaps), "; ".join(gaps) or "every tier on cadence", now))
    out.append(_copy_lag(db, policy, now))
    out.append(_finding(db, "unencrypted_object", facts.unencrypted > 0,
                        f"{facts.unencrypted} archived copies have no server-side encryption"
                        if facts.unencrypted else "every archived copy is encrypted", now, value=facts.unencrypted))
    out.append(_finding(db, "bucket_posture", bool(facts.posture_problems),
                        "; ".join(facts.posture_problems) or "bucket set up as recommended", now,
                        value=len(facts.posture_problems)))
    missing = facts.monthly_missing
    out.append(_finding(db, "retention", bool(missing),
                        f"no monthly copy for {', '.join(missing)}" if missing
                        else f"{facts.monthly_covered} of the last {facts.monthly_expected} months covered", now,
                        value=facts.monthly_covered, threshold=facts.monthly_expected))
    return out


def copy_lag_seconds(db: DatabaseState, provider: str = "heroku") -> float | None:
    """Provider's newest good recovery point minus the archive's newest (0 when in sync, None without both)."""
    src, arch = db.sources.get(provider), db.sources.get("archive")
    p = src.newest_good if src is not None else None
    a = arch.newest_good if arch is not None else None
    if p is None:
        return None
    if a is None:
        return None
    return max(0.0, (p.recovery_point - a.recovery_point).total_seconds())


def _copy_lag(db: DatabaseState, policy: ArchivePolicy, now: datetime) -> Finding:
    if policy.mirrored_from is None:
        return _finding(db, "copy_lag", False, "no provider to mirror from", now)
    src = db.sources.get(policy.mirrored_from)
    newest = src.newest_good if src is not None else None
    arch = db.sources.get("archive")
    held = {b.backup_id for b in arch.backups if b.succeeded} if arch is not None else set()
    if newest is None or newest.backup_id in held:
        return _finding(db, "copy_lag", False, "the provider's newest good backup is archived", now,
                        value=copy_lag_seconds(db, policy.mirrored_from))
    waited = (now - (newest.finished_at or newest.started_at)).total_seconds()
    active = waited > policy.copy_grace.total_seconds()
    return _finding(db, "copy_lag", active,
                    f"{policy.mirrored_from} backup {newest.backup_id} finished {format_duration_s(waited)} ago and "
                    "is not in the archive yet", now, value=waited, threshold=policy.copy_grace.total_seconds())


def format_duration_s(seconds: float) -> str:
    from datetime import timedelta

    return format_duration(timedelta(seconds=round(seconds)))


def is_healthy(findings: Iterable[Finding]) -> bool:
    """True when no critical finding is active and every collector is up (what `check`'s exit code means:
    a database the guardian cannot read is a failure, whatever its backups say)."""
    return not any(f.active and (f.severity == "critical" or f.check == "collector_down") for f in findings)
