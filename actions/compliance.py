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
from urllib.parse import quote

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
from daemon.adapters.archive.s3.objects import ObjectGone, ObjectSource, SourceObject
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.postgres.scratch import ScratchTarget
from daemon.adapters.statestore import StateStore
from daemon.config import DatabaseConfig
from daemon.config.compliance import CADENCES, ComplianceObjects
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
             now: datetime, objects: dict[str, Any] | None = None) -> dict[str, Any]:
    """The export's manifest: what backup it comes from, and per file its table, rows, bytes and sha256; with
    `objects` (`copy_objects`' account), the application objects copied and those missing."""
    doc: dict[str, Any] = {"database": database, "backup_id": backup_id,
                           "recovery_point": recovery_point.isoformat() if recovery_point else None,
                           "guardian_version": __version__, "exported_at": now.isoformat(),
                           "files": [asdict(f) for f in files]}
    if objects is not None:
        doc["objects"] = objects
    return doc


def store_files(store: ArchiveStore, database: str, stamp: str,
                files: list[tuple[ExportedFile, Path]]) -> list[str]:
    """Write the exported files (streamed from disk) under `compliance/<stamp>/`; where each went."""
    return [store.put_file(database, f"{PREFIX}/{stamp}/{f.name}", path, "application/gzip") for f, path in files]


def store_manifest(store: ArchiveStore, database: str, stamp: str, doc: dict[str, Any]) -> str:
    """Write the manifest, last: an export without its manifest is incomplete. Returns where it went."""
    return store.put_blob(database, f"{PREFIX}/{stamp}/manifest.json",
                          json.dumps(doc, indent=2, sort_keys=True).encode(), "application/json")


def store_export(store: ArchiveStore, database: str, stamp: str, files: list[tuple[ExportedFile, Path]],
                 doc: dict[str, Any]) -> list[str]:
    """Write the files, then the manifest, under `compliance/<stamp>/` beside the database's backups. Returns
    where each object went (the manifest last)."""
    return [*store_files(store, database, stamp, files), store_manifest(store, database, stamp, doc)]


@dataclass(frozen=True)
class CopiedObject:
    """One application object copied into the export: its source key, its name in the export, size, sha256."""

    key: str
    name: str
    bytes: int
    sha256: str


def object_name(key: str, prefix: str) -> str:
    """The name of a copied object inside the export: its key below `prefix`, percent-encoded into one safe
    path segment (no folder can be escaped, whatever the key), under `objects/`."""
    name = quote(key.removeprefix(prefix), safe="")
    return "objects/" + (name.replace(".", "%2E") if not name.strip(".") else name)


def copy_objects(source: ObjectSource, listed: list[SourceObject], prefix: str, store: ArchiveStore,
                 database: str, stamp: str, scratch: Path) -> dict[str, Any]:
    """Copy each listed object into the export under `compliance/<stamp>/objects/`, one at a time through a
    file in `scratch` (streamed both ways, hashed on the way in: memory stays flat whatever the object size).
    An object that has vanished since the listing is named as missing, not an error. Returns the manifest's
    account: bucket, prefix, each copy (key, name, bytes, sha256) and the missing keys. Raises GuardianError
    when a read fails otherwise or the archive refuses a copy."""
    copied: list[CopiedObject] = []
    missing: list[str] = []
    part = scratch / ".object.part"
    for obj in listed:
        if obj.key == prefix or (obj.key.endswith("/") and obj.size == 0):
            continue  # a folder marker, not an object
        sha, size = hashlib.sha256(), 0
        try:
            with part.open("wb") as fh:
                for chunk in source.read(obj.key):
                    sha.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
        except ObjectGone:
            missing.append(obj.key)
            continue
        name = object_name(obj.key, prefix)
        store.put_file(database, f"{PREFIX}/{stamp}/{name}", part, "application/octet-stream")
        copied.append(CopiedObject(obj.key, name, size, sha.hexdigest()))
    part.unlink(missing_ok=True)
    return {"bucket": source.bucket, "prefix": prefix, "files": [asdict(c) for c in copied], "missing": missing}


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

    def export(self, db: DatabaseConfig, state: DatabaseState, folder: Path,
               billing_app: str | None = None) -> tuple[DrillRun, list[ExportedFile]]:
        """Export `db.compliance.tables` of the newest good backup into `folder`; the run says whether it
        succeeded and why not. `billing_app`: the Heroku app whose transfers hold the database's Heroku backups
        (None for a database without them), as the drill is given it. GuardianError when the database has no
        compliance section."""
        if db.compliance is None:
            raise GuardianError(f"{db.name}: no compliance section is configured")
        self._folder, self._files = folder, []
        tables = db.drill.model_copy(update={"tables": list(db.compliance.tables)})
        run = self.run(db.model_copy(update={"drill": tables}), state, TABLE, billing_app)
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


def _objects_said(objects: dict[str, Any] | None) -> str:
    """The objects' part of an export's reason: how many were copied, and which went missing meanwhile."""
    if objects is None:
        return ""
    said = f", {len(objects['files'])} object(s) copied from s3://{objects['bucket']}/{objects['prefix']}"
    if objects["missing"]:
        said += f", {len(objects['missing'])} gone before they could be read: {', '.join(objects['missing'][:5])}"
    return said


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
                 clock: Callable[[], datetime], sources: dict[str, ObjectSource] | None = None,
                 billing_app: Callable[[str], str | None] = lambda _name: None) -> None:
        """`sources`: per database with `compliance.objects`, the bucket its application objects are read from.
        `billing_app`: the Heroku app of a database's Heroku backups (what a backup only Heroku holds is
        downloaded through), as the drill service has it."""
        self.databases, self.runner, self.pipeline, self.holder = databases, runner, pipeline, holder
        self.billing_app = billing_app
        self.store, self.ledger, self.clock = store, ledger, clock
        self.sources = dict(sources or {})
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
        assert self.store is not None and db.compliance is not None
        now = self.clock()
        try:
            self._source(db.name, db.compliance.objects)  # said before a restore that could not be written whole
        except GuardianError as exc:
            self._remember(db.name, now, result := ExportResult(False, str(exc)))
            return result
        folder_root = self.runner.state_dir / "compliance" / "tmp"
        folder_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="export-", dir=folder_root) as tmp:
            state = self.holder.current().databases[db.name]
            run, files = self.runner.export(db, state, Path(tmp), self.billing_app(db.name))
            failed = "; ".join(f"{c.name}: {c.detail}" for c in run.checks if not c.ok)
            if run.skipped or not run.succeeded or run.backup is None:
                result = ExportResult(False, failed or run.reason or "the export did not run", skipped=run.skipped)
            else:
                try:
                    at, objects = self._store(db, run.backup.backup_id, run.backup.recovery_point, files,
                                              Path(tmp), now)
                    result = ExportResult(True, f"{len(files)} table(s) exported from backup {run.backup.backup_id}"
                                          + _objects_said(objects), tuple(files), at)
                except GuardianError as exc:
                    result = ExportResult(False, f"the export could not be stored: {exc}")
        if not result.skipped:
            self._remember(db.name, now, result)
        return result

    def _store(self, db: DatabaseConfig, backup_id: str, recovery_point: datetime | None,
               files: list[ExportedFile], folder: Path, now: datetime) -> tuple[str, dict[str, Any] | None]:
        """Write the export: the application objects' bucket listed first (one that cannot be listed fails the
        export before anything is written), then the tables' files, the objects, and the manifest last. Returns
        where the manifest went and the objects' account. Raises GuardianError."""
        assert self.store is not None and db.compliance is not None
        stamp, wanted = f"{now:%Y%m%dT%H%M%SZ}", db.compliance.objects
        source = self._source(db.name, wanted)
        listed = source.list(wanted.prefix) if source is not None and wanted is not None else []
        store_files(self.store, db.name, stamp, [(f, folder / f.name) for f in files])
        objects = None
        if source is not None and wanted is not None:
            objects = copy_objects(source, listed, wanted.prefix, self.store, db.name, stamp, folder)
        doc = manifest(db.name, backup_id, recovery_point, files, now, objects)
        return store_manifest(self.store, db.name, stamp, doc), objects

    def _source(self, name: str, wanted: ComplianceObjects | None) -> ObjectSource | None:
        if wanted is None:
            return None
        if name not in self.sources:
            raise GuardianError("compliance.objects needs an archive.s3 section: its connection reads the objects' "
                                "bucket")
        return self.sources[name]

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
