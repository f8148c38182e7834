"""The scratch server drills restore into, and the rules that keep production safe from it.

- The scratch server is a configured PostgreSQL URL (a role allowed to CREATE DATABASE) or, by default, a
  throwaway local cluster the guardian starts under its state directory for the drill and stops after it.
- It is one `ScratchTarget`: the URL is parsed once, anything that lets libpq pick among several servers
  (several hosts, `load_balance_hosts`, `target_session_attrs`, a service file, no host at all so PGHOST
  decides) is refused, and the host name is resolved once to one address pinned as `hostaddr`. Every
  connection that checks, creates, restores into or drops uses exactly that address and port; pg_restore gets
  the same pinned conninfo and an environment without the PG* variables that could move it.
- It must provably not be production: on the very connection that runs `CREATE DATABASE` or `DROP DATABASE`,
  immediately before it, `pg_control_system()` gives the server's `system_identifier`, which must differ from
  every watched production database's.
- Every scratch database is recorded in the state store's ledger (keyed by the scratch server's identity)
  before it is created, and carries a marker written at creation (a random token in `COMMENT ON DATABASE`,
  the same token in the ledger). Nothing is dropped unless the server's identity and the marker both match.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from loguru import logger
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from daemon.adapters.postgres.cluster import LocalCluster, cluster_in
from daemon.adapters.statestore import ScratchEntry, StateStore
from daemon.core.errors import GuardianError, one_line
from daemon.core.redact import REDACTOR

PREFIX = "guardian_drill_"
MARKER = "pg-backup-guardian scratch database "
#: Environment variables that could send pg_restore somewhere else than its pinned conninfo says.
MOVING_ENV = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGSERVICEFILE", "PGTARGETSESSIONATTRS",
              "PGLOADBALANCEHOSTS")
DEFAULT_PORT = "5432"


class DrillRefused(GuardianError):
    """The drill must not run (the scratch server could be production, a version it cannot restore, ...)."""


def scratch_url_problem(url: str) -> str | None:
    """Why `url` cannot be a scratch target (a sentence without the URL or its password), or None.

    One server only: libpq may otherwise choose a different server for each connection of one drill."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "is not a valid PostgreSQL URL"
    for key in ("host", "hostaddr", "port"):
        if "," in str(params.get(key) or ""):
            return (f"names several servers ({key} has a comma): a scratch server must be one host and port, so "
                    "that every connection of a drill reaches the same server")
    if params.get("load_balance_hosts") is not None:
        return "sets load_balance_hosts: a scratch server must be one host and port"
    if str(params.get("target_session_attrs") or "any") != "any":
        return "sets target_session_attrs: a scratch server must be one host and port, chosen by the URL alone"
    if params.get("service") is not None or params.get("servicefile") is not None:
        return "uses a connection service file: give the scratch server's host and port in the URL itself"
    if not params.get("host") and not params.get("hostaddr"):
        return ("names no host (libpq would take it from PGHOST, which may list several servers): give the "
                "scratch server's host in the URL")
    return None


@dataclass(frozen=True)
class ScratchTarget:
    """One scratch server, resolved once: `params` are the libpq parameters with host, hostaddr and port pinned
    (hostaddr is empty for a unix-socket directory, so PGHOSTADDR cannot apply). `where` names it in messages
    (host and port, never the password)."""

    params: tuple[tuple[str, str], ...]
    where: str
    embedded: bool = False

    @classmethod
    def from_url(cls, url: str, embedded: bool = False) -> ScratchTarget:
        """Parse, check and resolve `url`; DrillRefused when it is not one server or its host cannot be resolved."""
        problem = scratch_url_problem(url)
        if problem is not None:
            raise DrillRefused(f"drill.scratch_url {problem}")
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
        host, port = params.get("host", ""), params.get("port") or DEFAULT_PORT
        params["port"] = port
        if host.startswith(("/", "@")):  # a unix-socket directory (or abstract socket) is one server already
            params["hostaddr"] = ""
        elif not params.get("hostaddr"):
            params["hostaddr"] = _resolve_one(host, port)
        return cls(tuple(sorted(params.items())), f"{host or params['hostaddr']}:{port}", embedded)

    def conninfo(self, dbname: str, with_password: bool = True) -> str:
        """The pinned conninfo for database `dbname`."""
        params = {k: v for k, v in self.params if with_password or k != "password"}
        return make_conninfo(**{**params, "dbname": dbname})

    def connect(self, dbname: str = "postgres", timeout: float = 10) -> psycopg.Connection[Any]:
        """An autocommit connection to `dbname` on the pinned server; GuardianError (no password) when it fails."""
        try:
            return psycopg.connect(self.conninfo(dbname), autocommit=True, connect_timeout=max(1, int(timeout)))
        except psycopg.Error as exc:
            raise GuardianError(REDACTOR(f"cannot connect to the scratch server {self.where}: "
                                         f"{one_line(exc)}")) from None

    def restore_env(self) -> dict[str, str]:
        """The environment for pg_restore: the password in PGPASSWORD, none of the variables that move it."""
        env = {k: v for k, v in os.environ.items() if k not in MOVING_ENV}
        password = dict(self.params).get("password")
        if password:
            env["PGPASSWORD"] = password
        return env

    def identity(self, conn: psycopg.Connection[Any]) -> int:
        """The `system_identifier` of the server `conn` is connected to, after checking that `conn` reached this
        target's pinned address and port (DrillRefused otherwise)."""
        info, pinned = conn.info, dict(self.params)
        landed = (str(info.port) == pinned["port"] and
                  (info.hostaddr == pinned["hostaddr"] if pinned["hostaddr"] else info.host == pinned["host"]))
        if not landed:
            raise DrillRefused(f"a connection to the scratch server {self.where} reached another server: refused")
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        assert row is not None
        return int(row[0])


def _resolve_one(host: str, port: str) -> str:
    """The first address of `host` (libpq's own first choice), resolved once for a whole drill."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DrillRefused(f"cannot resolve the scratch host {host!r}: {exc}") from None
    if not infos:
        raise DrillRefused(f"cannot resolve the scratch host {host!r}")
    return str(infos[0][4][0])


def system_identifier(url: str, timeout: float = 10) -> int:
    """A production server's unique identifier (pg_control_system()); GuardianError when unreachable."""
    try:
        with psycopg.connect(url, connect_timeout=max(1, int(timeout)), autocommit=True) as conn:
            row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    except psycopg.Error as exc:
        raise GuardianError(REDACTOR(f"cannot read the server's identity: {one_line(exc)}")) from None
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class Production:
    """The identities of the watched production servers that could be read, and the databases whose could not."""

    identities: frozenset[int]
    unreadable: tuple[str, ...]

    @classmethod
    def read(cls, urls: Iterable[tuple[str, str]], timeout: float = 10) -> Production:
        """Read `system_identifier` of every (name, url) pair."""
        ids, bad = set(), []
        for name, url in urls:
            try:
                ids.add(system_identifier(url, timeout))
            except GuardianError:
                bad.append(name)
        return cls(frozenset(ids), tuple(bad))

    def require(self, target: ScratchTarget, allow_unproven: bool, has_url: bool = True) -> None:
        """Fail closed (DrillRefused) when the comparison is incomplete, unless the operator accepted that
        (`allow_unproven`). The embedded cluster was created by the guardian under its own state directory, so
        it is another server by construction; it is still compared with every identity that could be read."""
        if target.embedded or allow_unproven:
            return
        if not has_url:
            raise DrillRefused("cannot prove the scratch server is not production: this database has no "
                               "production URL to compare with (set the database's url, or "
                               "drill.allow_unproven_scratch: true to accept the configured scratch server)")
        if self.unreadable:
            raise DrillRefused("cannot prove the scratch server is not production: cannot read the identity of "
                               f"{', '.join(self.unreadable)} (drill.allow_unproven_scratch: true accepts that)")

    def prove(self, target: ScratchTarget, conn: psycopg.Connection[Any]) -> int:
        """The scratch server's identity, read on `conn`; DrillRefused when it is a production server's."""
        scratch = target.identity(conn)
        if scratch in self.identities:
            raise DrillRefused(f"the scratch server {target.where} IS the production server (same "
                               f"system_identifier {scratch}): refusing to restore into it or drop from it")
        return scratch


class ScratchServer:
    """Where drills restore: a configured URL or the embedded cluster. `session()` yields its `ScratchTarget`
    (starting the embedded cluster if needed, stopping it afterwards)."""

    def __init__(self, state_dir: Path, url: str | None = None) -> None:
        self.url = url
        self.state_dir = state_dir

    @property
    def embedded(self) -> bool:
        return self.url is None

    def embedded_cluster(self) -> LocalCluster:
        return cluster_in(self.state_dir, "drill-pg")

    @contextlib.contextmanager
    def session(self) -> Iterator[ScratchTarget]:
        if self.url is not None:
            yield ScratchTarget.from_url(self.url)
            return
        cluster = self.embedded_cluster()
        if not cluster.initialized:
            cluster.init()
        cluster.start()
        try:
            yield ScratchTarget.from_url(cluster.url("postgres"), embedded=True)
        finally:
            cluster.stop()

    @staticmethod
    def new_name(now: datetime) -> str:
        return f"{PREFIX}{now.astimezone(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"


def create(target: ScratchTarget, production: Production, ledger: StateStore, database: str, name: str,
           now: datetime) -> tuple[ScratchEntry, str]:
    """Prove the target on the connection that creates, record the database in the ledger, create it with its
    marker. Returns the ledger entry and how the target was proven. DrillRefused / GuardianError otherwise."""
    if not name.startswith(PREFIX):
        raise DrillRefused(f"refusing to create {name!r}: scratch names start with {PREFIX}")
    with target.connect() as conn:
        server = production.prove(target, conn)
        entry = ScratchEntry(str(server), name, secrets.token_hex(16), database, now)
        ledger.add_scratch(entry)
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            ledger.remove_scratch(entry.server_id, name)
            raise GuardianError(REDACTOR(f"cannot create the scratch database: {one_line(exc)}")) from None
        try:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(MARKER + entry.token)))
        except psycopg.Error as exc:  # created a moment ago on this very session: ours without a doubt
            dropped = False
            with contextlib.suppress(psycopg.Error):
                conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                dropped = True
            if dropped:  # else the entry stays, and the sweep reports the unmarked database it cannot prove
                with contextlib.suppress(GuardianError):  # never hide the error below behind the store's
                    ledger.remove_scratch(entry.server_id, name)
            raise GuardianError(REDACTOR(f"cannot mark the scratch database: {one_line(exc)}")) from None
    how = (f"system_identifier {server} of scratch {target.where} differs from production's "
           f"({len(production.identities)} watched server(s) compared)")
    return entry, how


def drop(target: ScratchTarget, production: Production, ledger: StateStore, entry: ScratchEntry) -> str:
    """Drop a recorded scratch database, proving on the dropping connection, immediately before, that the
    server is the recorded one and not production and that the database carries the recorded marker. Ends its
    sessions first. Removes the ledger entry only after the drop (or when the database provably is gone).
    Returns what happened; DrillRefused when the proof fails (the entry stays), GuardianError when unreachable."""
    if not entry.name.startswith(PREFIX):
        raise DrillRefused(f"refusing to drop {entry.name!r}: scratch names start with {PREFIX}")
    with target.connect() as conn:
        server = production.prove(target, conn)
        if str(server) != entry.server_id:
            raise DrillRefused(f"refusing to drop {entry.name}: {target.where} is server {server}, the ledger "
                               f"recorded it on server {entry.server_id}")
        ident = sql.Identifier(entry.name)
        try:
            rows = conn.execute(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (entry.name,)).fetchall()
            if not rows:
                ledger.remove_scratch(entry.server_id, entry.name)
                return "already gone"
            if rows[0][0] != MARKER + entry.token:
                raise DrillRefused(f"refusing to drop {entry.name}: it does not carry the marker this guardian "
                                   "wrote when it created it")
            conn.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident))
            ended = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid()", (entry.name,)).fetchone()
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
        except psycopg.Error as exc:
            raise GuardianError(REDACTOR(f"cannot drop scratch database {entry.name}: {one_line(exc)}")) \
                from None
    ledger.remove_scratch(entry.server_id, entry.name)
    sessions = int(ended[0]) if ended else 0
    logger.debug("dropped scratch database {} on {} ({} session(s) ended first)", entry.name, target.where, sessions)
    return f"dropped ({sessions} session(s) ended first)" if sessions else "dropped"
