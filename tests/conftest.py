"""Shared fixtures: a throwaway PostgreSQL cluster started with initdb/pg_ctl for the session, fresh
databases per test, and the real daemon process. Plain functions live in tests/support.py; tests take these
fixtures by name and never import this module.

No pre-running server is assumed. When the tests run as root, the cluster runs as the `postgres` system
user (PostgreSQL refuses root), in a directory under /tmp that user owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from daemon.adapters.postgres.cluster import LocalCluster, free_port
from tests.support import DaemonProcess, create_database, throwaway_cluster

pytest_plugins = ["tests.doubles.s3"]  # moto_server, s3_bucket, fault_proxy fixtures

# The default state directory is the per-user one ($XDG_STATE_HOME/pg-backup-guardian): every test and every
# process it starts gets one of its own, never the home directory of whoever runs the tests.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="guardian-tests-xdg-state-")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[LocalCluster]:
    """One real PostgreSQL for the whole session, on a free port, password authentication over TCP."""
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture
def own_cluster() -> Iterator[LocalCluster]:
    """A cluster of the test's own, for tests that stop and start PostgreSQL."""
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def sample_dump(pg_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real custom-format dump of the sample schema, for doubles that must serve a restorable backup."""
    from actions.capture import pg_dump_command

    url = create_database(pg_cluster)
    path = tmp_path_factory.mktemp("sample-dump") / "sample.dump"
    args, env = pg_dump_command(url)
    subprocess.run([*args, f"--file={path}"], env=env, check=True, capture_output=True, timeout=120)
    return path


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary directory the `postgres` user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="guardian-test-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fresh_db(pg_cluster: LocalCluster) -> Iterator[str]:
    """URL (with password) of a new database holding the sample invoicing schema; dropped afterwards."""
    url = create_database(pg_cluster)
    yield url
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(pg_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the real daemon as a subprocess ---------------------------------------------------------------------

@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start `python -m daemon run` with a config file; the process is always stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(config_yaml: str, env: dict[str, str] | None = None, state_dir: Path | None = None,
              listen_host: str = "127.0.0.1", wait_for_health: bool = True) -> DaemonProcess:
        """`state_dir` shares one state directory between daemons (replicas, or a restart); default: its own.
        `listen_host` 0.0.0.0 binds every interface; the test still talks to it over 127.0.0.1. Without
        `wait_for_health` (e.g. it speaks HTTPS) it returns once started; the test waits its own way."""
        port = free_port()
        state = state_dir or tmp_path / f"state-{len(started)}"
        cfg = tmp_path / f"guardian-{len(started)}.yaml"
        cfg.write_text(f"listen: {listen_host}:{port}\nstate_dir: {state}\n" + config_yaml)
        log_path = tmp_path / f"daemon-{len(started)}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
        full_env.update(env or {})
        full_env["GUARDIAN_CONFIG"] = str(cfg)
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "daemon", "run"], stdout=log, stderr=subprocess.STDOUT,
                                    env=full_env, cwd=tmp_path)
        d = DaemonProcess(proc, port, log_path, state)
        started.append(d)
        if wait_for_health:
            d.wait_for("/healthz", lambda: d.get("/healthz")[0] == 200, timeout=30)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
