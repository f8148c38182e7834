"""How S3Writer sizes and sends its parts: against moto's server on loopback, through boto3."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.s3.upload import (
    MAX_PART,
    MAX_PARTS,
    MIB,
    UPLOAD_MARGIN,
    UPLOAD_MAX_AGE,
    S3Writer,
    abandoned,
)
from daemon.config import S3Config
from daemon.core.errors import CaptureError
from tests.doubles.s3 import MotoServer


def store_for(moto_server: MotoServer, bucket: str, part_size_mb: int = 5) -> S3ArchiveStore:
    return S3ArchiveStore(S3Config.model_validate({
        "bucket": bucket, "endpoint_url": moto_server.endpoint_url, "access_key_id": "testing",
        "secret_access_key": "testing", "part_size_mb": part_size_mb, "timeout": "10s"}))


def record(size: int, sha: str) -> BackupRecord:
    now = datetime.now(UTC)
    return BackupRecord(database="db", backup_id="b001", kind="scheduled", started_at=now, finished_at=now,
                        outcome="succeeded", size_bytes=size, sha256=sha, origin="heroku")


def test_a_known_size_raises_the_part_size_so_the_dump_fits_before_any_growth() -> None:
    assert S3Writer.base_part_size(8 * MIB, None) == 8 * MIB
    assert S3Writer.base_part_size(8 * MIB, 200 * MIB) == 8 * MIB  # small dumps keep the configured size
    hinted = S3Writer.base_part_size(8 * MIB, 100 * 2**30)  # 100 GiB: 110 GiB over 5,000 parts, whole MiB
    assert hinted % MIB == 0 and hinted * S3Writer.GROW_AFTER >= 110 * 2**30 > (hinted - MIB) * S3Writer.GROW_AFTER
    assert S3Writer.base_part_size(8 * MIB, 10**15) == MAX_PART


def test_parts_grow_only_past_the_first_5000_and_fit_s3s_limit(s3_bucket: tuple[Any, str],
                                                               moto_server: MotoServer) -> None:
    _, bucket = s3_bucket
    writer = store_for(moto_server, bucket, 8).begin("db", "b001")
    try:
        sizes = {}
        for n in (1, 5_000, 5_001, 6_000, 6_001, 9_001, 10_000):
            writer._next = n
            sizes[n] = writer._part_size() // MIB
        assert sizes == {1: 8, 5_000: 8, 5_001: 16, 6_000: 16, 6_001: 32, 9_001: 256, 10_000: 256}
        capacity = sum(8 << min(5, max(0, (n - 5_001) // 1_000 + 1)) if n > 5_000 else 8
                       for n in range(1, MAX_PARTS + 1))
        assert capacity * MIB > 500 * 2**30  # about 520 GiB from 8 MiB parts
        assert S3Writer._in_flight(8 * MIB) == 6 and S3Writer._in_flight(256 * MIB) == 2
    finally:
        writer.abort()


class QuickGrowth(S3Writer):
    GROW_AFTER, GROW_EVERY = 2, 1


def test_grown_parts_make_a_whole_object(s3_bucket: tuple[Any, str], moto_server: MotoServer) -> None:
    client, bucket = s3_bucket
    store = store_for(moto_server, bucket, 5)
    plain = store.begin("db", "b001")
    writer = QuickGrowth(store, "db", plain.key, plain.upload_id, 5 * MIB)
    plain._pool.shutdown()
    data = os.urandom(45 * MIB + 123)
    step = 3 * MIB + 7  # writes that do not line up with parts, through one reused buffer scribbled over after
    buf = memoryview(bytearray(step))  # each write: a writer that kept a reference would upload garbage
    for i in range(0, len(data), step):
        n = len(data[i:i + step])
        buf[:n] = data[i:i + step]
        writer.write(buf[:n])
        buf[:] = b"\xee" * step
    writer.commit(record(len(data), hashlib.sha256(data).hexdigest()))
    assert [s // MIB for s in writer.part_sizes] == [5, 5, 10, 20, 5] and writer.part_sizes[-1] == 5 * MIB + 123
    body = client.get_object(Bucket=bucket, Key=writer.key)["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


class NoGrowth(S3Writer):
    MAX_GROWTH = 0


def test_part_10000_goes_up_and_part_10001_fails_in_plain_words_leaving_no_upload(
        s3_bucket: tuple[Any, str], moto_server: MotoServer) -> None:
    client, bucket = s3_bucket
    plain = store_for(moto_server, bucket, 5).begin("db", "b001")
    writer = NoGrowth(plain.store, "db", plain.key, plain.upload_id, 5 * MIB)
    plain._pool.shutdown()
    writer.write(os.urandom(5 * MIB))  # part 1 goes up
    writer._next = MAX_PARTS  # as if 9,999 parts had gone up
    writer.write(os.urandom(5 * MIB))  # part 10,000: S3's last
    with pytest.raises(CaptureError, match=r"outgrew S3's 10,000 parts.*raise archive\.s3\.part_size_mb"):
        writer.write(os.urandom(5 * MIB))
    writer._drain()  # the parts in flight finish: S3 took part 10,000
    assert sorted(p["PartNumber"] for p in writer.parts) == [1, MAX_PARTS]
    writer.abort()
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def uploads(store: S3ArchiveStore) -> list[str]:
    return [u["Key"] for u in store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])]


def test_only_an_upload_older_than_any_writer_may_keep_one_counts_as_abandoned() -> None:
    """What the sweep (and a writer starting at the same key) may abort: never an upload a live process can
    still use, whoever owns it. (moto lists every upload as initiated in 2010, so the age test is on data.)"""
    now = datetime.now(UTC)
    limit = UPLOAD_MAX_AGE + UPLOAD_MARGIN
    assert not abandoned({"Key": "k", "Initiated": now - timedelta(minutes=1)}, now, limit)  # a live writer's
    assert not abandoned({"Key": "k", "Initiated": now - UPLOAD_MAX_AGE}, now, limit)  # its writer may still be
    assert abandoned({"Key": "k", "Initiated": now - limit}, now, limit)  # its writer has given it up
    assert not abandoned({"Key": "k"}, now, limit)  # no start time: not provably dead


def test_a_writer_gives_up_its_upload_past_the_age_limit_and_a_sweep_then_aborts_such_uploads(
    s3_bucket: tuple[Any, str], moto_server: MotoServer
) -> None:
    _, bucket = s3_bucket
    writer_store, sweeper = store_for(moto_server, bucket), store_for(moto_server, bucket)
    data = os.urandom(6 * MIB)
    # a writer gives its upload up rather than use it past its age limit, so a sweep past that limit is safe
    writer_store.upload_max_age = timedelta(0)
    old = writer_store.begin("db", "old")
    with pytest.raises(CaptureError, match="stayed open longer than"):
        old.write(data)
    old.abort()
    assert uploads(sweeper) == []
    sweeper.client.create_multipart_upload(Bucket=bucket, Key=sweeper.key("db", "crashed"))  # a crash left it
    assert uploads(sweeper) == [sweeper.key("db", "crashed")]
    sweeper.upload_max_age, sweeper.upload_margin = timedelta(0), timedelta(0)  # as if a day had passed
    assert sweeper.sweep_partials() == 1
    assert uploads(sweeper) == []
