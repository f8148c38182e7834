"""Reads a database's backups back from the archive store (the `archive` source), with the bucket's posture."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from daemon.adapters.archive.store import ArchiveStore
from daemon.config import ArchiveConfig, DatabaseConfig
from daemon.core.policy import ArchivePolicy
from daemon.core.retention import TIERS, monthly_coverage
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, ArchiveFacts, Backup, SourceState, TierStats


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


POSTURE_EVERY = timedelta(hours=1)


class ArchiveReader:
    """Which databases the archive covers, the policy it holds them to, and one database's archive facts."""

    def __init__(self, config: ArchiveConfig, store: ArchiveStore, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self._posture: tuple[str, ...] = ()
        self._posture_at: datetime | None = None
        self._lock = threading.Lock()

    def covers(self, db: DatabaseConfig) -> bool:
        """The archive holds this database's captures (the guardian's own, or written by another guardian or
        job when captures are off here), or mirrors its Heroku backups."""
        return db.url is not None or (db.heroku is not None and self.config.mirrors)

    def policy(self, db: DatabaseConfig) -> ArchivePolicy | None:
        if not self.covers(db):
            return None
        mirrored = SOURCE_HEROKU if db.heroku is not None and self.config.mirrors else None
        return ArchivePolicy(copy_grace=self.config.copy_grace, gap_grace=self.config.gap_grace,
                             mirrored_from=mirrored)

    def posture(self) -> tuple[str, ...]:
        """Bucket posture problems, read at most once an hour (a failure to read is itself a problem)."""
        now = self.clock()
        with self._lock:
            if self._posture_at is None or now - self._posture_at >= POSTURE_EVERY:
                try:
                    self._posture = tuple(self.store.posture())
                except Exception as exc:  # posture is advisory; never let it take the collector down
                    self._posture = (f"posture unreadable: {exc}",)
                self._posture_at = now
            return self._posture

    def collect(self, name: str) -> tuple[SourceState, ArchiveFacts]:
        return collect_archive_facts(self.store, name, self.config.kind, self.posture(), self.clock())
