"""What recover-rows writes: an SQL file a person applies with psql (or any client), a CSV per table, and a
summary (text and JSON).

The SQL file is one transaction (BEGIN ... COMMIT) of `INSERT ... ON CONFLICT DO NOTHING;`, one line per deleted
row, parents before the tables referencing them; a row production has meanwhile written again under the same key
is left as it is. Changed rows (with `--changed`) follow after the COMMIT as a second transaction of `UPDATE`s
that is commented out line by line: overwriting a row someone changed since the backup is a decision a person
makes row by row, so nothing of it runs unless they remove the `-- `. Every value is written as a one-line E''
literal, so each statement is exactly one line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from actions.recovery import compare
from actions.recovery.compare import TableResult, Tick
from actions.recovery.tables import ForeignKey, RecoveryRefused
from daemon.core.names import TableName, shown

SQL_FILE = "recovered.sql"
SUMMARY_TEXT, SUMMARY_JSON = "summary.txt", "summary.json"


@dataclass(frozen=True)
class Dependency:
    """A foreign key around the recovered tables and what it means for the merge. Both tables recovered
    (`neighbour` None): `rows` deleted child rows reference deleted parent rows (all in the file), `lost` deleted
    child rows reference a parent row in neither production nor the file. A neighbour not named: `rows` of its
    deleted rows depend on (or are needed by) deleted rows of the recovered table; they are not in the file.
    `compared` False: the neighbour could not be compared, `why`."""

    fk: ForeignKey
    rows: int | None
    lost: int | None
    compared: bool
    neighbour: TableName | None = None
    why: str = ""

    def line(self) -> str:
        fk = self.fk
        what = (f"{fk.child}({', '.join(shown(c) for c in fk.child_cols)}) references "
                f"{fk.parent}({', '.join(shown(c) for c in fk.parent_cols)}) [{shown(fk.name)}]")
        if not self.compared:
            return f"{what}: {self.neighbour} not compared ({self.why})"
        if self.neighbour == fk.child:
            return (f"{what}: {self.rows} deleted row(s) of {fk.child} reference deleted rows of {fk.parent}; they "
                    f"are NOT in the file{f': add --table {fk.child} to recover them too' if self.rows else ''}")
        if self.neighbour == fk.parent:
            text = f"{what}: {self.rows} deleted row(s) of {fk.parent} are referenced by deleted rows of {fk.child}"
            if self.rows:
                text += (f"; they are NOT in the file: add --table {fk.parent}, or the INSERTs of those {fk.child} "
                         "rows fail and roll the whole file back")
            return text
        text = f"{what}: {self.rows} deleted row(s) of {fk.child} reference deleted rows of {fk.parent} (both in " \
               "the file, parents first)"
        if self.lost:
            text += (f"; {self.lost} deleted row(s) of {fk.child} reference {fk.parent} rows that are in neither "
                     "production nor the backup: their INSERT fails and rolls the file back")
        return text

    def to_json(self) -> dict[str, Any]:
        return {"name": self.fk.name, "child": str(self.fk.child), "parent": str(self.fk.parent),
                "compared": self.compared, "not_named": str(self.neighbour) if self.neighbour else None,
                "dependent_deleted_rows": self.rows, "rows_without_parent": self.lost,
                "not_compared_because": self.why or None}


@dataclass
class Summary:
    """Everything the person needs to decide: per table the counts, and the backup's recovery point."""

    database: str
    backup_id: str
    source: str
    recovery_point: datetime
    tables: list[TableResult]
    dependencies: list[Dependency] = field(default_factory=list)
    changed_asked: bool = False
    out_dir: Path | None = None

    def total(self, what: str) -> int:
        return sum(int(getattr(t, what)) for t in self.tables)

    def headline(self) -> str:
        text = (f"{self.total('deleted')} deleted row(s) recovered from backup {self.backup_id} "
                f"(recovery point {self.recovery_point.isoformat(timespec='seconds')})")
        if self.changed_asked:
            text += f", {self.total('changed')} changed since"
        return text

    def lines(self) -> list[str]:
        rp = self.recovery_point.isoformat(timespec="seconds")
        out = [f"database {self.database}: backup {self.backup_id} ({self.source}), recovery point {rp}",
               "production was read for keys only" + (" and one digest per row" if self.changed_asked else "")
               + ", in one read-only transaction; nothing was written to it", ""]
        for t in self.tables:
            plan = t.plan
            out.append(f"{plan.table}: key ({', '.join(shown(c) for c in plan.key)})")
            out.append(f"  in the backup {t.backup_rows}, in production {t.production_keys}")
            out.append(f"  deleted since the backup (in the file): {t.deleted}")
            if self.changed_asked:
                out.append(f"  changed since the backup (commented out in the file): {t.changed}")
            out.append(f"  written after the recovery point (in production, not in the backup; not recoverable "
                       f"from it, left alone): {t.newer}")
            if plan.key_given:
                out.append("  the key was given with --key: without a unique index on it in production, ON CONFLICT "
                           "cannot stop a second application from doubling rows; apply the file once")
            if t.null_keys:
                out.append(f"  rows with a NULL in the key (they match nothing; not written, see the backup): "
                           f"{t.null_keys}")
            if plan.skipped_columns:
                out.append(f"  columns not written (generated, or gone from production): "
                           f"{', '.join(shown(c) for c in plan.skipped_columns)}")
        if self.dependencies:
            out += ["", "foreign keys:"] + [f"  {d.line()}" for d in self.dependencies]
        if self.out_dir is not None:
            out += ["", f"files in {self.out_dir}: {SQL_FILE} (apply: psql -v ON_ERROR_STOP=1 -f {SQL_FILE}), "
                    "a CSV per table, this summary"]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "database": self.database, "backup": self.backup_id, "source": self.source,
            "recovery_point": self.recovery_point.isoformat(),
            "tables": [{"table": str(t.plan.table), "schema": t.plan.table.schema, "name": t.plan.table.name,
                        "key": list(t.plan.key), "backup_rows": t.backup_rows, "production_rows": t.production_keys,
                        "deleted": t.deleted, "changed": t.changed if self.changed_asked else None,
                        "written_after_recovery_point": t.newer, "null_key_rows": t.null_keys,
                        "csv": t.csv.name if t.csv else None,
                        "changed_csv": t.changed_csv.name if t.changed_csv else None,
                        "columns_not_written": list(t.plan.skipped_columns)} for t in self.tables],
            "foreign_keys": [d.to_json() for d in self.dependencies],
        }


def prepare_dir(path: Path) -> None:
    """Create the output directory, or accept an empty one: never mix with or overwrite earlier files."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RecoveryRefused(f"--out {path}: exists and is not an empty directory (earlier files are never "
                              "overwritten)")
    path.mkdir(parents=True, exist_ok=True)


def write_files(scratch: psycopg.Connection[Any], summary: Summary, out_dir: Path, tick: Tick) -> None:
    """The CSVs, the SQL file and the summary into `out_dir` (prepared by `prepare_dir`)."""
    summary.out_dir = out_dir
    for t in summary.tables:
        t.csv = out_dir / f"{compare.file_stem(t)}.deleted.csv"
        compare.write_csv(scratch, "deleted", t, t.csv, tick)
        if summary.changed_asked:
            t.changed_csv = out_dir / f"{compare.file_stem(t)}.changed.csv"
            compare.write_csv(scratch, "changed", t, t.changed_csv, tick)
    with (out_dir / SQL_FILE).open("w", encoding="utf-8") as fh:
        _write_sql(scratch, summary, fh.write, tick)
    (out_dir / SUMMARY_TEXT).write_text("\n".join(summary.lines()) + "\n", encoding="utf-8")
    (out_dir / SUMMARY_JSON).write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")


def _write_sql(scratch: psycopg.Connection[Any], summary: Summary, write: Any, tick: Tick) -> None:
    rp = summary.recovery_point.isoformat(timespec="seconds")
    write(f"-- pg-backup-guardian recover-rows: database {shown(summary.database)}, backup "
          f"{shown(summary.backup_id)}, recovery point {rp}\n"
          "-- Rows the backup holds whose key production no longer has. ON CONFLICT DO NOTHING leaves a row\n"
          "-- production has written again under the same key as it is. One transaction: all or nothing.\n"
          "BEGIN;\n")
    for t in summary.tables:
        write(f"-- {t.plan.table}: {t.deleted} row(s)\n")
        tick(f"SQL of {t.plan.table}", 0, None)
        compare.stream_lines(scratch, compare.insert_statements(scratch, t), write)
    write("COMMIT;\n")
    if not summary.changed_asked:
        return
    write("\n-- ===== Changed since the backup: NOT applied (every line below is commented out) =====\n"
          "-- Each UPDATE puts back the backup's values of a row production has changed since the recovery\n"
          "-- point, overwriting that change. Review them; to apply some, remove the leading \"-- \" of those\n"
          "-- lines and of BEGIN and COMMIT.\n"
          "-- BEGIN;\n")
    for t in summary.tables:
        write(f"-- {t.plan.table}: {t.changed} changed row(s)\n")
        query = compare.update_statements(scratch, t)
        if query is None:
            write("-- (nothing to update: every column is the key or generated by production)\n")
            continue
        compare.stream_lines(scratch, query, write, prefix="-- ")
    write("-- COMMIT;\n")
