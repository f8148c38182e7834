"""Self-managed captures: real pg_dump against the test cluster, into a real local archive."""

from __future__ import annotations

import hashlib
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from actions.capture import Capturer, CaptureRequest
from collectors.archive import collect_archive
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.tools import find_tool
from daemon.core.errors import CaptureError
from daemon.core.redact import url_password


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_capture_writes_a_restorable_dump_with_its_record(fresh_db: str, tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "archive")
    before = datetime.now(UTC)
    record = Capturer(store).capture(CaptureRequest(database="shop/main", url=fresh_db, kind="manual"))
    after = datetime.now(UTC)

    dump = store.dump_path("shop/main", record.backup_id)
    data = dump.read_bytes()
    assert record.outcome == "succeeded"
    assert record.size_bytes == len(data) > 0
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert before <= record.started_at <= record.finished_at <= after
    assert record.pg_dump_version and "pg_dump" in record.pg_dump_version
    # a readable custom-format dump holding the sample tables
    toc = subprocess.run([find_tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True, check=True)
    for table in ("users", "invoices", "payments"):
        assert f"TABLE DATA public {table}" in toc.stdout
    # read back through the collector: one good backup whose recovery point is the capture start
    src = collect_archive(store, "shop/main")
    assert src.newest_good is not None
    assert src.newest_good.recovery_point == record.started_at
    assert src.newest_good.kind == "manual"
    assert not [n for n in _files(tmp_path) if n.endswith(".partial")]


def test_failed_capture_leaves_no_partial_file_and_is_recorded(pg_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = LocalDirectoryStore(tmp_path / "archive")
    url = pg_cluster.url("no_such_database")
    with pytest.raises(CaptureError) as err:
        Capturer(store).capture(CaptureRequest(database="gone", url=url))
    assert "no_such_database" in str(err.value)
    password = url_password(url)
    assert password and password not in str(err.value)

    files = _files(tmp_path)
    assert [n for n in files if n.endswith(".json")], files
    assert not [n for n in files if n.endswith((".dump", ".partial"))], files
    src = collect_archive(store, "gone")
    assert src.newest_good is None
    assert src.last_attempt is not None and not src.last_attempt.succeeded
    assert src.last_attempt.error and "no_such_database" in src.last_attempt.error
    assert password not in (tmp_path / "archive").joinpath("gone", files[0]).read_text()


def test_wrong_password_never_reaches_the_error_message(pg_cluster, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql://postgres:Wr0ng-Secret-Pass@127.0.0.1:{pg_cluster.port}/postgres"
    store = LocalDirectoryStore(tmp_path / "archive")
    with pytest.raises(CaptureError) as err:
        Capturer(store).capture(CaptureRequest(database="db", url=url))
    assert "password authentication failed" in str(err.value)
    assert "Wr0ng-Secret-Pass" not in str(err.value)
    assert "Wr0ng-Secret-Pass" not in "".join(p.read_text() for p in (tmp_path / "archive").rglob("*.json"))


def test_capture_that_exceeds_its_timeout_is_killed_and_recorded(fresh_db: str, tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "archive")
    # Another session holds an exclusive lock: pg_dump waits for it forever, so only the timeout ends it.
    with psycopg.connect(fresh_db) as blocker:
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(CaptureError, match="timed out"):
            Capturer(store).capture(CaptureRequest(database="db", url=fresh_db, timeout_seconds=1.5))
        blocker.rollback()
    assert not [n for n in _files(tmp_path) if n.endswith((".dump", ".partial"))]
    last = collect_archive(store, "db").last_attempt
    assert last is not None and not last.succeeded and "timed out" in (last.error or "")


def test_second_capture_of_the_same_database_is_refused_while_one_runs(fresh_db: str, tmp_path: Path) -> None:
    capturer = Capturer(LocalDirectoryStore(tmp_path / "archive"))
    errors: list[Exception] = []
    with psycopg.connect(fresh_db) as blocker:
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")
        first = threading.Thread(target=lambda: _capture_into(capturer, fresh_db, errors))
        first.start()
        # wait until pg_dump is really waiting on our lock, as PostgreSQL itself reports it
        _wait_for_lock_waiter(blocker)
        assert capturer.running("db")
        with pytest.raises(CaptureError, match="already running"):
            capturer.capture(CaptureRequest(database="db", url=fresh_db))
        blocker.rollback()
    first.join(timeout=60)
    assert not errors
    assert not capturer.running("db")


def _capture_into(capturer: Capturer, url: str, errors: list[Exception]) -> None:
    try:
        capturer.capture(CaptureRequest(database="db", url=url, timeout_seconds=60))
    except Exception as exc:
        errors.append(exc)


def _wait_for_lock_waiter(conn: psycopg.Connection) -> None:  # type: ignore[type-arg]
    with psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True) as watcher:
        for _ in range(600):
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'"
            ).fetchone()
            if row and row[0]:
                return
            watcher.execute("SELECT pg_sleep(0.05)")
    raise AssertionError("pg_dump never waited on the lock")


def test_capture_into_an_unwritable_archive_is_remembered_as_failed(fresh_db: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the archive directory should be")
    store = LocalDirectoryStore(blocker / "archive")
    capturer = Capturer(store)
    with pytest.raises(CaptureError, match="not writable"):
        capturer.capture(CaptureRequest(database="db", url=fresh_db))
    [failed] = capturer.unrecorded("db")
    assert not failed.succeeded and "not writable" in (failed.error or "")


def test_a_failed_pg_dump_keeps_its_whole_cause_with_the_server_and_never_the_password(
    pg_cluster, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    """pg_dump's error is kept whole (its continuation and detail lines, which name the server, the table,
    the query) and says which server it was; the password is in no message or record."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        url = f"postgresql://postgres:S3cret-Capture-Pw@127.0.0.1:{port}/shop"
        store = LocalDirectoryStore(tmp_path / "archive")
        with pytest.raises(CaptureError) as err:
            Capturer(store).capture(CaptureRequest(database="down", url=url))
    text = str(err.value)
    assert f"pg_dump of 127.0.0.1:{port}/shop failed" in text
    assert f'port {port} failed' in text and "Connection refused" in text
    assert "Is the server running on that host and accepting TCP/IP connections?" in text  # libpq's next line
    assert "S3cret-Capture-Pw" not in text and "\n" not in text

    # A role that may connect but not read one table: the query and the table are the cause.
    admin = pg_cluster.url("postgres")
    name = f"cap_{port}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD 'Reader-Pw-{port}'")
    with psycopg.connect(pg_cluster.url(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE secret (id int)")
    reader = f"postgresql://{name}:Reader-Pw-{port}@127.0.0.1:{pg_cluster.port}/{name}"
    with pytest.raises(CaptureError) as err:
        Capturer(store).capture(CaptureRequest(database="locked", url=reader))
    text = str(err.value)
    assert f"pg_dump of 127.0.0.1:{pg_cluster.port}/{name} failed" in text
    assert "permission denied for table secret" in text
    assert "detail: Query was: LOCK TABLE public.secret IN ACCESS SHARE MODE" in text
    assert f"Reader-Pw-{port}" not in text
    recorded = collect_archive(store, "locked").last_attempt
    assert recorded is not None and "LOCK TABLE public.secret" in (recorded.error or "")
