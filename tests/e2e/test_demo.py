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


def _command(cwd: Path, env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=cwd, check=False)


def test_every_command_works_on_the_running_demo_with_no_flags(open_tmp: Path) -> None:
    """README command 1 starts the demo; a person then runs the commands from anywhere, with no configuration:
    they find the demo through the state directory (the per-user default here, under $XDG_STATE_HOME) and work
    on its database. Another folder as the working directory on purpose: nothing depends on where one stands."""
    home, elsewhere = open_tmp / "xdg-state", open_tmp / "somewhere-else"
    elsewhere.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    env["XDG_STATE_HOME"] = str(home)
    state = home / "pg-backup-guardian"
    log_path = open_tmp / "demo.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], stdout=log, stderr=subprocess.STDOUT,
                                env={**env, "GUARDIAN_LISTEN": f"127.0.0.1:{port}", "GUARDIAN_COLLECT_INTERVAL": "5s"},
                                cwd=open_tmp)
    d = DaemonProcess(proc, port, log_path, state)
    try:
        key = ("pgbackup_last_success_timestamp_seconds", (("database", "demo/invoicing"), ("source", "archive")))
        d.wait_for("the demo's first backup in /metrics", lambda: d.metrics().get(key), timeout=90)
        assert f"state directory: {state}" in d.log()
        running = state / "running.json"
        assert running.stat().st_mode & 0o077 == 0  # it holds the demo's URL: the owner's only

        said = f"using the configuration of the guardian running in {state} (pid {proc.pid}"
        check = _command(elsewhere, env, "check")
        assert check.returncode in (0, 1), check.stdout + check.stderr  # healthy, or a warning: never unknown
        assert "demo/invoicing" in check.stdout and said in check.stderr

        listed = _command(elsewhere, env, "archive", "list")
        assert listed.returncode == 0, listed.stderr
        assert "demo/invoicing" in listed.stdout and "daily" in listed.stdout

        captured = _command(elsewhere, env, "capture", "--database", "demo/invoicing", "--reason", "before a change")
        assert captured.returncode == 0, captured.stdout + captured.stderr  # done, or a dry run (the default)
        assert captured.stdout.startswith(("done:", "dry_run:")), captured.stdout

        drilled = _command(elsewhere, env, "drill", "--database", "demo/invoicing")
        assert drilled.returncode == 0, drilled.stdout + drilled.stderr
        assert "demo/invoicing: database_corruption drill succeeded" in drilled.stdout

        actions = _command(elsewhere, env, "actions")
        assert actions.returncode == 0, actions.stderr
        assert "capture" in actions.stdout and "before a change" in actions.stdout
        assert not (elsewhere / "guardian-state").exists()  # nothing was created where the commands ran

        def shown() -> list[tuple[str, str]]:  # what the running demo's page lists, decided by other processes
            [db] = d.status()["databases"]
            return [(x["action"], x["reason"]) for x in db["decisions"]]

        # the page learns of other processes' decisions on its own pace, so the capture's may show before the
        # drill's (the drill ran after it): wait for both, then check what the page says of them
        decided = d.wait_for("the commands' capture and drill on the demo's status page",
                             lambda: (got := shown()) and any("before a change" in r for _, r in got)
                             and any(a == "drill" for a, _ in got) and got)
        assert [a for a, r in decided if "before a change" in r] == ["capture"], decided
    finally:
        d.stop()
        if proc.poll() is None:
            proc.kill()
    assert not (state / "running.json").exists()  # a clean stop removes the record

    after = _command(elsewhere, env, "check")  # nothing runs there now: said plainly
    assert after.returncode == 3 and "no database to check" in after.stderr, after.stderr
