"""Shutdown means stop: the real daemon, SIGTERM while hundreds of captures are queued or one is running.

From SIGTERM on no queued job starts, running pg_dumps are stopped, the daemon exits within its shutdown
budget, and nothing false is recorded: a capture stopped by the shutdown is no failed backup attempt.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from daemon.adapters.postgres.cluster import LocalCluster, free_port
from daemon.adapters.postgres.scratch import PREFIX
from daemon.adapters.statestore import open_state_store
from daemon.app import Guardian
from daemon.config import GuardianConfig
from tests.support import (
    DaemonProcess,
    capture,
    create_database,
    databases,
    pids_of,
    production_db,
    read_config,
    shop_config,
    throwaway_cluster,
    write_config,
)

FLEET = 2000
EXIT_BUDGET = 10.0


def _records(archive: Path) -> dict[Path, dict[str, Any]]:
    out = {}
    for path in archive.glob("*/*.json"):
        try:
            out[path] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now: read again on the next pass
    return out


def _stop_and_time(d: DaemonProcess) -> tuple[datetime, float]:
    signalled = datetime.now(UTC)
    t0 = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        d.proc.kill()  # the budget is long gone: the assertion on the time says so
        d.proc.wait()
    return signalled, time.monotonic() - t0


def test_sigterm_with_2000_due_captures_starts_no_queued_job_and_exits_within_10s(run_daemon: Any) -> None:
    closed = free_port()  # nothing listens here: every pg_dump fails at once with "connection refused"
    lines = [f"  - name: fleet-{i:04d}\n    url: 'postgresql://guardian:pw@127.0.0.1:{closed}/db{i}'\n"
             f"    capture: {{interval: 1h}}\n" for i in range(FLEET)]
    d: DaemonProcess = run_daemon("collect_interval: 1h\ndatabases:\n" + "".join(lines))
    archive = d.state_dir / "archive"
    # the scheduler runs and has started working through the queue: failed attempts are being recorded
    d.wait_for("the first failed attempts", lambda: len(_records(archive)) >= 4, timeout=120)
    before = set(_records(archive))

    signalled, took = _stop_and_time(d)

    log = d.log()
    assert d.proc.returncode == 0, log[-3000:]
    assert took < EXIT_BUDGET, f"exit took {took:.1f}s\n{log[-3000:]}"
    after = _records(archive)
    new = {p: r for p, r in after.items() if p not in before}
    # no job started after the signal: every record written since then belongs to a capture already running
    started_late = [r["backup_id"] for r in after.values() if datetime.fromisoformat(r["started_at"]) >= signalled]
    assert not started_late, f"{len(started_late)} captures started after SIGTERM"
    assert len(new) <= 2, f"{len(new)} failed attempts recorded after SIGTERM (2 capture workers)"
    assert not [r for r in after.values() if "shutting down" in (r.get("error") or "")]
    assert len(after) < FLEET // 2  # the queue was not worked through on the way out
    assert not pids_of("pg_dump", f"port={closed}")
    assert "stopped" in log


def test_sigterm_stops_a_long_capture_without_recording_a_failure(run_daemon: Any, fresh_db: str) -> None:
    # another session holds an exclusive lock: pg_dump waits on it until something stops it
    with psycopg.connect(fresh_db) as blocker:
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")
        d: DaemonProcess = run_daemon(f"collect_interval: 1h\ndatabases:\n  - name: slow\n    url: '{fresh_db}'\n"
                                      "    capture: {interval: 1h, timeout: 1h}\n")
        with psycopg.connect(fresh_db, autocommit=True) as watcher:
            d.wait_for("pg_dump waiting on the lock", lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                "AND wait_event_type = 'Lock'").fetchone() == (1,))
        dbname = fresh_db.rsplit("/", 1)[1]
        assert pids_of("pg_dump", dbname)

        _signalled, took = _stop_and_time(d)
        blocker.rollback()

    log = d.log()
    assert d.proc.returncode == 0, log[-3000:]
    assert took < EXIT_BUDGET, f"exit took {took:.1f}s"
    assert not pids_of("pg_dump", dbname)
    assert _records(d.state_dir / "archive") == {}  # stopped by the shutdown: not a failed attempt
    assert not list((d.state_dir / "archive").glob("*/*.dump")) and not list(
        (d.state_dir / "archive").glob("*/.*.partial"))
    assert "capture of slow stopped: the guardian is shutting down" in log


def test_a_manual_capture_stopped_by_the_shutdown_closes_its_history_as_interrupted(
    fresh_db: str, tmp_path: Path,
) -> None:
    config = GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"), "actions": {"dry_run": False},
        "databases": [{"name": "slow", "url": fresh_db, "capture": {"timeout": "1h"}}],
    })
    (tmp_path / "state" / "archive").mkdir(parents=True)
    g = Guardian(config)
    decisions: list[Any] = []
    with psycopg.connect(fresh_db) as blocker:
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")
        person = threading.Thread(target=lambda: decisions.append(g.remedies.request_capture("slow", "before v2")))
        person.start()
        with psycopg.connect(fresh_db, autocommit=True) as watcher:
            deadline = time.monotonic() + 60
            while watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                                  "AND wait_event_type = 'Lock'").fetchone() != (1,):
                assert time.monotonic() < deadline, "pg_dump never waited on the lock"
                watcher.execute("SELECT pg_sleep(0.05)")
        g.stop()  # what SIGTERM does
        person.join(timeout=30)
        blocker.rollback()

    store = open_state_store(None, tmp_path / "state")
    try:
        [history] = store.actions(action="capture", target="slow")
        audit = [a["outcome"] for a in store.audit(action="capture")]
    finally:
        store.close()
    assert history.outcome == "interrupted" and history.finished_at is not None
    assert "shutting down" in history.details["detail"]
    assert audit == ["started", "interrupted"]
    assert decisions and decisions[0].outcome == "interrupted"  # the person is told it did not happen
    assert _records(tmp_path / "state" / "archive") == {}  # and it is no failed backup attempt


def test_a_drill_stopped_by_the_shutdown_closes_its_history_as_interrupted(
    own_cluster: LocalCluster, open_tmp: Path
) -> None:
    url = production_db(own_cluster, slow=True)  # its index builds slowly in a scratch database
    capture(open_tmp, "shop", url)
    with throwaway_cluster() as scratch:
        cfg = write_config(open_tmp, [{"name": "shop", "url": url, "drill": {"scratch_url": scratch.url()}}])
        g = Guardian(read_config(cfg))
        g.collect_all(one_shot=True)  # as `backup-guardian drill` does: the drill needs the archive read
        runs: list[Any] = []
        drill = threading.Thread(target=lambda: runs.append(g.drills.drill("shop")))
        drill.start()
        deadline = time.monotonic() + 120
        while not any(db.startswith(PREFIX) for db in databases(scratch)):
            assert drill.is_alive() and time.monotonic() < deadline, "the drill never created its scratch database"
            time.sleep(0.1)
        g.stop()  # what SIGTERM does: pg_restore is killed
        drill.join(timeout=60)
        assert not [db for db in databases(scratch) if db.startswith(PREFIX)]  # still dropped on the way out

    store = open_state_store(None, open_tmp / "state")
    try:
        [history] = store.actions(action="drill", target="shop")
        audit = [a["outcome"] for a in store.audit(action="drill")]
    finally:
        store.close()
    assert history.outcome == "interrupted" and "shutting down" in history.details["detail"]
    assert audit == ["started", "interrupted"]
    assert runs and runs[0].skipped  # no verdict on the backup: no report, no failed drill


def test_backups_have_workers_of_their_own(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    """Scheduled captures run on the `captures` workers and nothing else does: a long mirror, read-through,
    prune or sweep (the `archive` worker) never holds a backup up."""
    config = GuardianConfig.model_validate(shop_config(tmp_path, create_database(pg_cluster)))
    g = Guardian(config)
    try:
        g.start(serve_http=False)
        assert g.runtime.scheduler is not None
        by_executor: dict[str, set[str]] = {}
        for job in g.runtime.scheduler.get_jobs():
            by_executor.setdefault(job.executor, set()).add(job.id.split(":")[0])
    finally:
        g.stop()
    assert by_executor["captures"] == {"capture"}
    assert "prune" in by_executor["archive"]  # (the start-up sweep has run and left the list)


def test_a_job_gone_during_the_shutdown_is_no_traceback() -> None:
    """The scheduler thread removes a one-shot job after running it; when the shutdown emptied the job store
    first, APScheduler's JobLookupError ended that thread with a traceback. Outside the shutdown it still says
    so."""
    import pytest
    from apscheduler.jobstores.base import JobLookupError

    from daemon.runtime import _Scheduler

    sched = _Scheduler(timezone=UTC)  # built as the daemon builds it
    sched.start()
    with pytest.raises(JobLookupError):
        sched.remove_job("never-there")
    sched.add_job(lambda: None, "date", run_date=datetime(2099, 1, 1, tzinfo=UTC), id="sweep-scratch")
    sched.shutdown(wait=False)
    sched.remove_job("sweep-scratch")  # what the scheduler's thread does after running it: no error now
