"""Work that belongs to a live process is never swept, and a crash loses nothing and leaves an honest record.

Real daemon processes (`python -m daemon run`, `python -m daemon capture`, `python -m daemon drill`) on one
state directory and one local archive, real pg_dump against a real PostgreSQL. A capture is held in the middle
of its run by a lock the test takes on one of the dumped tables: pg_dump waits for it while its partial file
exists and its action is "running"; releasing the lock lets it finish. `kill -9` is a crash: no cleanup runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from actions.capture import Capturer, CaptureRequest
from actions.planner import INTERRUPTED_CAPTURE
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.statestore import open_state_store
from tests.support import DaemonProcess

DB = "shop"


def settings(archive: Path, url: str, interval: str = "1h", extra: str = "") -> str:
    return f"""archive: {{path: {archive}}}
databases:
  - name: {DB}
    url: {url}
    capture: {{interval: {interval}}}
{extra}"""


LIVE = "actions: {dry_run: false}\n"


def poll(what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
    """Wait until `predicate()` is truthy (a condition of the processes under test), else fail naming it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def partial_file(archive: Path) -> Path | None:
    """The partial file of a dump being written (not the brief one of a record)."""
    return next((p for p in archive.glob("*/.*.partial") if ".json." not in p.name), None)


@contextlib.contextmanager
def pg_dump_held(url: str) -> Iterator[psycopg.Connection[Any]]:
    """While inside, every pg_dump of `url` waits for a lock on `invoices` (after its partial file exists)."""
    with psycopg.connect(url) as blocker:
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")
        yield blocker
        blocker.rollback()


def capture_cli(tmp_path: Path, state: Path, yaml_text: str) -> subprocess.Popen[str]:
    """`python -m daemon capture --database shop` (actions live), as a person runs it."""
    cfg = tmp_path / "cli.yaml"
    cfg.write_text(f"state_dir: {state}\n" + yaml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    env.update(GUARDIAN_CONFIG=str(cfg), GUARDIAN_DRY_RUN="false")
    return subprocess.Popen([sys.executable, "-m", "daemon", "capture", "--database", DB, "--reason", "by hand"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)


def records(archive: Path) -> list[BackupRecord]:
    return LocalDirectoryStore(archive).list_records(DB)


def finding(d: DaemonProcess, check: str, severity: str = "critical") -> float | None:
    return d.metrics().get(("pgbackup_finding_active", (("check", check), ("database", DB),
                                                        ("severity", severity))))


def archive_seen(d: DaemonProcess, good: int) -> bool:
    """The daemon's last archive reading holds `good` good backups."""
    held = [v for (name, labels), v in d.metrics().items()
            if name == "pgbackup_backups" and ("database", DB) in labels and ("source", "archive") in labels]
    return bool(held) and sum(held) == good


def history(state: Path, action: str) -> tuple[list[Any], list[dict[str, Any]]]:
    store = open_state_store(None, state)
    try:
        return store.actions(action=action), store.audit(action=action)
    finally:
        store.close()


# -- (5) a starting process never sweeps a live process's partial file ------------------------------------

def test_a_starting_replica_leaves_the_leaders_capture_in_progress_alone(
    run_daemon: Callable[..., DaemonProcess], fresh_db: str, tmp_path: Path
) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    with pg_dump_held(fresh_db):
        leader = run_daemon(settings(archive, fresh_db), state_dir=state)
        partial = poll("the leader's scheduled capture to write its partial file", lambda: partial_file(archive))
        replica = run_daemon(settings(archive, fresh_db), state_dir=state)  # swept partials before it answered
        assert partial.exists(), "the starting replica removed the leader's dump in progress"
        assert replica.proc.poll() is None
    leader.wait_for("the leader's capture to succeed", lambda: [r for r in records(archive)])
    [record] = records(archive)
    assert record.outcome == "succeeded" and record.kind == "scheduled", record
    leader.wait_for("the leader to read its new backup", lambda: archive_seen(leader, 1))
    assert finding(leader, "last_attempt_failed") == 0
    [taken], _ = history(state, "capture")
    assert taken.outcome == "done" and taken.details["kind"] == "scheduled"


def test_a_starting_daemon_leaves_a_capture_command_in_progress_alone(
    run_daemon: Callable[..., DaemonProcess], fresh_db: str, tmp_path: Path
) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    with pg_dump_held(fresh_db):
        cli = capture_cli(tmp_path, state, settings(archive, fresh_db))
        partial = poll("the capture command to write its partial file", lambda: partial_file(archive))
        daemon = run_daemon(settings(archive, fresh_db), state_dir=state)
        assert partial.exists(), "the starting daemon removed the capture command's dump in progress"
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, out + err
    assert out.startswith("done: capture ") and "succeeded" in out
    [record] = records(archive)  # the daemon's own scheduled capture found capture:shop taken and stood aside
    assert record.outcome == "succeeded" and record.kind == "manual", record
    daemon.wait_for("the daemon to read the new backup", lambda: archive_seen(daemon, 1))
    assert finding(daemon, "last_attempt_failed") == 0


# -- (6) a capture or drill killed in the middle is closed as interrupted -----------------------------------

def good_backup_first(archive: Path, url: str) -> BackupRecord:
    """A good scheduled backup, so the next scheduled capture is an interval away (only what the test starts
    runs), and no on-request backup holds a cooldown."""
    return Capturer(LocalDirectoryStore(archive)).capture(CaptureRequest(database=DB, url=url, kind="scheduled"))


def assert_interrupted_then_captured_again(d: DaemonProcess, state: Path, archive: Path, kind: str) -> None:
    """After the restart: the record closed as interrupted (history and audit), the failed attempt in the
    archive, and the emergency capture that failure calls for let through by the guards."""
    d.wait_for("the emergency capture to be done", lambda: d.metrics().get(
        ("pgbackup_actions_total", (("action", "capture"), ("outcome", "done")))))
    taken, audit = history(state, "capture")
    assert taken[0].outcome == "interrupted", taken
    assert "stopped during this capture" in taken[0].details["detail"]
    assert taken[0].owner and taken[0].owner.startswith("pid ")
    assert [a["outcome"] for a in audit][:2] == ["started", "interrupted"], audit
    failed = [r for r in records(archive) if r.outcome == "failed"]
    assert [(r.kind, r.error) for r in failed] == [(kind, INTERRUPTED_CAPTURE)]
    emergency = [a for a in audit[2:] if a["outcome"] == "started"]
    assert emergency and "last_attempt_failed" in emergency[0]["triggers"], audit
    assert not [a for a in audit if a["outcome"] == "skipped_cooldown"], audit
    assert taken[-1].outcome == "done" and not taken[-1].details.get("kind"), taken
    assert d.metrics()[("pgbackup_actions_total", (("action", "capture"), ("outcome", "interrupted")))] == 1


def test_a_capture_command_killed_mid_capture_is_closed_as_interrupted_and_holds_no_cooldown(
    run_daemon: Callable[..., DaemonProcess], fresh_db: str, tmp_path: Path
) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    good_backup_first(archive, fresh_db)
    with pg_dump_held(fresh_db):
        cli = capture_cli(tmp_path, state, settings(archive, fresh_db))
        poll("the capture command to write its partial file", lambda: partial_file(archive))
        cli.send_signal(signal.SIGKILL)
        cli.communicate(timeout=30)
    [running], _ = history(state, "capture")
    assert running.outcome == "running"  # what the crash left

    d = run_daemon(settings(archive, fresh_db, extra=LIVE), state_dir=state)
    assert_interrupted_then_captured_again(d, state, archive, "manual")


def test_a_daemon_killed_during_a_scheduled_capture_restarts_with_it_closed_as_interrupted(
    run_daemon: Callable[..., DaemonProcess], fresh_db: str, tmp_path: Path
) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    good_backup_first(archive, fresh_db)
    with pg_dump_held(fresh_db):
        first = run_daemon(settings(archive, fresh_db, interval="3s", extra=LIVE), state_dir=state)
        poll("the scheduled capture to write its partial file", lambda: partial_file(archive))
        first.proc.kill()
        first.proc.wait(timeout=30)
    [running], _ = history(state, "capture")
    assert running.outcome == "running" and running.details["kind"] == "scheduled"

    d = run_daemon(settings(archive, fresh_db, extra=LIVE), state_dir=state)  # next scheduled: an hour away
    assert_interrupted_then_captured_again(d, state, archive, "scheduled")
    assert not partial_file(archive)  # the crashed capture's partial went with its process


def test_a_drill_killed_mid_run_is_closed_as_interrupted_after_restart(
    run_daemon: Callable[..., DaemonProcess], fresh_db: str, own_cluster: LocalCluster, tmp_path: Path
) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    good_backup_first(archive, fresh_db)
    yaml_text = settings(archive, fresh_db) + f"    drill: {{scratch_url: {own_cluster.url('postgres')}}}\n"
    cfg = tmp_path / "drill.yaml"
    cfg.write_text(f"state_dir: {state}\n" + yaml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    with psycopg.connect(fresh_db) as blocker, psycopg.connect(fresh_db, autocommit=True) as watcher:
        # the drill's checks ask production which tables have rows: that read waits for this lock
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "drill", "--config", str(cfg)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            poll("the drill to reach its checks", lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                ("%invoices%",)).fetchone()[0], timeout=120)  # type: ignore[index]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        blocker.rollback()
    [running], _ = history(state, "drill")
    assert running.outcome == "running"

    run_daemon(yaml_text, state_dir=state)  # closes what a dead process left running before it answers
    taken, audit = history(state, "drill")
    assert [t.outcome for t in taken] == ["interrupted"]
    assert "stopped during this drill" in taken[0].details["detail"]
    assert [a["outcome"] for a in audit] == ["started", "interrupted"]
    assert json.dumps(audit).count("database_corruption") >= 1
    assert [r.outcome for r in records(archive)] == ["succeeded"]  # a drill's interruption is no failed backup
