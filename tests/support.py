"""What several test modules (and the benchmarks) share: real PostgreSQL clusters and databases, the real daemon
process, a fake clock, and the builders of the drill, S3 and alerting tests.

Test modules import from here, from tests/doubles/ and take conftest's fixtures by name; they never import one
another (tests/test_layout.py checks). Each section says which tests use it.
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
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actions.capture import Capturer, CaptureRequest
from actions.drill.outcome import DrillRun
from collectors.archive import collect_archive_facts
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.s3.listing import ListingCache
from daemon.adapters.heroku import HerokuClient
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.app import Guardian
from daemon.config import GuardianConfig, S3Config
from daemon.core.snapshot import (
    ArchiveFacts,
    Backup,
    DatabaseState,
    ProviderFacts,
    Schedule,
    Snapshot,
    SourceState,
)

if TYPE_CHECKING:  # only in annotations: importing the S3 double here would import it before pytest loads it as
    # a plugin (conftest imports this module), and it would lose pytest's assertion rewriting
    from tests.doubles.heroku import HerokuDouble
    from tests.doubles.s3 import FaultProxy

REPO = Path(__file__).resolve().parents[1]
SAMPLE_SCHEMA = (REPO / "daemon" / "sample_schema.sql").read_text()


# -- PostgreSQL clusters and databases ----------------------------------------------------------------------

def make_cluster(tcp: bool = True) -> tuple[LocalCluster, Path]:
    """A started cluster in a new directory under /tmp (the `postgres` user can reach it), and that directory."""
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


def create_database(cluster: LocalCluster, with_schema: bool = True) -> str:
    """URL (with password) of a new database on `cluster`, holding the sample invoicing schema unless told not to."""
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


#: A table whose index builds at once in production but slowly wherever a drill restores it (the function
#: sleeps only inside a scratch database): pg_restore is then reliably caught mid-run, without a big dump.
SLOW_RESTORE = r"""
CREATE FUNCTION slow_key(i integer) RETURNS integer LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF current_database() LIKE 'guardian\_drill\_%' THEN PERFORM pg_sleep(0.05); END IF;
  RETURN i;
END $$;
CREATE TABLE slow_rows AS SELECT g AS id FROM generate_series(1, 4000) g;
CREATE INDEX slow_rows_key ON slow_rows (slow_key(id));
"""


def databases(cluster: LocalCluster, tcp: bool = True) -> set[str]:
    """The names of every database on `cluster`."""
    with psycopg.connect(cluster.url("postgres", tcp=tcp), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def production_db(cluster: LocalCluster, slow: bool = False) -> str:
    url = create_database(cluster)
    if slow:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SLOW_RESTORE)  # type: ignore[arg-type]
    return url


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


# -- polling and time ---------------------------------------------------------------------------------------

def wait_for(condition: Any, timeout: float = 10.0) -> None:
    """Poll `condition()` until true, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        threading.Event().wait(0.01)


class FakeClock:
    """Shared by the double (rate refill, URL expiry) and the client's sleep: sleeping advances time."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


# -- the real daemon process (the `run_daemon` fixture starts it) ------------------------------------------

def shop_config(tmp_path: Path, url: str, **settings: Any) -> dict[str, Any]:
    """A guardian watching one self-managed database `shop` (hourly captures) with a local archive, plus
    `settings` (e.g. sentry, collect_interval)."""
    (tmp_path / "archive").mkdir(exist_ok=True)
    return {"state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")}, **settings,
            "databases": [{"name": "shop", "url": url, "capture": {"interval": "1h"}}]}


@dataclass
class DaemonProcess:
    """The real daemon started by the `run_daemon` fixture: its process, port, log and state directory."""

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


# -- restore drills: a local archive and a guardian per test ------------------------------------------------

#: The database the drill tests watch, capture and drill.
DRILLED_DB = "shop"


def capture(tmp: Path, name: str, url: str) -> None:
    """A real pg_dump of `url` into the local archive under `tmp`, as database `name`."""
    Capturer(LocalDirectoryStore(tmp / "archive")).capture(CaptureRequest(database=name, url=url))


def write_config(tmp: Path, dbs: list[dict[str, Any]]) -> Path:
    """A guardian configuration (JSON) with the local archive under `tmp` and the databases `dbs`."""
    path = tmp / "guardian.json"
    path.write_text(json.dumps({"state_dir": str(tmp / "state"), "archive": {"path": str(tmp / "archive")},
                                "databases": dbs}))
    return path


def read_config(path: Path) -> GuardianConfig:
    """The configuration `write_config` wrote."""
    return GuardianConfig.model_validate(json.loads(path.read_text()))


def drill_guardian(tmp: Path, url: str, scratch: str | None = None, **drill: Any) -> Guardian:
    """A guardian watching DRILLED_DB at `url` with the local archive under `tmp`; `drill` is its drill section,
    `scratch` its scratch server."""
    cfg: dict[str, Any] = {"state_dir": str(tmp / "state"), "archive": {"path": str(tmp / "archive")},
                           "databases": [{"name": DRILLED_DB, "url": url, "drill": drill}]}
    if scratch:
        cfg["databases"][0]["drill"]["scratch_url"] = scratch
    return Guardian(GuardianConfig.model_validate(cfg))


def drill_once(g: Guardian) -> tuple[DrillRun, Snapshot]:
    """Collect, run one drill, and stop the guardian: the drill and the snapshot after it."""
    try:
        g.collect_all()
        run = g.drills.drill(DRILLED_DB)
        return run, g.holder.current()
    finally:
        g.stop()


# -- a Heroku app whose backups the guardian mirrors to S3 (the S3 archive and action pipeline tests) ------

S3_MIRROR_TOKEN = "hrku-s3-SECRET-0123456789"
S3_MIRROR_APP = "suoops-backend"


def s3_section(endpoint: str, bucket: str, **extra: Any) -> dict[str, Any]:
    """The `archive.s3` configuration of a bucket on the S3 server at `endpoint`, plus `extra`."""
    return {"bucket": bucket, "endpoint_url": endpoint, "access_key_id": "testing",
            "secret_access_key": "testing", "part_size_mb": 5, "timeout": "5s", **extra}


def guardian_for(heroku: HerokuDouble, endpoint: str, bucket: str, tmp_path: Path,
                 s3: dict[str, Any] | None = None, **archive: Any) -> Guardian:
    """A guardian watching S3_MIRROR_APP on the Heroku double, archiving to `bucket` on S3 at `endpoint`."""
    config = GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"),
        "heroku": {"api_key": S3_MIRROR_TOKEN, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "status": {"url": heroku.status_url}, "apps": [S3_MIRROR_APP]},
        "archive": {"kind": "s3", "s3": s3_section(endpoint, bucket, **(s3 or {})), **archive},
    })
    api = HerokuClient(S3_MIRROR_TOKEN, platform_url=heroku.platform_url, data_url=heroku.data_url)
    return Guardian(config, heroku_api=api)


def an_hour_old_backup(heroku: HerokuDouble, **fields: Any) -> dict[str, Any]:
    """The app with one finished scheduled backup taken an hour ago (its transfer)."""
    heroku.add_app(S3_MIRROR_APP)
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    return heroku.add_transfer(S3_MIRROR_APP, created_at=hour_ago, started_at=hour_ago, finished_at=hour_ago, **fields)


# -- what an archive collection pass costs on S3 (the listing tests and bench/bench_s3_requests.py) --------

LISTED_DB = "shop/main"
LISTING_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def store_via(proxy: FaultProxy, bucket: str, cache: ListingCache | None = None) -> S3ArchiveStore:
    """An S3 archive store on `bucket` whose boto3 client goes through the recording `proxy`."""
    cfg = S3Config.model_validate({"bucket": bucket, "endpoint_url": proxy.endpoint_url, "access_key_id": "testing",
                                   "secret_access_key": "testing", "timeout": "5s"})
    return S3ArchiveStore(cfg) if cache is None else S3ArchiveStore(cfg, cache=cache)


def put_copy(client: Any, store: S3ArchiveStore, backup_id: str, age: timedelta, encrypted: bool = True) -> None:
    """A good copy (dump and record) written straight to moto, as another guardian would: not through the proxy."""
    body = b"PGDMP" + backup_id.encode()
    rp = LISTING_NOW - age
    record = BackupRecord(database=LISTED_DB, backup_id=backup_id, kind="scheduled", started_at=rp, finished_at=rp,
                          outcome="succeeded", size_bytes=len(body), tier="daily")
    sse = {"ServerSideEncryption": "AES256"} if encrypted else {}
    client.put_object(Bucket=store.bucket, Key=store.key(LISTED_DB, backup_id), Body=body, **sse)
    client.put_object(Bucket=store.bucket, Key=store.key(LISTED_DB, backup_id, ".json"),
                      Body=json.dumps(record.to_json()).encode(), ServerSideEncryption="AES256")


def one_pass(store: S3ArchiveStore, proxy: FaultProxy) -> tuple[Counter[str], SourceState, ArchiveFacts]:
    """One pass of the archive collector over LISTED_DB, and the requests it made by kind: LIST, GET (an object),
    HEAD."""
    mark = len(proxy.requests)
    src, facts = collect_archive_facts(store, LISTED_DB, "s3", (), LISTING_NOW)
    kinds: Counter[str] = Counter()
    for method, target, _status in proxy.requests[mark:]:
        parts = urlsplit(target)
        if method == "GET" and "list-type=2" in parts.query:
            kinds["LIST"] += 1
        elif method == "GET" and parts.path.count("/") > 1 and not parts.query:
            kinds["GET"] += 1
        else:
            kinds[method if method == "HEAD" else f"{method} {target}"] += 1
    return kinds, src, facts


# -- the shipped alerting (promtool, amtool) ----------------------------------------------------------------

RULES = REPO / "alerts" / "pgbackup.rules.yml"
#: Packages that provide each tool on Debian (what CI installs).
PACKAGES = {"promtool": "prometheus", "amtool": "prometheus-alertmanager"}


def tool(name: str) -> str:
    """Path of a required binary; fails (never skips) with the install command when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: install it with `apt-get install -y {PACKAGES[name]}` "
                    "(the alerting tests run the real tool)", pytrace=False)
    return path


# -- a database's backups over simulated days of a daily schedule (the risk and alert-agreement tests) ------

DAILY = Schedule(hour=2, timezone="UTC")
TOOK = timedelta(minutes=2)
#: The usual start delays of the past week (minutes after 02:00), oldest first.
JITTERY = (3, 5, 2, 4, 3, 5, 2)


def world(now: datetime, begun: Iterable[datetime], *, took: timedelta = TOOK, failed: Iterable[datetime] = (),
          schedules: tuple[Schedule, ...] = (DAILY,), interval: float | None = None,
          source: str = "heroku", pitr: bool | None = None) -> DatabaseState:
    """The database as the collector shows it at `now`: starts before `now` that finished are backups (failed
    when listed in `failed`), starts still running are in progress, later ones do not exist yet."""
    done, running = [], []
    for s in sorted(begun):
        if s > now:
            continue
        if s + took > now:
            running.append(s)
            continue
        done.append(Backup(backup_id=f"b{int(s.timestamp())}", database="shop", source=source, kind="scheduled",
                           started_at=s, finished_at=s + took, succeeded=s not in set(failed), size_bytes=1000))
    src = SourceState(source=source, backups=tuple(done), in_progress=len(running), running_started=tuple(running),
                      schedules=schedules, schedules_known=True, schedule_interval_seconds=interval,
                      observed_at=now)
    provider = None if pitr is None else ProviderFacts(plan="standard-0", continuous_protection=pitr,
                                                       rollback_earliest=None, offers_pitr=True, observed_at=now)
    return DatabaseState(name="shop", rpo_seconds=86400, rto_seconds={}, sources={source: src}, provider=provider)


def self_signed(tmp_path: Path, names: tuple[str, ...] = ("localhost",),
                addresses: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """A throwaway certificate (its own CA) for `names` and `addresses`, valid from a few minutes ago for a day:
    the certificate and key files it wrote into `tmp_path`."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.now(UTC)
    alt = [*(x509.DNSName(n) for n in names), *(x509.IPAddress(ipaddress.ip_address(a)) for a in addresses)]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class HealthApp:
    """A loopback HTTP app whose /health answers `status` (switchable by the test)."""

    def __init__(self) -> None:
        self.status = 200
        app = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(app.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/health"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
