"""Restore drills of tables whatever their names: quotes, spaces, dots, newlines, other scripts, schemas other
than public. Real PostgreSQL clusters, a real pg_dump of a production database, real pg_restore."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from actions.capture import pg_dump_command
from actions.drill.outcome import CheckResult
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.toc import TocEntry, explain, match_tables, read_toc
from daemon.adapters.postgres.tools import find_tool
from daemon.core.names import TableName, parse_column, parse_table, shown
from tests.support import DRILLED_DB, capture, create_database, drill_guardian, drill_once

ODD_TABLES = [  # (schema, table, rows)
    ("public", 'we"ird', 2),
    ("public", "has space", 1),
    ("public", "new\nline", 1),
    ("public", "ünï €", 1),
    ("public", "pipe|bar", 1),
    ("my.schema", "t", 1),
    ("app", "inv", 3),
    ("public", "x", 1),
    ("public", "x postgres", 1),  # its listing line ("public x postgres postgres") also fits table x
]


@pytest.fixture(scope="module")
def production(pg_cluster: LocalCluster) -> str:
    """A production database holding only tables with awkward names, each with rows."""
    url = create_database(pg_cluster, with_schema=False)
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in {s for s, _, _ in ODD_TABLES} - {"public"}:
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(schema)))
        for schema, table, rows in ODD_TABLES:
            ident = psycopg.sql.Identifier(schema, table)
            conn.execute(psycopg.sql.SQL("CREATE TABLE {} (id serial PRIMARY KEY, "
                                         "created_at timestamptz NOT NULL DEFAULT now())").format(ident))
            conn.execute(psycopg.sql.SQL("INSERT INTO {} SELECT FROM generate_series(1, %s)").format(ident),
                         (rows,))
        conn.execute("CREATE INDEX ON app.inv (created_at)")
    return url


def restored(checks: list[CheckResult], table: TableName) -> tuple[bool, str] | None:
    """(ok, detail) of the table's restore check, None when there is none."""
    found = [(c.ok, c.detail) for c in checks if c.name == f"table {table} restored"]
    return found[0] if found else None


def test_full_drill_checks_every_table_whatever_its_name(
    production: str, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    capture(open_tmp, DRILLED_DB, production)
    g = drill_guardian(open_tmp, production, scratch=own_cluster.url("postgres"),
                       checks={"min_rows": {'public."we""ird"': 2, '"my.schema".t': 1, '"new\nline"': 1},
                               "fresh_columns": {"app.inv.created_at": "2d", '"my.schema"."t".created_at': "2d"}})
    run, snap = drill_once(g)
    assert run.succeeded, (run.reason, [c for c in run.checks if not c.ok])
    for schema, table, _ in ODD_TABLES:
        assert restored(run.checks, TableName(schema, table)) == (True, "has rows"), (schema, table, run.checks)
    assert len([c for c in run.checks if c.name.startswith("table ")]) == len(ODD_TABLES)
    names = {c.name for c in run.checks}
    assert {'table public."we""ird" restored', 'table public."new\\nline" restored',
            'table "my.schema".t restored', 'public."we""ird" has at least 2 rows',
            '"new\\nline" has at least 1 rows', "newest app.inv.created_at is fresh"} <= names
    assert not [n for n in names if "\n" in n]  # a name never breaks a report line
    md = Path(snap.databases["shop"].drills[-1].report or "").with_suffix(".md").read_text()
    rows = md.split("## Checks")[1].split("##")[0].strip().splitlines()[2:]
    assert len(rows) == len(run.checks) and all(len(re.findall(r"(?<!\\)\|", r)) == 4 for r in rows), rows


@pytest.mark.parametrize("spelling", ["app.inv", '"my.schema"."t"', 'public."we""ird"', '"new\nline"'])
def test_table_drill_restores_a_critical_table_in_any_schema_with_its_rows(
    spelling: str, production: str, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    capture(open_tmp, DRILLED_DB, production)
    g = drill_guardian(open_tmp, production, scratch=own_cluster.url("postgres"), tables=[spelling])
    try:
        g.collect_all()
        run = g.drills.drill("shop", "accidental_deletion")
    finally:
        g.stop()
    assert run.succeeded, run.reason
    table = parse_table(spelling)
    assert [(c.name, c.ok, c.detail) for c in run.checks] == [(f"table {table} restored", True, "has rows")]


def test_table_drill_of_a_table_the_backup_lacks_fails_and_says_so(
    production: str, own_cluster: LocalCluster, open_tmp: Path
) -> None:
    capture(open_tmp, DRILLED_DB, production)
    g = drill_guardian(open_tmp, production, scratch=own_cluster.url("postgres"), tables=["app.inv", "app.gone"])
    try:
        g.collect_all()
        run = g.drills.drill("shop", "accidental_deletion")
    finally:
        g.stop()
    assert not run.succeeded
    assert [(c.name, c.ok, c.detail) for c in run.checks] == [
        ("table app.gone restored", False, "not in the backup"), ("table app.inv restored", True, "has rows")]


def test_the_listing_gives_every_table_entry_and_a_failed_restore_its_error_not_its_sql(
    production: str, pg_cluster: LocalCluster, open_tmp: Path
) -> None:
    dump = open_tmp / "odd.dump"
    args, env = pg_dump_command(production)
    subprocess.run([*args, f"--file={dump}"], env=env, check=True, capture_output=True, timeout=120)
    toc = read_toc(dump)
    assert len(toc.table_entries) == len(ODD_TABLES) and toc.unparsed == 0
    assert {e.oid for e in toc.table_entries} <= toc.data_oids

    target = create_database(pg_cluster, with_schema=False)  # no schema app: CREATE TABLE app.inv fails
    failed = subprocess.run([find_tool("pg_restore"), "--exit-on-error", "--schema=app", "--table=inv",
                             f"--dbname={target}", str(dump)], capture_output=True, text=True, check=False)
    assert failed.returncode != 0 and failed.stderr.rstrip().endswith(");")
    text = explain(failed.stderr)
    assert text == 'could not execute query: ERROR: schema "app" does not exist'


BAD_NAMES = [
    ('"my.schema.t', "unbalanced double quote"),
    ("app.", "empty part"),
    (".inv", "empty part"),
    ("a.b.c", "3 dotted parts, at most 2"),
    ('"a"b', "after a closing quote"),
    ('we"ird', "double quote inside an unquoted part"),
]


@pytest.mark.parametrize(("entry", "reason"), BAD_NAMES)
def test_a_malformed_critical_table_is_a_config_error_naming_the_field(
    entry: str, reason: str, tmp_path: Path
) -> None:
    out = validate(tmp_path, {"tables": ["invoices", entry]})
    assert out.returncode == 3, out.stdout
    assert "Traceback" not in out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if "databases[0].drill.tables[1]: " in ln]
    assert reason in line and f"(got {entry!r})" in line, out.stderr


@pytest.mark.parametrize(("field", "key", "reason"), [
    ("min_rows", "a.b.c", "3 dotted parts, at most 2"),
    ("fresh_columns", "created_at", "table.column or schema.table.column"),
    ("fresh_columns", '"my.schema.t.created_at', "unbalanced double quote"),
])
def test_a_malformed_check_key_is_a_config_error_naming_the_field_and_key(
    field: str, key: str, reason: str, tmp_path: Path
) -> None:
    out = validate(tmp_path, {"checks": {field: {key: 1 if field == "min_rows" else "2d"}}})
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if f"databases[0].drill.checks.{field}: key {key!r}: " in ln]
    assert reason in line, out.stderr


def test_names_parse_in_sql_syntax_and_show_escaped() -> None:
    assert parse_table("invoices") == TableName("public", "invoices")
    assert parse_table('"my.schema"."we""ird"') == TableName("my.schema", 'we"ird')
    assert parse_column('app."inv"."created at"') == (TableName("app", "inv"), "created at")
    assert shown("public", "a\nb\\c") == 'public."a\\nb\\\\c"'
    assert len(shown("s", "x" * 500)) <= 160


def test_listing_lines_that_fit_several_names_are_paired_one_to_one() -> None:
    # Table "a" owned by "b c" and table "a b" owned by "d": the first line also fits "a b" (owner "c").
    first, second, orphan = TocEntry(1, 10, "s a b c"), TocEntry(2, 11, "s a b d"), TocEntry(3, 12, "s gone x")
    pairs, unmatched = match_tables((first, second, orphan), [TableName("s", "a b"), TableName("s", "a")])
    assert pairs == [(first, TableName("s", "a")), (second, TableName("s", "a b"))]
    assert unmatched == [orphan]


def validate(tmp: Path, drill: dict[str, object]) -> subprocess.CompletedProcess[str]:
    """`python -m daemon config validate` on a file with one database and this drill section."""
    cfg = tmp / "guardian.yaml"
    cfg.write_text(json.dumps({"state_dir": str(tmp / "state"), "databases": [
        {"name": "shop", "url": "postgresql://guardian@db.invalid/shop", "drill": drill}]}))
    return subprocess.run([sys.executable, "-m", "daemon", "config", "validate", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60, check=False, cwd=tmp)
