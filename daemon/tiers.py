"""Retention tiers of archived backups and the prune plan (pure: `now` is an argument).

Tiers (the seed's retention policy): `daily` copies are kept a week, `weekly` five weeks, `monthly` a year,
`milestone` forever. A copy's tier is decided when it is archived: the first copy of a calendar month (UTC) is
`monthly`, else the first of an ISO week is `weekly`, else `daily`; a person can promote any copy to
`milestone` (`backup-guardian archive milestone`).

The prune plan deletes copies past their tier's keep, but never a milestone, never the newest copy of any tier,
never a copy under S3 Object Lock retention or legal hold, and never the newest good copy of the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

TIERS = ("daily", "weekly", "monthly", "milestone")


@dataclass(frozen=True)
class ArchivedObject:
    """One backup copy in the archive, as the archive collector sees it."""

    database: str
    backup_id: str
    key: str
    recovery_point: datetime
    size_bytes: int
    tier: str
    succeeded: bool = True
    source: str = "archive"
    sha256: str | None = None
    encrypted: bool | None = None
    label: str | None = None
    lock_until: datetime | None = None
    legal_hold: bool = False


def assign_tier(recovery_point: datetime, existing: Iterable[ArchivedObject]) -> str:
    """The tier of a new copy with this recovery point, given the copies already archived."""
    others = [o for o in existing if o.succeeded and o.tier != "milestone"]
    rp = recovery_point
    month = (rp.year, rp.month)
    if not any((o.recovery_point.year, o.recovery_point.month) == month and o.recovery_point <= rp for o in others):
        return "monthly"
    week = rp.isocalendar()[:2]
    if not any(o.recovery_point.isocalendar()[:2] == week and o.recovery_point <= rp for o in others):
        return "weekly"
    return "daily"


@dataclass(frozen=True)
class PruneDecision:
    """Keep or delete one copy, and why (every decision goes to the audit log)."""

    obj: ArchivedObject
    delete: bool
    reason: str


def plan_prune(objects: Iterable[ArchivedObject], keeps: dict[str, timedelta | None],
               now: datetime) -> list[PruneDecision]:
    """Decide, for every copy, whether it is past its tier's keep and may go. `keeps[tier]` None is forever.
    Failed or unknown-tier objects are never deleted by the plan (a person looks at them)."""
    objs = list(objects)
    good = [o for o in objs if o.succeeded]
    newest_of_tier: dict[tuple[str, str], ArchivedObject] = {}
    for o in good:
        cur = newest_of_tier.get((o.database, o.tier))
        if cur is None or o.recovery_point > cur.recovery_point:
            newest_of_tier[(o.database, o.tier)] = o
    newest_of_db: dict[str, ArchivedObject] = {}
    for o in good:
        cur = newest_of_db.get(o.database)
        if cur is None or o.recovery_point > cur.recovery_point:
            newest_of_db[o.database] = o
    out = []
    for o in sorted(objs, key=lambda x: (x.database, x.recovery_point)):
        out.append(_decide(o, keeps, now, newest_of_tier, newest_of_db))
    return out


def _decide(o: ArchivedObject, keeps: dict[str, timedelta | None], now: datetime,
            newest_of_tier: dict[tuple[str, str], ArchivedObject],
            newest_of_db: dict[str, ArchivedObject]) -> PruneDecision:
    if not o.succeeded:
        return PruneDecision(o, False, "not a good copy: left for a person to look at")
    if o.tier == "milestone":
        return PruneDecision(o, False, "milestone: kept forever")
    if o.tier not in keeps:
        return PruneDecision(o, False, f"unknown tier {o.tier!r}: kept")
    if newest_of_tier.get((o.database, o.tier)) is o:
        return PruneDecision(o, False, f"newest {o.tier} copy: kept")
    if newest_of_db.get(o.database) is o:
        return PruneDecision(o, False, "newest good copy of the database: kept")
    keep = keeps[o.tier]
    age = now - o.recovery_point
    if keep is None or age <= keep:
        return PruneDecision(o, False, f"{o.tier} copy within its keep")
    if o.legal_hold:
        return PruneDecision(o, False, "past its keep but under legal hold: kept")
    if o.lock_until is not None and o.lock_until > now:
        return PruneDecision(o, False, f"past its keep but object-locked until {o.lock_until.isoformat()}: kept")
    return PruneDecision(o, True, f"{o.tier} copy is {age.days} days old, past its keep of {keep.days} days")


def monthly_coverage(objects: Iterable[ArchivedObject], now: datetime, months: int = 12) -> tuple[int, list[str]]:
    """How many of the last `months` calendar months (the current one included) have a good monthly (or
    milestone) copy, and which months are missing ("YYYY-MM")."""
    have = {(o.recovery_point.year, o.recovery_point.month) for o in objects
            if o.succeeded and o.tier in ("monthly", "milestone")}
    missing = []
    y, m = now.year, now.month
    for _ in range(months):
        if (y, m) not in have:
            missing.append(f"{y:04d}-{m:02d}")
        y, m = (y, m - 1) if m > 1 else (y - 1, 12)
    return months - len(missing), missing
