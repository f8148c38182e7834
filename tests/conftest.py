"""Shared fixtures: a throwaway PostgreSQL cluster started with initdb/pg_ctl for the session, fresh
databases per test, and a helper that runs the real daemon process.

No pre-running server is assumed. When the tests run as root, the cluster runs as the `postgres` system
user (PostgreSQL refuses root), in a directory under /tmp that user owns.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.adapters.postgres.cluster import LocalCluster, free_port

pytest_plugins = ["tests.doubles.s3"]  # moto_server, s3_bucket, fault_proxy fixtures

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SCHEMA = (REPO / "daemon" / "sample_schema.sql").read_text()


def make_cluster(tcp: bool = True) -> tuple[LocalCluster, Path]:
    base = Path(tempfile.mkdtemp(prefix="guardian-pg-", dir="/tmp"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "data", base / "run", tcp=tcp,
                           superuser_password="pw-" + secrets.token_hex(12))
    cluster.init()
    cluster.start()
    return cluster, base


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[LocalCluster]:
    """A started cluster, destroyed with its directory afterwards."""
    cluster, base = make_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


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


def create_database(cluster: LocalCluster, with_schema: bool = True) -> str:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = cluster.url(name)
    if with_schema:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SAMPLE_SCHEMA)  # type: ignore[arg-type]
    return url


def allow_connections(cluster: LocalCluster, url: str, allow: bool) -> None:
    """Open or shut the watched database for new connections: its live collector succeeds or fails for real."""
    name = url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')


def shop_config(tmp_path: Path, url: str, **settings: Any) -> dict[str, Any]:
    """A guardian watching one self-managed database `shop` (hourly captures) with a local archive, plus
    `settings` (e.g. sentry, collect_interval)."""
    (tmp_path / "archive").mkdir(exist_ok=True)
    return {"state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")}, **settings,
            "databases": [{"name": "shop", "url": url, "capture": {"interval": "1h"}}]}


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

@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    state_dir: Path
    secrets_seen: list[str] = field(default_factory=list)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        code, body, _ = self.get("/api/status")
        assert code == 200
        return json.loads(body)  # type: ignore[no-any-return]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, body, _ = self.get("/metrics")
        assert code == 200
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll an observable condition of the running daemon until it holds (not a sleep for a race:
        the daemon works on its own schedule and we watch its HTTP answers)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited with {self.proc.returncode}:\n{self.log()}"
            with contextlib.suppress(OSError, http.client.HTTPException):
                last = predicate()
                if last:
                    return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last value {last!r}\n--- daemon log ---\n{self.log()}")

    def stop(self, timeout: float = 15) -> float:
        """SIGTERM, then the seconds it took to exit."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)
        return time.monotonic() - t0


@pytest.fixture
def run_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start `python -m daemon run` with a config file; the process is always stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(config_yaml: str, env: dict[str, str] | None = None, state_dir: Path | None = None,
              listen_host: str = "127.0.0.1") -> DaemonProcess:
        """`state_dir` shares one state directory between daemons (replicas, or a restart); default: its own.
        `listen_host` 0.0.0.0 binds every interface; the test still talks to it over 127.0.0.1."""
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
        d.wait_for("/healthz", lambda: d.get("/healthz")[0] == 200, timeout=30)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def pids_of(program: str, needle: str) -> list[int]:
    """PIDs of running `program` processes (by the name they were started as) with `needle` in an argument."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == program.encode() and any(needle.encode() in a for a in argv[1:]):
            pids.append(int(entry.name))
    return pids
