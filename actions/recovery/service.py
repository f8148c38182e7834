"""`recover-rows`: the rows a backup holds and production has lost (SuoOps procedures, scenario 2, accidental
deletion: "extract the deleted records and merge them back"), as files a person reviews and applies.

The course: pick the backup (an id, the newest good one before a time, or the newest good one), download and verify
it as a drill does, restore only the named tables and the tables one foreign key away from them into a proven
scratch database (the table drill's own restore: `actions.drill.restore`, `daemon.adapters.postgres.scratch`),
compare with production by key inside the scratch server (`actions.recovery.compare`), write the files
(`actions.recovery.output`), and drop the scratch database, always. The scratch database is a change to the world,
so the whole run is one execution of the drill's kind through the pipeline (pause, single flight under
`recover_rows:<database>`, history, audit) and holds the drill lock, so no drill or scratch sweep runs beside it.

Production is never written: its connection sets `default_transaction_read_only` and runs one READ ONLY,
REPEATABLE READ transaction (every table's keys from one snapshot), and reads only the catalog and keys (with
`changed`, one digest per row).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from actions.audit import person
from actions.drill.outcome import TABLE, DrillRun, Progress
from actions.drill.restore import restore, verify_dump, version_gate
from actions.drill.run import DrillBusy, DrillRunner, drill_lock
from actions.guards import Decision, Intent
from actions.pipeline import DRILL, Pipeline
from actions.recovery import compare
from actions.recovery.compare import TableResult
from actions.recovery.output import Dependency, Summary, write_files
from actions.recovery.tables import (
    ForeignKey,
    RecoveryRefused,
    foreign_keys,
    parents_first,
    plan_table,
    precheck,
)
from actions.runner import Outcome
from daemon.adapters.postgres import scratch as scratchdb
from daemon.adapters.postgres.scratch import ScratchServer
from daemon.config import DatabaseConfig
from daemon.core.errors import GuardianError, one_line
from daemon.core.names import TableName
from daemon.core.redact import REDACTOR
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, Backup, DatabaseState


@dataclass(frozen=True)
class RecoverRequest:
    """What a person asks for: the database, its tables, which backup (`backup_id`, else the newest good one
    whose recovery point is at or before `before`, else the newest good one), the key (every table's, when
    given), whether changed rows are wanted, and the output directory (new or empty)."""

    database: str
    tables: tuple[TableName, ...]
    out_dir: Path
    backup_id: str | None = None
    before: datetime | None = None
    key: tuple[str, ...] | None = None
    changed: bool = False


@dataclass
class RecoverResult:
    """How the run ended: its summary when it compared, else why not (`skipped`: it did not run)."""

    ok: bool
    reason: str
    summary: Summary | None = None
    skipped: bool = False
    refused: bool = False
    notes: list[str] = field(default_factory=list)


def pick_backup(state: DatabaseState, backup_id: str | None, before: datetime | None,
                heroku: bool) -> tuple[Backup, str]:
    """The backup to recover from and its source; an archive copy wins a tie with the provider. RecoveryRefused
    when none fits (the message says which exist)."""
    candidates = []
    for name, src in state.sources.items():
        if (name == SOURCE_HEROKU and not heroku) or name not in (SOURCE_ARCHIVE, SOURCE_HEROKU):
            continue
        for b in src.good:
            if backup_id is not None and b.backup_id != backup_id:
                continue
            if before is not None and b.recovery_point > before:
                continue
            candidates.append((b.recovery_point, name == SOURCE_ARCHIVE, b, name))
    if not candidates:
        if backup_id is not None:
            raise RecoveryRefused(f"--backup {backup_id!r}: no good backup with that id")
        if before is not None:
            raise RecoveryRefused(f"--before {before.isoformat()}: no good backup was taken at or before it")
        raise RecoveryRefused("no good backup to recover from")
    _, _, backup, source = max(candidates, key=lambda c: (c[0], c[1]))
    return backup, source


def production_connection(url: str, timeout: float) -> psycopg.Connection[Any]:
    """A connection to production that cannot write: `default_transaction_read_only` set at connect time,
    every transaction READ ONLY and REPEATABLE READ (one snapshot for every table), and the session's text
    settings those of the scratch side, so that digests compare."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    params["options"] = f"{params.get('options', '')} -c default_transaction_read_only=on".strip()
    try:
        conn = psycopg.connect(make_conninfo("", **params), connect_timeout=max(1, int(timeout)))
    except psycopg.Error as exc:
        raise GuardianError(REDACTOR(f"cannot connect to production: {one_line(exc)}")) from None
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn


def same_text(conn: psycopg.Connection[Any]) -> None:
    for name, value in compare.SAME_TEXT.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))


class RowRecovery:
    """Recovers rows for the guardian's databases; the drill's runner provides download, scratch and safety."""

    def __init__(self, databases: dict[str, DatabaseConfig], runner: DrillRunner, pipeline: Pipeline,
                 billing_app: Callable[[str], str | None], clock: Callable[[], datetime]) -> None:
        self.databases = databases
        self.runner = runner
        self.pipeline = pipeline
        self.billing_app = billing_app
        self.clock = clock

    def recover(self, request: RecoverRequest, state: DatabaseState, progress: Progress) -> RecoverResult:
        """Run the recovery through the pipeline; never raises for a failed run (the result says why)."""
        results: list[RecoverResult] = []

        def work(_id: int) -> Outcome:
            result = self._guarded(request, state, progress)
            results.append(result)
            details: dict[str, Any] = {"tables": [str(t) for t in request.tables], "out_dir": str(request.out_dir)}
            if result.summary is not None:
                details.update(backup=result.summary.backup_id, deleted=result.summary.total("deleted"),
                               changed=result.summary.total("changed"))
            # a refusal (bad input) did nothing to the world: skipped, as a decline, not a failure
            return Outcome(result.ok, result.reason, details, skipped=result.skipped or result.refused)

        intent = Intent("recover_rows", request.database,
                        f"recover deleted rows of {', '.join(str(t) for t in request.tables)}",
                        params={"tables": [str(t) for t in request.tables], "changed": request.changed},
                        manual=True, requested_by=person())
        outcome = self.pipeline.run_held(DRILL, intent, work, unlocked_ok=False)
        if isinstance(outcome, Decision):
            return RecoverResult(False, outcome.reason, skipped=True)
        if outcome is None:
            return RecoverResult(False, f"a recovery of {request.database} is running in another process",
                                 skipped=True)
        if not results:  # it crashed (the pipeline logged and audited it) or its lock was unavailable
            return RecoverResult(False, outcome.detail, skipped=outcome.skipped)
        return results[0]

    def _guarded(self, request: RecoverRequest, state: DatabaseState, progress: Progress) -> RecoverResult:
        try:
            with drill_lock(self.runner.state_dir):
                return self._run(request, state, progress)
        except RecoveryRefused as exc:
            return RecoverResult(False, REDACTOR(str(exc)), refused=True)
        except DrillBusy as exc:  # a drill or a sweep holds the scratch side: try again when it is done
            return RecoverResult(False, str(exc), skipped=True)
        except GuardianError as exc:
            return RecoverResult(False, REDACTOR(str(exc)))
        except psycopg.Error as exc:  # the comparison's own SQL, on the scratch server or reading production
            return RecoverResult(False, REDACTOR(f"the comparison failed: {one_line(exc)}"))

    def _run(self, request: RecoverRequest, state: DatabaseState, progress: Progress) -> RecoverResult:
        db = self.databases[request.database]
        if db.url is None:
            raise RecoveryRefused(f"database {db.name}: no url, so production cannot be compared (set its url)")
        backup, source = pick_backup(state, request.backup_id, request.before, self.runner.heroku is not None)
        with production_connection(db.url.get_secret_value(), db.connect_timeout.total_seconds()) as prod:
            precheck(prod, request.tables, request.key)  # a refusal costs no download
            neighbours = list(dict.fromkeys(
                t for fk in foreign_keys(prod, list(request.tables)) for t in (fk.child, fk.parent)
                if t not in request.tables))
        deadline = time.monotonic() + db.drill.timeout.total_seconds()
        run = DrillRun(database=db.name, scenario=TABLE, started_at=self.clock(), backup=backup, source=source)
        downloads = self.runner.state_dir / "drills" / "tmp"
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=downloads) as tmp:
            dump = Path(tmp) / "drill.dump"
            self.runner.fetch(db, backup, source, self.billing_app(db.name), dump, progress, deadline)
            verify_dump(backup, dump, run)
            summary = self._in_scratch(request, neighbours, db, run, dump, deadline, progress)
        return RecoverResult(True, summary.headline(), summary, notes=run.notes)

    def _in_scratch(self, request: RecoverRequest, neighbours: list[TableName], db: DatabaseConfig, run: DrillRun,
                    dump: Path, deadline: float, progress: Progress) -> Summary:
        """Restore the tables (and their foreign-key neighbours, to find dependent deleted rows) into a proven
        scratch database, compare, write; the database is always dropped."""
        assert db.url is not None and run.backup is not None
        tabled = db.model_copy(update={"drill": db.drill.model_copy(
            update={"tables": [str(t) for t in (*request.tables, *neighbours)]})})
        with self.runner.scratch_for(db).session() as target:
            production = self.runner.production(db.connect_timeout.total_seconds())
            production.require(target, db.drill.allow_unproven_scratch, has_url=True)
            version_gate(target, run)
            entry, _how = scratchdb.create(target, production, self.runner.ledger, db.name,
                                           ScratchServer.new_name(self.clock()), self.clock())
            try:
                progress("restore", 0, None)
                restore(tabled, run, dump, target, entry, deadline, self.runner.processes, self.runner.ledger)
                lacking = [t for t in run.not_in_dump if t in request.tables]
                if lacking:
                    raise RecoveryRefused("not in the backup: " + ", ".join(str(t) for t in lacking))
                present = [t for t in neighbours if t not in run.not_in_dump]
                with target.connect(entry.name) as scratch, \
                        production_connection(db.url.get_secret_value(), db.connect_timeout.total_seconds()) as prod:
                    return self._compare(request, present, run.backup, prod, scratch, progress)
            finally:
                try:
                    scratchdb.drop(target, production, self.runner.ledger, entry)
                except GuardianError as exc:
                    run.notes.append(f"the scratch database was not dropped ({exc}); the next start sweeps it")

    def _compare(self, request: RecoverRequest, neighbours: list[TableName], backup: Backup,
                 prod: psycopg.Connection[Any], scratch: psycopg.Connection[Any], progress: Progress) -> Summary:
        """Plan, stream the keys, compare, write. `neighbours` (restored, present in the backup) are compared
        for the summary's foreign keys only: their rows are not written."""
        same_text(prod)
        same_text(scratch)
        plans = {t: plan_table(prod, scratch, t, request.key) for t in request.tables}
        fks = foreign_keys(prod, list(request.tables))
        order = parents_first(list(request.tables), fks)
        results = [TableResult(plans[t], i + 1) for i, t in enumerate(order)]
        around: list[TableResult] = []
        unkeyed: dict[TableName, str] = {}
        for t in neighbours:
            try:
                around.append(TableResult(plan_table(prod, scratch, t, None), len(results) + len(around) + 1))
            except RecoveryRefused as exc:
                unkeyed[t] = str(exc)
        compare.prepare(scratch)
        for r in (*results, *around):
            compare.stream_keys(prod, scratch, r, request.changed and r in results, progress)
        prod.commit()  # the read-only snapshot ends here: nothing more is read from production
        for r in (*results, *around):
            progress(f"compare {r.plan.table}", 0, None)
            compare.compare(scratch, r, request.changed and r in results)
        summary = Summary(request.database, backup.backup_id, backup.source, backup.recovery_point, results,
                          dependencies(scratch, results, around, unkeyed, fks), changed_asked=request.changed)
        write_files(scratch, summary, request.out_dir, progress)
        return summary


def dependencies(scratch: psycopg.Connection[Any], results: list[TableResult], around: list[TableResult],
                 unkeyed: dict[TableName, str], fks: list[ForeignKey]) -> list[Dependency]:
    """What each foreign key around the recovered tables means for the merge:
    - both tables recovered: deleted child rows that reference deleted parent rows (the file inserts parents
      first), and deleted child rows whose parent is in neither production nor the file (their INSERT fails);
    - a neighbour that was not named (restored and compared for this only): its deleted rows that reference
      deleted rows of a recovered table, or that deleted rows of a recovered table reference; they are not in
      the file;
    - a neighbour that could not be compared (not in the backup, no primary key, a column the backup lacks)."""
    mine = {r.plan.table: r for r in results}
    others = {r.plan.table: r for r in around}
    out = []
    for fk in fks:
        child, parent = mine.get(fk.child), mine.get(fk.parent)
        if child is not None and parent is not None:
            if child is parent:
                continue  # a table referencing itself: its rows are in one file, in key order
            n = compare.dependents(scratch, child, fk.child_cols, parent, fk.parent_cols)
            lost = (compare.orphans(scratch, child, fk.child_cols, parent)
                    if fk.parent_cols == parent.plan.key else None)
            out.append(Dependency(fk, n, lost, compared=True))
            continue
        neighbour = fk.child if child is None else fk.parent
        other = others.get(neighbour)
        why = unkeyed.get(neighbour, "not in the backup")
        if other is not None and not (_has(child or other, fk.child_cols) and _has(parent or other, fk.parent_cols)):
            other, why = None, "a column of the foreign key is not in the backup"
        if other is None:
            out.append(Dependency(fk, None, None, compared=False, neighbour=neighbour, why=why))
        elif child is None:  # the neighbour references a recovered table
            assert parent is not None
            n = compare.dependents(scratch, other, fk.child_cols, parent, fk.parent_cols)
            out.append(Dependency(fk, n, None, compared=True, neighbour=neighbour))
        else:  # a recovered table references the neighbour
            n = compare.referenced(scratch, child, fk.child_cols, other, fk.parent_cols)
            out.append(Dependency(fk, n, None, compared=True, neighbour=neighbour))
    return out


def _has(result: TableResult, columns: tuple[str, ...]) -> bool:
    return all(c in result.plan.columns for c in columns)
