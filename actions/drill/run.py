"""Restore drills: restore the newest good backup into a scratch database, check it, time it, report it.

Scenarios (the RTO table of the SuoOps backup and recovery procedures): `database_corruption` is the full
drill, `accidental_deletion` the table drill (only the configured critical tables, as scenario 2 of those
procedures does for invoices with `pg_restore -t`: their entries chosen by exact name into a
`pg_restore --use-list`, their schemas created first).
Phases are timed: download (streamed to a temp file), verify (sha256 and the readability check), restore,
checks; the recovery time is download + restore + checks, wall clock, compared with the scenario's RTO.
One drill at a time; a timeout; killable on shutdown; the scratch database is always dropped. The scratch
target is proven not to be production on the connections that create and drop
(daemon.adapters.postgres.scratch); pg_restore
dies with the guardian (daemon.adapters.processes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from loguru import logger
from psycopg import sql

from actions.drill.sweep import SweepReport, sweep
from collectors.heroku import require_transfer_num
from daemon.adapters.archive.download import Download
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.heroku import HerokuAPI
from daemon.adapters.postgres import scratch as scratchdb
from daemon.adapters.postgres.scratch import DrillRefused, Production, ScratchServer, ScratchTarget
from daemon.adapters.postgres.toc import Toc, TocEntry, explain, match_tables, read_toc, table_entries
from daemon.adapters.postgres.tools import ProcessRegistry, find_tool, kill_group, tool_version
from daemon.adapters.processes import GroupReaper, describe, die_with_parent
from daemon.adapters.statestore import ScratchEntry, StateStore
from daemon.config import DatabaseConfig
from daemon.core.errors import GuardianError
from daemon.core.names import TableName, parse_column, parse_table, shown_text
from daemon.core.redact import REDACTOR
from daemon.core.snapshot import Backup, DatabaseState, DrillResult

FULL, TABLE = "database_corruption", "accidental_deletion"
SCENARIOS = {"full": FULL, "table": TABLE}
Progress = Callable[[str, int, int | None], None]  # phase, bytes done, bytes total


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class DrillRun:
    """Everything one drill learned; becomes the report and a `DrillResult`."""

    database: str
    scenario: str
    started_at: datetime
    backup: Backup | None = None
    source: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    succeeded: bool = False
    skipped: bool = False  # did not run (busy, shutting down): not a drill result, never a failure
    stopped: bool = False  # of the skipped ones: stopped by the shutdown (its history record says interrupted)
    reason: str = ""
    dump_bytes: int = 0
    toc: Toc | None = None
    scratch: str = ""
    safety: str = ""
    rto_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    not_in_dump: list[TableName] = field(default_factory=list)  # critical tables the backup does not hold

    @property
    def recovery_seconds(self) -> float:
        return sum(self.phases.get(p, 0.0) for p in ("download", "restore", "checks"))


class DrillRunner:
    """Runs drills for the guardian. `run()` never raises for a failed drill: the failure is the result."""

    def __init__(self, store: ArchiveStore | None, heroku: HerokuAPI | None, state_dir: Path,
                 processes: ProcessRegistry, ledger: StateStore, watched: Sequence[DatabaseConfig],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`ledger` records scratch databases; `watched` are every configured database: those with a url are
        the production servers no scratch target may be."""
        self.store = store
        self.heroku = heroku
        self.state_dir = state_dir
        self.processes = processes
        self.ledger = ledger
        self.watched = list(watched)
        self.clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release: every download opens and closes its own connection."""

    def sweep_downloads(self) -> int:
        """Remove downloads a killed drill left behind (at start, when no drill runs)."""
        removed = 0
        for folder in (self.state_dir / "drills" / "tmp").glob("download-*"):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed

    def scratch_for(self, db: DatabaseConfig) -> ScratchServer:
        url = db.drill.scratch_url.get_secret_value() if db.drill.scratch_url is not None else None
        return ScratchServer(self.state_dir, url)

    def sweep_scratch(self) -> SweepReport:
        """Sweep the scratch databases on the ledger (the caller holds the drill lock): every configured scratch
        server once, then the embedded cluster."""
        servers: dict[str | None, ScratchServer] = {}
        for db in self.watched:
            server = self.scratch_for(db)
            servers.setdefault(server.url, server)
        embedded = servers.pop(None, None) or ScratchServer(self.state_dir)
        configs = {d.name: d for d in self.watched}

        def rules(name: str) -> tuple[bool, bool] | None:
            db = configs.get(name)
            return None if db is None else (db.drill.allow_unproven_scratch, db.url is not None)

        return sweep(self.ledger, [*servers.values(), embedded], self.production(), rules)

    def production(self, timeout: float = 10) -> Production:
        """The identities of every watched production server (read now)."""
        return Production.read(((d.name, d.url.get_secret_value()) for d in self.watched if d.url is not None),
                               timeout)

    # -- the drill ----------------------------------------------------------------------------------------
    def run(self, db: DatabaseConfig, state: DatabaseState, scenario: str, billing_app: str | None = None,
            progress: Progress | None = None) -> DrillRun:
        run = DrillRun(database=db.name, scenario=scenario, started_at=self.clock())
        run.rto_seconds = getattr(db.objectives.rto, scenario).total_seconds()
        if not self._lock.acquire(blocking=False):
            run.skipped, run.reason = True, "another drill is running in this guardian (one at a time)"
            return run
        try:
            with drill_lock(self.state_dir):  # also across processes: the daemon and `backup-guardian drill`
                self._run(db, state, run, billing_app, progress or (lambda *_: None))
        except DrillBusy as exc:
            run.skipped, run.reason = True, str(exc)
        except GuardianError as exc:
            run.reason = REDACTOR(str(exc))
            run.skipped = run.stopped = self.processes.closing.is_set()  # not a verdict on the backup
        except Exception as exc:  # a drill must never take the daemon down; the report says what happened
            logger.opt(exception=exc).error("drill of {} crashed", db.name)
            run.reason = REDACTOR(f"{type(exc).__name__}: {exc}")
        finally:
            self._lock.release()
        if run.skipped:
            logger.info("{} drill of {} skipped: {}", scenario, db.name, run.reason)
            return run
        level = "INFO" if run.succeeded else "ERROR"
        logger.log(level, "{} drill of {}: {} (recovery {:.1f}s, RTO {:.0f}s){}", scenario, db.name,
                   "succeeded" if run.succeeded else "FAILED", run.recovery_seconds, run.rto_seconds or 0,
                   "" if run.succeeded else f": {run.reason}")
        return run

    def _run(self, db: DatabaseConfig, state: DatabaseState, run: DrillRun, billing_app: str | None,
             progress: Progress) -> None:
        if run.scenario == TABLE and not db.drill.tables:
            raise DrillRefused("no critical tables configured for the table drill (drill.tables)")
        backup, source = self._pick(state)
        run.backup, run.source = backup, source
        deadline = time.monotonic() + db.drill.timeout.total_seconds()
        downloads = self.state_dir / "drills" / "tmp"  # not /tmp: a killed drill's download is swept at start
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=downloads) as tmp:
            dump = Path(tmp) / "drill.dump"
            t0 = time.monotonic()
            self._fetch(db, backup, source, billing_app, dump, progress, deadline)
            run.phases["download"] = time.monotonic() - t0
            run.dump_bytes = dump.stat().st_size
            t0 = time.monotonic()
            self._verify(backup, dump, run)
            run.phases["verify"] = time.monotonic() - t0
            self._in_scratch(db, run, dump, deadline, progress)
        failed = [c for c in run.checks if not c.ok]
        run.succeeded = not failed
        run.reason = "all checks passed" if not failed else "failed checks: " + ", ".join(c.name for c in failed)

    def _in_scratch(self, db: DatabaseConfig, run: DrillRun, dump: Path, deadline: float,
                    progress: Progress) -> None:
        """Create a proven scratch database, restore and check it, and always drop it (proven again)."""
        production_url = db.url.get_secret_value() if db.url is not None else None
        with self.scratch_for(db).session() as target:
            production = self.production(db.connect_timeout.total_seconds())
            production.require(target, db.drill.allow_unproven_scratch, has_url=production_url is not None)
            self._version_gate(target, run)
            name = ScratchServer.new_name(self.clock())
            entry, run.safety = scratchdb.create(target, production, self.ledger, db.name, name, self.clock())
            run.scratch = name
            try:
                t0 = time.monotonic()
                progress("restore", 0, None)
                self._restore(db, run, dump, target, entry, deadline)
                run.phases["restore"] = time.monotonic() - t0
                t0 = time.monotonic()
                progress("checks", 0, None)
                run.checks = run_checks(db, run, target, name, production_url)
                run.phases["checks"] = time.monotonic() - t0
            finally:
                t0 = time.monotonic()
                try:
                    scratchdb.drop(target, production, self.ledger, entry)
                except GuardianError as exc:  # never hide the drill's own error behind this one
                    run.notes.append(f"the scratch database was not dropped ({exc}); the next start sweeps it")
                run.phases["drop"] = time.monotonic() - t0

    def _pick(self, state: DatabaseState) -> tuple[Backup, str]:
        """The newest good backup: an archive copy (whose sha256 is known) wins a tie with the provider."""
        candidates = []
        for name, src in state.sources.items():
            b = src.newest_good
            if b is not None and (name == "archive" or (name == "heroku" and self.heroku is not None)):
                candidates.append((b.recovery_point, name == "archive", b, name))
        if not candidates:
            raise GuardianError("no good backup to drill")
        _, _, backup, source = max(candidates, key=lambda c: (c[0], c[1]))
        return backup, source

    def _fetch(self, db: DatabaseConfig, backup: Backup, source: str, billing_app: str | None, dump: Path,
               progress: Progress, deadline: float) -> None:
        if source == "archive":
            assert self.store is not None
            chunks = self.store.open_dump(db.name, backup.backup_id)
            total = backup.size_bytes or None
        else:
            assert self.heroku is not None and billing_app is not None
            url = str(self.heroku.public_url(billing_app, require_transfer_num(backup.backup_id))["url"])
            chunks = self._download(url)
            total = backup.size_bytes or None
        done = 0
        with contextlib.closing(chunks), dump.open("wb") as fh:  # type: ignore[type-var]
            for chunk in chunks:
                if time.monotonic() > deadline:
                    raise GuardianError("the drill ran past its timeout while downloading")
                if self.processes.closing.is_set():
                    raise GuardianError("the drill was stopped because the guardian is shutting down")
                fh.write(chunk)
                done += len(chunk)
                progress("download", done, total)

    def stream(self, url: str) -> Iterator[bytes]:
        """A signed URL's bytes in chunks; raises GuardianError on HTTP errors."""
        return self._download(url)

    def _download(self, url: str) -> Iterator[bytes]:
        with Download(url, timeout=60.0) as body:  # DownloadError is a GuardianError that names only the host
            if body.status != 200:
                raise GuardianError(f"download failed: HTTP {body.status}")
            yield from body.chunks(1 << 20)

    def _verify(self, backup: Backup, dump: Path, run: DrillRun) -> None:
        if backup.sha256:
            sha = hashlib.sha256()
            with dump.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
            if sha.hexdigest() != backup.sha256:
                raise GuardianError(f"sha256 mismatch: the archive says {backup.sha256[:12]}, the download is "
                                    f"{sha.hexdigest()[:12]}")
            run.notes.append("sha256 verified against the archive record")
        run.toc = read_toc(dump)
        if not run.toc.ok:
            raise GuardianError(f"the dump is not readable: {run.toc.error}")

    def _version_gate(self, target: ScratchTarget, run: DrillRun) -> None:
        """Plain words when the dump cannot restore here: a newer dump than pg_restore, or than the server."""
        toc = run.toc
        if toc is None or not toc.dumped_from:
            return
        try:
            dump_major = int(toc.dumped_from.split(".")[0].split()[0])
        except ValueError:
            return
        with target.connect() as conn:
            scratch_major = conn.info.server_version // 10000
        if dump_major > scratch_major:
            run.notes.append(f"the dump comes from PostgreSQL {dump_major}; the scratch server runs "
                             f"{scratch_major}: some objects may not restore")
        tool = tool_version("pg_restore")
        try:
            tool_major = int(tool.split()[-1].split(".")[0]) if tool.split() else 0
        except ValueError:
            tool_major = 0
        if tool_major and dump_major > tool_major:
            raise DrillRefused(f"the dump comes from PostgreSQL {dump_major} but pg_restore is {tool}: install the "
                               f"PostgreSQL {dump_major} client tools")

    def _restore(self, db: DatabaseConfig, run: DrillRun, dump: Path, target: ScratchTarget, entry: ScratchEntry,
                 deadline: float) -> None:
        """pg_restore into the scratch database on the pinned target. It runs in its own process group (shutdown
        kills the group) and dies with the guardian (childguard); its pid is on the ledger for the sweep."""
        args = [find_tool("pg_restore"), f"--jobs={db.drill.jobs}", "--no-owner", "--no-privileges",
                "--exit-on-error", f"--dbname={target.conninfo(entry.name, with_password=False)}"]
        if run.scenario == TABLE:
            args.append(f"--use-list={self._table_list(db, run, dump, target, entry.name, deadline)}")
        args.append(str(dump))
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=target.restore_env(),
                                    start_new_session=True, preexec_fn=die_with_parent())
            reaper = GroupReaper(proc.pid)
            self.processes.add(proc)
            try:
                self._record_process(entry, describe(proc.pid))
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_group(proc)
                proc.wait()
                raise GuardianError("the drill ran past its timeout; pg_restore was stopped") from None
            finally:
                self.processes.discard(proc)
                reaper.release()
                self._record_process(entry, None)
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        if proc.returncode != 0:
            if self.processes.closing.is_set():
                raise GuardianError("the drill was stopped because the guardian is shutting down")
            raise GuardianError(f"pg_restore failed: {explain(stderr)}")

    def _table_list(self, db: DatabaseConfig, run: DrillRun, dump: Path, target: ScratchTarget, dbname: str,
                    deadline: float) -> Path:
        """The table drill's restore list (next to the dump): the TABLE and TABLE DATA entries of each critical
        table, as pg_restore selects them by exact schema and name. The schemas of those tables are created
        first in the scratch database (pg_restore creates no schema for a table it restores alone), so a table
        outside public restores like one inside it. Tables the dump lacks go to `run.not_in_dump`."""
        tables = critical_tables(db)
        lines, run.not_in_dump = table_entries(dump, tables, timeout=max(1.0, deadline - time.monotonic()))
        schemas = sorted({t.schema for t in tables if t not in run.not_in_dump})
        with target.connect(dbname) as conn:  # the pinned scratch server, like every drill connection
            present = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
                                                  (schemas,))}
            for schema in schemas:
                if schema not in present:
                    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        listfile = dump.with_name("tables.list")
        listfile.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        return listfile

    def _record_process(self, entry: ScratchEntry, process: dict[str, Any] | None) -> None:
        """Note on the ledger which process restores into `entry` (the sweep kills it if it outlives us)."""
        try:
            self.ledger.set_scratch_process(entry.server_id, entry.name, process)
        except GuardianError as exc:  # the restore is still tied to our life (childguard): only log it
            logger.warning("the restoring process is not on the scratch ledger: {}", exc)


class DrillBusy(GuardianError):
    """Another process of this guardian (the daemon, or `backup-guardian drill`) is drilling."""


@contextlib.contextmanager
def drill_lock(state_dir: Path) -> Iterator[None]:
    """One drill (or scratch sweep) at a time across processes sharing the state directory."""
    path = state_dir / "drills" / "drill.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DrillBusy("another drill is running (the daemon or a `backup-guardian drill`)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- smoke checks --------------------------------------------------------------------------------------------

def run_checks(db: DatabaseConfig, run: DrillRun, target: ScratchTarget, dbname: str,
               production: str | None) -> list[CheckResult]:
    """Built-in checks (tables from the dump exist, with rows where production has rows; fresh timestamps) and
    the configured ones (SQL that must be true, minimum rows, HTTP), in scratch database `dbname` on the pinned
    `target` (GuardianError, without the password, when it cannot be reached)."""
    checks = db.drill.checks
    with target.connect(dbname) as conn:
        wanted, out = _tables_in_scope(db, run, conn)
        prod_rows = _row_presence(production, wanted) if production is not None else {}
        for table in wanted:
            has_rows = _has_rows(conn, table)
            if prod_rows.get(table) and not has_rows:
                out.append(CheckResult(f"table {table} has rows", False,
                                       "empty after restore, but production has rows"))
            else:
                out.append(CheckResult(f"table {table} restored", True,
                                       "has rows" if has_rows else "exists (no rows, as in production)"
                                       if table in prod_rows else "exists"))
        for column, max_age in checks.fresh_columns.items():
            out.append(_fresh(conn, column, max_age.total_seconds(), run))
        for key, minimum in checks.min_rows.items():
            out.append(_min_rows(conn, key, minimum))
        for name, query in checks.sql.items():
            out.append(_sql_check(conn, name, query))
    for http in checks.http:
        out.append(_http_check(http.name, http.url, http.status))
    return out


def _tables_in_scope(db: DatabaseConfig, run: DrillRun, conn: psycopg.Connection[Any]
                     ) -> tuple[list[TableName], list[CheckResult]]:
    """The restored tables to check, and a failed check for each table that should be there and is not.

    Full drill: every TABLE entry of the dump, paired with a table of the restored catalog (names come from the
    catalog, exact; the listing's unquoted text only says which entry is which, see `toc.match_tables`).
    Table drill: the critical tables, looked up by exact schema and name."""
    if run.scenario == TABLE:
        wanted, missing = [], []
        for table in critical_tables(db):
            if table in run.not_in_dump:
                missing.append(CheckResult(f"table {table} restored", False, "not in the backup"))
            elif _exists(conn, table):
                wanted.append(table)
            else:
                missing.append(CheckResult(f"table {table} restored", False, "missing after restore"))
        return wanted, missing
    entries = run.toc.table_entries if run.toc is not None else ()
    if run.toc is not None and run.toc.unparsed:
        run.notes.append(f"{run.toc.unparsed} line(s) of the dump's listing were no entry (a name broken over "
                         "lines by an older pg_restore?): the tables they belong to may be reported missing")
    pairs, unmatched = match_tables(entries, _catalog_tables(conn))
    return [table for _, table in pairs], [_missing_entry(e) for e in unmatched]


def critical_tables(db: DatabaseConfig) -> list[TableName]:
    """`drill.tables` as exact names, each once (the spellings were checked when the configuration loaded)."""
    return list(dict.fromkeys(parse_table(t) for t in db.drill.tables))


def _missing_entry(entry: TocEntry) -> CheckResult:
    return CheckResult(f"table of dump entry {entry.dump_id} restored", False,
                       f"missing after restore (the dump lists it as: TABLE {shown_text(entry.text)})")


_RELATION = ("SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
             "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f'))")


def _exists(conn: psycopg.Connection[Any], table: TableName) -> bool:
    """A relation of exactly this schema and name exists (names as parameters: no quoting to get wrong)."""
    row = conn.execute(_RELATION, (table.schema, table.name)).fetchone()
    return bool(row and row[0])


def _catalog_tables(conn: psycopg.Connection[Any]) -> list[TableName]:
    """Every ordinary and partitioned table outside the system schemas, by exact name."""
    rows = conn.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' "
                        "AND n.nspname NOT LIKE 'pg\\_%'").fetchall()
    return [TableName(schema, name) for schema, name in rows]


def _has_rows(conn: psycopg.Connection[Any], table: TableName) -> bool:
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(
        sql.Identifier(table.schema, table.name))).fetchone()
    return bool(row and row[0])


def _row_presence(production: str, tables: list[TableName]) -> dict[TableName, bool]:
    """Which tables have rows in production now (read-only; unreachable production gives nothing)."""
    out = {}
    try:
        with psycopg.connect(production, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SET default_transaction_read_only = on")
            for table in tables:
                try:
                    out[table] = _has_rows(conn, table)
                except psycopg.Error:
                    continue
    except psycopg.Error:
        return {}
    return out


def _fresh(conn: psycopg.Connection[Any], column: str, max_age: float, run: DrillRun) -> CheckResult:
    name = f"newest {shown_text(column)} is fresh"
    table, col = parse_column(column)  # validated with the configuration: cannot fail here
    if not _exists(conn, table):
        return CheckResult(name, False, f"table {table} missing after restore")
    try:
        row = conn.execute(sql.SQL("SELECT max({}) FROM {}").format(
            sql.Identifier(col), sql.Identifier(table.schema, table.name))).fetchone()
    except psycopg.Error as exc:
        return CheckResult(name, False, f"cannot read: {shown_text(scratchdb.first_line(exc))}")
    newest = row[0] if row else None
    if newest is None or run.backup is None:
        return CheckResult(name, False, "no rows")
    lag = (run.backup.recovery_point - newest).total_seconds()
    ok = lag <= max_age
    return CheckResult(name, ok, f"newest {newest.isoformat()} is {lag / 3600:.1f} h before the recovery point "
                       f"(allowed {max_age / 3600:.1f} h)")


def _min_rows(conn: psycopg.Connection[Any], key: str, minimum: int) -> CheckResult:
    name = f"{shown_text(key)} has at least {minimum} rows"
    table = parse_table(key)  # validated with the configuration: cannot fail here
    if not _exists(conn, table):
        return CheckResult(name, False, f"table {table} missing after restore")
    try:
        row = conn.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) t").format(
            sql.Identifier(table.schema, table.name)), (minimum,)).fetchone()
    except psycopg.Error as exc:
        return CheckResult(name, False, f"cannot count: {shown_text(scratchdb.first_line(exc))}")
    n = int(row[0]) if row else 0
    return CheckResult(name, n >= minimum, f"{n}{'+' if n >= minimum else ''} rows")


def _sql_check(conn: psycopg.Connection[Any], name: str, query: str) -> CheckResult:
    try:
        row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        return CheckResult(name, False, f"query failed: {scratchdb.first_line(exc)}")
    value = row[0] if row else None
    return CheckResult(name, value is True, f"returned {value!r}")


def _http_check(name: str, url: str, status: int) -> CheckResult:
    try:
        resp = httpx.get(url, timeout=15.0, follow_redirects=False)
    except httpx.HTTPError as exc:
        return CheckResult(name, False, f"request failed: {type(exc).__name__}")
    return CheckResult(name, resp.status_code == status, f"HTTP {resp.status_code} (expected {status})")


def to_result(run: DrillRun, report: str | None) -> DrillResult:
    return DrillResult(
        scenario=run.scenario, started_at=run.started_at, succeeded=run.succeeded, reason=run.reason,
        recovery_seconds=run.recovery_seconds, rto_seconds=run.rto_seconds, phases=dict(run.phases),
        checks_failed=sum(1 for c in run.checks if not c.ok), backup_id=run.backup.backup_id if run.backup else None,
        report=report,
    )

