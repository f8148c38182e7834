"""The state store behaves the same on SQLite and on the real throwaway PostgreSQL: migrations, audit log,
actions, findings, drills, key-value, leadership across processes, exclusive sections and secrets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.adapters.postgres.cluster import LocalCluster, free_port
from daemon.adapters.statestore import (
    MIGRATIONS,
    SCHEMA_VERSION,
    FindingEvent,
    LockBusy,
    ScratchEntry,
    StateStore,
    StateStoreError,
    lock_key,
    open_state_store,
)
from daemon.core.provider import ProviderEvent, ProviderIncident, ProviderStatus, transitions
from tests.support import REPO, create_database

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@dataclass
class Backend:
    """One backing store (an SQLite state dir or a fresh PostgreSQL database) that tests open instances on."""

    kind: str
    url: str | None
    state_dir: Path
    opened: list[StateStore]

    def open(self) -> StateStore:
        store = open_state_store(self.url, self.state_dir)
        self.opened.append(store)
        return store

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL on the backing store directly, behind the store's back."""
        if self.url is None:
            with sqlite3.connect(self.state_dir / "guardian.db") as conn:
                return conn.execute(sql).fetchall()
        with psycopg.connect(self.url, autocommit=True) as pg:
            cur = pg.execute(sql)
            return cur.fetchall() if cur.description else []


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    """Poll `predicate` with short waits until it holds or the deadline passes."""
    deadline, pause = time.monotonic() + timeout, threading.Event()
    while time.monotonic() < deadline:
        if predicate():
            return True
        pause.wait(0.05)
    return predicate()


@pytest.fixture
def pg_url(pg_cluster: LocalCluster) -> Iterator[str]:
    url = create_database(pg_cluster, with_schema=False)
    yield url
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    b = Backend(request.param, url, tmp_path / "state", [])
    yield b
    for store in b.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> StateStore:
    return backend.open()


# -- migrations ---------------------------------------------------------------------------------------------

def test_fresh_store_has_every_migration_once(backend: Backend, store: StateStore) -> None:
    assert store.kind == backend.kind
    assert store.schema_version() == SCHEMA_VERSION == MIGRATIONS[-1][0]
    rows = backend.execute("SELECT version FROM guardian_schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m[0] for m in MIGRATIONS]


def test_reopening_applies_nothing_new(backend: Backend, store: StateStore) -> None:
    store.put("k", 1)
    store.close()
    again = backend.open()
    assert again.get("k") == 1
    assert backend.execute("SELECT COUNT(*) FROM guardian_schema_migrations")[0][0] == len(MIGRATIONS)


def test_a_store_of_migration_4_gains_the_finding_history_and_keeps_its_data(backend: Backend,
                                                                             store: StateStore) -> None:
    store.add_audit(audit_entry(1, outcome="done"))
    store.save_findings({"shop\x1frpo_breach": {"opened_at": T0.isoformat(), "told_at": T0.isoformat()}})
    store.add_drill("shop", "full", T0, True, {"database": "shop", "started_at": T0.isoformat()})
    store.close()
    # what a guardian of migration 4 left: no history tables, no record of the migrations after 4
    backend.execute("DROP TABLE guardian_finding_history")
    backend.execute("DROP TABLE guardian_provider_history")
    backend.execute("DELETE FROM guardian_schema_migrations WHERE version >= 5")
    upgraded = backend.open()
    assert upgraded.schema_version() == SCHEMA_VERSION
    assert [a["outcome"] for a in upgraded.audit()] == ["done"]
    assert list(upgraded.load_findings()) == ["shop\x1frpo_breach"]
    assert len(upgraded.drill_history("shop")) == 1
    upgraded.add_finding_events([FindingEvent(T0, "shop", "rpo_breach", "opened", "critical", "no backup")])
    assert [e.kind for e in upgraded.finding_history()] == ["opened"]


def test_a_store_of_migration_5_gains_the_provider_history_and_keeps_its_data(backend: Backend,
                                                                              store: StateStore) -> None:
    store.add_audit(audit_entry(1, outcome="done"))
    store.add_finding_events([FindingEvent(T0, "shop", "rpo_breach", "opened", "critical", "no backup")])
    store.add_drill("shop", "full", T0, True, {"database": "shop", "started_at": T0.isoformat()})
    store.close()
    # what a guardian of migration 5 left: no provider history table, no record of migration 6
    backend.execute("DROP TABLE guardian_provider_history")
    backend.execute("DELETE FROM guardian_schema_migrations WHERE version = 6")
    upgraded = backend.open()
    assert upgraded.schema_version() == 6
    assert [a["outcome"] for a in upgraded.audit()] == ["done"]
    assert [(e.check, e.hint) for e in upgraded.finding_history()] == [("rpo_breach", "no backup")]
    assert len(upgraded.drill_history("shop")) == 1
    upgraded.record_provider_transitions("heroku", lambda _open: transitions([], heroku_status(INCIDENT), T0))
    assert [e.event for e in upgraded.provider_history()] == ["opened"]


def test_store_written_by_newer_guardian_is_refused(backend: Backend, store: StateStore) -> None:
    store.close()
    newer = SCHEMA_VERSION + 5
    backend.execute("INSERT INTO guardian_schema_migrations (version, description, applied_at) "
                    f"VALUES ({newer}, 'from the future', '2030-01-01T00:00:00.000000+00:00')")
    with pytest.raises(StateStoreError) as err:
        backend.open()
    assert str(newer) in str(err.value)
    assert str(SCHEMA_VERSION) in str(err.value)


def test_concurrent_openers_of_a_fresh_postgresql_migrate_once(pg_url: str, tmp_path: Path) -> None:
    start, opened, errors = threading.Barrier(3), [], []

    def opener() -> None:
        start.wait()
        try:
            opened.append(open_state_store(pg_url, tmp_path))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert errors == []
        assert len(opened) == 3
        with psycopg.connect(pg_url) as conn:
            versions = conn.execute("SELECT version FROM guardian_schema_migrations ORDER BY version").fetchall()
        assert [v[0] for v in versions] == [m[0] for m in MIGRATIONS]
    finally:
        for s in opened:
            s.close()


# -- audit log ----------------------------------------------------------------------------------------------

def audit_entry(minute: int, action: str = "capture", target: str = "shop", **details: Any) -> dict[str, Any]:
    return {"time": (T0 + timedelta(minutes=minute)).isoformat(), "action": action, "target": target,
            "outcome": "taken", "reason": f"reason {minute}", **details}


def test_audit_roundtrip_keeps_details(store: StateStore) -> None:
    entry = audit_entry(0, backup_id="b-1", dry_run=True, sizes={"dump": 3})
    store.add_audit(entry)
    assert store.audit() == [entry]


def test_audit_limit_returns_the_newest_oldest_first(store: StateStore) -> None:
    for minute in (3, 0, 4, 1, 2):  # added out of order: time decides, not insertion
        store.add_audit(audit_entry(minute))
    assert [e["reason"] for e in store.audit(limit=3)] == ["reason 2", "reason 3", "reason 4"]
    assert len(store.audit()) == 5


def test_audit_time_with_other_offset_comes_back_as_the_same_instant(store: StateStore) -> None:
    store.add_audit({**audit_entry(0), "time": "2024-05-01T14:00:00+02:00"})
    assert datetime.fromisoformat(store.audit()[0]["time"]) == T0


def test_audit_filters_by_action_and_target(store: StateStore) -> None:
    store.add_audit(audit_entry(0, "capture", "shop"))
    store.add_audit(audit_entry(1, "drill", "shop"))
    store.add_audit(audit_entry(2, "capture", "blog"))
    assert [e["reason"] for e in store.audit(action="capture")] == ["reason 0", "reason 2"]
    assert [e["reason"] for e in store.audit(target="shop")] == ["reason 0", "reason 1"]
    assert [e["reason"] for e in store.audit(action="capture", target="blog")] == ["reason 2"]


def test_audit_entry_without_offset_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.add_audit({**audit_entry(0), "time": "2024-05-01T12:00:00"})


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    def writer(n: int) -> None:
        for i in range(20):
            store.add_audit(audit_entry(i, target=f"db{n}"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(store.audit()) == 80


# -- action history -----------------------------------------------------------------------------------------

def test_action_runs_then_finishes_with_merged_details(store: StateStore) -> None:
    action_id = store.begin_action("capture", "shop", T0, "rpo breach", {"backup": "b-1", "size": 1})
    [running] = store.actions()
    assert (running.id, running.outcome, running.finished_at) == (action_id, "running", None)
    assert running.started_at == T0 and running.started_at.tzinfo is not None
    store.finish_action(action_id, T0 + timedelta(minutes=5), "done", {"size": 42, "seconds": 300})
    [done] = store.actions()
    assert done.outcome == "done"
    assert done.finished_at == T0 + timedelta(minutes=5)
    assert done.details == {"backup": "b-1", "size": 42, "seconds": 300}
    assert done.reason == "rpo breach"


def test_actions_filter_by_since_action_and_target(store: StateStore) -> None:
    store.begin_action("capture", "shop", T0, "r0")
    store.begin_action("drill", "shop", T0 + timedelta(hours=1), "r1")
    store.begin_action("capture", "blog", T0 + timedelta(hours=2), "r2")
    assert [a.reason for a in store.actions(since=T0 + timedelta(hours=1))] == ["r1", "r2"]
    assert [a.reason for a in store.actions(action="capture")] == ["r0", "r2"]
    assert [a.reason for a in store.actions(action="capture", target="blog")] == ["r2"]


def test_running_actions_name_their_owner_and_only_a_dead_owners_are_closed_as_interrupted(
    backend: Backend,
) -> None:
    from actions.audit import AuditLog
    from actions.runner import ActionRunner

    live, reader = backend.open(), backend.open()  # two processes sharing the store
    counted: list[tuple[str, str]] = []
    closed_hook: list[int] = []
    runner = ActionRunner(reader, AuditLog(reader), lambda a, o: counted.append((a, o)), lambda: T0 + timedelta(1),
                          on_interrupted=lambda r: closed_hook.append(r.id))
    with live.exclusive("capture:shop"):  # a live execution holds its action's lock throughout
        alive = live.begin_action("capture", "shop", T0, "scheduled", {"kind": "scheduled"}, owner="pid 1 on a")
        dead = reader.begin_action("drill", "shop", T0, "full drill", owner="pid 2 on b")  # its process died
        assert [(r.id, r.owner) for r in reader.running_actions()] == [(alive, "pid 1 on a"), (dead, "pid 2 on b")]
        assert [r.id for r in reader.running_actions(action="drill")] == [dead]

        assert [r.id for r in runner.close_interrupted()] == [dead]
        assert [r.id for r in reader.running_actions()] == [alive]  # the live one is left alone
    live.finish_action(alive, T0 + timedelta(minutes=1), "done")
    assert runner.close_interrupted() == []  # finished by its owner: nothing stale under the lock
    [drill] = reader.actions(action="drill")
    assert drill.outcome == "interrupted" and "pid 2 on b" in drill.details["detail"]
    assert [(a["action"], a["outcome"]) for a in reader.audit()] == [("drill", "interrupted")]
    assert counted == [("drill", "interrupted")] and closed_hook == [dead]


def test_naive_datetimes_are_refused(store: StateStore) -> None:
    with pytest.raises(ValueError):
        store.begin_action("capture", "shop", datetime(2024, 5, 1, 12), "naive")
    with pytest.raises(ValueError):
        store.actions(since=datetime(2024, 5, 1, 12))


def test_finishing_an_unknown_action_fails(store: StateStore) -> None:
    with pytest.raises(StateStoreError, match="finish action 999"):
        store.finish_action(999, T0, "done")


# -- findings, drills, key-value ----------------------------------------------------------------------------

def test_save_findings_replaces_the_whole_set(store: StateStore) -> None:
    first = {"shop\x1frpo": {"opened_at": T0.isoformat(), "told_at": T0.isoformat()},
             "blog\x1frto": {"opened_at": T0.isoformat(), "told_at": T0.isoformat()}}
    store.save_findings(first)
    assert store.load_findings() == first
    second = {"blog\x1frto": {"opened_at": T0.isoformat(), "told_at": (T0 + timedelta(hours=4)).isoformat()}}
    store.save_findings(second)
    assert store.load_findings() == second
    store.save_findings({})
    assert store.load_findings() == {}


def test_finding_history_is_read_by_time_and_database_and_pruned_before_a_time(store: StateStore) -> None:
    store.add_finding_events([
        FindingEvent(T0, "shop", "rpo_breach", "opened", "critical", "no backup for 25h"),
        FindingEvent(T0 + timedelta(hours=1), "billing", "missed_schedule", "opened", "critical", "02:00 missed"),
        FindingEvent(T0 + timedelta(hours=2), "shop", "rpo_breach", "notified", "critical", "",
                     {"transition": "opened", "channels": ["log", "slack"]}),
        FindingEvent(T0 + timedelta(hours=3), "shop", "rpo_breach", "resolved", "critical", "",
                     {"open_seconds": 10800}),
    ])
    every = store.finding_history()
    assert [(e.database, e.kind) for e in every] == [("shop", "opened"), ("billing", "opened"), ("shop", "notified"),
                                                     ("shop", "resolved")]
    assert every[2].details == {"transition": "opened", "channels": ["log", "slack"]}
    assert every[0].time == T0 and every[0].hint == "no backup for 25h" and every[0].severity == "critical"
    assert [e.kind for e in store.finding_history(since=T0 + timedelta(hours=1), database="shop")] == \
        ["notified", "resolved"]
    store.add_finding_events([FindingEvent(T0 + timedelta(hours=4), "shop", "size_anomaly", "opened", "warning", "")],
                             prune_before=T0 + timedelta(hours=2))
    assert [e.time for e in store.finding_history()] == [T0 + timedelta(hours=h) for h in (2, 3, 4)]


INCIDENT = ProviderIncident("Heroku Postgres connection errors", ("Data",), "yellow",
                            "https://status.heroku.com/incidents/2871", T0 - timedelta(minutes=5), "2871",
                            T0 - timedelta(minutes=5))


def heroku_status(*incidents: ProviderIncident, at: datetime = T0) -> ProviderStatus:
    return ProviderStatus({"Data": incidents[0].status if incidents else "green"}, incidents, 0, at)


def record(store: StateStore, status: ProviderStatus, keep: timedelta | None = None) -> list[ProviderEvent]:
    """What a poll at `status.observed_at` records, as the status poller does it."""
    assert status.observed_at is not None
    now = status.observed_at
    return store.record_provider_transitions("heroku", lambda recorded: transitions(recorded, status, now),
                                             prune_before=now - keep if keep is not None else None)


def test_provider_incidents_are_recorded_once_per_transition_and_read_back_in_order(backend: Backend,
                                                                                    store: StateStore) -> None:
    """Opened, seen again (nothing), updated (colour and a newer update), seen again by another replica
    (nothing), resolved: three records with what the incident said, and the guardian's opening time carried."""
    minutes = [T0 + timedelta(minutes=3 * n) for n in range(6)]
    worse = replace(INCIDENT, status="red", updated_at=minutes[2])
    assert [e.event for e in record(store, heroku_status(INCIDENT, at=minutes[0]))] == ["opened"]
    assert record(store, heroku_status(INCIDENT, at=minutes[1])) == []
    assert [e.event for e in record(store, heroku_status(worse, at=minutes[2]))] == ["updated"]
    replica = backend.open()  # another replica (or this one after a restart) sees the same incident
    assert record(replica, heroku_status(worse, at=minutes[3])) == []
    assert [e.event for e in record(replica, heroku_status(at=minutes[4]))] == ["resolved"]
    assert record(store, heroku_status(at=minutes[5])) == []
    history = store.provider_history()
    assert [(e.time, e.event, e.status) for e in history] == [
        (minutes[0], "opened", "yellow"), (minutes[2], "updated", "red"), (minutes[4], "resolved", "red")]
    assert {(e.incident, e.title, e.systems, e.url, e.since, e.opened_at, e.provider) for e in history} == {
        ("2871", "Heroku Postgres connection errors", ("Data",), "https://status.heroku.com/incidents/2871",
         T0 - timedelta(minutes=5), minutes[0], "heroku")}
    assert [e.event for e in store.provider_history(since=minutes[1])] == ["updated", "resolved"]
    assert store.provider_history(provider="another") == []


def test_replicas_polling_at_once_record_an_incident_once(backend: Backend) -> None:
    """Several replicas (store instances) record the same poll at the same moment: they take turns, and each
    sees what the one before it wrote. Each waits inside its transaction for the others to come in too (up to
    2 s): were they not taking turns, all would read an empty history and all would record."""
    replicas = [backend.open() for _ in range(4)]
    start, inside = threading.Barrier(len(replicas)), threading.Barrier(len(replicas), timeout=2)
    added: list[list[ProviderEvent]] = []

    def changes(recorded: list[ProviderEvent]) -> list[ProviderEvent]:
        with contextlib.suppress(threading.BrokenBarrierError):
            inside.wait()  # taking turns, nobody else comes in: broken once, then no more waiting
        return transitions(recorded, heroku_status(INCIDENT), T0)

    def poll(store: StateStore) -> None:
        start.wait()
        added.append(store.record_provider_transitions("heroku", changes))

    threads = [threading.Thread(target=poll, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(len(a) for a in added) == [0, 0, 0, 1]
    assert [e.event for e in replicas[0].provider_history()] == ["opened"]


def test_provider_history_older_than_the_keep_is_pruned_as_new_entries_are_written(store: StateStore) -> None:
    record(store, heroku_status(INCIDENT, at=T0))
    record(store, heroku_status(at=T0 + timedelta(hours=1)))
    later = replace(INCIDENT, incident_id="2900", title="Apps slow", systems=("Apps",))
    record(store, heroku_status(later, at=T0 + timedelta(days=30)), keep=timedelta(days=29, hours=23))
    assert [(e.incident, e.event) for e in store.provider_history()] == [("2871", "resolved"), ("2900", "opened")]
    record(store, heroku_status(at=T0 + timedelta(days=31)), keep=timedelta(hours=12))
    assert [(e.incident, e.event) for e in store.provider_history()] == [("2900", "resolved")]


def test_drills_since_reads_every_drill_of_the_window(store: StateStore) -> None:
    for hour, database in ((0, "shop"), (2, "billing"), (4, "shop")):
        store.add_drill(database, "full", T0 + timedelta(hours=hour), True, {"database": database, "hour": hour})
    assert [d["hour"] for d in store.drills_since(T0 + timedelta(hours=1))] == [2, 4]
    assert [d["hour"] for d in store.drills_since(database="shop")] == [0, 4]


def test_audit_since_leaves_out_older_entries(store: StateStore) -> None:
    for minute in (1, 2, 3):
        store.add_audit(audit_entry(minute))
    assert [a["reason"] for a in store.audit(since=T0 + timedelta(minutes=2))] == ["reason 2", "reason 3"]


def add_drill(store: StateStore, scenario: str, hour: int, ok: bool, database: str = "shop") -> None:
    store.add_drill(database, scenario, T0 + timedelta(hours=hour), ok, {"scenario": scenario, "hour": hour})


def test_drills_keep_the_newest_and_the_newest_good_after_a_failure(store: StateStore) -> None:
    add_drill(store, "full", 0, True)
    add_drill(store, "full", 1, True)
    add_drill(store, "full", 3, False)  # newest failed: hour 1 is the newest good one
    add_drill(store, "pitr", 2, False)  # never succeeded: only the failure
    add_drill(store, "table", 0, False)
    add_drill(store, "table", 4, True)  # newest succeeded: only it
    add_drill(store, "full", 9, True, database="blog")
    assert store.drills("shop") == [{"scenario": "full", "hour": 1}, {"scenario": "pitr", "hour": 2},
                                    {"scenario": "full", "hour": 3}, {"scenario": "table", "hour": 4}]
    assert store.drills("nothing") == []


def test_drill_history_returns_the_newest_oldest_first(store: StateStore) -> None:
    for hour in (2, 0, 3, 1):
        add_drill(store, "full", hour, hour % 2 == 0)
    assert [d["hour"] for d in store.drill_history("shop", limit=3)] == [1, 2, 3]
    assert [d["hour"] for d in store.drill_history("shop")] == [0, 1, 2, 3]


def test_kv_holds_json_values_and_overwrites(store: StateStore) -> None:
    assert store.get("missing") is None
    store.put("d", {"a": [1, 2], "b": None})
    store.put("l", ["x", 1.5])
    store.put("i", 7)
    assert (store.get("d"), store.get("l"), store.get("i")) == ({"a": [1, 2], "b": None}, ["x", 1.5], 7)
    store.put("i", {"now": "a dict"})
    assert store.get("i") == {"now": "a dict"}


def test_scratch_ledger_keys_entries_by_server_and_keeps_token_and_process(backend: Backend) -> None:
    a, b = backend.open(), backend.open()  # two instances (replicas) see one ledger
    a.add_scratch(ScratchEntry("7001", "guardian_drill_1", "tok-1", "shop", T0))
    a.add_scratch(ScratchEntry("7002", "guardian_drill_1", "tok-2", "blog", T0 + timedelta(seconds=1)))
    with pytest.raises(StateStoreError):  # one name per server, recorded once
        b.add_scratch(ScratchEntry("7001", "guardian_drill_1", "other", "shop", T0))
    b.set_scratch_process("7001", "guardian_drill_1", {"pid": 42, "host": "h", "boot": "b", "start": "9"})
    assert b.scratch_entries() == [
        ScratchEntry("7001", "guardian_drill_1", "tok-1", "shop", T0, {"pid": 42, "host": "h", "boot": "b",
                                                                       "start": "9"}),
        ScratchEntry("7002", "guardian_drill_1", "tok-2", "blog", T0 + timedelta(seconds=1))]
    a.remove_scratch("7001", "guardian_drill_1")
    assert [(e.server_id, e.token) for e in b.scratch_entries()] == [("7002", "tok-2")]


# -- leadership and exclusive sections ------------------------------------------------------------------------

def test_exactly_one_instance_leads_until_it_releases(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    assert a.try_leadership("guardian") is True
    assert b.try_leadership("guardian") is False
    assert a.try_leadership("guardian") is True  # the holder confirms
    a.release_leadership()
    assert b.try_leadership("guardian") is True
    assert a.try_leadership("guardian") is False
    b.close()
    assert a.try_leadership("guardian") is True


LEADER_SCRIPT = """
import os, sys
from pathlib import Path
from daemon.adapters.statestore import open_state_store
store = open_state_store(os.environ.get("STORE_URL") or None, Path(os.environ["STATE_DIR"]))
print("leader" if store.try_leadership("guardian") else "follower", flush=True)
sys.stdin.read()
"""


def test_killed_leader_process_frees_leadership(backend: Backend) -> None:
    env = {**os.environ, "STORE_URL": backend.url or "", "STATE_DIR": str(backend.state_dir)}
    proc = subprocess.Popen([sys.executable, "-c", LEADER_SCRIPT], cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "leader"
        ours = backend.open()
        assert ours.try_leadership("guardian") is False
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: ours.try_leadership("guardian"))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_leader_whose_session_is_terminated_loses_leadership(pg_url: str, tmp_path: Path) -> None:
    leader = open_state_store(pg_url, tmp_path)
    try:
        assert leader.try_leadership("guardian") is True
        with psycopg.connect(pg_url, autocommit=True) as admin:
            [(pid,)] = admin.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchall()
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
            assert wait_until(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                                        (pid,)).fetchall())
        assert leader.try_leadership("guardian") is False
        assert wait_until(lambda: leader.try_leadership("guardian"))  # a new session takes the free lock
        leader.put("still", "works")  # the query connection is separate and unaffected
        assert leader.get("still") == "works"
    finally:
        leader.close()


def test_query_connection_reconnects_after_the_server_drops_it(pg_url: str, tmp_path: Path) -> None:
    store = open_state_store(pg_url, tmp_path)
    try:
        store.put("before", 1)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            [(pid,)] = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND application_name = 'pg-backup-guardian'").fetchall()
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert wait_until(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                                        (pid,)).fetchall())
        store.put("after", 2)  # the first attempt meets the dead session, the retry a new one
        assert (store.get("before"), store.get("after")) == (1, 2)
    finally:
        store.close()


def test_exclusive_section_excludes_other_instances_until_left(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    with a.exclusive("capture shop"):
        with pytest.raises(LockBusy, match="capture shop is running elsewhere"), b.exclusive("capture shop"):
            pass
        with b.exclusive("capture blog"):  # another name is independent
            pass
    with b.exclusive("capture shop"):
        pass


def test_lock_key_is_stable_and_signed_64_bit() -> None:
    assert lock_key("guardian") == lock_key("guardian") != lock_key("guardian2")
    keys = [lock_key(f"k{i}") for i in range(200)]
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert any(k < 0 for k in keys)


# -- legacy import ------------------------------------------------------------------------------------------

def test_legacy_files_are_imported_once_and_left_in_place(backend: Backend) -> None:
    backend.state_dir.mkdir(parents=True)
    lines = [audit_entry(0, backup_id="b-1"), audit_entry(1, "drill", outcome_detail="ok")]
    findings = {"shop\x1frpo": {"opened_at": T0.isoformat(), "told_at": T0.isoformat()}}
    (backend.state_dir / "audit.jsonl").write_text(
        "".join(json.dumps(e, sort_keys=True) + "\n" for e in lines) + '{"torn line')
    (backend.state_dir / "findings.json").write_text(json.dumps(findings))
    first = backend.open()
    assert first.audit() == lines
    assert first.load_findings() == findings
    first.close()
    again = backend.open()
    assert again.audit() == lines
    assert (backend.state_dir / "audit.jsonl").exists() and (backend.state_dir / "findings.json").exists()


# -- secrets ------------------------------------------------------------------------------------------------

def test_unreachable_postgresql_fails_without_the_password(tmp_path: Path) -> None:
    password = "Sup3r-s3cret-pw"
    port = free_port()  # nothing listens there
    with pytest.raises(StateStoreError) as err:
        open_state_store(f"postgresql://app_user:{password}@127.0.0.1:{port}/guardian", tmp_path)
    message = str(err.value)
    assert f"state store postgresql 127.0.0.1:{port}/guardian: cannot connect" in message
    assert password not in message
    assert "app_user" not in message


def test_describe_names_the_place_never_the_credentials(backend: Backend, store: StateStore,
                                                        request: pytest.FixtureRequest) -> None:
    if backend.kind == "sqlite":
        assert store.describe() == f"sqlite {backend.state_dir / 'guardian.db'}"
        return
    pg_cluster: LocalCluster = request.getfixturevalue("pg_cluster")
    assert backend.url is not None
    assert store.describe() == f"postgresql 127.0.0.1:{pg_cluster.port}/{backend.url.rsplit('/', 1)[1]}"
    assert pg_cluster.password is not None and pg_cluster.password not in store.describe()
    assert "@" not in store.describe()


def test_unsupported_url_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateStoreError, match="postgresql://"):
        open_state_store("mysql://u:secretpw@h/d", tmp_path)


def test_a_drill_is_not_run_without_its_lock_but_a_capture_is(own_cluster: LocalCluster, tmp_path: Path) -> None:
    """A store that cannot lock: a capture runs anyway (a backup matters more than its record); a drill is
    skipped, because its lock is also what keeps other processes' scratch sweeps away from it."""
    from actions.audit import AuditLog
    from actions.guards import Intent
    from actions.runner import ActionRunner, Outcome

    store = open_state_store(own_cluster.url("postgres"), tmp_path)
    runner = ActionRunner(store, AuditLog(store), lambda a, o: None, lambda: T0)
    own_cluster.stop()  # the store's server goes away: no lock can be asked for
    ran: list[str] = []

    def work(action: str) -> Callable[[int], Outcome]:
        return lambda _id: (ran.append(action), Outcome(True, "ran"))[1]

    drill = runner.run_held(Intent("drill", "shop", "full drill"), work("drill"), unlocked_ok=False)
    capture = runner.run_held(Intent("capture", "shop", "scheduled capture"), work("capture"))
    assert ran == ["capture"]
    assert drill is not None and drill.skipped and "lock is unavailable" in drill.detail
    assert capture is not None and capture.ok
    store.close()


def test_a_locked_postgresql_store_answers_with_an_error_instead_of_stalling(pg_url: str, tmp_path: Path) -> None:
    """Another session holds the audit table (a migration, a stuck transaction): the guardian's write fails
    within the store's statement timeout, naming the store, instead of waiting behind it. The blocker lets go
    after 20 s, so a store without the timeout would wait and then succeed (and fail this test)."""
    from daemon.adapters.statestore import PostgresStateStore

    store = PostgresStateStore(pg_url, tmp_path, statement_timeout=1.0)
    blocker = psycopg.connect(pg_url)
    release = threading.Timer(20, blocker.rollback)
    try:
        blocker.execute("LOCK TABLE guardian_audit IN ACCESS EXCLUSIVE MODE")
        release.start()
        with pytest.raises(StateStoreError, match="statement timeout") as err:
            store.add_audit({"time": "2026-01-01T00:00:00+00:00", "action": "capture", "target": "shop",
                             "outcome": "done", "reason": "r"})
        assert "postgresql" in str(err.value)
    finally:
        release.cancel()
        blocker.rollback()
        blocker.close()
        store.close()
    again = open_state_store(pg_url, tmp_path)
    try:  # the lock gone, the same store works
        again.add_audit({"time": "2026-01-01T00:00:00+00:00", "action": "capture", "target": "shop",
                         "outcome": "done", "reason": "r"})
        assert [a["target"] for a in again.audit()] == ["shop"]
    finally:
        again.close()
