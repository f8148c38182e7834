"""Retention tiers of archived backups and the prune plan (pure: `now` is an argument).

Tiers (the retention policy of the SuoOps backup and recovery procedures): `daily` copies are kept a week,
`weekly` five weeks, `monthly` a year, `milestone` forever. A copy's tier is decided when it is archived: the
first copy of a calendar month (UTC) is `monthly`, else the first of an ISO week is `weekly`, else `daily`; a
person can promote any copy to `milestone` (`backup-guardian archive milestone`).

The prune plan deletes copies past their tier's keep, but never a milestone, never the newest copy of any tier,
never a copy under S3 Object Lock retention or legal hold, and never the newest good copy of the database.
It is the one decision behind every deletion: the daily prune, `archive prune`, and a database's
`capture.keep_last` (after each capture), which swaps the tiers' ages for a count and keeps the same rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.core.snapshot import SOURCE_ARCHIVE

TIERS = ("daily", "weekly", "monthly", "milestone")
#: The tier of a compliance export in the deletion plan: aged by its database's keep_years (`plan_exports`), never
#: by the backup tiers' rules, which never see it.
EXPORT_TIER = "compliance"
#: keep_last also trims failed-attempt records (no dump, only the record) to this many per database.
KEEP_FAILED_RECORDS = 20


@dataclass(frozen=True)
class ArchivedObject:
    """One stored copy as the deletion plan sees it (tier, size, lock, legal hold): facts only a store's listing
    knows and the policy never needs, so it is not `snapshot.Backup` (docs/ARCHITECTURE.md, three types)."""

    database: str
    backup_id: str
    key: str
    recovery_point: datetime
    size_bytes: int
    tier: str
    succeeded: bool = True
    source: str = SOURCE_ARCHIVE
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
               now: datetime, keep_last: int | None = None) -> list[PruneDecision]:
    """Decide, for every copy, whether it is past its tier's keep and may go. `keeps[tier]` None is forever.
    Failed or unknown-tier objects are never deleted by the plan (a person looks at them).

    With `keep_last` (a count), the count is the keep instead of the tiers' ages: the `keep_last` newest good
    copies of each database stay and older ones may go, and failed records beyond the newest
    KEEP_FAILED_RECORDS go; milestones, locked or held copies, the newest copy of each tier and of each
    database are kept all the same."""
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
    ordered = sorted(objs, key=lambda x: (x.database, x.recovery_point))
    if keep_last is None:
        return [_decide(o, keeps, now, newest_of_tier, newest_of_db) for o in ordered]
    counted = _newest(good, keep_last)
    failed_kept = _newest([o for o in objs if not o.succeeded], KEEP_FAILED_RECORDS)
    return [_decide_count(o, keep_last, counted, failed_kept, keeps, now, newest_of_tier, newest_of_db)
            for o in ordered]


def _newest(objs: list[ArchivedObject], count: int) -> set[tuple[str, str]]:
    """(database, backup id) of the `count` newest of `objs` in each database."""
    by_db: dict[str, list[ArchivedObject]] = {}
    for o in objs:
        by_db.setdefault(o.database, []).append(o)
    return {(o.database, o.backup_id) for mine in by_db.values()
            for o in sorted(mine, key=lambda x: x.recovery_point, reverse=True)[:count]}


def _protected(o: ArchivedObject, keeps: dict[str, timedelta | None],
               newest_of_tier: dict[tuple[str, str], ArchivedObject],
               newest_of_db: dict[str, ArchivedObject]) -> str | None:
    """Why a good copy is kept whatever its age or rank, or None."""
    if o.tier == "milestone":
        return "milestone: kept forever"
    if o.tier not in keeps:
        return f"unknown tier {o.tier!r}: kept"
    if newest_of_tier.get((o.database, o.tier)) is o:
        return f"newest {o.tier} copy: kept"
    if newest_of_db.get(o.database) is o:
        return "newest good copy of the database: kept"
    return None


def _locked(o: ArchivedObject, now: datetime, past: str) -> PruneDecision | None:
    """A copy `past` its keep that Object Lock (legal hold or running retention) keeps, or None."""
    if o.legal_hold:
        return PruneDecision(o, False, f"{past} but under legal hold: kept")
    if o.lock_until is not None and o.lock_until > now:
        return PruneDecision(o, False, f"{past} but object-locked until {o.lock_until.isoformat()}: kept")
    return None


def _decide_count(o: ArchivedObject, keep_last: int, counted: set[tuple[str, str]],
                  failed_kept: set[tuple[str, str]], keeps: dict[str, timedelta | None], now: datetime,
                  newest_of_tier: dict[tuple[str, str], ArchivedObject],
                  newest_of_db: dict[str, ArchivedObject]) -> PruneDecision:
    if not o.succeeded:
        if (o.database, o.backup_id) in failed_kept:
            return PruneDecision(o, False, "not a good copy: left for a person to look at")
        return PruneDecision(o, True, f"failed record beyond the newest {KEEP_FAILED_RECORDS}")
    kept = _protected(o, keeps, newest_of_tier, newest_of_db)
    if kept is not None:
        return PruneDecision(o, False, kept)
    if (o.database, o.backup_id) in counted:
        return PruneDecision(o, False, f"one of the {keep_last} newest good copies (keep_last): kept")
    past = f"beyond the {keep_last} newest good copies (keep_last)"
    return _locked(o, now, past) or PruneDecision(o, True, f"{o.tier} copy {past}")


def _decide(o: ArchivedObject, keeps: dict[str, timedelta | None], now: datetime,
            newest_of_tier: dict[tuple[str, str], ArchivedObject],
            newest_of_db: dict[str, ArchivedObject]) -> PruneDecision:
    if not o.succeeded:
        return PruneDecision(o, False, "not a good copy: left for a person to look at")
    kept = _protected(o, keeps, newest_of_tier, newest_of_db)
    if kept is not None:
        return PruneDecision(o, False, kept)
    keep = keeps[o.tier]
    age = now - o.recovery_point
    if keep is None or age <= keep:
        return PruneDecision(o, False, f"{o.tier} copy within its keep")
    return _locked(o, now, "past its keep") or PruneDecision(
        o, True, f"{o.tier} copy is {age.days} days old, past its keep of {keep.days} days")


def years_after(t: datetime, years: int) -> datetime:
    """The same moment `years` calendar years after `t` (29 February becomes 28 February)."""
    try:
        return t.replace(year=t.year + years)
    except ValueError:
        return t.replace(year=t.year + years, day=28)


def plan_exports(exports: Iterable[ArchivedObject], keep_years: dict[str, int],
                 now: datetime) -> list[PruneDecision]:
    """Decide, for every compliance export (tier EXPORT_TIER, its recovery point the export's own time), whether
    it is past its database's `keep_years` and may go: only once `now` is at least keep_years calendar years
    after the export; never an export under Object Lock retention or legal hold, never one of a database with no
    keep_years given (its compliance section removed: nobody said how long)."""
    out = []
    for o in sorted(exports, key=lambda x: (x.database, x.recovery_point)):
        if o.tier != EXPORT_TIER:
            out.append(PruneDecision(o, False, f"{o.tier} copy is not a compliance export: not planned here"))
            continue
        years = keep_years.get(o.database)
        if years is None:
            out.append(PruneDecision(o, False, "compliance export of a database without keep_years: kept"))
            continue
        until = years_after(o.recovery_point, years)
        if now < until:
            out.append(PruneDecision(o, False, f"compliance export within its keep of {years} years "
                                               f"(until {until:%Y-%m-%d})"))
            continue
        past = f"compliance export of {o.recovery_point:%Y-%m-%d} past its keep of {years} years"
        out.append(_locked(o, now, past) or PruneDecision(o, True, past))
    return out


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
