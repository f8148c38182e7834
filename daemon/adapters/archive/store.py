"""Archive stores: where backups written by the guardian live, and how they are read back.

`ArchiveStore` is the contract every store follows (the local directory, `daemon.adapters.archive.local`; an
S3-compatible bucket, `daemon.adapters.archive.s3`). A backup is a dump object plus a metadata record
(`daemon.adapters.archive.records`). A dump counts as a backup only once `commit` has returned: a crash or
failure before that leaves nothing that could be mistaken for a backup.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

from daemon.adapters.archive.records import BackupRecord
from daemon.core.retention import ArchivedObject


class ArchiveWriter(Protocol):
    """An in-flight dump. Exactly one of `commit` or `abort` ends it."""

    def write(self, chunk: bytes | memoryview) -> None:
        """Append `chunk`. It may be a view of the caller's reused buffer: copy it, never keep a reference."""

    def seal(self) -> None:
        """Finish storing the dump (flushed, uploaded, verified) without making it a backup yet; `commit` then
        only writes the record. Optional to call (commit seals first); idempotent. Raises CaptureError."""

    def commit(self, record: BackupRecord) -> None:
        """Make the dump and its record visible atomically. Raises CaptureError on failure."""

    def abort(self) -> None:
        """Discard everything written; never raises."""


class ArchiveStore(Protocol):
    """Contract of a backup archive (local directory, S3-compatible bucket).

    - `list_records(database)` returns every readable record, oldest first; unreadable ones are skipped
      and counted in `last_skipped`. Raises CollectorError when the store itself cannot be read.
    - `begin(database, backup_id)` opens a writer; raises CaptureError when the store is not writable.
      `size_hint` (the dump's size when known in advance) lets a store size its parts.
    - `record_failure(record)` stores a failed attempt (no dump); raises CaptureError.
    - `delete(database, backup_id)` removes a dump and its record (raises GuardianError when refused).
    - `objects(database)` lists the copies with tier, encryption and lock state (for tiers and prune).
    - `inventory(database)` is `(list_records(database), objects(database))` from one read of the store.
    - `set_tier(database, backup_id, tier, label)` moves a good copy to another tier.
    - `exports(database)` lists its compliance exports, one `ArchivedObject` of tier
      `daemon.core.retention.EXPORT_TIER` each (daemon.adapters.archive.exports); raises CollectorError.
    - `delete_export(database, export_id)` removes one export, all its objects (raises GuardianError when
      refused, as `delete` does, Object Lock included).
    - `posture()` lists problems of the store's setup in plain words.
    A record committed without a tier gets one from `daemon.core.retention.assign_tier`.
    """

    last_skipped: int

    def describe(self) -> str: ...

    def list_records(self, database: str) -> list[BackupRecord]: ...

    def begin(self, database: str, backup_id: str, recovery_point: datetime | None = None,
              origin: str = "self", size_hint: int | None = None) -> ArchiveWriter: ...

    def record_failure(self, record: BackupRecord) -> None: ...

    def delete(self, database: str, backup_id: str) -> None: ...

    def sweep_partials(self) -> int: ...

    def objects(self, database: str) -> list[ArchivedObject]: ...

    def inventory(self, database: str) -> tuple[list[BackupRecord], list[ArchivedObject]]: ...

    def set_tier(self, database: str, backup_id: str, tier: str, label: str | None = None) -> BackupRecord: ...

    def exports(self, database: str) -> list[ArchivedObject]: ...

    def delete_export(self, database: str, export_id: str) -> None: ...

    def posture(self) -> list[str]: ...

    def open_dump(self, database: str, backup_id: str) -> Iterator[bytes]:
        """The dump's bytes in chunks (streamed); raises GuardianError when it cannot be read."""

    def put_blob(self, database: str, name: str, data: bytes, content_type: str) -> str:
        """Store a small document beside the database's backups (drill reports); returns where."""

    def put_file(self, database: str, name: str, path: Path, content_type: str) -> str:
        """Store the file at `path` beside the database's backups as `put_blob` does, read in chunks (multipart
        on S3), so memory stays flat whatever its size; returns where. Raises GuardianError."""
