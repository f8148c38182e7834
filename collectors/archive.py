"""Reads a database's backups back from the archive store (the `archive` source)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from daemon.archive import ArchiveStore
from daemon.state import SOURCE_ARCHIVE, Backup, SourceState


def collect_archive(store: ArchiveStore, database: str) -> SourceState:
    """The archive's view of `database`: every stored attempt, oldest first.

    Raises CollectorError when the store cannot be read.
    """
    backups = tuple(r.to_backup(SOURCE_ARCHIVE) for r in store.list_records(database))
    return SourceState(source=SOURCE_ARCHIVE, backups=backups)


def with_unrecorded(src: SourceState, unrecorded: Iterable[Backup]) -> SourceState:
    """Add failed attempts the store could not record (e.g. an unwritable archive), so no failure is
    invisible; attempts already in the store are not repeated."""
    known = {b.backup_id for b in src.backups}
    extra = [b for b in unrecorded if b.backup_id not in known]
    if not extra:
        return src
    return replace(src, backups=tuple(sorted((*src.backups, *extra), key=lambda b: b.started_at)))
