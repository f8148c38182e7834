"""The embedded default: no configuration at all -> a throwaway local PostgreSQL, watched and captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from daemon.adapters.postgres.cluster import free_port
from tests.support import DaemonProcess


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    env.update(GUARDIAN_STATE_DIR=str(tmp_path / "state"), **extra)
    return env


def test_run_without_configuration_starts_the_demo_and_captures_it(open_tmp: Path) -> None:
    tmp_path = open_tmp
    port = free_port()
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], stdout=log, stderr=subprocess.STDOUT,
                                env=_env(tmp_path, GUARDIAN_LISTEN=f"127.0.0.1:{port}"), cwd=tmp_path)
    d = DaemonProcess(proc, port, log_path, tmp_path / "state")
    try:
        key = ("pgbackup_last_success_timestamp_seconds", (("database", "demo/invoicing"), ("source", "archive")))
        d.wait_for("the demo's first backup in /metrics", lambda: d.metrics().get(key), timeout=90)
        m = d.metrics()
        assert m[("pgbackup_demo_mode", ())] == 1
        assert m[("pgbackup_database_tables", (("database", "demo/invoicing"),))] == 3
        status = d.status()
        assert status["demo"] is True and status["databases"][0]["status"] == "ok"
        log = d.log()
        assert "DATABASE_URL" in log  # it tells how to watch a real database instead
        assert (tmp_path / "state" / "demo-pg" / "data" / "PG_VERSION").exists()
        assert d.stop() < 10 and proc.returncode == 0
        assert "demo: PostgreSQL stopped" in d.log()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_without_postgresql_programs_says_how_to_install_them(tmp_path: Path) -> None:
    empty = tmp_path / "no-postgres-here"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "daemon", "run"], capture_output=True, text=True, timeout=60,
                         env=_env(tmp_path, GUARDIAN_PG_BINDIR=str(empty), GUARDIAN_LISTEN=f"127.0.0.1:{free_port()}"),
                         cwd=tmp_path, check=False)
    assert out.returncode == 3
    assert "'initdb' was not found" in out.stderr and "apt-get install postgresql" in out.stderr
    assert "Traceback" not in out.stderr
