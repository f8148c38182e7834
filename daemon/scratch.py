"""The scratch server drills restore into, and the rules that keep production safe from it.

- The scratch server is a configured PostgreSQL URL (a role allowed to CREATE DATABASE) or, by default, a
  throwaway local cluster the guardian starts for the drill and stops after it.
- It must provably not be the production server: `system_identifier` from `pg_control_system()` is compared
  on both connections, whatever the spelling of their URLs, and the drill is refused when they are equal.
- Scratch databases are named `guardian_drill_<timestamp>_<random>`; every one is written to a ledger in the
  state directory before it is created, and only names that carry the prefix *and* are on the ledger are ever
  dropped. Leftovers of a crash are swept at start.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from daemon.errors import GuardianError
from daemon.localpg import LocalCluster, cluster_in
from daemon.redact import REDACTOR

PREFIX = "guardian_drill_"


class DrillRefused(GuardianError):
    """The drill must not run (the scratch server could be production, a version it cannot restore, ...)."""


def with_dbname(url: str, dbname: str) -> str:
    """The same connection with another database name (any URL or conninfo spelling)."""
    params = conninfo_to_dict(url)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def system_identifier(url: str, timeout: float = 10) -> int:
    """The cluster's unique identifier (pg_control_system()); raises GuardianError when unreachable."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    except psycopg.Error as exc:
        raise GuardianError(REDACTOR(f"cannot read the server's identity: {str(exc).strip().splitlines()[0]}")) \
            from None
    assert row is not None
    return int(row[0])


def server_major(url: str) -> int:
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        return int(conn.info.server_version // 10000)


class Ledger:
    """The scratch databases the guardian created and has not dropped yet (JSON in the state directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        try:
            doc = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        return [n for n in doc if isinstance(n, str)] if isinstance(doc, list) else []

    def _write(self, names: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(set(names))))
        tmp.replace(self.path)

    def add(self, name: str) -> None:
        with self._lock:
            self._write([*self.names(), name])

    def remove(self, name: str) -> None:
        with self._lock:
            self._write([n for n in self.names() if n != name])


class ScratchServer:
    """Where drills restore. `session()` yields the admin URL (starting the embedded cluster if needed)."""

    def __init__(self, state_dir: Path, url: str | None = None) -> None:
        self.url = url
        self.state_dir = state_dir
        self.ledger = Ledger(state_dir / "drills" / "scratch-ledger.json")
        self._cluster: LocalCluster | None = None

    @property
    def embedded(self) -> bool:
        return self.url is None

    @contextlib.contextmanager
    def session(self) -> Iterator[str]:
        if self.url is not None:
            yield self.url
            return
        cluster = cluster_in(self.state_dir, "drill-pg")
        if not cluster.initialized:
            cluster.init()
        cluster.start()
        self._cluster = cluster
        try:
            yield cluster.url("postgres")
        finally:
            cluster.stop()
            self._cluster = None

    def new_name(self, now: datetime) -> str:
        return f"{PREFIX}{now.astimezone(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"

    def create(self, admin_url: str, name: str) -> str:
        """Create scratch database `name` (on the ledger first); returns its URL."""
        if not name.startswith(PREFIX):
            raise DrillRefused(f"refusing to create {name!r}: scratch names start with {PREFIX}")
        self.ledger.add(name)
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            self.ledger.remove(name)
            raise GuardianError(REDACTOR(f"cannot create the scratch database: {str(exc).strip()}")) from None
        return with_dbname(admin_url, name)

    def drop(self, admin_url: str, name: str) -> None:
        """Drop a scratch database the guardian created (prefix and ledger both required)."""
        if not name.startswith(PREFIX) or name not in self.ledger.names():
            raise DrillRefused(f"refusing to drop {name!r}: not a scratch database this guardian created")
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise GuardianError(REDACTOR(f"cannot drop scratch database {name}: {str(exc).strip()}")) from None
        self.ledger.remove(name)

    def sweep(self) -> list[str]:
        """Drop every scratch database left on the ledger by a crash; returns their names."""
        names = [n for n in self.ledger.names() if n.startswith(PREFIX)]
        if not names:
            return []
        dropped = []
        with self.session() as admin:
            for name in names:
                with contextlib.suppress(GuardianError):
                    self.drop(admin, name)
                    dropped.append(name)
        return dropped

    def prove_not_production(self, admin_url: str, production_url: str | None, allow_unproven: bool = False) -> str:
        """Refuse unless the scratch server is provably another server. Returns how it was proven."""
        if production_url is None:
            if self.embedded:
                return "scratch is a local cluster the guardian started for this drill"
            if not allow_unproven:
                raise DrillRefused("cannot prove the scratch server is not production: this database has no "
                                   "production URL to compare with (set the database's url, or "
                                   "drill.allow_unproven_scratch: true to accept the configured scratch server)")
            return "production URL unknown; scratch server accepted by drill.allow_unproven_scratch"
        try:
            prod = system_identifier(production_url)
        except GuardianError as exc:
            raise DrillRefused(f"cannot prove the scratch server is not production: {exc}") from None
        scratch = system_identifier(admin_url)
        if prod == scratch:
            raise DrillRefused("the scratch server IS the production server (same system_identifier "
                               f"{prod}): refusing to restore into it")
        return f"system_identifier {scratch} differs from production's {prod}"
