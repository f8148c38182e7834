"""Emergency captures end to end against the Heroku double: the guardian in process, simulated time, real HTTP,
real pg_dump behind the double's captures, the real SQLite state store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from actions.guards import Intent
from actions.pipeline import PAUSE_KEY
from daemon.adapters.heroku import HerokuClient
from daemon.adapters.statestore import open_state_store
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.snapshot import Finding, Snapshot
from daemon.metrics import SnapshotCollector
from daemon.status import status_document
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock

DB = "shop/DATABASE"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-actions-token-0123456789") as double:
        yield double


def missed_schedule(heroku: HerokuDouble, clock: FakeClock, database_url: str | None) -> None:
    """A daily schedule due 3 h ago that did not run; yesterday's backup keeps the RPO (48 h here) met."""
    heroku.add_app("shop", database_url=database_url)
    due = clock.now - timedelta(hours=3)
    heroku.add_schedule("shop", hour=due.hour, timezone="UTC")
    yesterday = due - timedelta(days=1)
    heroku.add_transfer("shop", created_at=yesterday, started_at=yesterday,
                        finished_at=yesterday + timedelta(minutes=2))


def make_guardian(heroku: HerokuDouble, clock: FakeClock, state_dir: Path, *, dry_run: bool = False,
                  archive: Path | None = None, timeout: str = "5s", **capture: Any) -> Guardian:
    doc: dict[str, Any] = {
        "state_dir": str(state_dir), "collect_interval": "30s",
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "timeout": timeout, "retries": 0, "status": {"url": heroku.status_url, "timeout": "5s"}},
        "actions": {"dry_run": dry_run, "capture": {"poll_interval": "0.05s", "cooldown": "2h", **capture}},
        "databases": [{"heroku": {"app": "shop"}, "objectives": {"rpo": "48h"}}],
    }
    if archive is not None:
        doc["archive"] = {"path": str(archive), "mirror": True}
    config = GuardianConfig.model_validate(doc)
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                       sleep=clock.sleep, timeout=float(timeout.rstrip("s")), retries=0, max_rate_wait=0)
    return Guardian(config, heroku_api=api, clock=clock)


def run_pass(g: Guardian, clock: FakeClock) -> Snapshot:
    """One collection pass (the fleet polls once its credit allows) and every action it started, to its end."""
    for _ in range(20):
        snap = g.collect_all()
        if ("heroku", DB) in snap.collectors:
            break
        clock.now += timedelta(seconds=30)
    assert g.remedies.wait(120), "an action did not end"
    return g.holder.current()


def finding(snap: Snapshot, check: str) -> Finding:
    return next(f for f in snap.databases[DB].findings if f.check == check)


def captures_posted(heroku: HerokuDouble) -> int:
    return sum(1 for r in heroku.requests if r.method == "POST" and r.path.endswith("/backups"))


def outcomes(g: Guardian) -> list[str]:
    return [a["outcome"] for a in g.audit.read(action="capture")]


def test_a_missed_schedule_makes_one_capture_followed_to_success_and_the_finding_resolves(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    missed_schedule(heroku, clock, fresh_db)
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        snap = run_pass(g, clock)
        assert captures_posted(heroku) == 1
        started = g.audit.read(action="capture")[0]
        # a missed schedule is also "at risk" (the schedule can no longer bring the next backup in time)
        assert started["triggers"] == ["rpo_at_risk", "missed_schedule"]
        assert "no backup started since" in started["reason"]
        # followed as the CLI does: GET /apps/{app}/transfers/{uuid} until finished_at
        follows = [r for r in heroku.requests if r.method == "GET" and "/transfers/" in r.path]
        assert follows and all(r.status == 200 for r in follows)
        assert not finding(snap, "missed_schedule").active  # re-polled at once after the capture
        newest = snap.databases[DB].sources["heroku"].newest_good
        assert newest is not None and newest.backup_id == "b002" and newest.kind == "manual"
        assert outcomes(g) == ["started", "done"]
        done = g.audit.read(action="capture")[-1]
        assert "b002 succeeded" in done["reason"] and done["backup_id"] == "b002"
        for _ in range(3):  # later passes: the finding is resolved, nothing more to do
            clock.now += timedelta(seconds=30)
            run_pass(g, clock)
        assert captures_posted(heroku) == 1
        metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in SnapshotCollector(g.holder).collect() for s in fam.samples}
        assert metrics[("pgbackup_actions_total", (("action", "capture"), ("outcome", "done")))] == 1
        assert metrics[("pgbackup_leader", ())] == 1 and metrics[("pgbackup_actions_dry_run", ())] == 0
        ended = datetime.fromisoformat(done["time"]).timestamp()
        assert metrics[("pgbackup_action_last_timestamp_seconds", (("action", "capture"),))] == ended
    finally:
        g.stop()


def test_a_failed_capture_is_recorded_and_neither_a_restart_nor_a_lost_state_store_repeats_it_before_the_cooldown(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path
) -> None:
    missed_schedule(heroku, clock, None)  # the double's DATABASE_URL is fake: its pg_dump fails
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        run_pass(g, clock)
        assert captures_posted(heroku) == 1
        assert outcomes(g) == ["started", "failed"]
        assert "b002 failed" in g.audit.read(action="capture")[-1]["reason"]
        clock.now += timedelta(seconds=30)
        run_pass(g, clock)  # last_attempt_failed is now active too: still no second capture
        assert captures_posted(heroku) == 1
        assert outcomes(g)[-1] == "skipped_cooldown"
    finally:
        g.stop()

    again = make_guardian(heroku, clock, tmp_path / "state")  # restarted on the same state store
    try:
        run_pass(again, clock)
        assert captures_posted(heroku) == 1
        assert outcomes(again)[-1] == "skipped_cooldown"
    finally:
        again.stop()

    fresh = make_guardian(heroku, clock, tmp_path / "wiped")  # a dyno's wiped disk: only the world remembers
    try:
        run_pass(fresh, clock)
        assert captures_posted(heroku) == 1
        [skip] = fresh.audit.read(action="capture")
        assert skip["outcome"] == "skipped_cooldown" and "on-request backup b002 at heroku (failed)" in skip["reason"]
        clock.now += timedelta(hours=2, minutes=1)  # the cooldown ends: retried once
        run_pass(fresh, clock)
        assert captures_posted(heroku) == 2
    finally:
        fresh.stop()


def test_a_capture_already_running_at_heroku_makes_none(heroku: HerokuDouble, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    missed_schedule(heroku, clock, None)
    # a manual capture started before the schedule's hour and still running: the schedule counts as missed
    heroku.add_transfer("shop", scheduled=False, state="started", created_at=clock.now - timedelta(hours=4),
                        started_at=clock.now - timedelta(hours=4))
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        run_pass(g, clock)
        assert captures_posted(heroku) == 0
        [skip] = g.audit.read(action="capture")
        assert skip["outcome"] == "skipped_running" and "in progress at heroku" in skip["reason"]
    finally:
        g.stop()


def test_dry_run_makes_none_and_says_what_it_would_have_done(heroku: HerokuDouble, clock: FakeClock,
                                                             tmp_path: Path) -> None:
    missed_schedule(heroku, clock, None)
    g = make_guardian(heroku, clock, tmp_path / "state", dry_run=True)
    try:
        for _ in range(3):
            run_pass(g, clock)
            clock.now += timedelta(seconds=30)
        assert captures_posted(heroku) == 0
        records = g.audit.read(action="capture")
        assert [r["outcome"] for r in records] == ["dry_run"]  # said once, not on every pass
        assert records[0]["reason"].startswith(f"dry run: would capture a backup of {DB} because rpo_at_risk: the "
                                               "backup schedule was missed")
        assert "missed_schedule: heroku schedule" in records[0]["reason"]
        doc = status_document(g.holder.current(), clock.now)
        assert doc["actions"]["dry_run"] is True and doc["actions"]["mode"].startswith("DRY RUN")
    finally:
        g.stop()


def test_a_capture_call_that_fails_is_recorded_and_retried_only_after_the_cooldown(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    missed_schedule(heroku, clock, fresh_db)
    heroku.inject(r"^POST /client/v11/databases/[^/]+/backups$", "500")
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        run_pass(g, clock)
        assert captures_posted(heroku) == 1  # a POST is never retried blindly (it could expire a backup)
        failed = g.audit.read(action="capture")[-1]
        assert failed["outcome"] == "failed" and "HTTP 500" in failed["reason"]
        heroku.clear_faults()
        clock.now += timedelta(minutes=30)
        run_pass(g, clock)
        assert captures_posted(heroku) == 1 and outcomes(g)[-1] == "skipped_cooldown"
        clock.now += timedelta(hours=2)
        snap = run_pass(g, clock)
        assert captures_posted(heroku) == 2 and outcomes(g)[-2:] == ["started", "done"]
        assert not finding(snap, "missed_schedule").active
    finally:
        g.stop()


def test_a_capture_call_that_times_out_is_recorded_and_the_guardian_keeps_watching(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path
) -> None:
    missed_schedule(heroku, clock, None)
    heroku.inject(r"^POST /client/v11/databases/[^/]+/backups$", "timeout", delay=10)
    g = make_guardian(heroku, clock, tmp_path / "state", timeout="1s")
    try:
        run_pass(g, clock)
        failed = g.audit.read(action="capture")[-1]
        assert failed["outcome"] == "failed" and "Timeout" in failed["reason"]
        heroku.clear_faults()
        clock.now += timedelta(seconds=30)
        snap = run_pass(g, clock)
        assert snap.collectors[("heroku", DB)].up  # still collecting
        assert outcomes(g)[-1] == "skipped_cooldown"
    finally:
        g.stop()


def manual_captures(heroku: HerokuDouble, n: int) -> None:
    """Take `n` real manual backups through the double's capture API and wait for each to finish."""
    with httpx.Client(headers={"Authorization": f"Bearer {heroku.token}"}) as client:
        addon = client.post(f"{heroku.platform_url}/actions/addon-attachments/resolve",
                            json={"addon_attachment": "DATABASE", "app": "shop"}).json()[0]["addon"]["id"]
        for _ in range(n):
            uuid = client.post(f"{heroku.data_url}/client/v11/databases/{addon}/backups").json()["uuid"]
            done = threading.Event()
            for _ in range(600):  # a condition wait with a deadline (60 s), not a sleep deciding the outcome
                t = client.get(f"{heroku.data_url}/client/v11/apps/shop/transfers/{uuid}").json()
                if t.get("finished_at"):
                    assert t["succeeded"], t
                    break
                done.wait(0.1)
            else:
                raise AssertionError("the double's capture never finished")


def test_the_manual_backup_a_capture_would_expire_is_archived_first(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    missed_schedule(heroku, clock, fresh_db)
    heroku.set_manual_keep("shop", 2)
    clock.now -= timedelta(hours=5)  # taken before the schedule's hour, and before any cooldown
    manual_captures(heroku, 2)  # b002, b003: the limit is reached
    clock.now += timedelta(hours=5)
    g = make_guardian(heroku, clock, tmp_path / "state", archive=tmp_path / "archive")
    try:
        run_pass(g, clock)
        assert captures_posted(heroku) == 3
        done = g.audit.read(action="capture")[-1]
        assert done["outcome"] == "done" and done["expires"] == "b002"
        assert "archived it first" in done["expiry"]
        assert "b002" in {r.backup_id for r in g.store.list_records(DB) if r.outcome == "succeeded"}
        listed = httpx.get(f"{heroku.data_url}/client/v11/apps/shop/transfers",
                           headers={"Authorization": f"Bearer {heroku.token}"}).json()
        assert 2 not in {t["num"] for t in listed}  # Heroku expired it once the new capture finished
    finally:
        g.stop()


def test_without_an_archive_the_audit_record_says_the_expiring_backup_is_lost(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    missed_schedule(heroku, clock, fresh_db)
    heroku.set_manual_keep("shop", 1)
    clock.now -= timedelta(hours=5)
    manual_captures(heroku, 1)
    clock.now += timedelta(hours=5)
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        run_pass(g, clock)
        done = g.audit.read(action="capture")[-1]
        assert done["expires"] == "b002" and "no archive is configured" in done["expiry"]
    finally:
        g.stop()


def test_a_queued_capture_is_decided_again_under_its_lock_so_a_pause_or_another_replicas_capture_stops_it(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path
) -> None:
    missed_schedule(heroku, clock, None)
    g = make_guardian(heroku, clock, tmp_path / "state", enabled=False)  # collect only; decisions made below
    try:
        snap = run_pass(g, clock)
        intent = Intent("capture", DB, "missed_schedule: test", triggers=("missed_schedule",))
        decision = g.remedies._decide_capture(intent, snap, paused=None)
        assert decision.go  # it would go now ...
        g.state.put(PAUSE_KEY, {"paused": True, "reason": "hands off during the restore"})
        assert g.remedies.capture(decision) is None  # ... but a pause came first
        assert captures_posted(heroku) == 0
        assert g.audit.read(action="capture")[-1]["reason"].startswith("actions are paused: hands off")

        g.state.put(PAUSE_KEY, {"paused": False})
        g.state.begin_action("capture", DB, clock.now, "another replica's capture")  # it acted meanwhile
        assert g.remedies.capture(decision) is None
        assert captures_posted(heroku) == 0
        assert g.audit.read(action="capture")[-1]["outcome"] == "skipped_cooldown"
    finally:
        g.stop()


def test_a_capture_followed_when_the_shutdown_comes_is_interrupted_not_failed(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    missed_schedule(heroku, clock, fresh_db)
    g = make_guardian(heroku, clock, tmp_path / "state")
    with psycopg.connect(fresh_db) as blocker:
        blocker.execute("LOCK TABLE invoices IN ACCESS EXCLUSIVE MODE")  # the double's pg_dump waits on it
        try:
            deadline = time.monotonic() + 60
            while not [r for r in heroku.requests if r.method == "GET" and "/transfers/" in r.path]:
                assert time.monotonic() < deadline, "the capture was never posted and followed"
                g.collect_all()
                clock.now += timedelta(seconds=30)
            assert captures_posted(heroku) == 1
        finally:
            g.stop()  # what SIGTERM does, while the capture runs at Heroku
            blocker.rollback()

    store = open_state_store(None, tmp_path / "state")
    try:
        [history] = store.actions(action="capture", target=DB)
        audit = [a["outcome"] for a in store.audit(action="capture")]
    finally:
        store.close()
    assert history.outcome == "interrupted" and "goes on at Heroku" in history.details["detail"]
    assert history.details["backup_id"] == "b002"
    # not a failed capture: it may well succeed at Heroku (later passes saw it running there)
    assert [o for o in audit if o != "skipped_running"] == ["started", "interrupted"]


def test_a_capture_deleted_at_heroku_while_followed_ends_at_once_and_says_so(heroku: HerokuDouble,
                                                                             clock: FakeClock) -> None:
    """410 Gone for the transfer being followed is not a failed poll to retry 21 times: no backup will come of it."""
    from actions.emergency import MAX_POLL_FAILURES, HerokuCapture
    from daemon.core.errors import CaptureError

    heroku.add_app("shop")
    running = heroku.add_transfer("shop", scheduled=False, state="started")
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url)
    deleted = httpx.delete(f"{heroku.data_url}/client/v11/apps/shop/transfers/{running['num']}",
                           headers={"Authorization": f"Bearer {heroku.token}"})
    assert deleted.status_code == 200
    before = heroku.request_count("data")
    try:
        follow = HerokuCapture(api, lambda: clock.now, threading.Event(), timedelta(seconds=0.01), timedelta(hours=1))
        with pytest.raises(CaptureError, match="was deleted at Heroku while it ran") as err:
            follow.follow("shop", running)
    finally:
        api.close()
    assert "b001" in str(err.value)
    assert heroku.request_count("data") - before < MAX_POLL_FAILURES  # one poll, not 21


def metric_values(g: Guardian) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in SnapshotCollector(g.holder).collect() for s in fam.samples}


def test_an_emergency_capture_waits_while_heroku_reports_an_incident_on_data_and_goes_once_it_is_resolved(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    """While Heroku's status API reports an incident on Data, the capture a missed schedule calls for is declined
    as waiting (no POST reaches Heroku, no cooldown, no cap spent) and the finding says why; the first pass after
    Heroku resolves it captures."""
    missed_schedule(heroku, clock, fresh_db)
    incident = heroku.open_incident("Degraded Heroku Postgres connectivity", systems=("Data",))
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        assert g.provider_status is not None
        g.provider_status.poll()
        snap = run_pass(g, clock)
        clock.now += timedelta(seconds=30)
        snap = run_pass(g, clock)  # a second pass while it lasts: still waiting
        assert captures_posted(heroku) == 0
        decisions = g.audit.read(action="capture")
        assert [d["outcome"] for d in decisions] == ["waiting_provider"]  # said once, not at every pass
        assert decisions[0]["reason"].startswith(
            "waiting: Heroku reports an incident on Data: Degraded Heroku Postgres connectivity")
        assert g.runner.history("capture", DB, timedelta(hours=24)) == []  # no execution: no cooldown, no cap
        missed = finding(snap, "missed_schedule")
        assert missed.active
        assert missed.hint.endswith("; Heroku reports an incident on Data: Degraded Heroku Postgres connectivity")
        metrics = metric_values(g)
        assert metrics[("pgbackup_heroku_incidents", (("system", "Data"),))] == 1
        assert metrics[("pgbackup_heroku_incidents", (("system", "Apps"),))] == 0
        assert metrics[("pgbackup_heroku_system_status", (("system", "Data"),))] == 2
        assert metrics[("pgbackup_actions_total", (("action", "capture"), ("outcome", "waiting_provider")))] == 1
        assert g.provider_incident() == "Heroku reports an incident on Data: Degraded Heroku Postgres connectivity"

        heroku.resolve_incident(incident)
        clock.now += timedelta(minutes=3)
        g.provider_status.poll()
        assert g.provider_incident() is None
        snap = run_pass(g, clock)
        assert captures_posted(heroku) == 1
        assert outcomes(g) == ["waiting_provider", "started", "done"]
        assert not finding(snap, "missed_schedule").active
        assert all("Heroku reports" not in f.hint for f in snap.databases[DB].findings)
        metrics = metric_values(g)
        assert metrics[("pgbackup_heroku_incidents", (("system", "Data"),))] == 0
        assert metrics[("pgbackup_heroku_system_status", (("system", "Data"),))] == 0
    finally:
        g.stop()


def test_an_incident_only_on_tools_holds_nothing_back(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str
) -> None:
    missed_schedule(heroku, clock, fresh_db)
    heroku.open_incident("Dashboard slow", systems=("Tools",), severity="yellow")
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        assert g.provider_status is not None
        g.provider_status.poll()
        snap = run_pass(g, clock)
        assert captures_posted(heroku) == 1 and outcomes(g) == ["started", "done"]
        assert g.provider_incident() is None
        assert all("Heroku reports" not in f.hint for f in snap.databases[DB].findings)
        assert metric_values(g)[("pgbackup_heroku_system_status", (("system", "Tools"),))] == 1
    finally:
        g.stop()


@pytest.mark.parametrize("fault", ["500", "timeout", "malformed"])
def test_a_failing_status_api_marks_its_collector_down_and_changes_nothing_else(
    heroku: HerokuDouble, clock: FakeClock, tmp_path: Path, fresh_db: str, fault: str
) -> None:
    """A 500, no answer within the status timeout, or a body that is not JSON: the heroku_status collector is
    down with the reason; the databases, their findings and the other collectors are as they were, and the last
    status read stays (an incident read before still holds the capture back)."""
    missed_schedule(heroku, clock, fresh_db)
    heroku.open_incident("Heroku Postgres API errors", systems=("Data",))
    g = make_guardian(heroku, clock, tmp_path / "state")
    try:
        assert g.provider_status is not None
        g.provider_status.poll()
        before = run_pass(g, clock)
        heroku.inject("GET /api/v4/current-status", fault, delay=10.0)
        g.provider_status.poll()
        after = g.holder.current()
        status = after.collectors[("heroku_status", "")]
        assert not status.up and status.errors_total == 1
        assert status.last_error == {"500": "Heroku status API answered HTTP 500",
                                     "timeout": "Heroku status API: no answer within 5s",
                                     "malformed": "Heroku status API: the answer is not JSON"}[fault]
        assert after.databases == before.databases and after.provider == before.provider
        assert {k: v for k, v in after.collectors.items() if k[0] != "heroku_status"} == {
            k: v for k, v in before.collectors.items() if k[0] != "heroku_status"}
        assert metric_values(g)[("pgbackup_collector_up", (("collector", "heroku_status"), ("database", "")))] == 0
        assert captures_posted(heroku) == 0
    finally:
        heroku.clear_faults()
        g.stop()
