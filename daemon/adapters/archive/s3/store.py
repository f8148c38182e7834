"""The S3-compatible archive store (boto3), behind the same `ArchiveStore` contract as the local directory.

Layout: `<prefix>/<quoted database>/<backup_id>.dump` (the custom-format dump) and `<backup_id>.json` (the
record). A dump counts as a backup only when its record exists, says succeeded, and the dump object has the
recorded size. Dumps go up as multipart uploads (part buffers take about 56 MiB at the default part size,
however big the dump, until parts must grow to fit S3's 10,000; `S3Writer` in
daemon.adapters.archive.s3.upload), each part with S3's SHA-256 checksum, server-side encryption on every put;
before the record is written the object is verified with a HEAD (size, checksum present, encryption). Object
metadata carries what is known when the upload starts (database, backup id, recovery point, origin); the sha256
of the whole dump and the tier are known only at the end, so they go into the object's tags and the record (S3
metadata cannot change after CreateMultipartUpload without copying the object).

Reading costs one LIST per database a pass; records and dump HEADs are read again only when the listing shows
them new or changed, and HEAD facts at least hourly (daemon.adapters.archive.s3.listing says why).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from loguru import logger

from daemon import __version__
from daemon.adapters.archive import exports
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3.listing import HeadFacts, ListingCache, version_of
from daemon.adapters.archive.s3.upload import UPLOAD_MARGIN, UPLOAD_MAX_AGE, S3Writer, abandoned
from daemon.config import S3Config
from daemon.core.errors import CaptureError, CollectorError, GuardianError
from daemon.core.retention import ArchivedObject

#: Parts of one file (`put_file`) in flight at a time: memory is this many parts, whatever the file's size.
FILE_UPLOAD_WORKERS = 2


def _client_error(exc: Exception) -> tuple[str, str]:
    """(code, message) of a botocore error, without anything secret (botocore never echoes keys)."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        err = resp.get("Error") or {}
        return str(err.get("Code") or "Error"), str(err.get("Message") or exc)
    return type(exc).__name__, str(exc)


class S3ArchiveStore:
    """`ArchiveStore` over an S3-compatible bucket. Thread-safe (boto3 clients are)."""

    def __init__(self, cfg: S3Config, client: Any = None, cache: ListingCache | None = None) -> None:
        """`cache` (tests: one with its own clock) keeps what collection passes read; a new one by default."""
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.prefix = cfg.prefix.strip("/")
        self.part_size = cfg.part_size_mb * 1024 * 1024
        self.client = client or self._make_client(cfg)
        self.last_skipped = 0
        self.upload_max_age, self.upload_margin = UPLOAD_MAX_AGE, UPLOAD_MARGIN
        self.cache = cache or ListingCache()  # what earlier passes read: GET and HEAD only what changed

    @staticmethod
    def _make_client(cfg: S3Config) -> Any:
        import boto3  # heavy: imported only when an S3 archive is configured
        from botocore.config import Config

        timeout = cfg.timeout.total_seconds()
        # Payload signing off: every put and part carries its SHA-256 checksum (a signed header over http, a
        # trailer over https) that S3 verifies, and every non-loopback endpoint is TLS. On HTTPS botocore already
        # skips hashing streamed bodies for the signature; on a loopback http endpoint it would hash every part a
        # second time for nothing.
        s3: dict[str, Any] = {"payload_signing_enabled": False}
        if cfg.endpoint_url:
            s3["addressing_style"] = "path"
        kwargs: dict[str, Any] = {
            "region_name": cfg.region,
            "config": Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=timeout,
                             read_timeout=timeout, s3=s3),
        }
        if cfg.endpoint_url:
            kwargs["endpoint_url"] = cfg.endpoint_url
        if cfg.access_key_id and cfg.secret_access_key:
            kwargs["aws_access_key_id"] = cfg.access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = cfg.secret_access_key.get_secret_value()
        return boto3.client("s3", **kwargs)

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _folder(self, database: str) -> str:
        return f"{self.prefix}/{quote(database, safe='')}/"

    def key(self, database: str, backup_id: str, suffix: str = ".dump") -> str:
        return f"{self._folder(database)}{backup_id}{suffix}"

    def _sse(self) -> dict[str, str]:
        args: dict[str, str] = {"ServerSideEncryption": self.cfg.sse}
        if self.cfg.sse == "aws:kms" and self.cfg.kms_key_id:
            args["SSEKMSKeyId"] = self.cfg.kms_key_id
        return args

    def _call(self, what: str, fn: Any, error: type[GuardianError] = CollectorError, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            code, message = _client_error(exc)
            raise error(f"S3 {what} on {self.bucket} failed: {code}: {message}") from None

    # -- reading ------------------------------------------------------------------------------------------
    def _list(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", self.client.list_objects_v2, **kwargs)
            out += page.get("Contents", [])
            if not page.get("IsTruncated"):
                return out
            token = page.get("NextContinuationToken")

    def list_records(self, database: str) -> list[BackupRecord]:
        return self._scan(database)[0]

    def _scan(self, database: str) -> tuple[list[BackupRecord], dict[str, dict[str, Any]]]:
        """One LIST of the database's prefix: its records, oldest first (a GET only for a record that is new or
        changed, see
        daemon.adapters.archive.s3.listing), and the listing by key. The cache forgets what is no longer listed."""
        folder = self._folder(database)
        listing = {o["Key"]: o for o in self._list(folder)}
        self.cache.retain(database, listing)
        records, skipped = [], 0
        for key, obj in listing.items():
            if not key.endswith(".json") or key.startswith(f"{folder}reports/"):  # documents beside the backups
                continue  # (drill reports, compliance exports) are no record: not read, not planned on by prune
            record = self.cache.record(database, key, version_of(obj), partial(self._read_record, key))
            if record is None:
                skipped += 1
                continue
            if record.outcome == "succeeded":
                dump = listing.get(key.removesuffix(".json") + ".dump")
                if dump is None or int(dump.get("Size", -1)) != record.size_bytes:
                    problem = "dump object is missing" if dump is None else (
                        f"dump object is {dump.get('Size')} bytes, record says {record.size_bytes}")
                    record = replace(record, outcome="failed", error=problem)
            records.append(record)
        self.last_skipped = skipped
        records.sort(key=lambda r: r.started_at)
        return records, listing

    def _read_record(self, key: str) -> BackupRecord | None:
        body = self._call("get", self.client.get_object, Key=key)["Body"].read()
        try:
            return BackupRecord.from_json(json.loads(body))
        except ValueError as exc:
            logger.warning("skipping unreadable backup record s3://{}/{}: {}", self.bucket, key, exc)
            return None

    def objects(self, database: str) -> list[ArchivedObject]:
        """Every dump with its record, tier, encryption and Object Lock state (see `inventory`)."""
        return self.inventory(database)[1]

    def inventory(self, database: str) -> tuple[list[BackupRecord], list[ArchivedObject]]:
        """Records and copies from one LIST; a good copy is HEADed only when new, changed in the listing, or
        due for its periodic re-read (daemon.adapters.archive.s3.listing.REFRESH_EVERY). Raises CollectorError."""
        records, listing = self._scan(database)
        out = []
        for r in records:
            key = self.key(database, r.backup_id)
            head = (self.cache.facts(database, key, version_of(listing[key]), partial(self._head, key))
                    if r.outcome == "succeeded" else None)
            out.append(ArchivedObject(
                database=database, backup_id=r.backup_id, key=key, recovery_point=r.started_at,
                size_bytes=r.size_bytes, tier=r.tier or "daily", succeeded=r.outcome == "succeeded",
                source=r.origin, sha256=r.sha256, encrypted=None if head is None else head.encrypted,
                label=r.label, lock_until=None if head is None else head.lock_until,
                legal_hold=head is not None and head.legal_hold,
            ))
        return records, out

    def _head(self, key: str) -> HeadFacts:
        try:
            return HeadFacts.from_head(self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            code, message = _client_error(exc)
            raise CollectorError(f"S3 head of {key} failed: {code}: {message}") from None

    def posture(self) -> list[str]:
        """Bucket posture problems in plain words (empty when the bucket is set up as recommended)."""
        problems = []
        c = self.client
        try:
            if c.get_bucket_versioning(Bucket=self.bucket).get("Status") != "Enabled":
                problems.append("versioning is off: an overwrite or delete loses the only copy")
        except Exception as exc:
            problems.append(f"versioning unknown ({_client_error(exc)[0]})")
        try:
            c.get_bucket_encryption(Bucket=self.bucket)
        except Exception as exc:
            code = _client_error(exc)[0]
            problems.append("no default encryption" if "NotFound" in code or "ServerSideEncryption" in code
                            else f"default encryption unknown ({code})")
        try:
            block = c.get_public_access_block(Bucket=self.bucket)["PublicAccessBlockConfiguration"]
            if not all(block.get(k) for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                              "RestrictPublicBuckets")):
                problems.append("public access block is not fully on")
        except Exception as exc:
            code = _client_error(exc)[0]
            problems.append("no public access block" if "NoSuchPublicAccessBlock" in code
                            else f"public access block unknown ({code})")
        try:
            rules = c.get_bucket_lifecycle_configuration(Bucket=self.bucket).get("Rules", [])
            if not any(r.get("AbortIncompleteMultipartUpload") for r in rules if r.get("Status") == "Enabled"):
                problems.append("no lifecycle rule aborts incomplete multipart uploads")
        except Exception as exc:
            code = _client_error(exc)[0]
            problems.append("no lifecycle rules (incomplete multipart uploads are never cleaned)"
                            if "NoSuchLifecycle" in code else f"lifecycle unknown ({code})")
        return problems

    def open_dump(self, database: str, backup_id: str) -> Iterator[bytes]:
        resp = self._call("get", self.client.get_object, error=GuardianError, Key=self.key(database, backup_id))
        try:
            yield from resp["Body"].iter_chunks(1 << 20)
        except Exception as exc:
            code, message = _client_error(exc)
            raise GuardianError(f"S3 read of {backup_id} failed: {code}: {message}") from None

    def put_blob(self, database: str, name: str, data: bytes, content_type: str) -> str:
        key = f"{self._folder(database)}reports/{name}"
        self._call("put", self.client.put_object, error=GuardianError, Key=key, Body=data, ContentType=content_type,
                   ChecksumAlgorithm="SHA256", **self._sse())
        return f"s3://{self.bucket}/{key}"

    def put_file(self, database: str, name: str, path: Path, content_type: str) -> str:
        """A multipart upload from the file once it exceeds the part size, one part read at a time per worker
        (FILE_UPLOAD_WORKERS), each part with its SHA-256 checksum, server-side encryption as on every put."""
        from boto3.s3.transfer import TransferConfig  # heavy: only with an S3 archive

        key = f"{self._folder(database)}reports/{name}"
        config = TransferConfig(multipart_threshold=self.part_size, multipart_chunksize=self.part_size,
                                max_concurrency=FILE_UPLOAD_WORKERS)
        extra = {"ContentType": content_type, "ChecksumAlgorithm": "SHA256", **self._sse()}
        try:
            self.client.upload_file(str(path), self.bucket, key, ExtraArgs=extra, Config=config)
        except Exception as exc:
            code, message = _client_error(exc)
            raise GuardianError(f"S3 upload of {name} to {self.bucket} failed: {code}: {message}") from None
        return f"s3://{self.bucket}/{key}"

    # -- writing ------------------------------------------------------------------------------------------
    def begin(self, database: str, backup_id: str, recovery_point: datetime | None = None,
              origin: str = "self", size_hint: int | None = None) -> S3Writer:
        key = self.key(database, backup_id)
        # an earlier attempt at this very key is aborted only once provably dead: another process may be writing
        # the same backup now (two mirrors of one provider backup), and its upload must survive
        self._abort_uploads(key, older_than=self.stale_after, exact=True)
        meta = {"database": quote(database, safe=""), "backup-id": backup_id, "origin": origin,
                "guardian-version": __version__}
        if recovery_point is not None:
            meta["recovery-point"] = recovery_point.isoformat()
        resp = self._call("create multipart upload", self.client.create_multipart_upload, error=CaptureError,
                          Key=key, ChecksumAlgorithm="SHA256", Metadata=meta,
                          ContentType="application/octet-stream", **self._sse())
        return S3Writer(self, database, key, resp["UploadId"], S3Writer.base_part_size(self.part_size, size_hint))

    @property
    def stale_after(self) -> timedelta:
        """The age past which a multipart upload has no live writer (see UPLOAD_MAX_AGE)."""
        return self.upload_max_age + self.upload_margin

    def _abort_uploads(self, key: str, older_than: timedelta, exact: bool = False) -> int:
        """Abort the multipart uploads under `key` (only at `key` itself when `exact`) initiated more than
        `older_than` ago; an upload without a readable start time is left alone."""
        aborted = 0
        now = datetime.now(UTC)
        resp = self._call("list multipart uploads", self.client.list_multipart_uploads, error=CaptureError,
                          Prefix=key)
        for up in resp.get("Uploads", []):
            if exact and up.get("Key") != key:
                continue
            if not abandoned(up, now, older_than):
                continue
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                aborted += 1
        return aborted

    def record_failure(self, record: BackupRecord) -> None:
        self.put_record(record, error=CaptureError)

    def put_record(self, record: BackupRecord, error: type[GuardianError] = CaptureError) -> None:
        body = (json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n").encode()
        self._call("put record", self.client.put_object, error=error, Key=self.key(record.database, record.backup_id,
                                                                                    ".json"),
                   Body=body, ContentType="application/json", ChecksumAlgorithm="SHA256", **self._sse())

    def set_tier(self, database: str, backup_id: str, tier: str, label: str | None = None) -> BackupRecord:
        """Move a good copy to another tier (a milestone, with its label): record and tags."""
        record = next((r for r in self.list_records(database) if r.backup_id == backup_id), None)
        if record is None or record.outcome != "succeeded":
            raise GuardianError(f"{database}: no good archived backup {backup_id}")
        record = replace(record, tier=tier, label=label)
        self._tag(self.key(database, backup_id), record)
        self.put_record(record, error=GuardianError)
        return record

    def _tag(self, key: str, record: BackupRecord) -> None:
        tags = [{"Key": "tier", "Value": record.tier or "daily"}, {"Key": "sha256", "Value": record.sha256 or ""},
                {"Key": "origin", "Value": record.origin}]
        self._call("tag", self.client.put_object_tagging, error=CaptureError, Key=key, Tagging={"TagSet": tags})

    def delete(self, database: str, backup_id: str) -> None:
        """Record first, then the dump: an interrupted delete leaves an orphan, never a false backup.
        Raises GuardianError when S3 refuses (permissions), and refuses itself a dump under Object Lock
        (retention running or legal hold, read fresh here, not from the listing's cache): on a versioned
        bucket a plain DELETE would not fail but hide the locked copy behind a delete marker."""
        locked = self._lock_of(self.key(database, backup_id))
        if locked is not None:
            raise GuardianError(f"S3 delete on {self.bucket} refused: Object Lock {locked} protects {backup_id}")
        for suffix in (".json", ".dump"):
            self._call("delete", self.client.delete_object, error=GuardianError,
                       Key=self.key(database, backup_id, suffix))

    def _exports_prefix(self, database: str) -> str:
        return f"{self._folder(database)}reports/{exports.FOLDER}/"

    def exports(self, database: str) -> list[ArchivedObject]:
        """The database's compliance exports (see daemon.adapters.archive.exports): one LIST, and per export a GET
        of its manifest (its time) and a HEAD of it (its Object Lock, as a dump's HEAD gives the prune).
        Raises CollectorError."""
        prefix = self._exports_prefix(database)
        folders: dict[str, list[dict[str, Any]]] = {}
        for obj in self._list(prefix):
            stamp = obj["Key"][len(prefix):].split("/", 1)[0]
            folders.setdefault(stamp, []).append(obj)
        out = []
        for stamp, objs in sorted(folders.items()):
            manifest = f"{prefix}{stamp}/{exports.MANIFEST}"
            listed = any(o["Key"] == manifest for o in objs)
            body = self._call("get", self.client.get_object, Key=manifest)["Body"].read() if listed else None
            head = self._head(manifest if listed else objs[0]["Key"])
            size = sum(int(o.get("Size", 0)) for o in objs)
            found = exports.export_object(database, stamp, f"{prefix}{stamp}/", size, body, head.lock_until,
                                          head.legal_hold)
            if found is not None:
                out.append(found)
        return out

    def delete_export(self, database: str, export_id: str) -> None:
        """Delete every object of one compliance export, its manifest first. Refused as a whole (GuardianError,
        nothing deleted) when Object Lock holds any of them, read fresh here as `delete` does."""
        folder = f"{self._exports_prefix(database)}{exports.stamp_of(export_id)}/"
        keys = [o["Key"] for o in self._list(folder)]
        for key in keys:
            locked = self._lock_of(key)
            if locked is not None:
                raise GuardianError(f"S3 delete on {self.bucket} refused: Object Lock {locked} protects "
                                    f"{key.removeprefix(folder)} of {export_id}")
        manifest = folder + exports.MANIFEST
        for key in sorted(keys, key=lambda k: k != manifest):  # the manifest first: never one naming gone files
            self._call("delete", self.client.delete_object, error=GuardianError, Key=key)

    def _lock_of(self, key: str) -> str | None:
        """What Object Lock holds `key` now ("legal hold", "retention until ..."), or None; a missing object
        holds nothing. Raises GuardianError when S3 cannot say (a delete must not go ahead blind)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            code, message = _client_error(exc)
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise GuardianError(f"S3 head of {key} failed: {code}: {message}") from None
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return "legal hold"
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until > datetime.now(UTC):
            return f"{head.get('ObjectLockMode', '').lower() or 'retention'} retention until {until.isoformat()}"
        return None

    def sweep_partials(self) -> int:
        """Abort the multipart uploads under the prefix that no live process can still use: older than
        `stale_after`. Never by owner or by key: a live replica's or `capture` command's upload is younger than
        UPLOAD_MAX_AGE, or its writer has given it up. Safe at any time."""
        try:
            return self._abort_uploads(self.prefix + "/", older_than=self.stale_after)
        except GuardianError as exc:
            logger.warning("could not sweep stale multipart uploads: {}", exc)
            return 0
