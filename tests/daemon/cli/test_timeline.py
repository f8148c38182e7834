"""`backup-guardian timeline`, run as a person writing the post-incident review would: a scripted incident
through the real guardian (a self-managed database whose server stops, so its capture fails, a finding opens
and an emergency capture is decided; the server comes back, the capture succeeds, the finding resolves; or
Heroku reports an incident on Data while a Heroku database misses its schedule), then the command as a
subprocess on the same state store. Times are relative to now, never to the time of day."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.audit import AuditLog
from daemon.adapters.heroku import HerokuClient
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.statestore import FindingEvent, open_state_store
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.durations import format_duration
from tests.doubles.heroku import HerokuDouble
from tests.support import DaemonProcess, FakeClock, create_database, shop_config, wait_for


class TickingClock(FakeClock):
    """Time moves on by a second at every reading, as it does between the steps of a real incident."""

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def timeline(tmp_path: Path, config: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    """`backup-guardian timeline ARGS` with `config` as its configuration file."""
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(json.dumps(config))  # JSON is YAML
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    env["GUARDIAN_CONFIG"] = str(cfg)
    return subprocess.run([sys.executable, "-m", "daemon", "timeline", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=tmp_path)


def events(out: subprocess.CompletedProcess[str]) -> list[dict[str, str]]:
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert isinstance(doc, list)
    return doc


def test_a_failed_capture_its_emergency_capture_and_the_recovery_are_listed_in_order(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = create_database(own_cluster)
    password = url.split(":")[2].split("@")[0]
    config = shop_config(tmp_path, url, actions={"dry_run": False, "capture": {"cooldown": "10m"}})
    clock = TickingClock()
    clock.now = datetime.now(UTC) - timedelta(hours=6)  # the incident happened this morning, whenever that is
    g = Guardian(GuardianConfig.model_validate(config), clock=clock)
    try:
        ok, _ = g.captures.capture("shop")  # the hourly capture, healthy
        assert ok
        g.collect_all()
        assert g.remedies.wait(60)

        port = own_cluster.port
        own_cluster.stop()  # the database server goes down
        clock.now += timedelta(hours=1)
        failed, _ = g.captures.capture("shop")
        assert not failed
        g.collect_all()  # last_attempt_failed opens; an emergency capture is decided and fails too
        assert g.remedies.wait(120)

        own_cluster.start(port=port)  # back
        clock.now += timedelta(minutes=30)
        ok, _ = g.captures.capture("shop")
        assert ok
        g.collect_all()
        assert g.remedies.wait(60)
        clock.now += timedelta(minutes=20)  # past the flap window: the finding is closed
        g.collect_all()
        assert g.remedies.wait(60)
    finally:
        g.stop()

    listed = events(timeline(tmp_path, config, "--since", "48h", "--format", "json"))
    assert [e["time"] for e in listed] == sorted(e["time"] for e in listed)  # oldest first
    kinds = [(e["kind"], e["summary"]) for e in listed]

    def first(kind: str, words: str, after: int = -1) -> int:
        return next(i for i, (k, s) in enumerate(kinds) if i > after and k == kind and words in s)

    failed_backup = first("backup", "failed (scheduled")
    opened = first("finding_opened", "last_attempt_failed opened (critical)")
    emergency = first("action", "capture started", after=opened)
    emergency_backup = first("backup", "failed (emergency", after=emergency)
    emergency_failed = first("action", "capture failed", after=emergency_backup)
    good_again = first("backup", "succeeded (scheduled", after=emergency_failed)
    resolved = first("finding_resolved", "last_attempt_failed resolved")
    assert first("backup", "succeeded") < failed_backup < opened < emergency < emergency_failed < good_again < resolved
    assert "because last_attempt_failed" in listed[emergency]["detail"]
    assert "triggers: last_attempt_failed" in listed[emergency]["detail"]
    assert "Connection refused" in listed[failed_backup]["detail"]
    assert first("notified", "told log: last_attempt_failed opened") > opened
    assert first("notified", "told log: last_attempt_failed resolved") > resolved
    assert {e["database"] for e in listed} == {"shop"}
    assert set(listed[0]) == {"time", "database", "kind", "summary", "detail"}

    doc = timeline(tmp_path, config, "--since", "48h")  # Markdown, the default
    assert doc.returncode == 0, doc.stderr
    lines = doc.stdout.splitlines()
    assert lines[0].startswith("## Timeline: ") and lines[0].endswith(" UTC")
    assert "Databases: shop" in doc.stdout
    assert "| Time (UTC) | Database | What | Detail |" in lines
    rows = [line for line in lines if line.startswith("| 20")]
    assert len(rows) == len(listed)
    assert "last_attempt_failed opened (critical)" in rows[opened] and "resolved" in rows[resolved]
    for out in (doc.stdout, json.dumps(listed)):
        assert password not in out and url not in out


HEROKU_DB = "shop/DATABASE"


def heroku_config(heroku: HerokuDouble, tmp_path: Path) -> dict[str, Any]:
    """A guardian watching the Heroku app "shop" (RPO 48 h, actions in dry run), Heroku's status read from the
    double."""
    return {"state_dir": str(tmp_path / "state"), "collect_interval": "30s",
            "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                       "timeout": "5s", "retries": 0, "status": {"url": heroku.status_url, "timeout": "5s"}},
            "actions": {"dry_run": True},
            "databases": [{"heroku": {"app": "shop"}, "objectives": {"rpo": "48h"}}]}


def collect_heroku(g: Guardian, clock: FakeClock) -> None:
    """One collection pass that reads the Heroku app (the fleet polls once its credit allows)."""
    for _ in range(20):
        if ("heroku", HEROKU_DB) in g.collect_all().collectors:
            break
        clock.now += timedelta(seconds=30)
    assert g.remedies.wait(120), "an action did not end"


def test_a_heroku_incident_is_listed_opened_updated_and_resolved_beside_a_finding_opened_during_it(
    fresh_db: str, tmp_path: Path
) -> None:
    """Heroku reports an incident on Data; the app's daily backup does not run and missed_schedule opens; Heroku
    updates the incident, then resolves it. Polled every few minutes, each transition is listed once, in order
    with the finding, for the Heroku database and the whole window, but not for a self-managed database."""
    clock = FakeClock()
    clock.now = datetime.now(UTC) - timedelta(hours=6)  # this morning, whenever that is
    with HerokuDouble(clock=clock, token="hrku-timeline-token-0123456789") as heroku:
        heroku.add_app("shop", database_url=fresh_db)
        due = clock.now - timedelta(hours=3)  # a daily schedule due 3 h ago that did not run
        heroku.add_schedule("shop", hour=due.hour, timezone="UTC")
        yesterday = due - timedelta(days=1)
        heroku.add_transfer("shop", created_at=yesterday, started_at=yesterday,
                            finished_at=yesterday + timedelta(minutes=2))
        config = heroku_config(heroku, tmp_path)
        api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                           sleep=clock.sleep, timeout=5, retries=0, max_rate_wait=0)
        g = Guardian(GuardianConfig.model_validate(config), heroku_api=api, clock=clock)
        try:
            assert g.provider_status is not None
            incident = heroku.open_incident("Degraded Heroku Postgres connectivity", severity="yellow")
            g.provider_status.poll()
            clock.now += timedelta(minutes=1)
            collect_heroku(g, clock)  # missed_schedule opens while Heroku reports the incident
            for _ in range(2):
                clock.now += timedelta(minutes=3)
                g.provider_status.poll()
            heroku.update_incident(incident, "Engineers are restoring connectivity.", severity="red")
            for _ in range(2):
                clock.now += timedelta(minutes=3)
                g.provider_status.poll()
            heroku.resolve_incident(incident)
            for _ in range(2):
                clock.now += timedelta(minutes=3)
                g.provider_status.poll()
        finally:
            g.stop()
    config["databases"].append({"name": "blog", "url": "postgresql://guardian:s3cr3t-pw@127.0.0.1:9/blog"})

    listed = events(timeline(tmp_path, config, "--since", "48h", "--format", "json"))
    assert [e["time"] for e in listed] == sorted(e["time"] for e in listed)
    said = [(e["kind"], e["summary"]) for e in listed
            if e["kind"] == "provider" or e["summary"].startswith("missed_schedule opened")]
    assert said == [
        ("provider", "Heroku reports an incident on Data: Degraded Heroku Postgres connectivity"),
        ("finding_opened", "missed_schedule opened (critical): A scheduled backup did not start"),
        ("provider", "Heroku updated the incident on Data: Degraded Heroku Postgres connectivity"),
        ("provider", "Heroku resolved the incident on Data: Degraded Heroku Postgres connectivity")]
    provider = [e for e in listed if e["kind"] == "provider"]
    assert {e["database"] for e in provider} == {""}
    assert provider[0]["detail"].startswith(f"status yellow; incident {incident}; began ")
    assert provider[0]["detail"].endswith(f"https://status.heroku.com/incidents/{incident}")
    assert provider[2]["detail"].startswith(f"was red; incident {incident}; ")
    open_for = datetime.fromisoformat(provider[2]["time"]) - datetime.fromisoformat(provider[0]["time"])
    assert f"; open for {format_duration(open_for)}; " in provider[2]["detail"]

    mine = events(timeline(tmp_path, config, "--since", "48h", "--database", HEROKU_DB, "--format", "json"))
    assert [e["summary"].split(":")[0] for e in mine
            if e["kind"] == "provider" or e["summary"].startswith("missed_schedule opened")] == [
        "Heroku reports an incident on Data", "missed_schedule opened (critical)",
        "Heroku updated the incident on Data", "Heroku resolved the incident on Data"]
    assert not any(e["kind"] == "provider"
                   for e in events(timeline(tmp_path, config, "--since", "48h", "--database", "blog",
                                            "--format", "json")))

    doc = timeline(tmp_path, config, "--since", "48h")
    assert doc.returncode == 0, doc.stderr
    lines = doc.stdout.splitlines()
    assert f"Databases: blog, {HEROKU_DB}  " in lines
    assert "Heroku status incidents" in lines[3]
    rows = [line for line in lines if line.startswith("| 20")]
    assert len(rows) == len(listed)
    opened = next(i for i, r in enumerate(rows) if "| Heroku reports an incident on Data: Degraded" in r)
    finding = next(i for i, r in enumerate(rows) if "missed_schedule opened" in r)
    resolved = next(i for i, r in enumerate(rows) if "Heroku resolved the incident on Data" in r)
    assert opened < finding < resolved
    assert rows[opened].split("|")[2] == "  "  # the provider's, not one database's
    assert "hrku-timeline-token" not in doc.stdout + json.dumps(listed)


def seeded(tmp_path: Path, now: datetime) -> dict[str, Any]:
    """A state store with findings of two databases at 3 h, 50 h and 1 h ago, a prune of one of shop's copies
    and a pause of every action 2 h ago, a failed drill of billing 30 min ago; the configuration that reads it."""
    store = open_state_store(None, tmp_path / "state")
    try:
        store.add_finding_events([
            FindingEvent(now - timedelta(hours=50), "shop", "rpo_breach", "opened", "critical", "an old incident"),
            FindingEvent(now - timedelta(hours=3), "shop", "missed_schedule", "opened", "critical", "02:00 missed"),
            FindingEvent(now - timedelta(hours=1), "billing", "size_anomaly", "opened", "warning", "40% of usual"),
        ])
        audit = AuditLog(store, clock=lambda: now - timedelta(hours=2))
        audit.record("prune", "shop/b001", "done", "past its keep", tier="daily")
        audit.record("actions", "all", "paused", "restoring by hand", by="ops@host")
        drilled = now - timedelta(minutes=30)
        store.add_drill("billing", "full", drilled, False, {
            "database": "billing", "scenario": "full", "started_at": drilled.isoformat(), "succeeded": False,
            "reason": "pg_restore failed: invalid input syntax", "recovery_seconds": 300.4, "rto_seconds": 3600,
            "backup": {"id": "b007", "source": "archive", "recovery_point": "2026-11-30T02:00:00+00:00"}})
    finally:
        store.close()
    return {"state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")},
            "databases": [{"name": "shop", "url": "postgresql://guardian:s3cr3t-pw@127.0.0.1:9/shop"},
                          {"name": "billing", "url": "postgresql://guardian:s3cr3t-pw@127.0.0.1:9/billing"}]}


def test_since_bounds_the_window_and_database_keeps_one_database_and_what_concerns_all(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    config = seeded(tmp_path, now)
    recent = events(timeline(tmp_path, config, "--since", "48h", "--format", "json"))
    assert [(e["database"], e["kind"]) for e in recent] == [
        ("shop", "finding_opened"), ("shop", "action"), ("all", "action"), ("billing", "finding_opened"),
        ("billing", "drill")]
    assert recent[1]["summary"] == "prune done (shop/b001)"
    assert recent[4]["summary"] == "full restore drill FAILED"
    assert recent[4]["detail"] == ("pg_restore failed: invalid input syntax; recovery 300 s (RTO 3600 s); backup b007 "
                                   "(archive, recovery point 2026-11-30T02:00:00+00:00)")
    shop = events(timeline(tmp_path, config, "--since", "48h", "--database", "shop", "--format", "json"))
    assert [e["summary"].split(":")[0] for e in shop] == [
        "missed_schedule opened (critical)", "prune done (shop/b001)", "actions paused"]
    week = events(timeline(tmp_path, config, "--since", "7d", "--format", "json"))
    assert week[0]["detail"] == "an old incident" and len(week) == 6
    ninety = events(timeline(tmp_path, config, "--since", "90m", "--format", "json"))
    assert [e["database"] for e in ninety] == ["billing", "billing"]
    at = (now - timedelta(hours=2, minutes=30)).isoformat()
    assert len(events(timeline(tmp_path, config, "--since", at, "--format", "json"))) == 4
    assert len(events(timeline(tmp_path, config, "--since", "48H", "--format", "json"))) == len(recent)
    md = timeline(tmp_path, config, "--since", "48h")
    assert "Databases: billing, shop" in md.stdout and "s3cr3t-pw" not in md.stdout + md.stderr
    table = timeline(tmp_path, config, "--since", "48h", "--format", "table").stdout.splitlines()  # piped: plain
    assert table[1].split() == ["TIME", "(UTC)", "DATABASE", "KIND", "WHAT", "DETAIL"] and "\x1b" not in "".join(table)
    assert len(table) == 3 + len(recent) and "prune done (shop/b001)" in table[4]


def test_a_bad_since_or_an_unknown_database_is_an_error_naming_the_flag(tmp_path: Path) -> None:
    config = seeded(tmp_path, datetime.now(UTC))
    for bad in ("48x", "yesterday", "-3h", "2999-01-01T00:00Z"):
        out = timeline(tmp_path, config, "--since", bad)
        assert out.returncode == 3, (bad, out.stdout)
        assert "--since" in out.stderr and "Traceback" not in out.stderr and out.stdout == ""
    out = timeline(tmp_path, config, "--database", "nope")
    assert out.returncode == 3
    assert "--database 'nope'" in out.stderr and "known: shop, billing" in out.stderr


def test_a_window_with_nothing_recorded_says_so(tmp_path: Path) -> None:
    config = seeded(tmp_path, datetime.now(UTC) - timedelta(days=30))
    out = timeline(tmp_path, config, "--since", "48h")
    assert out.returncode == 0, out.stderr
    assert "Nothing was recorded in this window." in out.stdout
    assert events(timeline(tmp_path, config, "--since", "48h", "--format", "json")) == []


@pytest.mark.slow
def test_the_running_daemons_store_is_read_beside_it_with_its_own_configuration(
    run_daemon: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    """While the daemon runs (SQLite in WAL mode), the command, given no configuration, finds the running guardian
    in the state directory and reads what it records; the database URL's password never shows."""
    url = "postgresql://guardian:n0t-shown-pw@127.0.0.1:9/shop"  # nothing listens: every capture fails
    d = run_daemon(f"collect_interval: 1s\narchive:\n  path: {tmp_path / 'archive'}\ndatabases:\n"
                   f"  - name: shop\n    url: '{url}'\n    capture:\n      interval: 2s\n      timeout: 10s\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    env["GUARDIAN_STATE_DIR"] = str(d.state_dir)

    def listed() -> list[dict[str, str]]:
        out = subprocess.run([sys.executable, "-m", "daemon", "timeline", "--format", "json", "--database", "shop"],
                             capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "n0t-shown-pw" not in out.stdout + out.stderr
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def seen() -> bool:
        kinds = {(e["kind"], e["summary"].split(" ")[0]) for e in listed()}
        return {("finding_opened", "last_attempt_failed"), ("backup", "backup")} <= kinds

    wait_for(seen, timeout=60)
    assert d.proc.poll() is None


def test_a_rollback_and_a_scale_change_of_an_app_are_in_its_heroku_databases_timeline(tmp_path: Path) -> None:
    """Rollbacks are audited on the app ("shop"), scale changes on "shop/web": `--database shop/DATABASE` lists
    them (they concern it), a self-managed database's timeline does not, and no app is taken for a database."""
    now = datetime.now(UTC)
    store = open_state_store(None, tmp_path / "state")
    try:
        audit = AuditLog(store, clock=lambda: now - timedelta(hours=1))
        audit.record("rollback", "shop", "done", "rolled shop back from v7 to v6")
        audit.record("scale", "shop/web", "done", "scaled web to 2")
        audit.record("capture", "blog", "done", "scheduled capture")
    finally:
        store.close()
    config = {"state_dir": str(tmp_path / "state"),
              "heroku": {"api_key": "hrku-timeline-token-0123456789"},
              "databases": [{"heroku": {"app": "shop"}},
                            {"name": "blog", "url": "postgresql://guardian:s3cr3t-pw@127.0.0.1:9/blog"}]}
    shop = events(timeline(tmp_path, config, "--since", "2h", "--database", HEROKU_DB, "--format", "json"))
    assert [(e["database"], e["summary"]) for e in shop] == [("", "rollback done (shop)"),
                                                             ("", "scale done (shop/web)")]
    blog = events(timeline(tmp_path, config, "--since", "2h", "--database", "blog", "--format", "json"))
    assert [e["summary"] for e in blog] == ["capture done"]
    every = timeline(tmp_path, config, "--since", "2h")
    assert every.returncode == 0, every.stderr
    header = next(line for line in every.stdout.splitlines() if "Databases" in line)
    assert "blog" in header and "shop," not in header and not header.rstrip().endswith("shop")
