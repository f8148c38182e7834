"""`backup-guardian recovery-plan`: the runbook for one database and scenario, filled with what one collection
finds (the way `check` reads it), against the Heroku double over real HTTP and a self-managed database on a real
cluster with a real drill; text for people, JSON for tools, never a secret, bad input named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.core.redact import url_password
from tests.doubles.heroku import HerokuDouble
from tests.support import DRILLED_DB, capture, create_database, drill_guardian, drill_once, write_config

TOKEN = "hrku-plan-SECRET-0123456789abcdef"
APP = "suoops-backend"
HEROKU_DB = f"{APP}/DATABASE"


def plan_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "daemon", "recovery-plan", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=base, check=False)


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN) as double:
        yield double


def heroku_config(tmp_path: Path, heroku: HerokuDouble) -> Path:
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\narchive:\n  path: {tmp_path / 'archive'}\n"
                   f"heroku:\n  platform_url: {heroku.platform_url}\n  data_url: {heroku.data_url}\n"
                   f"databases:\n  - heroku: {{app: {APP}}}\n    drill: {{tables: [invoices]}}\n")
    return cfg


def heroku_backups(heroku: HerokuDouble, now: datetime) -> None:
    """Two good scheduled backups (27 h and 3 h old) and a failed one an hour ago, on a Standard plan."""
    heroku.add_app(APP, database_url="postgres://u5er:db-SECRET-pw@ec2.example.com:5432/d8f")
    heroku.add_schedule(APP, hour=(now - timedelta(hours=3)).hour)
    for age in (27, 3):
        start = now - timedelta(hours=age)
        heroku.add_transfer(APP, created_at=start, started_at=start, finished_at=start + timedelta(minutes=2))
    failed = now - timedelta(hours=1)
    heroku.add_transfer(APP, state="failed", created_at=failed, started_at=failed)


def test_heroku_corruption_plan_names_the_backup_the_rollback_and_the_exact_commands(
        heroku: HerokuDouble, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    heroku_backups(heroku, now)
    out = plan_cli(heroku_config(tmp_path, heroku), "--database", HEROKU_DB, "--scenario", "corruption",
                   "--format", "json", env={"HEROKU_API_KEY": TOKEN})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["newest_good_backup"]["id"] == "a002" and doc["newest_good_backup"]["sources"] == ["heroku"]
    assert 3 * 3600 - 120 < doc["newest_good_backup"]["data_loss_seconds"] < 3 * 3600 + 120
    assert [f["id"] for f in doc["fallbacks"]] == ["a001"]
    assert doc["rollback"]["plan"] == "Standard 0"
    earliest = datetime.fromisoformat(doc["rollback"]["earliest"])
    assert timedelta(days=4) - timedelta(minutes=2) < now - earliest < timedelta(days=4) + timedelta(minutes=2)
    assert doc["rto_seconds"] == 3600 and doc["drill"]["verdict"] == "never_measured"
    commands = [c for s in doc["steps"] for c in s["commands"]]
    assert "heroku pg:backups:capture DATABASE_URL --app suoops-backend" in commands
    assert any(c.startswith("heroku addons:create heroku-postgresql:standard-0 --app suoops-backend -- --rollback "
                            "DATABASE_URL --to ") for c in commands)
    assert "heroku pg:backups:restore a002 DATABASE_URL --app suoops-backend --confirm suoops-backend" in commands
    assert {f["check"] for f in doc["findings"]} >= {"last_attempt_failed"}
    assert TOKEN not in out.stdout + out.stderr and "db-SECRET-pw" not in out.stdout + out.stderr


def test_heroku_deletion_plan_as_text_recovers_rows_before_the_given_time(heroku: HerokuDouble,
                                                                          tmp_path: Path) -> None:
    now = datetime.now(UTC)
    heroku_backups(heroku, now)
    before = (now - timedelta(hours=5)).replace(microsecond=0)
    out = plan_cli(heroku_config(tmp_path, heroku), "--database", HEROKU_DB, "--scenario", "deletion",
                   "--before", before.isoformat(), env={"HEROKU_API_KEY": TOKEN})
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "\x1b[" not in text  # piped: plain text
    assert f"Recovery plan: {HEROKU_DB}, accidental data deletion (scenario 2 of the procedures)" in text
    assert "newest good a001 (heroku)" in text  # a002 was captured after the deletion
    when = before.strftime("%Y-%m-%d %H:%M:%S+00:00")
    assert (f"$ backup-guardian recover-rows --database {HEROKU_DB} --table invoices --before '{when}' --out "
            in text)
    assert "NEVER MEASURED" in text and "RTO 2h" in text
    assert "[ ] Critical flows work" in text
    assert TOKEN not in text + out.stderr and "db-SECRET-pw" not in text + out.stderr


def test_heroku_outage_without_an_archived_copy_says_there_is_nothing_outside_heroku(heroku: HerokuDouble,
                                                                                     tmp_path: Path) -> None:
    heroku_backups(heroku, datetime.now(UTC))
    out = plan_cli(heroku_config(tmp_path, heroku), "--database", HEROKU_DB, "--scenario", "outage",
                   "--format", "json", env={"HEROKU_API_KEY": TOKEN})
    doc = json.loads(out.stdout)
    assert doc["newest_good_backup"] is None and doc["rto_seconds"] == 4 * 3600
    assert doc["warnings"][0].startswith("no good backup outside Heroku")
    assert "curl -s https://status.heroku.com/api/v4/current-status" in doc["steps"][0]["commands"]


def test_self_managed_plan_restores_the_archived_dump_and_reports_the_drill_against_the_rto(
        pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    password = url_password(url)
    assert password
    capture(tmp_path, DRILLED_DB, url)
    run, _ = drill_once(drill_guardian(tmp_path, url))
    assert run.succeeded, run.reason
    config = write_config(tmp_path, [{"name": DRILLED_DB, "url": url}])

    out = plan_cli(config, "--database", DRILLED_DB, "--scenario", "corruption", "--format", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    [record] = LocalDirectoryStore(tmp_path / "archive").list_records(DRILLED_DB)
    newest = doc["newest_good_backup"]
    assert newest["id"] == record.backup_id and newest["sources"] == ["archive"]
    path = LocalDirectoryStore(tmp_path / "archive").dump_path(DRILLED_DB, record.backup_id)
    assert newest["location"] == str(path) and path.exists()
    assert doc["rollback"] is None and doc["heroku"] is None
    assert doc["drill"]["verdict"] == "within"
    assert doc["drill"]["measured_seconds"] == pytest.approx(run.recovery_seconds, abs=0.01)
    commands = [c for s in doc["steps"] for c in s["commands"]]
    assert commands[0] == "backup-guardian capture --database shop --reason 'state before recovery'"
    assert f"pg_restore --no-owner --no-privileges --exit-on-error --dbname shop_recovery {path}" in commands
    assert not any(c.startswith("heroku") for c in commands)

    text = plan_cli(config, "--database", DRILLED_DB, "--scenario", "failure")
    assert text.returncode == 0, text.stderr
    assert "WITHIN the RTO: last full restore drill" in text.stdout and "RTO 30m" in text.stdout
    assert "pg_isready --host 127.0.0.1" in text.stdout
    for output in (out, text):
        assert password not in output.stdout + output.stderr


def test_bad_input_is_named_without_a_traceback(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    config = write_config(tmp_path, [{"name": "shop", "url": create_database(pg_cluster)}])
    unknown = plan_cli(config, "--database", "nope", "--scenario", "corruption")
    assert unknown.returncode == 3 and "unknown database 'nope'; known: shop" in unknown.stderr
    scenario = plan_cli(config, "--database", "shop", "--scenario", "flood")
    assert scenario.returncode == 3 and "invalid choice: 'flood'" in scenario.stderr
    before = plan_cli(config, "--database", "shop", "--scenario", "deletion", "--before", "yesterday")
    assert before.returncode == 3 and "--before 'yesterday' is not a time" in before.stderr
    for out in (unknown, scenario, before):
        assert "Traceback" not in out.stderr


def test_when_heroku_cannot_be_read_the_plan_says_its_backups_may_be_incomplete(heroku: HerokuDouble,
                                                                                 tmp_path: Path) -> None:
    heroku_backups(heroku, datetime.now(UTC))
    heroku.inject(r"^GET /client/v11/apps/[^/]+/transfers$", "500")  # Heroku's backups API is down
    out = plan_cli(heroku_config(tmp_path, heroku), "--database", HEROKU_DB, "--scenario", "failure",
                   env={"HEROKU_API_KEY": TOKEN})
    assert out.returncode == 0, out.stderr
    assert "WARNING: could not read the heroku facts (" in out.stdout
    assert "the backups below are the last known, maybe not all" in out.stdout
    assert TOKEN not in out.stdout + out.stderr


@pytest.mark.parametrize("scenario", ["corruption", "deletion", "failure", "outage"])
@pytest.mark.parametrize(("plan", "rollback"), [
    ("heroku-postgresql:standard-0", "heroku addons:create heroku-postgresql:standard-0 --app suoops-backend -- "
                                     "--rollback DATABASE_URL --to "),
    ("heroku-postgresql:essential-0", None),
    ("heroku-postgresql:advanced", "heroku data:pg:fork DATABASE_URL --rollback-to "),
])
def test_every_scenario_on_every_plan_family_with_and_without_a_rollback_window(
        heroku: HerokuDouble, tmp_path: Path, scenario: str, plan: str, rollback: str | None) -> None:
    """Each scenario against the Heroku double on a plan with a rollback window (Standard), one without
    (Essential) and an Advanced one (its own rollback, by a fork): the rollback step is there exactly when
    Heroku offers a window, and its command is the family's; an Advanced plan asks for no pg:backups capture."""
    now = datetime.now(UTC)
    heroku.add_app(APP, plan=plan, database_url="postgres://u5er:db-SECRET-pw@ec2.example.com:5432/d8f")
    start = now - timedelta(hours=3)
    heroku.add_transfer(APP, created_at=start, started_at=start, finished_at=start + timedelta(minutes=2))
    before = (now - timedelta(hours=1)).replace(microsecond=0)
    out = plan_cli(heroku_config(tmp_path, heroku), "--database", HEROKU_DB, "--scenario", scenario,
                   "--before", before.isoformat(), "--format", "json", env={"HEROKU_API_KEY": TOKEN})
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    commands = [c for s in doc["steps"] for c in s["commands"]]
    if scenario == "outage":  # a provider outage: nothing of Heroku's can be used, whatever the plan
        assert not any("--rollback" in c for c in commands)
    elif rollback is None:
        assert doc["rollback"] is None and "offers no rollback" in doc["rollback_reason"]
        assert not any("--rollback" in c for c in commands)
    else:
        assert doc["rollback"] is not None
        assert any(c.startswith(rollback) for c in commands), commands
    if plan.endswith("advanced"):  # no capture through pg:backups (not established for Advanced); a backup the
        # app's transfer list shows may still be restored
        assert doc["provider_family"] == "advanced"
        assert not any("pg:backups:capture" in c for c in commands)
        assert not any("pg:backups" in a for a in doc["afterwards"])
    assert TOKEN not in out.stdout + out.stderr and "db-SECRET-pw" not in out.stdout + out.stderr
