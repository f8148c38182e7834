"""The S3 archive over real HTTP: moto's server on loopback (its own process), the Heroku double serving a
real pg_dump, boto3 everywhere, no patched methods."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from freezegun import freeze_time
from loguru import logger

from actions.capture import Capturer, CaptureRequest
from actions.mirror import logged
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.heroku import HerokuClient
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.tools import find_tool
from daemon.app import Guardian
from daemon.config import GuardianConfig, S3Config
from daemon.core.retention import TIERS
from tests.doubles.heroku import HerokuDouble
from tests.doubles.s3 import FaultProxy, MotoServer
from tests.support import S3_MIRROR_APP as APP
from tests.support import S3_MIRROR_TOKEN as TOKEN
from tests.support import an_hour_old_backup, create_database, guardian_for, s3_section

DB = f"{APP}/DATABASE"


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN) as double:
        yield double


def real_capture(heroku: HerokuDouble, cluster: LocalCluster) -> dict[str, Any]:
    """A real pg_dump capture on the double, followed to its end as the CLI does."""
    info = heroku.add_app(APP, database_url=create_database(cluster))
    heroku.add_schedule(APP, hour=datetime.now(UTC).hour)  # the capture below starts now: the schedule is met
    api = HerokuClient(TOKEN, platform_url=heroku.platform_url, data_url=heroku.data_url)
    transfer = api.capture(info.addon_id)
    for _ in range(600):
        t = api.transfer_info(APP, transfer["uuid"])
        if t.get("finished_at"):
            assert t["succeeded"], t
            return t
        httpx.get(heroku.platform_url + "/account/rate-limits", timeout=1)  # a round trip, not a sleep
    raise AssertionError("capture never finished")


def test_mirror_of_a_real_heroku_backup_is_encrypted_checksummed_tagged_and_restorable(
    heroku: HerokuDouble, pg_cluster: LocalCluster, s3_bucket: tuple[Any, str], moto_server: MotoServer,
    tmp_path: Path,
) -> None:
    client, bucket = s3_bucket
    transfer = real_capture(heroku, pg_cluster)
    g = guardian_for(heroku, moto_server.endpoint_url, bucket, tmp_path)
    try:
        g.collect_all(one_shot=True)
        assert g.mirrors.pending() == 1
        assert g.mirrors.pending() == 0  # idempotent: the copy is recorded, nothing to do
    finally:
        g.stop()

    name = f"b{transfer['num']:03d}"
    key = f"pg-backup-guardian/{APP}%2FDATABASE/{name}.dump"
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ChecksumSHA256"]
    assert head["Metadata"]["backup-id"] == name and head["Metadata"]["origin"] == "heroku"
    assert datetime.fromisoformat(head["Metadata"]["recovery-point"]) == datetime.strptime(
        transfer["started_at"], "%Y-%m-%d %H:%M:%S %z")
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    tags = {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}
    record = json.loads(client.get_object(Bucket=bucket, Key=key.replace(".dump", ".json"))["Body"].read())
    assert tags["sha256"] == record["sha256"] == hashlib.sha256(body).hexdigest()
    assert tags["tier"] == record["tier"] == "monthly" and record["origin"] == "heroku"
    assert record["size_bytes"] == len(body) == head["ContentLength"]
    # S3's own checksum: the composite of the part checksums (one part here)
    assert base64.b64decode(head["ChecksumSHA256"].split("-")[0]) == hashlib.sha256(
        hashlib.sha256(body).digest()).digest() or head["ChecksumSHA256"].startswith(
        base64.b64encode(hashlib.sha256(body).digest()).decode())
    dump = tmp_path / "copy.dump"
    dump.write_bytes(body)
    toc = subprocess.run([find_tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=True)
    assert "TABLE DATA public invoices" in toc.stdout


def test_archive_collector_reports_tiers_copy_lag_and_posture(
    heroku: HerokuDouble, s3_bucket: tuple[Any, str], moto_server: MotoServer, tmp_path: Path,
) -> None:
    client, bucket = s3_bucket
    heroku.add_app(APP)
    now = datetime.now(UTC)
    heroku.add_schedule(APP, hour=(now - timedelta(hours=3)).hour)  # met by the backup below, at any time of day
    heroku.add_transfer(APP, created_at=now - timedelta(hours=3), started_at=now - timedelta(hours=3),
                        finished_at=now - timedelta(hours=3), processed_bytes=6 * 1024 * 1024 + 3)
    g = guardian_for(heroku, moto_server.endpoint_url, bucket, tmp_path)
    try:
        snap = g.collect_all(one_shot=True)
        lag = {f.check: f for f in snap.databases[DB].findings}["copy_lag"]
        assert lag.active and "a001" in lag.hint  # finished 3 h ago, not archived, grace 2 h
        assert g.mirrors.pending() == 1
        snap = g.collect_all(one_shot=True)
        facts = snap.databases[DB].archive
        assert facts is not None
        assert facts.tiers["monthly"].count == 1 and facts.tiers["monthly"].bytes == 6 * 1024 * 1024 + 3
        assert facts.unencrypted == 0 and facts.monthly_covered == 1
        found = {f.check: f for f in snap.databases[DB].findings}
        assert not found["copy_lag"].active and not found["unencrypted_object"].active
        # the double's seeded backup is PGDMP plus zeros: copied, read through on the way, and flagged
        assert found["unreadable_backup"].active
        assert "a001" in found["unreadable_backup"].hint
        assert found["bucket_posture"].active and "versioning is off" in found["bucket_posture"].hint
        body = g.exposition.render()[0].decode()
        assert f'pgbackup_archive_objects{{database="{DB}",tier="monthly"}} 1.0' in body
        assert 'pgbackup_actions_total{action="mirror",outcome="done"} 1.0' in body

        # the recommended posture clears the finding
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
        client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
            {"ID": "abort-mpu", "Status": "Enabled", "Filter": {"Prefix": ""},
             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}]})
        assert g.store.posture() == []
    finally:
        g.stop()


def test_an_unencrypted_copy_is_a_critical_finding(s3_bucket: tuple[Any, str], moto_server: MotoServer) -> None:
    client, bucket = s3_bucket
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket)))
    t = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    record = BackupRecord(database="db", backup_id="x1", kind="scheduled", started_at=t, finished_at=t,
                          outcome="succeeded", size_bytes=5, tier="monthly")
    client.put_object(Bucket=bucket, Key=store.key("db", "x1"), Body=b"PGDMP")  # no SSE: put by someone else
    store.put_record(record)
    [obj] = store.objects("db")
    assert obj.encrypted is False


def test_self_managed_capture_writes_straight_to_s3(
    fresh_db: str, s3_bucket: tuple[Any, str], moto_server: MotoServer
) -> None:
    client, bucket = s3_bucket
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket)))
    record = Capturer(store).capture(CaptureRequest(database="shop", url=fresh_db))
    [listed] = store.list_records("shop")
    assert listed.backup_id == record.backup_id and listed.outcome == "succeeded" and listed.tier == "monthly"
    head = client.head_object(Bucket=bucket, Key=store.key("shop", record.backup_id))
    assert head["ServerSideEncryption"] == "AES256" and head["ContentLength"] == record.size_bytes
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def _put(store: S3ArchiveStore, backup_id: str, rp: datetime, tier: str, **kw: Any) -> None:
    writer = store.begin("db", backup_id, recovery_point=rp)
    writer.write(b"PGDMP" + backup_id.encode())
    writer.commit(BackupRecord(database="db", backup_id=backup_id, kind="scheduled", started_at=rp,
                               finished_at=rp, outcome="succeeded", size_bytes=5 + len(backup_id), tier=tier, **kw))


def test_prune_on_s3_dry_run_then_apply_keeps_milestones_newest_and_locked(
    moto_server: MotoServer, tmp_path: Path,
) -> None:
    from tests.doubles.s3 import s3_client

    client = s3_client(moto_server.endpoint_url)
    bucket = "lock-" + tmp_path.name.lower().replace("_", "-")[-30:]
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    now = datetime.now(UTC)
    config = GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"),
        "databases": [{"name": "db", "url": "postgresql://u@127.0.0.1:1/db"}],
        "archive": {"kind": "s3", "s3": s3_section(moto_server.endpoint_url, bucket)},
    })
    g = Guardian(config)
    store = g.store
    assert isinstance(store, S3ArchiveStore)
    _put(store, "old-daily", now - timedelta(days=30), "daily")
    _put(store, "old-weekly", now - timedelta(days=60), "weekly")
    _put(store, "old-monthly", now - timedelta(days=400), "monthly")
    _put(store, "ancient-milestone", now - timedelta(days=900), "milestone", label="v1 launch")
    _put(store, "locked-daily", now - timedelta(days=20), "daily")
    client.put_object_retention(Bucket=bucket, Key=store.key("db", "locked-daily"), Retention={
        "Mode": "COMPLIANCE", "RetainUntilDate": now + timedelta(days=30)})
    _put(store, "new-monthly", now - timedelta(days=3), "monthly")
    _put(store, "new-daily", now - timedelta(days=1), "daily")
    _put(store, "new-weekly", now - timedelta(days=2), "weekly")
    try:
        dry = g.prune(apply=False)
        assert sorted(d.obj.backup_id for d in dry if d.delete) == ["old-daily", "old-monthly", "old-weekly"]
        assert len(store.list_records("db")) == 8  # dry run deletes nothing
        g.prune(apply=True)
        audit = g.audit.read(action="prune")
    finally:
        g.stop()
    left = sorted(r.backup_id for r in store.list_records("db"))
    assert left == ["ancient-milestone", "locked-daily", "new-daily", "new-monthly", "new-weekly"]
    assert sorted(a["target"] for a in audit if a["outcome"] == "done" and a["target"] != "db") == [
        "db/old-daily", "db/old-monthly", "db/old-weekly"]
    assert len([a for a in audit if a["outcome"] == "dry_run"]) == 3
    # the applied prune is one execution: its start and its end, which counts what went
    assert [(a["outcome"], a["reason"]) for a in audit if a["target"] == "db"] == [
        ("started", "3 copies past their keep"), ("done", "3 of 3 copies deleted")]


def test_milestone_command_marks_the_newest_good_copy(moto_server: MotoServer, s3_bucket: tuple[Any, str],
                                                      tmp_path: Path) -> None:
    client, bucket = s3_bucket
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket)))
    now = datetime.now(UTC)
    _put(store, "one", now - timedelta(days=2), "monthly")
    _put(store, "two", now - timedelta(days=1), "daily")
    cfg = tmp_path / "g.yaml"
    cfg.write_text(json.dumps({"state_dir": str(tmp_path / "state"),
                               "databases": [{"name": "db", "url": "postgresql://u@127.0.0.1:1/db"}],
                               "archive": {"kind": "s3", "s3": s3_section(moto_server.endpoint_url, bucket)}}))
    import sys

    out = subprocess.run([sys.executable, "-m", "daemon", "archive", "milestone", "--config", str(cfg),
                          "--database", "db", "--label", "v2 launch"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'two' in out.stdout and "v2 launch" in out.stdout
    tiers = {o.backup_id: (o.tier, o.label) for o in store.objects("db")}
    assert tiers == {"one": ("monthly", None), "two": ("milestone", "v2 launch")}
    tag_set = client.get_object_tagging(Bucket=bucket, Key=store.key("db", "two"))["TagSet"]
    tags = {t["Key"]: t["Value"] for t in tag_set}
    assert tags["tier"] == "milestone"
    listing = subprocess.run([sys.executable, "-m", "daemon", "archive", "list", "--config", str(cfg)],
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0 and all(t in listing.stdout for t in TIERS) and '"v2 launch"' in listing.stdout


@pytest.mark.parametrize("fault", ["500", "403", "timeout"])
def test_s3_faults_take_the_archive_collector_down_and_lose_nothing(
    fault: str, heroku: HerokuDouble, fault_proxy: FaultProxy, s3_bucket: tuple[Any, str], tmp_path: Path,
    sample_dump: Path,
) -> None:
    _, bucket = s3_bucket
    t = an_hour_old_backup(heroku)
    heroku.set_dump_file(APP, t["num"], sample_dump)
    # "timeout": S3 so slow that it answers no listing within the S3 timeout (1 s here), with every retry
    g = guardian_for(heroku, fault_proxy.endpoint_url, bucket, tmp_path, s3={"timeout": "1s"})
    expected = {"500": "InternalError", "403": "AccessDenied", "timeout": "timeout"}[fault]
    try:
        g.collect_all(one_shot=True)
        assert g.mirrors.pending() == 1
        if fault == "timeout":
            fault_proxy.inject(r"^GET /" + bucket + r"(/|\?)", fault, delay=3.0)
        else:
            fault_proxy.inject(r"^GET /" + bucket, fault)
        snap = g.collect_all(one_shot=True)
        status = snap.collectors[("archive", DB)]
        assert not status.up and expected.lower() in (status.last_error or "").lower(), status.last_error
        assert {f.check: f for f in snap.databases[DB].findings}["collector_down"].active
        # the last known archive stays: data at risk still has the archived copy and the Heroku one
        assert snap.databases[DB].sources["archive"].newest_good is not None
        fault_proxy.clear()
        snap = g.collect_all(one_shot=True)
        assert snap.collectors[("archive", DB)].up
        assert [b.backup_id for b in snap.databases[DB].sources["archive"].good] == ["a001"]
    finally:
        g.stop()


def test_slow_s3_is_waited_for_and_a_mirror_that_cannot_write_is_audited(
    heroku: HerokuDouble, fault_proxy: FaultProxy, s3_bucket: tuple[Any, str], tmp_path: Path,
) -> None:
    _, bucket = s3_bucket
    an_hour_old_backup(heroku)
    g = guardian_for(heroku, fault_proxy.endpoint_url, bucket, tmp_path)
    try:
        fault_proxy.inject("", "slow", delay=0.3, times=3)
        snap = g.collect_all(one_shot=True)
        assert snap.collectors[("archive", DB)].up
        fault_proxy.inject(r"^POST .*uploads", "403")
        assert g.mirrors.pending() == 0
        audit = g.audit.read()
        assert audit[-1]["action"] == "mirror" and audit[-1]["outcome"] == "failed"
        assert "AccessDenied" in audit[-1]["reason"]
        assert g.holder.current().actions[("mirror", "failed")] == 1
        fault_proxy.clear()
        assert g.mirrors.pending() == 1
    finally:
        g.stop()


def test_kms_settings_reach_the_put(s3_bucket: tuple[Any, str], moto_server: MotoServer) -> None:
    client, bucket = s3_bucket
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket, sse="aws:kms",
                                                              kms_key_id="alias/backups")))
    _put(store, "k1", datetime.now(UTC), "monthly")
    head = client.head_object(Bucket=bucket, Key=store.key("db", "k1"))
    assert head["ServerSideEncryption"] == "aws:kms"


def test_plain_http_to_a_remote_endpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="https"):
        S3Config.model_validate({"bucket": "b", "endpoint_url": "http://minio.internal:9000"})
    assert S3Config.model_validate({"bucket": "b", "endpoint_url": "http://127.0.0.1:9000"}).endpoint_url


def test_a_download_cut_short_or_refused_leaves_nothing_that_counts(
    heroku: HerokuDouble, s3_bucket: tuple[Any, str], moto_server: MotoServer, tmp_path: Path,
) -> None:
    client, bucket = s3_bucket
    an_hour_old_backup(heroku, processed_bytes=12 * 1024 * 1024)
    g = guardian_for(heroku, moto_server.endpoint_url, bucket, tmp_path)
    try:
        g.collect_all(one_shot=True)
        heroku.inject(r"^GET /xfrtu/", "truncated", times=1)  # the body ends before its Content-Length
        heroku.inject(r"^GET /xfrtu/", "status", status=403, times=1)  # an expired signed URL, say
        assert g.mirrors.pending() == 0
        assert g.mirrors.pending() == 0
        failures = [r for r in g.audit.read() if r["action"] == "mirror" and r["outcome"] != "started"]
        assert [r["outcome"] for r in failures] == ["failed", "failed"]
        assert "cut short" in failures[0]["reason"] and "HTTP 403" in failures[1]["reason"]
        assert not any("Signature" in json.dumps(r) for r in failures)  # the signed query stays out
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert g.mirrors.pending() == 1  # the faults are gone: the copy is made
        keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
        assert [k.rsplit("/", 1)[1] for k in keys] == ["a001.dump", "a001.json"]
    finally:
        g.stop()


def test_a_mirror_reports_progress_and_a_shutdown_mid_copy_aborts_it_cleanly(
    heroku: HerokuDouble, s3_bucket: tuple[Any, str], moto_server: MotoServer, tmp_path: Path,
) -> None:
    client, bucket = s3_bucket
    t = an_hour_old_backup(heroku)
    dump = tmp_path / "big.dump"
    dump.write_bytes(os.urandom(40 * 1024 * 1024))  # five 8 MiB blocks
    heroku.set_dump_file(APP, int(t["num"]), dump)
    g = guardian_for(heroku, moto_server.endpoint_url, bucket, tmp_path)
    seen: list[tuple[str, int, int | None]] = []

    def stop_after_first_block(what: str, done: int, total: int | None) -> None:
        seen.append((what, done, total))
        g.processes.closing.set()  # as SIGTERM would, while the copy is under way

    try:
        g.collect_all(one_shot=True)
        assert g.mirrors.pending(progress=stop_after_first_block) == 0
        assert seen == [(f"{DB} a001", 8 * 1024 * 1024, 40 * 1024 * 1024)]
        audit = [r for r in g.audit.read() if r["action"] == "mirror"]
        assert audit[-1]["outcome"] == "failed" and "shutting down" in audit[-1]["reason"]
        assert client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    finally:
        g.stop()
    g = guardian_for(heroku, moto_server.endpoint_url, bucket, tmp_path)  # the next start copies it whole
    seen.clear()
    try:
        g.collect_all(one_shot=True)
        assert g.mirrors.pending(progress=lambda what, done, total: seen.append((what, done, total))) == 1
    finally:
        g.stop()
    assert [done for _, done, _ in seen] == [n * 8 * 1024 * 1024 for n in range(1, 6)]
    body = client.get_object(Bucket=bucket, Key=f"pg-backup-guardian/{APP}%2FDATABASE/a001.dump")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(dump.read_bytes()).digest()


def test_a_long_copy_is_logged_once_a_minute() -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    try:
        with freeze_time("2026-11-25 10:00:00") as frozen:
            report = logged(f"{DB}/a001")
            report(8 * 1024 * 1024, 64 * 1024 * 1024)  # within the first minute: quiet
            frozen.tick(61)
            report(32 * 1024 * 1024, 64 * 1024 * 1024)
            frozen.tick(30)
            report(40 * 1024 * 1024, 64 * 1024 * 1024)  # 30 s after the last line: quiet
    finally:
        logger.remove(sink)
    assert len(lines) == 1 and f"mirror of {DB}/a001" in lines[0] and "(50%)" in lines[0]
