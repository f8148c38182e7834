"""What recover-rows needs to know of each table: its key, its columns, and the foreign keys around it, read
from production's catalog (read-only) and from the backup's copy in the scratch database.

Names are exact (`daemon.core.names.TableName`) and only ever reach SQL as `psycopg.sql.Identifier` or as
parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from daemon.core.errors import GuardianError
from daemon.core.names import TableName, shown


class RecoveryRefused(GuardianError):
    """recover-rows will not run for this input (no key, an unknown column, a table the backup lacks)."""


@dataclass(frozen=True)
class ForeignKey:
    """`child`(`child_cols`) REFERENCES `parent`(`parent_cols`), as production's catalog has it."""

    name: str
    child: TableName
    child_cols: tuple[str, ...]
    parent: TableName
    parent_cols: tuple[str, ...]


@dataclass
class TablePlan:
    """One table to recover: its key, the columns written back (the backup's columns production still has,
    generated ones excepted), the identity columns production generates ALWAYS, and what was left out."""

    table: TableName
    key: tuple[str, ...]
    columns: tuple[str, ...]
    identity_always: tuple[str, ...] = ()
    skipped_columns: tuple[str, ...] = ()
    key_given: bool = False
    notes: list[str] = field(default_factory=list)


_OID = "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace " \
       "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')"
_COLUMNS = ("SELECT attname, attgenerated, attidentity FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum")
_PRIMARY = ("SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n")
_FOREIGN = """
SELECT con.conname, cn.nspname, cc.relname, pn.nspname, pc.relname,
       ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.contype = 'f' AND (con.conrelid = ANY(%s) OR con.confrelid = ANY(%s))
ORDER BY 1, 2, 3
"""


def table_oid(conn: psycopg.Connection[Any], table: TableName, where: str) -> int:
    """The oid of `table` in the database of `conn`; RecoveryRefused naming the table and `where` otherwise."""
    row = conn.execute(_OID, (table.schema, table.name)).fetchone()
    if row is None:
        raise RecoveryRefused(f"table {table}: not in {where}")
    return int(row[0])


def plan_table(production: psycopg.Connection[Any], scratch: psycopg.Connection[Any], table: TableName,
               key: tuple[str, ...] | None) -> TablePlan:
    """The plan for `table`: production's primary key unless `key` is given (RecoveryRefused when neither
    exists, or a key column is missing on either side)."""
    prod_oid = table_oid(production, table, "production")
    back_oid = table_oid(scratch, table, "the backup")
    prod_cols = {r[0]: (r[1], r[2]) for r in production.execute(_COLUMNS, (prod_oid,))}
    backup_cols = [r[0] for r in scratch.execute(_COLUMNS, (back_oid,))]
    if key is None:
        key = tuple(r[0] for r in production.execute(_PRIMARY, (prod_oid,)))
        if not key:
            raise RecoveryRefused(f"table {table}: it has no primary key in production, so rows cannot be matched; "
                                  "give the columns that identify a row with --key col[,col]")
        given = False
    else:
        given = True
    for col in key:
        for side, cols in (("production", set(prod_cols)), ("the backup", set(backup_cols))):
            if col not in cols:
                raise RecoveryRefused(f"--key: table {table} has no column {shown(col)} in {side}")
    columns = tuple(c for c in backup_cols if c in prod_cols and not prod_cols[c][0])
    skipped = tuple(c for c in backup_cols if c not in columns)
    identity = tuple(c for c in columns if prod_cols[c][1] == "a")
    return TablePlan(table, tuple(key), columns, identity, skipped, given)


def precheck(production: psycopg.Connection[Any], tables: tuple[TableName, ...], key: tuple[str, ...] | None) -> None:
    """Before anything is downloaded: every table exists in production and has a primary key, or `key` is
    given and production has its columns (RecoveryRefused naming the table otherwise). The backup's side is
    checked again by `plan_table` once restored."""
    for table in tables:
        oid = table_oid(production, table, "production")
        cols = {r[0] for r in production.execute(_COLUMNS, (oid,))}
        if key is None and production.execute(_PRIMARY, (oid,)).fetchone() is None:
            raise RecoveryRefused(f"table {table}: it has no primary key in production, so rows cannot be matched; "
                                  "give the columns that identify a row with --key col[,col]")
        for col in key or ():
            if col not in cols:
                raise RecoveryRefused(f"--key: table {table} has no column {shown(col)} in production")
    production.rollback()


def foreign_keys(production: psycopg.Connection[Any], tables: list[TableName]) -> list[ForeignKey]:
    """The foreign keys of production whose referencing or referenced table is one of `tables`."""
    oids = [table_oid(production, t, "production") for t in tables]
    return [ForeignKey(r[0], TableName(r[1], r[2]), tuple(r[5]), TableName(r[3], r[4]), tuple(r[6]))
            for r in production.execute(_FOREIGN, (oids, oids))]


def parents_first(tables: list[TableName], fks: list[ForeignKey]) -> list[TableName]:
    """`tables` ordered so that a referenced table comes before the tables referencing it (a cycle keeps the
    given order for its members), so that one transaction inserts parents before their children."""
    order: list[TableName] = []
    pending = list(tables)
    while pending:
        ready = [t for t in pending if not any(fk.child == t and fk.parent in pending and fk.parent != t
                                                for fk in fks)]
        nxt = ready[0] if ready else pending[0]
        order.append(nxt)
        pending.remove(nxt)
    return order
