"""What one S3 collection pass may take from the last one instead of asking S3 again.

A pass lists a database's prefix once (ListObjectsV2 gives each object's ETag, size and LastModified). A record
(`.json`) is read with GET and a dump's facts (`.dump`: server-side encryption, Object Lock retention and legal
hold) with HEAD only when the object is new or its listed version changed; otherwise they come from here.

What a listing shows and what it does not (AWS S3 API reference, `Object.ETag`, and moto's server alike, see
tests/daemon/adapters/archive/test_s3_listing.py):
- The ETag "reflects changes only to the contents of an object, not its metadata": it is the MD5 of the data for a
  single PUT or a copy stored plain or with SSE-S3. So re-encrypting a copy in place (CopyObject onto itself with
  new SSE), or overwriting it with the same bytes without SSE, keeps the ETag. It does write a new object, so its
  LastModified moves: the version compared here is (ETag, size, LastModified), not the ETag alone. LastModified
  has one-second resolution in a listing, so a rewrite within the second of the previous write is not seen.
- Object Lock retention (PutObjectRetention) and legal hold (PutObjectLegalHold) change none of the three.
Hence REFRESH_EVERY: a dump's HEAD facts are read again at the latest that long after they were read, whatever
the listing says. The lock facts only shape the prune plan's wording: a delete reads the lock fresh itself
(`S3ArchiveStore._lock_of`), so a stale cache can never make a locked copy go.

Memory is bounded per database by its listing: every pass forgets the keys it did not list (deleted objects).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.adapters.archive.records import BackupRecord

#: The longest a dump's encryption and Object Lock facts are served from the cache. An hour, as the bucket
#: posture (`collectors.archive.POSTURE_EVERY`): an unencrypted copy made by a same-second rewrite, or a lock put or
#: lifted, shows up within the hour. Each copy is read again every 30 to 60 min (see `ListingCache._ttl`): for 400
#: copies about 12,800 HEADs a day (4 to 5 a 30 s pass) instead of one per copy every pass (1.15 million).
REFRESH_EVERY = timedelta(hours=1)

Version = tuple[str, int, datetime | None]  # (ETag, size, LastModified) as ListObjectsV2 lists an object


def version_of(listed: dict[str, Any]) -> Version:
    """The version of one `Contents` entry of a ListObjectsV2 answer."""
    modified = listed.get("LastModified")
    return str(listed.get("ETag")), int(listed.get("Size", -1)), modified if isinstance(modified, datetime) else None


@dataclass(frozen=True)
class HeadFacts:
    """What a HEAD of a dump says that a listing does not."""

    encrypted: bool
    lock_until: datetime | None
    legal_hold: bool

    @classmethod
    def from_head(cls, resp: dict[str, Any]) -> HeadFacts:
        return cls(encrypted=bool(resp.get("ServerSideEncryption")),
                   lock_until=resp.get("ObjectLockRetainUntilDate"),
                   legal_hold=resp.get("ObjectLockLegalHoldStatus") == "ON")


@dataclass(frozen=True)
class _Read:
    version: Version
    value: Any  # BackupRecord | None for a record, HeadFacts for a dump
    due: float  # clock() reading after which it must be read again (inf: only when its version changes)


class ListingCache:
    """Per database: key -> what was read of it, at which listed version. Thread-safe; the I/O is the caller's
    (a concurrent pass at worst reads an object twice)."""

    def __init__(self, refresh_every: timedelta = REFRESH_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.refresh_every = refresh_every
        self.clock = clock
        self._lock = threading.Lock()
        self._reads: dict[str, dict[str, _Read]] = {}

    def retain(self, database: str, listed: Iterable[str]) -> None:
        """Forget every key of `database` that is not in this listing (deleted, or never there)."""
        keep = set(listed)
        with self._lock:
            mine = self._reads.get(database, {})
            self._reads[database] = {k: r for k, r in mine.items() if k in keep}

    def size(self, database: str) -> int:
        """How many keys of `database` are held (never more than its last listing had)."""
        with self._lock:
            return len(self._reads.get(database, {}))

    def _get(self, database: str, key: str, version: Version) -> _Read | None:
        with self._lock:
            read = self._reads.get(database, {}).get(key)
        if read is None or read.version != version or self.clock() >= read.due:
            return None
        return read

    def _put(self, database: str, key: str, read: _Read) -> None:
        with self._lock:
            self._reads.setdefault(database, {})[key] = read

    def record(self, database: str, key: str, version: Version,
               load: Callable[[], BackupRecord | None]) -> BackupRecord | None:
        """The record at `key` (None: unreadable), loaded only when new or its version changed. A record's
        whole content is its body, so a same version is the same record: no refresh."""
        read = self._get(database, key, version)
        if read is None:
            read = _Read(version, load(), float("inf"))
            self._put(database, key, read)
        value: BackupRecord | None = read.value
        return value

    def facts(self, database: str, key: str, version: Version, load: Callable[[], HeadFacts]) -> HeadFacts:
        """A dump's HEAD facts, loaded when new, its version changed, or they are due (see REFRESH_EVERY)."""
        read = self._get(database, key, version)
        if read is None:
            read = _Read(version, load(), self.clock() + self._ttl(key))
            self._put(database, key, read)
        value: HeadFacts = read.value
        return value

    def _ttl(self, key: str) -> float:
        """Between half and all of `refresh_every`, fixed per key: copies read in the same pass (all of them,
        at start) come due over half an hour rather than all in one pass, and stay spread."""
        spread = (zlib.crc32(key.encode()) % 1024) / 1024
        return self.refresh_every.total_seconds() * (1 - spread / 2)
