"""Reads a database's backups back from the archive store (the `archive` source)."""

from __future__ import annotations

from collections.abc import Iterable

from daemon.archive import ArchiveStore
from daemon.state import SOURCE_ARCHIVE, Backup, SourceState


def collect_archive(store: ArchiveStore, database: str, unrecorded: Iterable[Backup] = ()) -> SourceState:
    """The archive's view of `database`: every stored attempt, oldest first.

    `unrecorded` adds failed attempts the store could not record (e.g. a read-only archive directory),
    so a failure is never invisible. Raises CollectorError when the store cannot be read.
    """
    backups = [r.to_backup(SOURCE_ARCHIVE) for r in store.list_records(database)]
    known = {b.backup_id for b in backups}
    backups += [b for b in unrecorded if b.backup_id not in known]
    backups.sort(key=lambda b: b.started_at)
    return SourceState(source=SOURCE_ARCHIVE, backups=tuple(backups))
