"""Compliance exports in the archive over the years: the prune deletes an export once it is past its database's
keep_years (by the export's own time), through the prune's guarded and audited path, in a local directory and
in an S3 bucket on the moto server (Object Lock respected), and never a younger export or a backup."""

from __future__ import annotations

import gzip
import hashlib
import os
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from actions.compliance import ExportedFile, manifest, store_export
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.store import ArchiveStore
from daemon.app import Guardian
from daemon.config import GuardianConfig, S3Config
from tests.doubles.s3 import MotoServer, s3_client
from tests.support import s3_section

D = timedelta(days=1)
YEAR = 365 * D
MIB = 1024 * 1024


def _backup(store: ArchiveStore, backup_id: str, rp: datetime, tier: str) -> None:
    """A good archived backup of `db` (a tiny stand-in dump)."""
    writer = store.begin("db", backup_id, recovery_point=rp)
    writer.write(b"PGDMP" + backup_id.encode())
    writer.commit(BackupRecord(database="db", backup_id=backup_id, kind="scheduled", started_at=rp, finished_at=rp,
                               outcome="succeeded", size_bytes=5 + len(backup_id), tier=tier))


def _export(store: ArchiveStore, at: datetime, folder: Path) -> list[str]:
    """A compliance export of `db` taken at `at` (its folder stamp and manifest say so); where its objects went."""
    part = folder / f"{at:%Y%m%dT%H%M%SZ}.invoices.csv.gz"
    part.write_bytes(gzip.compress(b"id\n1\n"))
    exported = ExportedFile("invoices", "public.invoices.csv.gz", 1, part.stat().st_size,
                            hashlib.sha256(part.read_bytes()).hexdigest())
    return store_export(store, "db", f"{at:%Y%m%dT%H%M%SZ}", [(exported, part)],
                        manifest("db", "b1", at, [exported], at))


def _guardian(tmp_path: Path, archive: dict[str, Any]) -> Guardian:
    return Guardian(GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"), "archive": {"prune_apply": True, **archive},
        "databases": [{"name": "db", "url": "postgresql://unused@127.0.0.1/db", "capture": {"enabled": False},
                       "compliance": {"tables": ["invoices"], "keep_years": 7}}]}))


def test_the_prune_deletes_a_compliance_export_past_keep_years_and_keeps_younger_ones_and_backups(
    tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    g = _guardian(tmp_path, {"path": str(tmp_path / "archive")})
    store = g.store
    try:
        _backup(store, "milestone", now - 9 * YEAR, "milestone")
        _backup(store, "monthly", now - 20 * D, "monthly")
        _backup(store, "daily", now - 2 * D, "daily")
        backups = {r.backup_id: r for r in store.list_records("db")}
        old = _export(store, now - 7 * YEAR - 10 * D, tmp_path)
        young = _export(store, now - 7 * YEAR + 10 * D, tmp_path)  # days short of its seventh birthday
        recent = _export(store, now - 30 * D, tmp_path)
        decisions = g.prune()
        audit = g.audit.read(action="prune")
    finally:
        g.stop()
    gone = [d.obj.backup_id for d in decisions if d.delete]
    assert gone == [f"compliance/{now - 7 * YEAR - 10 * D:%Y%m%dT%H%M%SZ}"]
    assert not [w for w in old if Path(w).exists()]  # every file and the manifest
    assert not Path(old[-1]).parent.exists()
    assert all(Path(w).exists() for w in young + recent)
    assert {r.backup_id: r for r in store.list_records("db")} == backups  # no backup touched, milestone included
    done = [a for a in audit if a["outcome"] == "done" and a["target"] != "db"]  # "db": the run's end
    assert [a["target"] for a in done] == [f"db/{gone[0]}"]
    assert "past its keep of 7 years" in done[0]["reason"]


def test_the_prune_deletes_an_old_compliance_export_from_s3_but_not_one_object_lock_retains(
    moto_server: MotoServer, tmp_path: Path
) -> None:
    client = s3_client(moto_server.endpoint_url)
    bucket = f"lock-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    now = datetime.now(UTC).replace(microsecond=0)
    g = _guardian(tmp_path, {"kind": "s3", "s3": s3_section(moto_server.endpoint_url, bucket)})
    store = g.store
    assert isinstance(store, S3ArchiveStore)
    keys = lambda where: [w.removeprefix(f"s3://{bucket}/") for w in where]  # noqa: E731
    try:
        _backup(store, "monthly", now - 20 * D, "monthly")
        _backup(store, "daily", now - 2 * D, "daily")
        backups = {r.backup_id: r for r in store.list_records("db")}
        old = keys(_export(store, now - 8 * YEAR, tmp_path))
        held = keys(_export(store, now - 9 * YEAR, tmp_path))  # past its keep, but a file is under retention
        young = keys(_export(store, now - 6 * YEAR, tmp_path))
        client.put_object_retention(Bucket=bucket, Key=held[0], Retention={
            "Mode": "COMPLIANCE", "RetainUntilDate": now + 30 * D})
        g.prune()
        audit = g.audit.read(action="prune")
    finally:
        g.stop()
    listed = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert not set(old) & listed
    assert set(held) <= listed  # refused as a whole: not even its manifest went
    assert set(young) <= listed
    assert {r.backup_id: r for r in store.list_records("db")} == backups
    outcomes = {a["target"]: a["outcome"] for a in audit if a["target"].startswith("db/compliance/")}
    assert outcomes == {f"db/compliance/{now - 8 * YEAR:%Y%m%dT%H%M%SZ}": "done",
                        f"db/compliance/{now - 9 * YEAR:%Y%m%dT%H%M%SZ}": "refused"}


def _big_export(tmp_path: Path, size: int) -> tuple[ExportedFile, Path]:
    """An exported file of `size` incompressible bytes."""
    path = tmp_path / "public.invoices.csv.gz"
    sha = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(size // MIB):
            chunk = os.urandom(MIB)
            sha.update(chunk)
            fh.write(chunk)
    return ExportedFile("invoices", path.name, 1, size, sha.hexdigest()), path


def test_an_export_file_goes_to_s3_in_parts_and_arrives_intact(
    moto_server: MotoServer, s3_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, bucket = s3_bucket
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket)))  # 5 MiB parts
    exported, path = _big_export(tmp_path, 12 * MIB)
    now = datetime.now(UTC)
    where = store_export(store, "db", f"{now:%Y%m%dT%H%M%SZ}", [(exported, path)],
                         manifest("db", "b1", now, [exported], now))
    key = where[0].removeprefix(f"s3://{bucket}/")
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts, not one PUT of the whole
    assert head.get("ServerSideEncryption")
    sha = hashlib.sha256()
    for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(MIB):
        sha.update(chunk)
    assert sha.hexdigest() == exported.sha256 and head["ContentLength"] == exported.bytes


def test_writing_an_export_file_keeps_memory_flat_in_a_local_archive_and_in_s3(
    moto_server: MotoServer, s3_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    _, bucket = s3_bucket
    exported, path = _big_export(tmp_path, 48 * MIB)
    now = datetime.now(UTC)
    doc = manifest("db", "b1", now, [exported], now)
    peaks = {}
    for store in (LocalDirectoryStore(tmp_path / "archive"),
                  S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket)))):
        tracemalloc.start()
        try:
            store_export(store, "db", f"{now:%Y%m%dT%H%M%SZ}", [(exported, path)], doc)
            peaks[type(store).__name__] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    # the whole file read at once would be 48 MiB; streamed, a chunk locally, two 5 MiB parts on S3
    assert peaks["LocalDirectoryStore"] < 4 * MIB, peaks
    assert peaks["S3ArchiveStore"] < 16 * MIB, peaks
