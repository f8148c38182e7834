"""The local directory archive: a dump counts as a backup only once committed, and reading back is honest about
what is really on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.adapters.archive.local import LocalDirectoryStore, database_from_dirname
from daemon.adapters.archive.records import BackupRecord
from daemon.core.errors import CaptureError, CollectorError

T0 = datetime(2024, 6, 1, 3, 0, 0, tzinfo=UTC)
DUMP = b"PGDMP" + bytes(range(256)) * 8


def record(
    backup_id: str = "20240601T030000000Z-scheduled",
    *,
    database: str = "shop",
    started_at: datetime = T0,
    size: int = len(DUMP),
    outcome: str = "succeeded",
    error: str | None = None,
    tier: str | None = "daily",
) -> BackupRecord:
    return BackupRecord(database=database, backup_id=backup_id, kind="scheduled", started_at=started_at,
                        finished_at=started_at + timedelta(minutes=3), outcome=outcome, size_bytes=size,
                        sha256=None, error=error, pg_dump_version="pg_dump (PostgreSQL) 16.3", tier=tier)


def store_in(tmp_path: Path) -> LocalDirectoryStore:
    root = tmp_path / "archive"
    root.mkdir()
    return LocalDirectoryStore(root)


def capture(store: LocalDirectoryStore, rec: BackupRecord, data: bytes = DUMP) -> None:
    writer = store.begin(rec.database, rec.backup_id)
    for i in range(0, len(data), 500):
        writer.write(data[i : i + 500])
    writer.commit(rec)


def crashed_capture(store: LocalDirectoryStore, database: str, backup_id: str) -> None:
    """A capture whose process died after writing: neither commit nor abort ran."""
    writer = store.begin(database, backup_id)
    writer.write(DUMP)
    writer.fh.close()  # the OS closes the files of a dead process (and so drops its lock); the temp file stays
    assert writer.lock_fd is not None
    os.close(writer.lock_fd)


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- writing ----------------------------------------------------------------------------------------------

def test_commit_makes_the_dump_and_its_record_visible(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    rec = record(tier=None)
    writer = store.begin("shop", rec.backup_id)
    writer.write(DUMP)
    assert store.list_records("shop") == []  # nothing counts before commit
    assert not store.dump_path("shop", rec.backup_id).exists()

    writer.commit(rec)

    # the first copy of its month is the monthly tier (daemon.core.retention.assign_tier)
    assert store.list_records("shop") == [replace(rec, tier="monthly")]
    assert store.dump_path("shop", rec.backup_id).read_bytes() == DUMP
    assert files_under(store.root) == [f"shop/{rec.backup_id}.dump", f"shop/{rec.backup_id}.json"]
    assert store.last_skipped == 0


def test_committed_record_reads_back_as_a_good_backup_whose_recovery_point_is_the_start(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    capture(store, record())

    [backup] = [r.to_backup() for r in store.list_records("shop")]

    assert backup.succeeded
    assert backup.recovery_point == T0
    assert backup.size_bytes == len(DUMP)
    assert backup.source == "archive"


def test_abort_leaves_no_file_behind(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    writer = store.begin("shop", "b1")
    writer.write(DUMP)

    writer.abort()

    assert files_under(store.root) == []
    assert store.list_records("shop") == []


def test_records_are_listed_oldest_first(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    # names sort the other way round from the times, so the order must come from started_at
    capture(store, record("c-first", started_at=T0))
    capture(store, record("b-second", started_at=T0 + timedelta(days=1)))
    capture(store, record("a-third", started_at=T0 + timedelta(days=2)))

    assert [r.backup_id for r in store.list_records("shop")] == ["c-first", "b-second", "a-third"]


def test_failed_attempt_is_recorded_without_a_dump(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    failed = record("f1", outcome="failed", size=0, error="pg_dump: connection refused")

    store.record_failure(failed)

    assert store.list_records("shop") == [failed]
    assert files_under(store.root) == ["shop/f1.json"]


def test_delete_removes_dump_and_record(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    capture(store, record("b1"))
    capture(store, record("b2", started_at=T0 + timedelta(hours=1)))

    store.delete("shop", "b1")

    assert [r.backup_id for r in store.list_records("shop")] == ["b2"]
    assert files_under(store.root) == ["shop/b2.dump", "shop/b2.json"]


# -- reading back what is really on disk ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        pytest.param(lambda p: p.write_bytes(DUMP[:-1]), f"is {len(DUMP) - 1} bytes, record says {len(DUMP)}",
                     id="truncated"),
        pytest.param(lambda p: p.write_bytes(DUMP + b"x"), f"is {len(DUMP) + 1} bytes", id="grown"),
        pytest.param(lambda p: p.write_bytes(b""), "is 0 bytes", id="emptied"),
        pytest.param(lambda p: p.unlink(), "missing", id="deleted"),
    ],
)
def test_good_record_whose_dump_does_not_match_reads_back_as_failed(
    tmp_path: Path, tamper: Callable[[Path], object], problem: str
) -> None:
    store = store_in(tmp_path)
    rec = record()
    capture(store, rec)
    tamper(store.dump_path("shop", rec.backup_id))

    [read] = store.list_records("shop")

    assert read.outcome == "failed"
    assert read.error is not None and problem in read.error
    assert not read.to_backup().succeeded


@pytest.mark.parametrize(
    "content",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param("[1, 2]", id="a-list"),
        pytest.param("null", id="null"),
        pytest.param('{"database": "shop"}', id="missing-fields"),
        pytest.param(None, id="naive-timestamps"),
        pytest.param(None, id="unknown-outcome"),
        pytest.param(None, id="bad-size"),
        pytest.param(b"\xff\xfe\x00garbage", id="not-utf8"),
    ],
)
def test_malformed_record_is_skipped_and_counted_without_raising(tmp_path: Path, request: pytest.FixtureRequest,
                                                                   content: str | bytes | None) -> None:
    store = store_in(tmp_path)
    good = record("good")
    capture(store, good)
    bad_path = store.root / "shop" / "bad.json"
    if content is None:  # a well-formed document with one wrong field
        doc = record("bad").to_json()
        variant = request.node.callspec.id
        if variant == "naive-timestamps":
            doc["started_at"] = doc["finished_at"] = "2024-06-01T03:00:00"
        elif variant == "unknown-outcome":
            doc["outcome"] = "probably"
        else:
            doc["size_bytes"] = "large"
        content = json.dumps(doc)
    if isinstance(content, bytes):
        bad_path.write_bytes(content)
    else:
        bad_path.write_text(content)

    records = store.list_records("shop")

    assert records == [good]
    assert store.last_skipped == 1


def test_skipped_count_is_per_read(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    capture(store, record("good"))
    (store.root / "shop" / "bad1.json").write_text("{")
    (store.root / "shop" / "bad2.json").write_text("[]")

    assert len(store.list_records("shop")) == 1
    assert store.last_skipped == 2

    (store.root / "shop" / "bad1.json").unlink()
    (store.root / "shop" / "bad2.json").unlink()
    store.list_records("shop")
    assert store.last_skipped == 0


def test_leftover_partial_files_are_never_read_as_records(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    capture(store, record("good"))
    (store.root / "shop" / ".good2.json.abc123.partial").write_text(json.dumps(record("good2").to_json()))
    crashed_capture(store, "shop", "crashed")

    assert [r.backup_id for r in store.list_records("shop")] == ["good"]
    assert store.last_skipped == 0


def test_missing_archive_root_is_a_collector_error(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "nowhere")

    with pytest.raises(CollectorError, match="does not exist"):
        store.list_records("shop")


def test_database_never_captured_has_no_records(tmp_path: Path) -> None:
    assert store_in(tmp_path).list_records("shop") == []


# -- crash leftovers --------------------------------------------------------------------------------------

def test_sweep_partials_removes_leftovers_and_keeps_backups(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    capture(store, record("kept", database="shop"))
    crashed_capture(store, "shop", "crashed")
    crashed_capture(store, "shop/replica", "crashed-too")
    (store.root / "shop" / ".kept2.json.xyz.partial").write_text("{}")
    partials_before = [n for n in files_under(store.root) if n.endswith(".partial")]
    assert len(partials_before) == 3

    removed = store.sweep_partials()

    assert removed == 3
    assert files_under(store.root) == ["shop/kept.dump", "shop/kept.json"]
    assert [r.backup_id for r in store.list_records("shop")] == ["kept"]
    assert store.sweep_partials() == 0


WRITER = """
import sys
from pathlib import Path
from datetime import UTC, datetime
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
store = LocalDirectoryStore(Path(sys.argv[1]))
writer = store.begin("shop", sys.argv[2])
writer.write(b"PGDMP" + b"x" * 1000)
writer.fh.flush()
print(writer.tmp, flush=True)
sys.stdin.readline()  # hold the partial open until told to finish
now = datetime.now(UTC)
writer.commit(BackupRecord(database="shop", backup_id=sys.argv[2], kind="scheduled", started_at=now,
                           finished_at=now, outcome="succeeded", size_bytes=1005))
"""


def writer_process(root: Path, backup_id: str) -> tuple[subprocess.Popen[str], Path]:
    """A real process in the middle of writing a dump: its partial file, held until it reads a line."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root), backup_id], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def test_sweep_keeps_the_partial_of_a_live_writer_and_removes_the_one_of_a_dead_writer(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    alive, alive_partial = writer_process(store.root, "alive")
    dead, dead_partial = writer_process(store.root, "dead")
    try:
        assert alive_partial.exists() and dead_partial.exists()
        dead.send_signal(signal.SIGKILL)  # no abort runs: the kernel closes its files and drops its lock
        dead.wait(timeout=30)

        assert store.sweep_partials() == 1

        assert alive_partial.exists(), "the sweep removed the partial file of a live writer"
        assert not dead_partial.exists()
        alive.communicate("commit\n", timeout=30)
        assert alive.returncode == 0
    finally:
        for proc in (alive, dead):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    [kept] = store.list_records("shop")
    assert kept.backup_id == "alive" and kept.outcome == "succeeded"
    assert files_under(store.root) == ["shop/alive.dump", "shop/alive.json"]


def test_sweep_partials_on_a_missing_root_removes_nothing(tmp_path: Path) -> None:
    assert LocalDirectoryStore(tmp_path / "nowhere").sweep_partials() == 0


# -- unwritable archive -----------------------------------------------------------------------------------

def _unwritable_store(tmp_path: Path) -> LocalDirectoryStore:
    # Tests run as root, which ignores permission bits: a path below a regular file fails even for root.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the archive's parent directory should be")
    return LocalDirectoryStore(blocker / "archive")


def test_record_failure_on_an_unwritable_archive_raises_a_clear_capture_error(tmp_path: Path) -> None:
    store = _unwritable_store(tmp_path)

    with pytest.raises(CaptureError) as err:
        store.record_failure(record("f1", outcome="failed", size=0, error="boom"))

    message = str(err.value)
    assert "cannot record the failed attempt" in message
    assert str(store.root / "shop") in message
    assert "Not a directory" in message
    assert "Traceback" not in message


def test_begin_on_an_unwritable_archive_raises_a_clear_capture_error(tmp_path: Path) -> None:
    store = _unwritable_store(tmp_path)

    with pytest.raises(CaptureError, match="is not writable"):
        store.begin("shop", "b1")


# -- database names ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("names", [["shop/main", "shop/replica"], ["a/b/c", "a", "a%2Fb"], ["db@host:5432/x"]])
def test_database_names_with_slashes_get_one_directory_each_and_read_back(tmp_path: Path, names: list[str]) -> None:
    store = store_in(tmp_path)
    for i, name in enumerate(names):
        capture(store, record(f"b{i}", database=name))

    dirs = sorted(p.name for p in store.root.iterdir())

    assert len(dirs) == len(names)
    assert all(p.is_dir() for p in store.root.iterdir())
    assert sorted(database_from_dirname(d) for d in dirs) == sorted(names)
    for i, name in enumerate(names):
        [read] = store.list_records(name)
        assert (read.database, read.backup_id, read.outcome) == (name, f"b{i}", "succeeded")


@pytest.mark.parametrize(("toc", "readable", "too_new"), [
    # written before verdicts said whether they judged the dump: read from the error
    ({"ok": False, "error": "the dump was written by a newer pg_dump (archive format 1.16) than this pg_restore "
                            "(pg_restore (PostgreSQL) 15.18) can read: install ..."}, None, True),
    ({"ok": False, "error": "the readability check stalled: pg_restore read nothing for 600s and was stopped (the "
                            "dump itself was not judged)"}, None, False),
    ({"ok": False, "error": "the dump is truncated: it ends in the middle (...)"}, False, False),
    ({"ok": True, "error": None}, True, False),
    # written since: the verdict says
    ({"ok": False, "judged": False, "error": "the dump was written by a newer pg_dump (archive format 1.16)"},
     None, True),
    ({"ok": False, "judged": True, "error": "not a PostgreSQL custom-format dump (no PGDMP header)"}, False, False),
])
def test_a_stored_readability_verdict_reads_back_whether_it_judged_the_dump(
    toc: dict[str, object], readable: bool | None, too_new: bool
) -> None:
    """A copy whose check only met a pg_restore older than its pg_dump is never read back as unreadable, also
    from records written before verdicts said so: installing newer tools then clears the finding."""
    at = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    record = BackupRecord(database="shop", backup_id="a001", kind="scheduled", started_at=at, finished_at=at,
                          outcome="succeeded", size_bytes=10, toc=toc)
    backup = BackupRecord.from_json(record.to_json()).to_backup()
    assert (backup.readable, backup.too_new_here) == (readable, too_new)
