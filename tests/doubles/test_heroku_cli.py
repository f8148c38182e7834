"""The real Heroku CLI (npm `heroku`, 11.x) against the double: the commands a person runs during an incident
read the double's answers as they read Heroku's. Where the CLI and the double disagree, the CLI is right.

The CLI is pointed at loopback only: `HEROKU_HOST` (the platform port), `HEROKU_DATA_HOST` (a host name the
double serves as the Data API on the platform port: the CLI keeps the platform URL's scheme and port for it),
telemetry off, no update check, and its analytics URL on a closed loopback port. `.ci/run` installs the CLI and
runs this file with `TESTS_REQUIRE_HEROKU_CLI=1`, so a missing CLI fails there instead of skipping."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from daemon.adapters.postgres.tools import find_tool
from tests.doubles.heroku import HerokuDouble
from tests.support import self_signed

CLI = shutil.which("heroku")
if CLI is None and os.environ.get("TESTS_REQUIRE_HEROKU_CLI") == "1":
    raise RuntimeError("TESTS_REQUIRE_HEROKU_CLI=1 but the Heroku CLI is not installed (npm install -g heroku@11)")
pytestmark = pytest.mark.skipif(CLI is None, reason="the Heroku CLI is not installed (npm install -g heroku@11)")

APP = "shop"


@dataclass
class Cli:
    heroku: HerokuDouble
    tables: int
    env: dict[str, str]
    home: Path

    def run(self, *args: str, ok: bool = True) -> str:
        """Run `heroku ARGS -a shop`; the combined output, its terms-of-service banner dropped."""
        assert CLI is not None
        done = subprocess.run([CLI, *args, "-a", APP], env=self.env, cwd=self.home, capture_output=True, text=True,
                              timeout=120, check=False)
        out = done.stdout + done.stderr
        assert (done.returncode == 0) == ok, f"heroku {' '.join(args)} exited {done.returncode}:\n{out}"
        return out


@pytest.fixture
def cli(fresh_db: str, tmp_path: Path) -> Iterator[Cli]:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS invoices (id int PRIMARY KEY, amount numeric)")
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema')").fetchone()
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    with HerokuDouble(download_tls=tls, cli_data_host="localhost") as heroku:
        heroku.add_app(APP, database_url=fresh_db)
        heroku.add_schedule(APP, hour=2, timezone="UTC")
        heroku.add_transfer(APP, scheduled=True)
        heroku.add_transfer(APP, scheduled=False, state="failed")
        home = tmp_path / "home"
        home.mkdir()
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "HEROKU_HOST": heroku.platform_url,
               "HEROKU_DATA_HOST": "localhost", "HEROKU_API_KEY": heroku.token, "NODE_EXTRA_CA_CERTS": str(cert),
               "DISABLE_TELEMETRY": "true", "HEROKU_SKIP_NEW_VERSION_CHECK": "true",
               "HEROKU_ANALYTICS_URL": "http://127.0.0.1:9/", "NO_COLOR": "1", "COLUMNS": "160"}
        yield Cli(heroku, tables[0] if tables else 0, env, home)


def test_backups_list_capture_download_and_info(cli: Cli) -> None:
    listing = cli.run("pg:backups")
    assert "a001" in listing and "Completed" in listing
    assert "b002" in listing and "Failed" in listing

    captured = cli.run("pg:backups:capture")
    assert "Backing up DATABASE to b003... done" in captured
    assert "b003" in cli.run("pg:backups")

    dump = cli.home / "latest.dump"
    fetched = cli.run("pg:backups:download", "-o", str(dump))  # https only, through the throwaway CA
    assert "done, #3" in fetched
    toc = subprocess.run([str(find_tool("pg_restore")), "--list", str(dump)], capture_output=True, text=True,
                         check=True).stdout
    assert "TABLE public invoices" in toc

    info = cli.run("pg:backups:info", "b003")
    assert "Status:           Completed" in info and "Type:             Manual" in info


def test_a_failed_backup_has_no_url_and_a_deleted_one_is_gone(cli: Cli) -> None:
    refused = cli.run("pg:backups:url", "b002", ok=False)
    assert "Can only generate public URL for completed transfers" in refused
    assert cli.run("pg:backups:url", "a001").startswith("https://127.0.0.1:")

    cli.run("pg:backups:delete", "a001", "--confirm", APP)
    assert "a001" not in cli.run("pg:backups")
    gone = cli.run("pg:backups:info", "a001", ok=False)
    assert "That backup has been deleted" in gone and "gone" in gone


def test_schedules_and_database_info(cli: Cli) -> None:
    assert "DATABASE_URL: daily at 2:00 UTC" in cli.run("pg:backups:schedules")
    cli.run("pg:backups:schedule", "DATABASE_URL", "--at", "04:00 America/New_York")
    assert "daily at 4:00 America/New_York" in cli.run("pg:backups:schedules")
    cli.run("pg:backups:unschedule", "DATABASE_URL")
    assert "daily at" not in cli.run("pg:backups:schedules")

    info = cli.run("pg:info")
    assert f"Tables:                {cli.tables}\n" in info  # measured from the database behind the add-on
    assert "Plan:                  Standard 0" in info


def test_dynos_formation_releases_and_addons(cli: Cli) -> None:
    assert "web.1: up" in cli.run("ps")  # GET /account, /apps/{app}, /apps/{app}/dynos
    assert "now running web at 2:" in cli.run("ps:scale", "web=2")
    formation = httpx.get(f"{cli.heroku.platform_url}/apps/{APP}/formation/web",
                          headers={"Authorization": f"Bearer {cli.heroku.token}",
                                   "Accept": "application/vnd.heroku+json; version=3"}).json()
    assert formation["quantity"] == 2
    assert "Attach DATABASE" in cli.run("releases")
    addons = cli.run("addons")
    assert "heroku-postgresql" in addons and "as DATABASE" in addons
