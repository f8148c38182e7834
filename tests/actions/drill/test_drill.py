"""Restore drills with a real PostgreSQL, real pg_dump and pg_restore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.scratch import PREFIX
from daemon.adapters.postgres.toc import read_toc
from daemon.app import Guardian
from daemon.config import GuardianConfig
from tests.support import DRILLED_DB as DB
from tests.support import capture, create_database, databases, drill_guardian, drill_once


def test_full_drill_restores_checks_reports_and_drops_the_scratch_database(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = drill_guardian(open_tmp, url, scratch=own_cluster.url("postgres"),
                       checks={"min_rows": {"users": 1, "invoices": 100},
                               "fresh_columns": {"invoices.created_at": "2d"},
                               "sql": {"invoices have users": "SELECT count(*) = 0 FROM invoices i "
                                       "LEFT JOIN users u ON u.id = i.user_id WHERE u.id IS NULL"}})
    run, snap = drill_once(g)
    assert run.succeeded, run.reason
    assert {"download", "verify", "restore", "checks", "drop"} <= run.phases.keys()
    assert run.recovery_seconds == pytest.approx(run.phases["download"] + run.phases["restore"]
                                                 + run.phases["checks"])
    names = {c.name for c in run.checks}
    assert {"table public.invoices restored", "users has at least 1 rows", "invoices have users",
            "newest invoices.created_at is fresh"} <= names
    assert "system_identifier" in run.safety and "differs" in run.safety
    assert not [d for d in databases(own_cluster) if d.startswith(PREFIX)]  # dropped
    report = json.loads(Path(snap.databases[DB].drills[-1].report or "").read_text())
    assert report["succeeded"] and report["backup"]["id"] and report["within_rto"] is True
    assert report["tools"]["pg_restore"] and report["host"]
    items = {c["item"]: c["status"] for c in report["checklist"]}
    assert items["Backup downloads successfully"] == "passed" and items["PDF generation works"] == "not covered"
    md = Path(snap.databases[DB].drills[-1].report or "").with_suffix(".md").read_text()
    assert "SUCCEEDED" in md and "| restore |" in md
    body = g.exposition.render()[0].decode()
    assert f'pgbackup_drill_last_success{{database="{DB}",scenario="database_corruption"}} 1.0' in body
    assert 'phase="restore"' in body


def test_table_drill_restores_only_the_critical_tables(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = drill_guardian(open_tmp, url, scratch=own_cluster.url("postgres"), tables=["invoices"])
    try:
        g.collect_all()
        run = g.drills.drill(DB, "accidental_deletion")
    finally:
        g.stop()
    assert run.succeeded, run.reason
    assert [c.name for c in run.checks] == ["table public.invoices restored"]
    assert run.rto_seconds == 7200


def test_embedded_scratch_cluster_is_used_by_default(pg_cluster: LocalCluster, open_tmp: Path) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = drill_guardian(open_tmp, url)
    run, _ = drill_once(g)
    assert run.succeeded, run.reason
    assert "differs from production" in run.safety  # the embedded cluster is a different server too


@pytest.mark.parametrize("cut", ["truncated", "corrupted"])
def test_a_broken_dump_fails_the_readability_check_and_the_drill_with_a_clear_reason(
    cut: str, pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    store = LocalDirectoryStore(open_tmp / "archive")
    [record] = store.list_records(DB)
    dump = store.dump_path(DB, record.backup_id)
    data = dump.read_bytes()
    broken = data[: len(data) // 2] if cut == "truncated" else (
        data[: len(data) // 2] + bytes(64) + data[len(data) // 2 + 64:])
    dump.write_bytes(broken)
    rec_path = dump.with_suffix(".json")
    doc = json.loads(rec_path.read_text())
    doc["size_bytes"], doc["sha256"] = len(broken), None  # the record agrees: only the content is bad
    rec_path.write_text(json.dumps(doc))

    toc = read_toc(dump)
    assert not toc.ok and cut in (toc.error or "")
    g = drill_guardian(open_tmp, url, scratch=own_cluster.url("postgres"))
    run, snap = drill_once(g)
    assert not run.succeeded and cut in run.reason and "not readable" in run.reason
    assert run.scratch == ""  # refused before any scratch database existed
    assert not [d for d in databases(own_cluster) if d.startswith(PREFIX)]
    assert {f.check: f for f in snap.databases[DB].findings}["drill_failed"].active


@pytest.mark.parametrize("spelling", [
    "postgres://postgres:{pw}@localhost:{port}/postgres",
    "postgresql://postgres:{pw}@127.0.0.1:{port}/postgres?sslmode=disable&application_name=scratch",
    "postgresql://postgres@/template1?host={sock}&port={port}",
])
def test_scratch_on_the_production_server_is_refused_whatever_the_spelling(
    spelling: str, pg_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    scratch = spelling.format(pw=pg_cluster.password, port=pg_cluster.port, sock=pg_cluster.socket_dir)
    before = databases(pg_cluster)
    g = drill_guardian(open_tmp, url, scratch=scratch)
    run, _ = drill_once(g)
    assert not run.succeeded and "IS the production server" in run.reason
    assert "restore" not in run.phases
    assert databases(pg_cluster) == before  # nothing created


def test_an_emptied_table_fails_its_smoke_check_and_the_report_names_it(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM payments")
    capture(open_tmp, DB, url)  # the backup holds an empty payments table
    with psycopg.connect(url, autocommit=True) as conn:  # while production has payments again
        conn.execute("INSERT INTO payments (invoice_id, amount_cents) SELECT id, 100 FROM invoices LIMIT 5")
    g = drill_guardian(open_tmp, url, scratch=own_cluster.url("postgres"))
    run, snap = drill_once(g)
    assert not run.succeeded
    [bad] = [c for c in run.checks if not c.ok]
    assert bad.name == "table public.payments has rows" and "production has rows" in bad.detail
    finding = {f.check: f for f in snap.databases[DB].findings}["drill_failed"]
    assert finding.active and "public.payments" in finding.hint
    report = json.loads(Path(snap.databases[DB].drills[-1].report or "").read_text())
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["table public.payments has rows"]


def test_killed_mid_restore_the_next_start_sweeps_only_its_own_scratch_database(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = create_database(pg_cluster, with_schema=False)
    with psycopg.connect(url, autocommit=True) as conn:  # enough rows that the restore takes a while
        conn.execute("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 3000000) g")
    capture(open_tmp, DB, url)
    with psycopg.connect(own_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE keep_me")  # not ours: no prefix
        conn.execute(f"CREATE DATABASE {PREFIX}someone_elses")  # a prefix, but not on our ledger
    cfg = open_tmp / "g.json"
    cfg.write_text(json.dumps({"state_dir": str(open_tmp / "state"), "archive": {"path": str(open_tmp / "archive")},
                               "databases": [{"name": DB, "url": url,
                                              "drill": {"scratch_url": own_cluster.url("postgres")}}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDIAN_")}
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "drill", "--config", str(cfg)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ours: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            with psycopg.connect(own_cluster.url("postgres"), autocommit=True) as conn:
                rows = conn.execute("SELECT datname FROM pg_stat_activity WHERE application_name = 'pg_restore'"
                                    " AND datname LIKE %s", (f"{PREFIX}2%",)).fetchall()
            ours = [r[0] for r in rows]
            if ours:
                break
        assert ours, "the restore never started"
        os.killpg(proc.pid, signal.SIGKILL)  # the guardian and its pg_restore die mid-restore
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert ours[0] in databases(own_cluster)  # left behind by the crash

    g = Guardian(GuardianConfig.model_validate(json.loads(cfg.read_text())))
    try:
        assert list((open_tmp / "state" / "drills" / "tmp").glob("download-*"))  # the killed drill's download
        g.drills.sweep_scratch()  # what the next start does
    finally:
        g.stop()
    left = databases(own_cluster)
    assert ours[0] not in left
    assert {"keep_me", f"{PREFIX}someone_elses"} <= left
    assert not list((open_tmp / "state" / "drills" / "tmp").glob("download-*"))  # the download went too


def test_a_drill_while_another_runs_is_skipped_not_failed(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    from actions.drill.run import drill_lock

    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    g = drill_guardian(open_tmp, url, scratch=own_cluster.url("postgres"))
    try:
        g.collect_all()
        with drill_lock(open_tmp / "state"):  # another process holds the drill lock
            run = g.drills.drill(DB)
        snap = g.holder.current()
    finally:
        g.stop()
    assert run.skipped and "another drill is running" in run.reason
    assert snap.databases[DB].drills == ()  # no result, no report
    assert not {f.check: f for f in snap.databases[DB].findings}["drill_failed"].active
    assert snap.actions[("drill", "skipped")] == 1


def test_a_configured_scratch_without_a_production_url_to_compare_is_refused(
    own_cluster: LocalCluster, open_tmp: Path
) -> None:
    from daemon.adapters.postgres.scratch import DrillRefused, Production, ScratchTarget

    target = ScratchTarget.from_url(own_cluster.url("postgres"))
    nothing_known = Production(frozenset(), ())
    with pytest.raises(DrillRefused, match="cannot prove"):
        nothing_known.require(target, allow_unproven=False, has_url=False)
    nothing_known.require(target, allow_unproven=True, has_url=False)  # accepted by drill.allow_unproven_scratch


def test_a_backup_newer_than_pg_restore_is_not_drilled_and_not_called_unreadable(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    """A dump written by a newer pg_dump than this pg_restore reads (its header's archive version is beyond this
    pg_restore's, as a PostgreSQL 17 dump is for pg_restore 15) is not judged: the backup stays good, the
    finding names the versions and what to install, and the drill is refused before its download."""
    url = create_database(pg_cluster)
    capture(open_tmp, DB, url)
    store = LocalDirectoryStore(open_tmp / "archive")
    [record] = store.list_records(DB)
    dump = store.dump_path(DB, record.backup_id)
    data = bytearray(dump.read_bytes())
    assert data[:5] == b"PGDMP"
    data[6] = 20  # the archive format's minor version: 1.20, which no pg_dump writes yet (17 writes 1.16)
    dump.write_bytes(bytes(data))
    toc = read_toc(dump)
    assert not toc.ok and not toc.judged and "newer pg_dump" in (toc.error or "")
    rec_path = dump.with_suffix(".json")
    doc = json.loads(rec_path.read_text())
    doc["sha256"], doc["toc"] = None, toc.to_json()
    doc["tools"]["pg_dump"] = "pg_dump (PostgreSQL) 99.1"  # what the newer pg_dump would record
    rec_path.write_text(json.dumps(doc))

    g = drill_guardian(open_tmp, url, scratch=own_cluster.url("postgres"))
    run, snap = drill_once(g)
    found = {f.check: f for f in snap.databases[DB].findings}
    assert found["client_tools_too_old"].active
    assert "pg_dump (PostgreSQL) 99.1" in found["client_tools_too_old"].hint
    assert "postgresql-client-99" in found["client_tools_too_old"].hint
    assert not found["unreadable_backup"].active and not found["rpo_breach"].active
    assert run.skipped and run.reason.startswith("not drilled:") and "postgresql-client-99" in run.reason
    assert run.phases == {} and run.scratch == ""  # nothing downloaded, no scratch database
    assert not [d for d in databases(own_cluster) if d.startswith(PREFIX)]
    assert not found["drill_failed"].active


@pytest.mark.parametrize("when", ["before", "mid-read"])
def test_a_heroku_backup_deleted_before_or_while_the_drill_reads_it_is_replaced_by_the_next_good_one(
    fresh_db: str, own_cluster: LocalCluster, sample_dump: Path, tmp_path: Path, when: str
) -> None:
    """Heroku's retention deletes the newest backup between the collection and the drill (410 Gone for its
    URL), or while the drill downloads it (the stream breaks off, and Heroku answers 410 for it since): the drill
    restores the next good backup and its notes say why; no failure is recorded."""
    from datetime import UTC, datetime, timedelta

    import httpx

    from daemon.adapters.heroku import HerokuClient
    from tests.doubles.heroku import HerokuDouble

    token, app = "hrku-drill-SECRET-0123456789", "shop-app"
    with HerokuDouble(token=token) as heroku:
        heroku.add_app(app, database_url=fresh_db)
        for hours in (2, 1):
            at = datetime.now(UTC) - timedelta(hours=hours)
            t = heroku.add_transfer(app, created_at=at, started_at=at, finished_at=at + timedelta(minutes=5))
            heroku.set_dump_file(app, t["num"], sample_dump)
        config = GuardianConfig.model_validate({
            "state_dir": str(tmp_path / "state"),
            "heroku": {"api_key": token, "platform_url": heroku.platform_url, "data_url": heroku.data_url},
            "databases": [{"heroku": {"app": app}, "url": fresh_db,
                           "drill": {"scratch_url": own_cluster.url("postgres")}}]})
        g = Guardian(config, heroku_api=HerokuClient(token, platform_url=heroku.platform_url,
                                                     data_url=heroku.data_url))
        name = f"{app}/DATABASE"
        try:
            g.collect_all(one_shot=True)
            if when == "before":
                r = httpx.delete(f"{heroku.data_url}/client/v11/apps/{app}/transfers/2",
                                 headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 200
            else:
                heroku.expire_during_download(app, 2, after_bytes=sample_dump.stat().st_size // 2)
            run = g.drills.drill(name)
            snap = g.holder.current()
        finally:
            g.stop()
    assert run.succeeded, run.reason
    assert run.backup is not None and run.backup.backup_id == "a001"
    assert any("a002 was deleted by Heroku" in n and "next good backup" in n for n in run.notes)
    assert when == "before" or any("cut short" in n for n in run.notes)
    found = {f.check: f for f in snap.databases[name].findings}
    assert not found["drill_failed"].active
