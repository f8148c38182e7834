"""Compliance exports with real PostgreSQL clusters, real pg_dump and pg_restore: taken from the newest good
backup restored into a proven scratch database, never from production."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from pydantic import ValidationError

from actions.compliance import ComplianceRunner, ExportedFile, copy_objects, manifest, store_export
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.s3.objects import ObjectSource
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.scratch import PREFIX
from daemon.app import Guardian
from daemon.config import GuardianConfig, S3Config
from tests.doubles.s3 import MotoServer
from tests.support import DRILLED_DB as DB
from tests.support import capture, create_database, databases, s3_section

TABLES = ["invoices", "users", "payments"]


def _guardian(tmp: Path, url: str, scratch: str) -> Guardian:
    return Guardian(GuardianConfig.model_validate({
        "state_dir": str(tmp / "state"), "archive": {"path": str(tmp / "archive")},
        "databases": [{"name": DB, "url": url, "drill": {"scratch_url": scratch},
                       "compliance": {"tables": TABLES}}]}))


def _statements(log: Path, offset: int) -> list[str]:
    """The statements the production server logged after `offset` (log_statement = all on its database)."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    return [line.split("statement: ", 1)[1].strip() for line in text.splitlines() if "statement: " in line]


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(gzip.decompress(path.read_bytes()).decode())))


def test_the_export_has_the_backups_rows_checksummed_and_production_only_answers_the_identity_check(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute("SELECT count(*) FROM invoices").fetchone()
        # production changes after the backup: the export must show the backup's rows, not these
        conn.execute("DELETE FROM payments")
        conn.execute("UPDATE users SET email = 'changed-after-backup-' || id || '@example.com'")
        conn.execute("INSERT INTO users (email, name) VALUES ('added-after-backup@example.com', 'late')")
        dbname = conn.info.dbname
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{dbname}" SET log_statement = \'all\'')
    assert before is not None
    g = _guardian(open_tmp, url, own_cluster.url("postgres"))
    try:
        g.collect_all()
        state = g.holder.current().databases[DB]
        runner = ComplianceRunner(g.store, None, g.config.state_dir, g.processes, g.state, g.config.all_databases)
        log = pg_cluster.data_dir / "server.log"
        offset = log.stat().st_size
        folder = open_tmp / "export"
        folder.mkdir()
        run, files = runner.export(g.config.databases[0], state, folder)
        seen = _statements(log, offset)
    finally:
        g.stop()
    assert run.succeeded, run.reason
    # the only query production received is the scratch safety's identity check
    assert seen and set(seen) == {"SELECT system_identifier FROM pg_control_system()"}, seen
    assert not [d for d in databases(own_cluster) if d.startswith(PREFIX)]  # the scratch database was dropped
    by_table = {f.table: f for f in files}
    assert set(by_table) == set(TABLES)
    invoices = _rows(folder / by_table["invoices"].name)
    assert invoices[0][0] == "id" and len(invoices) - 1 == by_table["invoices"].rows == before[0]
    users = _rows(folder / by_table["users"].name)
    emails = {row[users[0].index("email")] for row in users[1:]}
    assert not [e for e in emails if e.startswith("changed-after-backup")]
    assert "added-after-backup@example.com" not in emails
    assert by_table["payments"].rows > 0  # emptied in production after the backup, present in the backup

    assert run.backup is not None
    doc = manifest(DB, run.backup.backup_id, run.backup.recovery_point, files, datetime.now(UTC))
    store = LocalDirectoryStore(open_tmp / "archive")
    where = store_export(store, DB, "20260101T000000Z", [(f, folder / f.name) for f in files], doc)
    stored = json.loads(Path(where[-1]).read_text())
    assert stored["backup_id"] == run.backup.backup_id and stored["guardian_version"]
    for entry, path in zip(stored["files"], where[:-1], strict=True):
        data = Path(path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    # the archive's records (what prune plans from) do not include the export's objects
    assert all(r.backup_id == run.backup.backup_id for r in store.list_records(DB))


@pytest.mark.parametrize(("section", "field"), [
    ({"tables": []}, "compliance.tables"),
    ({"tables": ["invoices"], "every": "fortnightly"}, "compliance.every"),
    ({"tables": ["invoices"], "keep_years": 0}, "compliance.keep_years"),
    ({"tables": ["invoices"], "objects": {}}, "compliance.objects.prefix"),
])
def test_a_bad_compliance_section_names_the_field(section: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        GuardianConfig.model_validate({"databases": [{"name": "db", "url": "postgresql://h/db",
                                                      "compliance": section}]})
    assert field in str(err.value).replace("\n", ".").replace(" ", "")


def test_the_export_in_the_s3_archive_is_encrypted_checksummed_and_not_taken_for_a_backup(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path, moto_server: MotoServer,
    s3_bucket: tuple[Any, str]
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = _guardian(open_tmp, url, own_cluster.url("postgres"))
    try:
        g.collect_all()
        state = g.holder.current().databases[DB]
        runner = ComplianceRunner(g.store, None, g.config.state_dir, g.processes, g.state, g.config.all_databases)
        folder = open_tmp / "export"
        folder.mkdir()
        run, files = runner.export(g.config.databases[0], state, folder)
    finally:
        g.stop()
    assert run.succeeded and run.backup is not None, run.reason
    client, bucket = s3_bucket
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, bucket)))
    doc = manifest(DB, run.backup.backup_id, run.backup.recovery_point, files, datetime.now(UTC))
    where = store_export(store, DB, "20260101T000000Z", [(f, folder / f.name) for f in files], doc)
    keys = [w.removeprefix(f"s3://{bucket}/") for w in where]
    assert all("/compliance/20260101T000000Z/" in k for k in keys)
    stored = json.loads(client.get_object(Bucket=bucket, Key=keys[-1])["Body"].read())
    for entry, key in zip(stored["files"], keys[:-1], strict=True):
        obj = client.get_object(Bucket=bucket, Key=key)
        assert obj.get("ServerSideEncryption")  # like every other archive object
        data = obj["Body"].read()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    # the export's objects are no backup: no record, no unreadable record, nothing for the prune to plan on
    assert store.list_records(DB) == [] and store.last_skipped == 0
    assert store.objects(DB) == []


def test_the_prune_and_keep_last_delete_old_backups_but_never_a_compliance_export(tmp_path: Path) -> None:
    doc = {"state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive"), "prune_apply": True},
           "databases": [{"name": "db", "url": "postgresql://unused@127.0.0.1/db", "capture": {"keep_last": 1},
                          "compliance": {"tables": ["invoices"]}}]}
    store = LocalDirectoryStore(tmp_path / "archive")
    now = datetime.now(UTC)
    for backup_id, age in [("old", 30), ("older", 40), ("recent", 1)]:
        rp = now - timedelta(days=age)
        writer = store.begin("db", backup_id, rp)
        writer.write(b"PGDMP" + backup_id.encode())
        writer.commit(BackupRecord(database="db", backup_id=backup_id, kind="scheduled", started_at=rp,
                                   finished_at=rp, outcome="succeeded", size_bytes=5 + len(backup_id), tier="daily"))
    part = tmp_path / "public.invoices.csv.gz"
    part.write_bytes(gzip.compress(b"id\n1\n"))
    sha = hashlib.sha256(part.read_bytes()).hexdigest()
    exported = ExportedFile("invoices", part.name, 1, part.stat().st_size, sha)
    where = store_export(store, "db", "20200101T000000Z", [(exported, part)],
                         manifest("db", "old", now - timedelta(days=30), [exported], now))
    g = Guardian(GuardianConfig.model_validate(doc))
    try:
        assert g.deletions.keep_last("db", 1) >= 1
        g.prune()
    finally:
        g.stop()
    assert {r.backup_id for r in store.list_records("db")} == {"recent"}  # the prune did delete
    assert all(Path(w).exists() for w in where)  # the export and its manifest are untouched


def test_the_compliance_export_command_runs_the_guarded_action_and_audits_it(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    cfg = open_tmp / "guardian.json"
    cfg.write_text(json.dumps({
        "state_dir": str(open_tmp / "state"), "archive": {"path": str(open_tmp / "archive")},
        "databases": [{"name": DB, "url": url, "drill": {"scratch_url": own_cluster.url("postgres")},
                       "compliance": {"tables": TABLES}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    proc = subprocess.run([sys.executable, "-m", "daemon", "compliance-export", "--database", DB, "--config",
                           str(cfg)], capture_output=True, text=True, env=env, timeout=300, cwd=open_tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "compliance export succeeded" in proc.stdout
    manifest_at = Path(proc.stdout.split("manifest: ", 1)[1].split()[0])
    doc = json.loads(manifest_at.read_text())
    assert {f["table"] for f in doc["files"]} == set(TABLES)
    for f in doc["files"]:
        assert hashlib.sha256((manifest_at.parent / f["name"]).read_bytes()).hexdigest() == f["sha256"]
    g = _guardian(open_tmp, url, own_cluster.url("postgres"))
    try:
        audit = g.audit.read(action="compliance_export")
        last = g.state.get("compliance.last." + DB)
        g.collect_all()  # a new process: the last export comes from the state store
        body = g.exposition.render()[0].decode()
        finding = {f.check: f for f in g.holder.current().databases[DB].findings}["compliance_export_overdue"]
    finally:
        g.stop()
    assert not finding.active, finding.hint
    rows = {f["table"]: f for f in doc["files"]}
    assert f'pgbackup_compliance_export_last_success{{database="{DB}"}} 1.0' in body
    assert f'pgbackup_compliance_export_rows{{database="{DB}",table="invoices"}} {float(rows["invoices"]["rows"])}' \
        in body
    assert f'pgbackup_compliance_export_bytes{{database="{DB}",table="users"}} {float(rows["users"]["bytes"])}' in body
    assert [a["outcome"] for a in audit if a["target"] == DB][-1] == "done"
    assert last is not None and last["ok"] and set(last["tables"]) == set(TABLES)
    # unknown database or no compliance section: a clear error, no traceback
    bad = subprocess.run([sys.executable, "-m", "daemon", "compliance-export", "--database", "nope", "--config",
                          str(cfg)], capture_output=True, text=True, env=env, timeout=120, cwd=open_tmp)
    assert bad.returncode != 0 and "unknown database 'nope'" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stderr


def test_the_daemon_schedules_the_export_monthly_by_default_and_at_the_configured_cadence(tmp_path: Path) -> None:
    from daemon.jobs import periodic_jobs

    doc = {"state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")},
           "databases": [{"name": "monthly", "url": "postgresql://unused@127.0.0.1/a", "capture": {"enabled": False},
                          "compliance": {"tables": ["invoices"]}},
                         {"name": "weekly", "url": "postgresql://unused@127.0.0.1/b", "capture": {"enabled": False},
                          "compliance": {"tables": ["invoices"], "every": "weekly"}},
                         {"name": "none", "url": "postgresql://unused@127.0.0.1/c", "capture": {"enabled": False}}]}
    g = Guardian(GuardianConfig.model_validate(doc))
    try:
        start = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)  # a Thursday in the middle of a month
        jobs = {j.id: j for j in periodic_jobs(g, start) if j.id.startswith("compliance:")}
    finally:
        g.stop()
    assert set(jobs) == {"compliance:monthly", "compliance:weekly"}
    monthly = jobs["compliance:monthly"]
    assert monthly.leader_only and monthly.args == ("monthly",)
    first = monthly.trigger.get_next_fire_time(None, start)
    assert first == datetime(2026, 2, 2, 6, 0, tzinfo=UTC)
    assert monthly.trigger.get_next_fire_time(first, first + timedelta(seconds=1)) == datetime(2026, 3, 2, 6, 0,
                                                                                               tzinfo=UTC)
    weekly = jobs["compliance:weekly"].trigger.get_next_fire_time(None, start)
    assert weekly == datetime(2026, 1, 19, 6, 0, tzinfo=UTC)  # the next Monday


def test_a_table_the_backup_lacks_fails_the_export_and_the_finding_says_why(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = Guardian(GuardianConfig.model_validate({
        "state_dir": str(open_tmp / "state"), "archive": {"path": str(open_tmp / "archive")},
        "databases": [{"name": DB, "url": url, "drill": {"scratch_url": own_cluster.url("postgres")},
                       "compliance": {"tables": ["invoices", "audit_logs"]}}]}))
    try:
        g.collect_all()
        before = {f.check: f for f in g.holder.current().databases[DB].findings}["compliance_export_overdue"]
        result = g.compliance.export(DB)
        g.collect_all()
        after = {f.check: f for f in g.holder.current().databases[DB].findings}["compliance_export_overdue"]
        audit = [a for a in g.audit.read(action="compliance_export") if a["target"] == DB]
    finally:
        g.stop()
    assert not before.active, before.hint  # configured a moment ago: not overdue
    assert not result.ok and not result.skipped, result.reason
    assert result.reason == "table public.audit_logs: not in the backup"
    assert after.active and "failed" in after.hint and "audit_logs" in after.hint, after.hint
    assert audit[-1]["outcome"] == "failed"
    assert not [d for d in databases(own_cluster) if d.startswith(PREFIX)]  # dropped even so


def test_the_export_copies_the_application_objects_with_checksums_that_verify_and_names_one_that_vanished(
    moto_server: MotoServer, s3_bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, app_bucket = s3_bucket
    objects = {"invoices/pdf/2026/INV-1.pdf": b"%PDF-1.7 one", "invoices/pdf/INV-2.pdf": os.urandom(3 * 2**20 + 7),
               "invoices/pdf/../escape": b"not outside", "invoices/pdf/gone.pdf": b"deleted meanwhile"}
    for key, body in objects.items():
        client.put_object(Bucket=app_bucket, Key=key, Body=body)
    client.put_object(Bucket=app_bucket, Key="invoices/other.pdf", Body=b"not under the prefix")
    source = ObjectSource(S3Config.model_validate(s3_section(moto_server.endpoint_url, app_bucket)))
    listed = source.list("invoices/pdf/")
    client.delete_object(Bucket=app_bucket, Key="invoices/pdf/gone.pdf")  # between the listing and its read
    archive = f"archive-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=archive)
    store = S3ArchiveStore(S3Config.model_validate(s3_section(moto_server.endpoint_url, archive)))
    account = copy_objects(source, listed, "invoices/pdf/", store, DB, "20260101T000000Z", tmp_path)

    assert account["missing"] == ["invoices/pdf/gone.pdf"]
    assert {f["key"] for f in account["files"]} == set(objects) - {"invoices/pdf/gone.pdf"}
    folder = f"pg-backup-guardian/{quote(DB, safe='')}/reports/compliance/20260101T000000Z/"
    for f in account["files"]:
        copy = client.get_object(Bucket=archive, Key=folder + f["name"])
        data = copy["Body"].read()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]
        assert data == objects[f["key"]] and copy.get("ServerSideEncryption")
    assert all(f["name"].startswith("objects/") and "/" not in f["name"][8:] for f in account["files"])


def test_a_compliance_export_with_objects_writes_them_and_their_checksums_in_its_manifest(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path, moto_server: MotoServer,
    s3_bucket: tuple[Any, str]
) -> None:
    client, app_bucket = s3_bucket
    for n in range(3):
        client.put_object(Bucket=app_bucket, Key=f"invoices/pdf/INV-{n}.pdf", Body=f"%PDF invoice {n}".encode())
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = Guardian(GuardianConfig.model_validate({
        "state_dir": str(open_tmp / "state"),
        "archive": {"path": str(open_tmp / "archive"), "s3": s3_section(moto_server.endpoint_url, "unused")},
        "databases": [{"name": DB, "url": url, "drill": {"scratch_url": own_cluster.url("postgres")},
                       "compliance": {"tables": ["invoices"],
                                      "objects": {"bucket": app_bucket, "prefix": "invoices/pdf/"}}}]}))
    try:
        g.collect_all()
        result = g.compliance.export(DB)
    finally:
        g.stop()
    assert result.ok and result.manifest_at, result.reason
    assert "3 object(s) copied" in result.reason
    at = Path(result.manifest_at)
    doc = json.loads(at.read_text())
    assert doc["objects"]["bucket"] == app_bucket and doc["objects"]["missing"] == []
    assert sorted(f["key"] for f in doc["objects"]["files"]) == [f"invoices/pdf/INV-{n}.pdf" for n in range(3)]
    for f in doc["objects"]["files"] + doc["files"]:
        data = (at.parent / f["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == f["sha256"] and len(data) == f["bytes"]


def test_objects_without_an_s3_connection_fail_the_export_naming_the_setting(tmp_path: Path) -> None:
    g = Guardian(GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")},
        "databases": [{"name": "db", "url": "postgresql://unused@127.0.0.1/db", "capture": {"enabled": False},
                       "compliance": {"tables": ["invoices"], "objects": {"prefix": "invoices/pdf/"}}}]}))
    try:
        result = g.compliance.export("db")
    finally:
        g.stop()
    assert not result.ok and not result.skipped
    assert "compliance.objects needs an archive.s3 section" in result.reason


def test_a_heroku_database_is_exported_from_a_backup_only_heroku_holds(
    fresh_db: str, own_cluster: LocalCluster, sample_dump: Path, tmp_path: Path
) -> None:
    """The archive holds no copy (no mirror yet): the export downloads Heroku's newest backup through the app's
    transfers, as the drill does, and exports its tables."""
    from daemon.adapters.heroku import HerokuClient
    from tests.doubles.heroku import HerokuDouble

    token, app = "hrku-export-SECRET-0123456789", "shop-app"
    with HerokuDouble(token=token) as heroku:
        heroku.add_app(app, database_url=fresh_db)
        at = datetime.now(UTC) - timedelta(hours=1)
        t = heroku.add_transfer(app, created_at=at, started_at=at, finished_at=at + timedelta(minutes=5))
        heroku.set_dump_file(app, t["num"], sample_dump)
        config = GuardianConfig.model_validate({
            "state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive"), "mirror": False},
            "heroku": {"api_key": token, "platform_url": heroku.platform_url, "data_url": heroku.data_url},
            "databases": [{"heroku": {"app": app}, "url": fresh_db,
                           "drill": {"scratch_url": own_cluster.url("postgres")},
                           "compliance": {"tables": ["invoices"]}}]})
        g = Guardian(config, heroku_api=HerokuClient(token, platform_url=heroku.platform_url,
                                                     data_url=heroku.data_url))
        name = f"{app}/DATABASE"
        try:
            g.collect_all(one_shot=True)
            result = g.compliance.export(name)
        finally:
            g.stop()
    assert result.ok, result.reason
    assert "from backup a001" in result.reason
    assert [f.table for f in result.files] == ["invoices"] and result.files[0].rows > 0
    assert token not in result.reason
