"""A drill's smoke checks on the restored scratch database: the built-in ones (the dump's tables, or the
critical tables of a table drill, exist and have rows where production has rows) and the configured ones
(fresh timestamps, minimum rows, SQL that must be true, HTTP against a staging app). A check never raises: a
failure is a failed `CheckResult`.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from psycopg import sql

from actions.drill.outcome import TABLE, CheckResult, DrillRun
from daemon.adapters.postgres.scratch import ScratchTarget
from daemon.adapters.postgres.toc import TocEntry, match_tables
from daemon.config import DatabaseConfig
from daemon.core.errors import one_line
from daemon.core.names import TableName, parse_column, parse_table, shown_text


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
        return CheckResult(name, False, f"cannot read: {shown_text(one_line(exc))}")
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
        return CheckResult(name, False, f"cannot count: {shown_text(one_line(exc))}")
    n = int(row[0]) if row else 0
    return CheckResult(name, n >= minimum, f"{n}{'+' if n >= minimum else ''} rows")


def _sql_check(conn: psycopg.Connection[Any], name: str, query: str) -> CheckResult:
    try:
        row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        return CheckResult(name, False, f"query failed: {one_line(exc)}")
    value = row[0] if row else None
    return CheckResult(name, value is True, f"returned {value!r}")


def _http_check(name: str, url: str, status: int) -> CheckResult:
    try:
        resp = httpx.get(url, timeout=15.0, follow_redirects=False)
    except httpx.HTTPError as exc:
        return CheckResult(name, False, f"request failed: {type(exc).__name__}")
    return CheckResult(name, resp.status_code == status, f"HTTP {resp.status_code} (expected {status})")
