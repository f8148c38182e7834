"""The comparison, in the scratch database: production's keys streamed in, the backup's rows compared with them
by key in SQL, and what production lacks streamed out to files.

Memory stays flat whatever the table's size: production's keys go through COPY (production, a read-only
transaction) straight into COPY (the scratch database) block by block; the comparison is SQL inside the scratch
server; the rows go out to the CSV with COPY and to the SQL file through a server-side cursor, a batch at a time.

Production is read for keys only. With `changed`, it is also read for one md5 digest per row (of the columns
both sides have, in the backup's order), never for the values themselves, so a changed row is found without
production's data ever leaving production.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from actions.recovery.tables import TablePlan

WORK_SCHEMA = "guardian_recover"
#: Session settings that make a value's text the same on both servers (the digests compare text).
SAME_TEXT = {"TimeZone": "UTC", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres", "extra_float_digits": "1",
             "bytea_output": "hex"}
#: Rows fetched per round trip when the SQL file is written (the client holds one batch at a time).
BATCH = 2000
#: Progress is told at most once per this many bytes (COPY hands over a row at a time).
TICK_BYTES = 1 << 20
Tick = Callable[[str, int, int | None], None]


@dataclass
class TableResult:
    """What the comparison found for one table, and where its files are."""

    plan: TablePlan
    index: int
    backup_rows: int = 0
    production_keys: int = 0
    deleted: int = 0
    changed: int = 0
    newer: int = 0  # in production, absent from the backup: written after the recovery point
    null_keys: int = 0  # backup rows with a NULL in a --key column: they match nothing, so they are not written
    csv: Path | None = None
    changed_csv: Path | None = None

    @property
    def work(self) -> str:
        return f"t{self.index}"


def _work(name: str) -> sql.Identifier:
    return sql.Identifier(WORK_SCHEMA, name)


def _cols(names: tuple[str, ...], alias: str | None = None) -> sql.Composable:
    if alias is None:
        return sql.SQL(", ").join(sql.Identifier(c) for c in names)
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in names)


def _key_match(key: tuple[str, ...], left: str, right: str, a: tuple[str, ...] | None = None) -> sql.Composable:
    """`left.k1 = right.k1 AND ...` (with `a` the right side's column names when they differ)."""
    return sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(left, k), sql.Identifier(right, r))
                                 for k, r in zip(key, a or key, strict=True))


def _digest(columns: tuple[str, ...], alias: str | None = None) -> sql.Composable:
    """md5 of the row's columns as text (a row constructor: NULLs and quotes are unambiguous)."""
    return sql.SQL("md5(ROW({})::text)").format(_cols(columns, alias))


def prepare(scratch: psycopg.Connection[Any]) -> None:
    """The work schema, where the keys and the results live; it goes with the scratch database."""
    scratch.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(WORK_SCHEMA)))


def stream_keys(production: psycopg.Connection[Any], scratch: psycopg.Connection[Any], result: TableResult,
                changed: bool, tick: Tick) -> None:
    """COPY production's keys (and, with `changed`, each row's digest) into the scratch table `keys_<n>`,
    block by block. `production` is in a read-only transaction; nothing of it is held in memory."""
    plan = result.plan
    keys = _work(f"keys_{result.work}")
    source = sql.Identifier(plan.table.schema, plan.table.name)
    scratch.execute(sql.SQL("CREATE TABLE {} AS SELECT {} {} FROM {} WITH NO DATA").format(
        keys, _cols(plan.key), sql.SQL(", NULL::text AS guardian_digest") if changed else sql.SQL(""), source))
    select = sql.SQL("SELECT {}{} FROM {}").format(
        _cols(plan.key), sql.SQL(", {}").format(_digest(plan.columns)) if changed else sql.SQL(""), source)
    done = 0
    with production.cursor() as pc, scratch.cursor() as sc, \
            pc.copy(sql.SQL("COPY ({}) TO STDOUT").format(select)) as out, \
            sc.copy(sql.SQL("COPY {} FROM STDIN").format(keys)) as into:
        for block in out:
            into.write(block)
            done, told = done + len(block), done
            if done // TICK_BYTES != told // TICK_BYTES:
                tick(f"keys of {plan.table}", done, None)
    scratch.execute(sql.SQL("CREATE INDEX ON {} ({})").format(keys, _cols(plan.key)))
    scratch.execute(sql.SQL("ANALYZE {}").format(keys))


def compare(scratch: psycopg.Connection[Any], result: TableResult, changed: bool) -> None:
    """In the scratch database: `deleted_<n>` (backup rows whose key production lacks), `changed_<n>` (backup
    rows whose key production has with another digest), and the count of production keys the backup lacks."""
    plan = result.plan
    table = sql.Identifier(plan.table.schema, plan.table.name)
    keys = _work(f"keys_{result.work}")
    deleted = _work(f"deleted_{result.work}")
    no_null_key = sql.SQL(" AND ").join(sql.SQL("r.{} IS NOT NULL").format(sql.Identifier(k)) for k in plan.key)
    scratch.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {} r WHERE {} AND NOT EXISTS "
                            "(SELECT 1 FROM {} k WHERE {})").format(
        deleted, _cols(plan.columns, "r"), table, no_null_key, keys, _key_match(plan.key, "k", "r")))
    if plan.key_given:  # a primary key has no NULLs; a --key column may
        result.null_keys = _count(scratch, sql.SQL("SELECT count(*) FROM {} r WHERE NOT ({})").format(
            table, no_null_key))
    result.deleted = _count(scratch, sql.SQL("SELECT count(*) FROM {}").format(deleted))
    result.backup_rows = _count(scratch, sql.SQL("SELECT count(*) FROM {}").format(table))
    result.production_keys = _count(scratch, sql.SQL("SELECT count(*) FROM {}").format(keys))
    result.newer = _count(scratch, sql.SQL("SELECT count(*) FROM {} k WHERE NOT EXISTS "
                                           "(SELECT 1 FROM {} r WHERE {})").format(
        keys, table, _key_match(plan.key, "r", "k")))
    if changed:
        scratch.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {} r JOIN {} k ON {} "
                                "WHERE k.guardian_digest IS DISTINCT FROM {}").format(
            _work(f"changed_{result.work}"), _cols(plan.columns, "r"), table, keys,
            _key_match(plan.key, "k", "r"), _digest(plan.columns, "r")))
        result.changed = _count(scratch, sql.SQL("SELECT count(*) FROM {}").format(_work(f"changed_{result.work}")))


def _count(conn: psycopg.Connection[Any], query: sql.Composed) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def dependents(scratch: psycopg.Connection[Any], child: TableResult, child_cols: tuple[str, ...],
               parent: TableResult, parent_cols: tuple[str, ...]) -> int:
    """Deleted rows of `child` that reference deleted rows of `parent` (both recovered in this run)."""
    return _count(scratch, sql.SQL("SELECT count(*) FROM {} c WHERE EXISTS (SELECT 1 FROM {} p WHERE {})").format(
        _work(f"deleted_{child.work}"), _work(f"deleted_{parent.work}"),
        _key_match(parent_cols, "p", "c", child_cols)))


def referenced(scratch: psycopg.Connection[Any], child: TableResult, child_cols: tuple[str, ...],
               parent: TableResult, parent_cols: tuple[str, ...]) -> int:
    """Deleted rows of `parent` that deleted rows of `child` reference."""
    return _count(scratch, sql.SQL("SELECT count(*) FROM {} p WHERE EXISTS (SELECT 1 FROM {} c WHERE {})").format(
        _work(f"deleted_{parent.work}"), _work(f"deleted_{child.work}"),
        _key_match(parent_cols, "p", "c", child_cols)))


def orphans(scratch: psycopg.Connection[Any], child: TableResult, child_cols: tuple[str, ...],
            parent: TableResult) -> int:
    """Deleted rows of `child` whose referenced `parent` row is neither in production (its keys) nor among the
    rows recovered: inserting them would fail. Only when the reference is to the parent's key."""
    keys, deleted = _work(f"keys_{parent.work}"), _work(f"deleted_{parent.work}")
    key = parent.plan.key
    not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in child_cols)
    return _count(scratch, sql.SQL(
        "SELECT count(*) FROM {} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {} k WHERE {}) "
        "AND NOT EXISTS (SELECT 1 FROM {} p WHERE {})").format(
        _work(f"deleted_{child.work}"), not_null, keys, _key_match(key, "k", "c", child_cols), deleted,
        _key_match(key, "p", "c", child_cols)))


# -- the files -----------------------------------------------------------------------------------------------

def file_stem(result: TableResult) -> str:
    """A file name for the table: its position and its name with anything unusual replaced (the summary and
    the SQL file name the table exactly)."""
    text = f"{result.plan.table.schema}.{result.plan.table.name}"
    return f"{result.index:02d}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:80]


def write_csv(scratch: psycopg.Connection[Any], what: str, result: TableResult, path: Path, tick: Tick) -> None:
    """COPY `<what>_<n>` (deleted or changed) to `path` as CSV with a header, streamed."""
    done = 0
    with path.open("wb") as fh, scratch.cursor() as cur, cur.copy(sql.SQL(
            "COPY (SELECT * FROM {} ORDER BY {}) TO STDOUT WITH (FORMAT csv, HEADER)").format(
            _work(f"{what}_{result.work}"), _cols(result.plan.key))) as out:
        for block in out:
            fh.write(block)
            done, told = done + len(block), done
            if done // TICK_BYTES != told // TICK_BYTES:
                tick(f"{what} rows of {result.plan.table}", done, None)


def _literal(col: str) -> sql.Composable:
    """SQL that renders column `col` as one-line SQL input: NULL, or an E'' string with backslashes, quotes,
    newlines and carriage returns escaped. The literal is untyped, so the column it goes into gives its type."""
    ident = sql.Identifier(col)
    return sql.SQL("CASE WHEN {c} IS NULL THEN 'NULL' ELSE 'E''' || replace(replace(replace(replace({c}::text, "
                   "'\\', '\\\\'), '''', ''''''), E'\\n', '\\n'), E'\\r', '\\r') || '''' END").format(c=ident)


def insert_statements(conn: psycopg.Connection[Any], result: TableResult) -> sql.Composed:
    """A query giving one `INSERT ... ON CONFLICT DO NOTHING;` line per deleted row, ordered by key."""
    plan = result.plan
    head = sql.SQL("INSERT INTO {} ({}){} VALUES (").format(
        sql.Identifier(plan.table.schema, plan.table.name), _cols(plan.columns),
        sql.SQL(" OVERRIDING SYSTEM VALUE") if plan.identity_always else sql.SQL("")).as_string(conn)
    values = sql.SQL(" || ', ' || ").join(_literal(c) for c in plan.columns)
    return sql.SQL("SELECT {} || {} || {} FROM {} ORDER BY {}").format(
        sql.Literal(head), values, sql.Literal(") ON CONFLICT DO NOTHING;"), _work(f"deleted_{result.work}"),
        _cols(plan.key))


def update_statements(conn: psycopg.Connection[Any], result: TableResult) -> sql.Composed | None:
    """A query giving one `UPDATE ... SET <the backup's values> WHERE <key>;` line per changed row, or None when
    there is nothing to set (every column is a key or an identity production generates)."""
    plan = result.plan
    sets = [c for c in plan.columns if c not in plan.key and c not in plan.identity_always]
    if not sets:
        return None
    table = sql.Identifier(plan.table.schema, plan.table.name).as_string(conn)
    parts: list[sql.Composable] = [sql.Literal(f"UPDATE {table} SET ")]
    for i, col in enumerate(sets):
        name = sql.Identifier(col).as_string(conn)
        parts += [sql.Literal((", " if i else "") + f"{name} = "), _literal(col)]
    for i, col in enumerate(plan.key):
        name = sql.Identifier(col).as_string(conn)
        parts += [sql.Literal((" AND " if i else " WHERE ") + f"{name} = "), _literal(col)]
    parts.append(sql.Literal(";"))
    return sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
        sql.SQL(" || ").join(parts), _work(f"changed_{result.work}"), _cols(plan.key))


def stream_lines(scratch: psycopg.Connection[Any], query: sql.Composed, write: Callable[[str], object],
                 prefix: str = "") -> int:
    """Run `query` (one text column) through a server-side cursor, writing each line with `prefix`; the
    number of lines. The client holds one batch of BATCH rows at a time."""
    n = 0
    with scratch.transaction(), scratch.cursor(name="guardian_recover_lines") as cur:
        cur.itersize = BATCH
        cur.execute(query)
        for (line,) in cur:
            write(f"{prefix}{line}\n")
            n += 1
    return n
