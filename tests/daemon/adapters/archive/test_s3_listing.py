"""What one archive collection pass costs against S3, counted on the wire: moto's server on loopback behind the
recording FaultProxy, the store's own boto3 client, no patched methods. A pass lists each database's prefix once
and reads (GET a record, HEAD a dump) only what the listing shows new or changed, or what is due for its periodic
re-read; what it read before comes from a cache that forgets deleted objects."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.s3.listing import REFRESH_EVERY, ListingCache, version_of
from tests.doubles.s3 import FaultProxy, MotoServer, s3_client
from tests.support import LISTED_DB as DB
from tests.support import one_pass, put_copy, store_via, wait_for

pytest_plugins = ["tests.doubles.s3"]  # moto_server, s3_bucket, fault_proxy fixtures


def listed(client: Any, store: S3ArchiveStore, backup_id: str) -> dict[str, Any]:
    key = store.key(DB, backup_id)
    [obj] = client.list_objects_v2(Bucket=store.bucket, Prefix=key)["Contents"]
    return dict(obj)


def test_an_unchanged_archive_costs_one_list_a_pass_and_only_changes_are_read(
    moto_server: MotoServer, s3_bucket: tuple[Any, str], fault_proxy: FaultProxy,
) -> None:
    client, bucket = s3_bucket
    store = store_via(fault_proxy, bucket)
    for i in range(40):
        put_copy(client, store, f"c{i:02d}", timedelta(hours=40 - i), encrypted=i != 0)

    kinds, src, facts = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1, "GET": 40, "HEAD": 40}  # every record read once, every dump HEADed once
    assert len(src.good) == 40 and facts.unencrypted == 1

    kinds, src, facts = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1}  # nothing changed: nothing read again
    assert len(src.good) == 40 and facts.unencrypted == 1

    put_copy(client, store, "c40", timedelta(0))
    kinds, src, facts = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1, "GET": 1, "HEAD": 1}  # only the new copy
    assert src.newest_good is not None and src.newest_good.backup_id == "c40"

    for suffix in (".json", ".dump"):
        client.delete_object(Bucket=bucket, Key=store.key(DB, "c05", suffix))
    kinds, src, facts = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1}
    assert "c05" not in {b.backup_id for b in src.backups} and len(src.good) == 40
    assert store.cache.size(DB) == 2 * 40  # the deleted copy's record and dump are forgotten, nothing else held

    # Encryption changed in place: c00 re-encrypted by a copy onto itself, c01 overwritten with the same bytes
    # without SSE. Both keep their ETag (the MD5 of the data, S3 and moto alike); their LastModified moves once
    # the listing's one-second clock has ticked past the previous write.
    before = {b: listed(client, store, b) for b in ("c00", "c01")}
    wait_for(lambda: datetime.now(UTC) >= max(o["LastModified"] for o in before.values()) + timedelta(seconds=1))
    client.copy_object(Bucket=bucket, Key=store.key(DB, "c00"), CopySource={"Bucket": bucket, "Key": store.key(
        DB, "c00")}, ServerSideEncryption="AES256", MetadataDirective="COPY")
    client.put_object(Bucket=bucket, Key=store.key(DB, "c01"), Body=b"PGDMPc01")
    after = {b: listed(client, store, b) for b in ("c00", "c01")}
    for b in before:
        assert after[b]["ETag"] == before[b]["ETag"] and after[b]["LastModified"] > before[b]["LastModified"]
    kinds, src, facts = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1, "HEAD": 2}  # the two rewritten dumps, their records untouched
    assert facts.unencrypted == 1
    encrypted = {o.backup_id: o.encrypted for o in store.objects(DB)}
    assert encrypted["c00"] is True and encrypted["c01"] is False


def test_lock_changes_the_listing_cannot_show_are_seen_within_the_refresh_interval(
    moto_server: MotoServer, fault_proxy: FaultProxy,
) -> None:
    client = s3_client(moto_server.endpoint_url)
    bucket = f"lock-listing-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    clock = [1000.0]
    store = store_via(fault_proxy, bucket, ListingCache(clock=lambda: clock[0]))
    for i in range(10):
        put_copy(client, store, f"c{i:02d}", timedelta(hours=10 - i))
    kinds, _, _ = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1, "GET": 10, "HEAD": 10}

    was = listed(client, store, "c03"), listed(client, store, "c04")
    client.put_object_legal_hold(Bucket=bucket, Key=store.key(DB, "c03"), LegalHold={"Status": "ON"})
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    client.put_object_retention(Bucket=bucket, Key=store.key(DB, "c04"), Retention={
        "Mode": "GOVERNANCE", "RetainUntilDate": until})
    # Object Lock changes leave the listing as it was: only the periodic re-read can see them
    assert [version_of(o) for o in was] == [version_of(listed(client, store, b)) for b in ("c03", "c04")]

    clock[0] += REFRESH_EVERY.total_seconds() / 2 - 1  # before any copy is due
    kinds, _, _ = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1}

    clock[0] += REFRESH_EVERY.total_seconds() / 2 + 1  # every copy is due by now
    mark = len(fault_proxy.requests)
    _, objects = store.inventory(DB)
    assert [m for m, _, _ in fault_proxy.requests[mark:]].count("HEAD") == 10
    locks = {o.backup_id: (o.legal_hold, o.lock_until) for o in objects}
    assert locks["c03"] == (True, None) and locks["c04"] == (False, until)
    assert all(locks[b] == (False, None) for b in locks if b not in ("c03", "c04"))

    kinds, _, _ = one_pass(store, fault_proxy)
    assert kinds == {"LIST": 1}  # read again, then served from the cache for another interval
