"""Reads a database's backups back from the archive store (the `archive` source)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from daemon.adapters.archive.store import ArchiveStore
from daemon.core.retention import TIERS, monthly_coverage
from daemon.core.snapshot import SOURCE_ARCHIVE, ArchiveFacts, Backup, SourceState, TierStats


def collect_archive(store: ArchiveStore, database: str) -> SourceState:
    """The archive's view of `database`: every stored attempt, oldest first.

    Raises CollectorError when the store cannot be read.
    """
    backups = tuple(r.to_backup(SOURCE_ARCHIVE) for r in store.list_records(database))
    return SourceState(source=SOURCE_ARCHIVE, backups=backups)


def collect_archive_facts(store: ArchiveStore, database: str, kind: str, posture: tuple[str, ...],
                          now: datetime) -> tuple[SourceState, ArchiveFacts]:
    """The archive source and its tier facts from one listing of the store. Raises CollectorError."""
    records, objects = store.inventory(database)
    backups = tuple(r.to_backup(SOURCE_ARCHIVE) for r in records)
    good = [o for o in objects if o.succeeded]
    tiers = {}
    for tier in TIERS:
        mine = [o for o in good if o.tier == tier]
        tiers[tier] = TierStats(newest=max((o.recovery_point for o in mine), default=None), count=len(mine),
                                bytes=sum(o.size_bytes for o in mine))
    oldest = min((o.recovery_point for o in good), default=None)
    expected = 0
    if oldest is not None:
        months = (now.year - oldest.year) * 12 + now.month - oldest.month + 1
        expected = max(0, min(12, months))
    covered, missing = monthly_coverage(good, now, expected) if expected else (0, [])
    facts = ArchiveFacts(
        kind=kind, tiers=tiers, unencrypted=sum(1 for o in good if o.encrypted is False),
        monthly_covered=covered, monthly_expected=expected, monthly_missing=tuple(missing), oldest=oldest,
        posture_problems=posture, observed_at=now,
    )
    return SourceState(source=SOURCE_ARCHIVE, backups=backups, observed_at=now), facts


def with_unrecorded(src: SourceState, unrecorded: Iterable[Backup]) -> SourceState:
    """Add failed attempts the store could not record (e.g. an unwritable archive), so no failure is
    invisible; attempts already in the store are not repeated."""
    known = {b.backup_id for b in src.backups}
    extra = [b for b in unrecorded if b.backup_id not in known]
    if not extra:
        return src
    return replace(src, backups=tuple(sorted((*src.backups, *extra), key=lambda b: b.started_at)))
