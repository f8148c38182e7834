"""Multipart uploads into the S3 archive: `S3Writer` streams a dump up in parts (a few in flight while the next
fills, each with S3's SHA-256 checksum, parts growing to fit S3's 10,000 for a dump of unknown size), completes
and verifies the object (a HEAD: size, checksum present, encryption), then tags it and writes its record. An
upload has a bounded life (UPLOAD_MAX_AGE): past it the writer gives up, and a sweep may abort it (`abandoned`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from daemon.adapters.archive.records import BackupRecord
from daemon.core.errors import CaptureError, GuardianError
from daemon.core.retention import ArchivedObject, assign_tier


class UploadTarget(Protocol):
    """What a writer uses of its store (`S3ArchiveStore`): the bucket and client, the guarded call, the
    listing (for the tier), the record and the tags."""

    bucket: str
    client: Any
    upload_max_age: timedelta

    def _call(self, what: str, fn: Any, error: type[GuardianError] = ..., **kwargs: Any) -> Any: ...
    def _tag(self, key: str, record: BackupRecord) -> None: ...
    def objects(self, database: str) -> list[ArchivedObject]: ...
    def put_record(self, record: BackupRecord, error: type[GuardianError] = ...) -> None: ...

#: How long a multipart upload may stay open. The writer itself enforces it (it aborts instead of sending a part
#: or completing once its upload is older), so an upload older than this has no live writer that will still use
#: it, whichever process, host or configured timeout started it.
UPLOAD_MAX_AGE = timedelta(hours=24)
#: Beyond UPLOAD_MAX_AGE before a sweep aborts someone's upload: covers a clock difference between this host
#: and S3's `Initiated`, and the one S3 call (bounded by the S3 timeout and retries) a writer may have in flight
#: when it last checked its age.
UPLOAD_MARGIN = timedelta(hours=1)
MIB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit per multipart upload
MAX_PART = 5 * 1024 * MIB  # S3's largest part


def abandoned(upload: dict[str, Any], now: datetime, older_than: timedelta) -> bool:
    """Whether a multipart upload (as ListMultipartUploads lists it) was initiated more than `older_than`
    before `now`; one without a readable start time never is."""
    started = upload.get("Initiated")
    return isinstance(started, datetime) and started.tzinfo is not None and now - started >= older_than


class S3Writer:
    """A multipart upload in flight. Full parts are handed over without copying and sent by a small pool while
    the next part fills, as many at a time as fit in IN_FLIGHT_BYTES (at least 2): at the default 8 MiB parts,
    six in flight and one filling, whatever the dump size, and the download does not stall on each upload.

    S3 allows 10,000 parts. A dump whose size is known (`size_hint`, e.g. Heroku's) gets parts big enough for it
    to fit in the first GROW_AFTER parts (parts above 16 MiB for dumps over about 70 GiB). Past those (a stream of
    unknown size that keeps going), the part size doubles every GROW_EVERY parts, up to 32 times the base: at
    8 MiB that is 39 GiB before any growth and about 520 GiB in all. Bigger parts mean fewer in flight (at least
    2), so memory grows only for such dumps, to 3 parts of the current size. A dump that outgrows even that fails
    with the setting to raise."""

    IN_FLIGHT_BYTES = 48 * MIB
    GROW_AFTER, GROW_EVERY, MAX_GROWTH = 5_000, 1_000, 5

    def __init__(self, store: UploadTarget, database: str, key: str, upload_id: str, part_size: int) -> None:
        self.store, self.database, self.key, self.upload_id = store, database, key, upload_id
        self.base = part_size
        self.buf = bytearray()
        self.parts: list[dict[str, Any]] = []
        self.part_sizes: list[int] = []
        self.size = 0
        self.done = False
        self._pool = concurrent.futures.ThreadPoolExecutor(self._in_flight(part_size), thread_name_prefix="s3-part")
        self._inflight: list[concurrent.futures.Future[dict[str, Any]]] = []
        self._next = 1
        self._deadline = time.monotonic() + store.upload_max_age.total_seconds()

    def _check_age(self) -> None:
        """Refuse to use the upload past UPLOAD_MAX_AGE: from then on a sweep may abort it (see there)."""
        if time.monotonic() >= self._deadline:
            raise CaptureError(f"the upload of s3://{self.store.bucket}/{self.key} stayed open longer than "
                               f"{self.store.upload_max_age}; given up (an upload that old may be swept)")

    @classmethod
    def base_part_size(cls, configured: int, size_hint: int | None) -> int:
        """The configured part size, raised (to whole MiB) so a dump of `size_hint` bytes, plus 10%, fits in the
        first GROW_AFTER parts."""
        if not size_hint:
            return configured
        need = -(-int(size_hint * 1.1) // cls.GROW_AFTER)
        return min(MAX_PART, max(configured, -(-need // MIB) * MIB))

    @classmethod
    def _in_flight(cls, part_size: int) -> int:
        return max(2, min(10, cls.IN_FLIGHT_BYTES // part_size))  # botocore pools 10 connections

    def _part_size(self) -> int:
        """The size of the part being filled (part number `_next`)."""
        over = self._next - self.GROW_AFTER
        if over <= 0:
            return self.base
        return min(MAX_PART, self.base << min(self.MAX_GROWTH, (over - 1) // self.GROW_EVERY + 1))

    def write(self, chunk: bytes | memoryview) -> None:
        self.buf += chunk  # a copy: the caller may reuse the buffer `chunk` views
        self.size += len(chunk)
        while len(self.buf) >= (size := self._part_size()):
            if len(self.buf) == size:
                part, self.buf = self.buf, bytearray()  # hand the buffer over: no copy
            else:
                part = self.buf[:size]
                del self.buf[:size]
            self._submit(part)

    def _submit(self, data: bytearray | bytes) -> None:
        self._check_age()
        if self._next > MAX_PARTS:
            raise CaptureError(f"the dump outgrew S3's {MAX_PARTS:,} parts (about {self.size / 2**30:.0f} GiB so "
                               f"far with {self.base // MIB} MiB parts growing to {self._part_size() // MIB} MiB): "
                               "raise archive.s3.part_size_mb")
        while len(self._inflight) >= self._in_flight(len(data) or self.base):
            self._collect(self._inflight.pop(0))
        number, self._next = self._next, self._next + 1
        self.part_sizes.append(len(data))
        self._inflight.append(self._pool.submit(self._upload, number, data))

    def _collect(self, future: concurrent.futures.Future[dict[str, Any]]) -> None:
        self.parts.append(future.result())  # re-raises the part's CaptureError

    def _upload(self, number: int, data: bytearray | bytes) -> dict[str, Any]:
        resp = self.store._call("upload part", self.store.client.upload_part, error=CaptureError, Key=self.key,
                                UploadId=self.upload_id, PartNumber=number, Body=data, ChecksumAlgorithm="SHA256")
        return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": resp.get("ChecksumSHA256")}

    def _drain(self) -> None:
        try:
            while self._inflight:
                self._collect(self._inflight.pop(0))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def seal(self) -> None:
        """Send the last part, complete the upload and verify the object (size, SHA-256 checksum, encryption).
        It does not count as a backup until `commit` writes its record. Idempotent. Raises CaptureError (and
        aborts)."""
        if self.done:
            return
        store = self.store
        try:
            if self.buf or self._next == 1:
                self._submit(self.buf)
                self.buf = bytearray()
            self._drain()
            parts = [{k: v for k, v in sorted(p.items()) if v is not None}
                     for p in sorted(self.parts, key=lambda p: p["PartNumber"])]
            self._check_age()
            store._call("complete multipart upload", store.client.complete_multipart_upload, error=CaptureError,
                        Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts})
            self.done = True
            self._verify()
        except GuardianError:
            self.abort()
            raise

    def commit(self, record: BackupRecord) -> None:
        """Seal the upload if not yet done, tag it and write its record. Raises CaptureError (and leaves nothing
        that counts as a backup) when any step fails."""
        store = self.store
        self.seal()
        try:
            if record.size_bytes != self.size:
                raise CaptureError(f"the record says {record.size_bytes} bytes, {self.size} were written")
            if record.tier is None:
                existing = [o for o in store.objects(self.database) if o.backup_id != record.backup_id]
                record = replace(record, tier=assign_tier(record.started_at, existing))
            store._tag(self.key, record)
            store.put_record(record)
        except GuardianError:
            self.abort()
            raise

    def _verify(self) -> None:
        store = self.store
        head = store._call("head", store.client.head_object, error=CaptureError, Key=self.key, ChecksumMode="ENABLED")
        problems = []
        if int(head.get("ContentLength", -1)) != self.size:
            problems.append(f"size {head.get('ContentLength')} != {self.size}")
        if not head.get("ServerSideEncryption"):
            problems.append("no server-side encryption")
        if not head.get("ChecksumSHA256"):
            problems.append("no SHA-256 checksum")
        if problems:
            raise CaptureError(f"verification of s3://{store.bucket}/{self.key} failed: {', '.join(problems)}")

    def abort(self) -> None:
        store = self.store
        with contextlib.suppress(Exception):
            self._drain()
        with contextlib.suppress(Exception):
            if self.done:
                store.client.delete_object(Bucket=store.bucket, Key=self.key)
            else:
                store.client.abort_multipart_upload(Bucket=store.bucket, Key=self.key, UploadId=self.upload_id)
