"""The archive checks, for databases with an archive: archive_gap (a tier's newest copy older than its cadence
plus grace), copy_lag (the provider's newest good backup not archived in time), unencrypted_object,
bucket_posture and retention (a month without a monthly copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.core.policy.findings import finding, format_duration_s
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, DatabaseState, Finding

#: Tier -> cadence: the newest copy at or above the tier must be younger than this (plus the grace).
TIER_CADENCE = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": timedelta(days=31)}
_AT_OR_ABOVE = {"daily": ("daily", "weekly", "monthly", "milestone"), "weekly": ("weekly", "monthly", "milestone"),
                "monthly": ("monthly", "milestone")}


@dataclass(frozen=True)
class ArchivePolicy:
    """The archive settings the checks need (from ArchiveConfig)."""

    copy_grace: timedelta
    gap_grace: timedelta
    mirrored_from: str | None = SOURCE_HEROKU


def archive_checks(db: DatabaseState, policy: ArchivePolicy | None, now: datetime) -> list[Finding]:
    facts = db.archive
    if policy is None or facts is None:
        na = "no archive for this database" if policy is None else "archive not read yet"
        return [finding(db, c, False, na, now) for c in
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
    out.append(finding(db, "archive_gap", bool(gaps), "; ".join(gaps) or "every tier on cadence", now))
    out.append(_copy_lag(db, policy, now))
    out.append(finding(db, "unencrypted_object", facts.unencrypted > 0,
                        f"{facts.unencrypted} archived copies have no server-side encryption"
                        if facts.unencrypted else "every archived copy is encrypted", now, value=facts.unencrypted))
    out.append(finding(db, "bucket_posture", bool(facts.posture_problems),
                        "; ".join(facts.posture_problems) or "bucket set up as recommended", now,
                        value=len(facts.posture_problems)))
    missing = [m for m in facts.monthly_missing if not _month_just_begun(m, now, policy.gap_grace)]
    out.append(finding(db, "retention", bool(missing),
                        f"no monthly copy for {', '.join(missing)}" if missing
                        else f"{facts.monthly_covered} of the last {facts.monthly_expected} months covered", now,
                        value=facts.monthly_covered, threshold=facts.monthly_expected))
    return out


def copy_lag_seconds(db: DatabaseState, provider: str = SOURCE_HEROKU) -> float | None:
    """Provider's newest good recovery point minus the archive's newest (0 when in sync, None without both)."""
    src, arch = db.sources.get(provider), db.sources.get(SOURCE_ARCHIVE)
    p = src.newest_good if src is not None else None
    a = arch.newest_good if arch is not None else None
    if p is None:
        return None
    if a is None:
        return None
    return max(0.0, (p.recovery_point - a.recovery_point).total_seconds())


def _copy_lag(db: DatabaseState, policy: ArchivePolicy, now: datetime) -> Finding:
    if policy.mirrored_from is None:
        return finding(db, "copy_lag", False, "no provider to mirror from", now)
    src = db.sources.get(policy.mirrored_from)
    newest = src.newest_good if src is not None else None
    arch = db.sources.get(SOURCE_ARCHIVE)
    held = {b.backup_id for b in arch.backups if b.succeeded} if arch is not None else set()
    if newest is None or newest.backup_id in held:
        return finding(db, "copy_lag", False, "the provider's newest good backup is archived", now,
                        value=copy_lag_seconds(db, policy.mirrored_from))
    waited = (now - (newest.finished_at or newest.started_at)).total_seconds()
    active = waited > policy.copy_grace.total_seconds()
    return finding(db, "copy_lag", active,
                    f"{policy.mirrored_from} backup {newest.backup_id} finished {format_duration_s(waited)} ago and "
                    "is not in the archive yet", now, value=waited, threshold=policy.copy_grace.total_seconds())


def _month_just_begun(month: str, now: datetime, grace: timedelta) -> bool:
    """The current month ("YYYY-MM") within a day plus the gap grace of its start: its first copy (the monthly
    one) is not due yet, so its absence is no finding (it was one at every month's first minutes)."""
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return month == f"{now.year:04d}-{now.month:02d}" and now - start < TIER_CADENCE["daily"] + grace
