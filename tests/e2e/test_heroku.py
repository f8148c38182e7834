"""End to end: the real daemon process watching the Heroku double over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.adapters.postgres.cluster import LocalCluster
from tests.doubles.heroku import HerokuDouble
from tests.support import DaemonProcess, create_database

TOKEN = "hrku-e2e-SECRET-0123456789abcdef"
DB = "suoops-backend/DATABASE"
L_HEROKU = (("database", DB), ("source", "heroku"))


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN) as double:
        yield double


def _config(heroku: HerokuDouble) -> str:
    return (f"collect_interval: 1s\nheroku:\n  platform_url: {heroku.platform_url}\n  data_url: {heroku.data_url}\n"
            f"  status: {{url: {heroku.status_url}}}\n"
            "  rate_budget_share: 1.0\n  polling: {fast: 1s, slow: 2s, window: 1m}\n"
            "databases:\n  - heroku: {app: suoops-backend}\n")


def _finding(m: dict[Any, float], check: str) -> float | None:
    return m.get(("pgbackup_finding_active", (("check", check), ("database", DB),
                                              ("severity", "critical" if check in {"last_attempt_failed",
                                                                                   "rpo_breach"} else "warning"))))


def test_daemon_watches_heroku_backups_and_reports_a_failed_one_within_an_interval(
    heroku: HerokuDouble, run_daemon: Any
) -> None:
    heroku.add_app("suoops-backend")
    start = datetime.now(UTC) - timedelta(hours=2)
    # The daemon reads the wall clock: the schedule is due at the hour this backup started, so it is met at
    # whatever time of day the test runs (a fixed 02:00 would be missed in the morning).
    heroku.add_schedule("suoops-backend", hour=start.hour, timezone="UTC")
    heroku.add_transfer("suoops-backend", created_at=start, started_at=start, finished_at=start + timedelta(minutes=3),
                        processed_bytes=123456)
    d: DaemonProcess = run_daemon(_config(heroku), env={"HEROKU_API_KEY": TOKEN})

    ts = d.wait_for("the scheduled backup in /metrics",
                    lambda: d.metrics().get(("pgbackup_last_success_timestamp_seconds", L_HEROKU)))
    assert ts == pytest.approx(start.timestamp(), abs=1)  # second precision in the Heroku format
    m = d.metrics()
    assert m[("pgbackup_last_size_bytes", L_HEROKU)] == 123456
    assert m[("pgbackup_heroku_ratelimit_remaining", ())] > 0
    assert m[("pgbackup_schedule_configured", L_HEROKU)] == 1
    next_at = m[("pgbackup_schedule_next_timestamp_seconds", L_HEROKU)]
    assert datetime.fromtimestamp(next_at, UTC).hour == start.hour
    assert 0 < next_at - datetime.now(UTC).timestamp() <= 86400
    assert m[("pgbackup_pitr_enabled", (("database", DB),))] == 1
    newest = d.status()["databases"][0]["newest_good_backup"]
    assert newest["id"] == "a001" and newest["source"] == "heroku"

    # the next scheduled backup fails: finding and metrics within one collection interval (plus a poll)
    failed_start = datetime.now(UTC) - timedelta(minutes=1)
    heroku.add_transfer("suoops-backend", state="failed", created_at=failed_start, started_at=failed_start,
                        finished_at=failed_start + timedelta(seconds=30),
                        logs=[{"created_at": "x", "level": "error", "message": "pg_dump: error: out of memory"}])
    d.wait_for("failed attempt finding", lambda: _finding(d.metrics(), "last_attempt_failed") == 1, timeout=15)
    m = d.metrics()
    assert m[("pgbackup_last_attempt_succeeded", L_HEROKU)] == 0
    assert m[("pgbackup_last_success_timestamp_seconds", L_HEROKU)] == pytest.approx(start.timestamp(), abs=1)
    hint = next(f["hint"] for f in d.status()["databases"][0]["findings"] if f["check"] == "last_attempt_failed")
    assert "a002" in hint and "out of memory" in hint  # the last log lines, as the CLI shows them

    # the token never shows, anywhere a person or Prometheus can read
    for text in (d.get("/metrics")[1].decode(), d.get("/api/status")[1].decode(), d.get("/")[1].decode(), d.log()):
        assert TOKEN not in text
    assert "Traceback" not in d.log()
    assert d.stop() < 10


def test_check_lists_heroku_backups_like_pg_backups(heroku: HerokuDouble, tmp_path: Any,
                                                    pg_cluster: LocalCluster) -> None:
    url = create_database(pg_cluster)
    heroku.add_app("suoops-backend", database_url=url)
    t0 = datetime.now(UTC) - timedelta(hours=30)
    # `check` reads the wall clock: the schedule is due at the hour the newest scheduled backup (t0 + 20 h) started,
    # so it is met at whatever time of day the test runs.
    heroku.add_schedule("suoops-backend", hour=(t0 + timedelta(hours=20)).hour, timezone="UTC")
    for i in range(3):
        s = t0 + timedelta(hours=10 * i)
        heroku.add_transfer("suoops-backend", created_at=s, started_at=s, finished_at=s + timedelta(minutes=2))
    heroku.add_transfer("suoops-backend", scheduled=False, created_at=t0, started_at=t0,
                        finished_at=t0 + timedelta(minutes=1))
    cfg = tmp_path / "g.yaml"
    cfg.write_text(_config(heroku))
    # The environment passes through (less the guardian's own settings): `check` reads the same clock as this
    # test, also when the clock is shifted for the whole process tree (faketime, see README: Development).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL", "HEROKU_"))}
    out = subprocess.run([sys.executable, "-m", "daemon", "check", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60, env={**env, "HEROKU_API_KEY": TOKEN}, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert DB in out.stdout and "a003 (heroku)" in out.stdout
    for name in ("a001", "a002", "a003", "b004"):
        assert name in out.stdout
    assert "Completed" in out.stdout and TOKEN not in out.stdout + out.stderr


def test_missing_token_is_a_config_error(tmp_path: Any) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text("databases:\n  - heroku: {app: suoops-backend}\n")
    out = subprocess.run([sys.executable, "-m", "daemon", "config", "validate", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert out.returncode == 3 and "HEROKU_API_KEY" in out.stderr


def test_heroku_apps_from_config_vars_alone_are_watched_not_the_demo(heroku: HerokuDouble, run_daemon: Any) -> None:
    heroku.add_app("suoops-backend")
    start = datetime.now(UTC) - timedelta(hours=1)
    heroku.add_transfer("suoops-backend", created_at=start, started_at=start, finished_at=start + timedelta(minutes=1))
    env = {"HEROKU_API_KEY": TOKEN, "GUARDIAN_HEROKU_APPS": "suoops-backend",
           "GUARDIAN_HEROKU_PLATFORM_URL": heroku.platform_url, "GUARDIAN_HEROKU_DATA_URL": heroku.data_url,
           "GUARDIAN_HEROKU_STATUS_URL": heroku.status_url}
    d: DaemonProcess = run_daemon("collect_interval: 1s\n", env=env)
    d.wait_for("the Heroku backup", lambda: d.metrics().get(("pgbackup_last_success_timestamp_seconds", L_HEROKU)))
    assert d.status()["demo"] is False and "demo:" not in d.log()
    assert TOKEN not in d.log()


def test_daemon_shows_heroku_incidents_and_keeps_serving_when_the_status_api_fails(
    heroku: HerokuDouble, run_daemon: Any
) -> None:
    """The real daemon polls the double's status API: an incident on Data appears in /api/status, on the status
    page, in the metrics and in the active findings of the Heroku database; a status API answering 500 marks only
    its collector down (the daemon serves, the Heroku collector stays up); the resolution clears it all."""
    heroku.add_app("suoops-backend")
    start = datetime.now(UTC) - timedelta(hours=2)
    heroku.add_transfer("suoops-backend", created_at=start, started_at=start, finished_at=start + timedelta(minutes=3))
    failed = start + timedelta(hours=1)
    heroku.add_transfer("suoops-backend", scheduled=False, state="failed", created_at=failed, started_at=failed,
                        finished_at=failed + timedelta(minutes=1))
    incident = heroku.open_incident("Heroku Postgres connection errors in us-east", systems=("Data",))
    text = "Heroku reports an incident on Data: Heroku Postgres connection errors in us-east"
    config = _config(heroku).replace("  status: {url: ", "  status: {interval: 1s, timeout: 10s, url: ")
    d: DaemonProcess = run_daemon(config, env={"HEROKU_API_KEY": TOKEN})

    doc = d.wait_for("the incident in /api/status", lambda: (s := d.status())["provider"]
                     and s["provider"]["text"] == text and s)
    inc = doc["provider"]["incidents"][0]
    assert inc["systems"] == ["Data"] and inc["status"] == "red" and inc["url"].startswith("https://status.heroku")
    hints = d.wait_for("the annotated finding", lambda: [
        f["hint"] for db in d.status()["databases"] for f in db["findings"] if f["active"] and text in f["hint"]])
    assert any("failed" in h for h in hints)  # last_attempt_failed, annotated
    waiting = d.wait_for("the emergency capture waiting", lambda: [
        dec for db in d.status()["databases"] for dec in db.get("decisions", [])
        if dec["outcome"] == "waiting_provider"])
    assert waiting[0]["reason"].startswith(f"waiting: {text}")
    code, page, _ = d.get("/")
    assert code == 200
    assert "Heroku reports an incident on Data</b>: Heroku Postgres connection errors in us-east" in page.decode()
    m = d.metrics()
    assert m[("pgbackup_heroku_incidents", (("system", "Data"),))] == 1
    assert m[("pgbackup_heroku_system_status", (("system", "Data"),))] == 2

    heroku.inject("GET /api/v4/current-status", "500")
    up = ("pgbackup_collector_up", (("collector", "heroku_status"), ("database", "")))
    d.wait_for("the status collector down", lambda: d.metrics().get(up) == 0)
    m = d.metrics()
    assert m[("pgbackup_collector_up", (("collector", "heroku"), ("database", DB)))] == 1
    status = d.status()
    assert status["provider"]["text"] == text  # the last status read stays
    down = next(c for c in status["collectors"] if c["collector"] == "heroku_status")
    assert down["last_error"] == "Heroku status API answered HTTP 500"

    heroku.clear_faults()
    heroku.resolve_incident(incident)
    d.wait_for("the resolution", lambda: d.status()["provider"]["text"] is None)
    d.wait_for("findings without the incident", lambda: not any(
        "Heroku reports" in f["hint"] for db in d.status()["databases"] for f in db["findings"]))
    page_after = d.get("/")[1].decode()
    assert "class='notice s-warning provider'" not in page_after  # the banner is gone
    assert "waiting: Heroku reports an incident on Data" in page_after  # the capture's decision, kept in history
    d.wait_for("the status collector up again", lambda: d.metrics().get(up) == 1)

    # the timeline, run beside the daemon on its state directory, lists the incident opened and resolved once
    # each (polled every second, the failed polls in between recorded nothing)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    env["GUARDIAN_STATE_DIR"] = str(d.state_dir)

    def provider_events() -> list[tuple[str, str]]:
        out = subprocess.run([sys.executable, "-m", "daemon", "timeline", "--format", "json", "--database", DB],
                             capture_output=True, text=True, env=env, timeout=60, cwd=d.state_dir)
        assert out.returncode == 0, out.stderr
        assert TOKEN not in out.stdout + out.stderr
        return [(e["database"], e["summary"]) for e in json.loads(out.stdout) if e["kind"] == "provider"]

    listed = d.wait_for("the resolved incident in the timeline", lambda: (ev := provider_events()) and len(ev) > 1
                        and ev)
    assert listed == [("", "Heroku reports an incident on Data: Heroku Postgres connection errors in us-east"),
                      ("", "Heroku resolved the incident on Data: Heroku Postgres connection errors in us-east")]
