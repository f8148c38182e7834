"""A compliance export's files: each table of a restored scratch database copied out as gzip CSV (COPY ... TO
STDOUT WITH CSV HEADER, streamed through gzip into a file chunk by chunk, so memory stays flat), and the manifest
that lists them (table, rows, bytes, sha256 of the stored object) with the backup they come from.

The connection given here must be to the scratch database the backup was restored into, never production: the
caller (the guarded action) restores and proves the scratch server first.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from loguru import logger
from psycopg import sql

from actions.audit import person
from actions.drill.outcome import TABLE, CheckResult, DrillRun
from actions.drill.run import DrillRunner
from actions.guards import Decision, Intent
from actions.pipeline import COMPLIANCE_EXPORT, Pipeline
from actions.runner import Outcome
from daemon import __version__
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.postgres.scratch import ScratchTarget
from daemon.adapters.statestore import StateStore
from daemon.config import DatabaseConfig
from daemon.config.compliance import CADENCES
from daemon.core.errors import GuardianError, one_line
from daemon.core.names import parse_table
from daemon.core.policy import CompliancePolicy
from daemon.core.snapshot import DatabaseState, StateHolder

#: Where a database's compliance exports live beside its backups (the archive's prune never lists them).
PREFIX = "compliance"


@dataclass(frozen=True)
class ExportedFile:
    """One exported table: its object name, row count, compressed size and sha256 of the compressed bytes."""

    table: str
    name: str
    rows: int
    bytes: int
    sha256: str


def export_table(conn: psycopg.Connection[Any], table: str, folder: Path) -> tuple[ExportedFile, Path]:
    """COPY `table` (a TableSpec) to `folder` as gzip CSV with a header; GuardianError naming the table when the
    copy fails. The file's sha256 is of the bytes as stored."""
    spec = parse_table(table)
    name = f"{spec.schema}.{spec.name}.csv.gz".replace("/", "_")
    path = folder / name
    query = sql.SQL("COPY {}.{} TO STDOUT WITH (FORMAT csv, HEADER true)").format(
        sql.Identifier(spec.schema), sql.Identifier(spec.name))
    try:
        with conn.cursor() as cur, path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
            with cur.copy(query) as copy:
                for chunk in copy:
                    gz.write(chunk)
            rows = cur.rowcount
    except psycopg.Error as exc:
        raise GuardianError(f"compliance export of table {table}: {one_line(exc)}") from None
    return ExportedFile(table, name, rows, path.stat().st_size, _sha256(path)), path


def manifest(database: str, backup_id: str, recovery_point: datetime | None, files: list[ExportedFile],
             now: datetime) -> dict[str, Any]:
    """The export's manifest: what backup it comes from, and per file its table, rows, bytes and sha256."""
    return {"database": database, "backup_id": backup_id,
            "recovery_point": recovery_point.isoformat() if recovery_point else None,
            "guardian_version": __version__, "exported_at": now.isoformat(),
            "files": [asdict(f) for f in files]}


def store_export(store: ArchiveStore, database: str, stamp: str, files: list[tuple[ExportedFile, Path]],
                 doc: dict[str, Any]) -> list[str]:
    """Write the files, then the manifest (last: an export without its manifest is incomplete), under
    `compliance/<stamp>/` beside the database's backups. Returns where each object went."""
    where = [store.put_file(database, f"{PREFIX}/{stamp}/{f.name}", path, "application/gzip")  # streamed
             for f, path in files]
    where.append(store.put_blob(database, f"{PREFIX}/{stamp}/manifest.json",
                                json.dumps(doc, indent=2, sort_keys=True).encode(), "application/json"))
    return where


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


class ComplianceRunner(DrillRunner):
    """The drill's course unchanged (newest good backup downloaded and verified, scratch server proven not to be
    production on the connections that create and drop, the configured tables restored as the table drill
    does, the scratch database always dropped); inside the restored database it exports instead of checking.
    Production receives only the identity check of that safety."""

    _folder: Path
    _files: list[ExportedFile]

    def export(self, db: DatabaseConfig, state: DatabaseState, folder: Path) -> tuple[DrillRun, list[ExportedFile]]:
        """Export `db.compliance.tables` of the newest good backup into `folder`; the run says whether it
        succeeded and why not. GuardianError when the database has no compliance section."""
        if db.compliance is None:
            raise GuardianError(f"{db.name}: no compliance section is configured")
        self._folder, self._files = folder, []
        tables = db.drill.model_copy(update={"tables": list(db.compliance.tables)})
        run = self.run(db.model_copy(update={"drill": tables}), state, TABLE)
        return run, list(self._files)

    def inside(self, db: DatabaseConfig, run: DrillRun, target: ScratchTarget, name: str,
               production_url: str | None) -> list[CheckResult]:
        results = [CheckResult(f"table {t}", False, "not in the backup") for t in run.not_in_dump]
        missing = {str(t) for t in run.not_in_dump}
        with target.connect(name) as conn:
            for table in db.drill.tables:
                if str(parse_table(table)) in missing:
                    continue
                exported, _ = export_table(conn, table, self._folder)
                self._files.append(exported)
                results.append(CheckResult(f"table {parse_table(table)}", True, f"{exported.rows} rows exported"))
        return results


#: Where the last export of a database is remembered (the state store's key-value table), for the finding.
LAST_KEY = "compliance.last."


@dataclass(frozen=True)
class ExportResult:
    """One requested export: whether it ran and succeeded, why not, its files and where the manifest went."""

    ok: bool
    reason: str
    files: tuple[ExportedFile, ...] = ()
    manifest_at: str | None = None
    skipped: bool = False


class ComplianceService:
    """Runs a database's compliance export through the guarded action path (`COMPLIANCE_EXPORT`: paused with
    every other change, leader only, single flight, audited) and remembers the last one in the state store."""

    def __init__(self, databases: dict[str, DatabaseConfig], runner: ComplianceRunner, pipeline: Pipeline,
                 holder: StateHolder, store: ArchiveStore | None, ledger: StateStore,
                 clock: Callable[[], datetime]) -> None:
        self.databases, self.runner, self.pipeline, self.holder = databases, runner, pipeline, holder
        self.store, self.ledger, self.clock = store, ledger, clock
        self._last: dict[str, dict[str, Any]] = {}
        for name, db in databases.items():  # read once here: the evaluation that asks `policy` does no I/O
            if db.compliance is not None:
                try:
                    self._last[name] = ledger.get(LAST_KEY + name) or {}
                except GuardianError as exc:
                    logger.warning("the last compliance export of {} cannot be read: {}", name, exc)

    def policy(self, db: DatabaseConfig, since: datetime | None) -> CompliancePolicy | None:
        """What the compliance_export_overdue check needs: the cadence, the grace (drill.overdue_grace: the
        export is a table drill that exports), and the last export (None without a compliance section)."""
        if db.compliance is None:
            return None
        last = self._last.get(db.name) or {}

        def at(key: str) -> datetime | None:
            return datetime.fromisoformat(last[key]) if last.get(key) else None

        tables = tuple((t, int(v["rows"]), int(v["bytes"])) for t, v in (last.get("tables") or {}).items())
        return CompliancePolicy(timedelta(days=CADENCES[db.compliance.every]), db.drill.overdue_grace, since,
                                at("at"), last.get("ok"), str(last.get("reason") or ""), at("good_at"), tables)

    def export(self, name: str, manual: bool = False) -> ExportResult:
        """Export `name` now. Never raises for a failed export: the result (and the audit) says why."""
        db = self.databases.get(name)
        if db is None or db.compliance is None:
            return ExportResult(False, f"{name}: no compliance section is configured", skipped=True)
        if self.store is None:
            return ExportResult(False, f"{name}: a compliance export needs an archive to write to", skipped=True)
        results: list[ExportResult] = []

        def work(_id: int) -> Outcome:
            result = self._export(db)
            results.append(result)
            details = {"manifest": result.manifest_at, "tables": {f.table: f.rows for f in result.files}}
            return Outcome(result.ok, result.reason, details, skipped=result.skipped)

        intent = Intent(COMPLIANCE_EXPORT.name, name, "compliance export", manual=manual,
                        requested_by=person() if manual else None)
        outcome = self.pipeline.run_held(COMPLIANCE_EXPORT, intent, work, unlocked_ok=False)
        if isinstance(outcome, Decision):
            return ExportResult(False, outcome.reason, skipped=True)
        if outcome is None or not results:
            return ExportResult(False, f"a compliance export of {name} is running in another process", skipped=True)
        return results[0]

    def _export(self, db: DatabaseConfig) -> ExportResult:
        assert self.store is not None
        now = self.clock()
        folder_root = self.runner.state_dir / "compliance" / "tmp"
        folder_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="export-", dir=folder_root) as tmp:
            state = self.holder.current().databases[db.name]
            run, files = self.runner.export(db, state, Path(tmp))
            failed = "; ".join(f"{c.name}: {c.detail}" for c in run.checks if not c.ok)
            if run.skipped or not run.succeeded or run.backup is None:
                result = ExportResult(False, failed or run.reason or "the export did not run", skipped=run.skipped)
            else:
                doc = manifest(db.name, run.backup.backup_id, run.backup.recovery_point, files, now)
                try:
                    where = store_export(self.store, db.name, f"{now:%Y%m%dT%H%M%SZ}",
                                         [(f, Path(tmp) / f.name) for f in files], doc)
                    result = ExportResult(True, f"{len(files)} table(s) exported from backup {run.backup.backup_id}",
                                          tuple(files), where[-1])
                except GuardianError as exc:
                    result = ExportResult(False, f"the archive refused the export: {exc}")
        if not result.skipped:
            self._remember(db.name, now, result)
        return result

    def _remember(self, name: str, at: datetime, result: ExportResult) -> None:
        """The last export (and the last good one) in the state store, for the finding and the metrics."""
        key = LAST_KEY + name
        last = dict(self._last.get(name) or {})
        try:
            last.update({"at": at.isoformat(), "ok": result.ok, "reason": result.reason})
            if result.ok:
                last.update({"good_at": at.isoformat(), "manifest": result.manifest_at,
                             "tables": {f.table: {"rows": f.rows, "bytes": f.bytes} for f in result.files}})
            self._last[name] = last  # the finding sees it even when the store cannot keep it
            self.ledger.put(key, last)
        except GuardianError as exc:  # the export itself stands; only its remembrance is lost
            logger.warning("the compliance export of {} is not remembered: {}", name, exc)
