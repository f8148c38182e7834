"""`backup-guardian recover-rows`: rows deleted from production after a backup come back as an SQL file and CSVs,
production is only read. Real clusters (production and scratch), a real pg_dump capture, real pg_restore, the real
`python -m daemon recover-rows` process, and the SQL file applied with psql to a copy of production.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from actions.recovery.service import production_connection
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.scratch import PREFIX
from daemon.adapters.postgres.tools import find_tool
from tests.support import DRILLED_DB, capture, create_database, databases, throwaway_cluster

ODD = sql.Identifier("Odd Schema", 'We"ird Items')
ODD_NAME = '"Odd Schema"."We""ird Items"'

SETUP = """
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."We""ird Items" ("Order Id" text, line int, note text, data jsonb, blob bytea,
    tags text[], PRIMARY KEY ("Order Id", line));
INSERT INTO "Odd Schema"."We""ird Items"
SELECT 'o-' || (g % 7), g,
       CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN 'it''s "quoted" \\ back' WHEN 2 THEN E'two\\nlines\\r\\n'
                  ELSE 'plain ' || g END,
       jsonb_build_object('g', g, 's', E'a\\nb'), decode(md5(g::text), 'hex'), ARRAY['x' || g, NULL, 'y,z']
FROM generate_series(1, 60) g;
CREATE TABLE public.nokey (a int, b text);
INSERT INTO public.nokey SELECT g, 'row ' || g FROM generate_series(1, 10) g;
INSERT INTO public.nokey VALUES (NULL, 'no key');
CREATE TABLE public.accounts (id int PRIMARY KEY, name text);
CREATE TABLE public.orders (id int PRIMARY KEY, account_id int REFERENCES public.accounts (id) ON DELETE CASCADE);
INSERT INTO public.accounts SELECT g, 'account ' || g FROM generate_series(1, 5) g;
INSERT INTO public.orders SELECT g, 1 + g % 5 FROM generate_series(1, 20) g;
"""

AFTER_BACKUP = """
DELETE FROM payments WHERE invoice_id BETWEEN 10 AND 19;
DELETE FROM invoices WHERE id BETWEEN 10 AND 19;
INSERT INTO invoices (user_id, number, amount_cents) SELECT 1, 'NEW-' || g, 100 FROM generate_series(1, 5) g;
UPDATE invoices SET status = 'void' WHERE id IN (30, 31);
DELETE FROM "Odd Schema"."We""ird Items" WHERE line IN (5, 6, 7);
INSERT INTO "Odd Schema"."We""ird Items" ("Order Id", line, note) VALUES ('late', 1000, 'after the backup');
UPDATE "Odd Schema"."We""ird Items" SET note = 'edited' WHERE line = 20;
DELETE FROM public.nokey WHERE a <= 3 OR a IS NULL;
DELETE FROM public.accounts WHERE id = 2;  -- and, by cascade, its orders 1, 6, 11 and 16
"""


@dataclass
class World:
    cluster: LocalCluster
    url: str
    config: Path
    before: dict[str, set[str]]  # each table's rows (as text) at the backup
    keyed: dict[str, dict[str, str]]  # the same rows by their key (as text)


def rows(url: str, ident: sql.Identifier) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute(sql.SQL("SELECT x::text FROM {} x").format(ident))}


KEYS = {"invoices": (sql.Identifier("public", "invoices"), "(x.id)"),
        "odd": (ODD, '(x."Order Id", x.line)')}


def keyed(url: str, name: str) -> dict[str, str]:
    """Table `name`'s rows as text, by their key as text."""
    ident, key = KEYS[name]
    with psycopg.connect(url) as conn:
        return {r[0]: r[1] for r in conn.execute(sql.SQL("SELECT {}::text, x::text FROM {} x").format(
            sql.SQL(key), ident))}


def fingerprint(url: str) -> dict[str, tuple[int, str]]:
    """Every user table of the database: its row count and an md5 of all its rows."""
    out = {}
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT schemaname, tablename FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema') ORDER BY 1, 2").fetchall()
        for schema, table in tables:
            row = conn.execute(sql.SQL("SELECT count(*), md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), "
                                       "'')) FROM {} x").format(sql.Identifier(schema, table))).fetchone()
            assert row is not None
            out[f"{schema}.{table}"] = (int(row[0]), str(row[1]))
    return out


@pytest.fixture(scope="module")
def scratch() -> Iterator[LocalCluster]:
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def world(pg_cluster: LocalCluster, scratch: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Production with a backup, then deletions, insertions and updates after it."""
    tmp = tmp_path_factory.mktemp("recover")
    url = create_database(pg_cluster)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP)
    before = {name: rows(url, ident) for name, ident in (
        ("invoices", sql.Identifier("public", "invoices")), ("payments", sql.Identifier("public", "payments")),
        ("odd", ODD), ("nokey", sql.Identifier("public", "nokey")))}
    by_key = {name: keyed(url, name) for name in KEYS}
    capture(tmp, DRILLED_DB, url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(AFTER_BACKUP)
    config = tmp / "guardian.json"
    config.write_text(json.dumps({"state_dir": str(tmp / "state"), "archive": {"path": str(tmp / "archive")},
                                  "databases": [{"name": DRILLED_DB, "url": url,
                                                 "drill": {"scratch_url": scratch.url("postgres")}}]}))
    return World(pg_cluster, url, config, before, by_key)


def recover(world: World, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "PG", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "daemon", "recover-rows", "--config", str(world.config),
                           "--database", DRILLED_DB, "--out", str(out), *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def copy_of(world: World) -> str:
    """A copy of production (CREATE DATABASE ... TEMPLATE) to apply the SQL file to."""
    name = world.url.rsplit("/", 1)[1]
    copy = f"{name}_copy_{len(databases(world.cluster))}"
    with psycopg.connect(world.cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(copy), sql.Identifier(name)))
    return world.cluster.url(copy)


def psql(url: str, path: Path) -> None:
    subprocess.run([find_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(path)],
                   check=True, capture_output=True, timeout=60)


def test_deleted_rows_come_back_and_applying_the_file_restores_exactly_them(world: World, tmp_path: Path) -> None:
    before = fingerprint(world.url)
    out = tmp_path / "out"
    done = recover(world, out, "--table", "invoices", "--table", ODD_NAME, "--changed")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fingerprint(world.url) == before  # production byte for byte the same (every row of every table)
    assert not [d for d in databases(world.cluster) if d.startswith(PREFIX)]

    summary = json.loads((out / "summary.json").read_text())
    by = {t["table"]: t for t in summary["tables"]}
    assert (by["public.invoices"]["deleted"], by["public.invoices"]["written_after_recovery_point"],
            by["public.invoices"]["changed"]) == (10, 5, 2)
    odd = by['"Odd Schema"."We""ird Items"']
    assert (odd["key"], odd["deleted"], odd["written_after_recovery_point"], odd["changed"]) == (
        ["Order Id", "line"], 3, 1, 1)
    assert "written after the recovery point" in done.stdout and "recovery point" in done.stdout
    csv_lines = (out / f"{by['public.invoices']['csv']}").read_text().splitlines()
    assert csv_lines[0].startswith("id,user_id,number") and len(csv_lines) == 11

    copy = copy_of(world)
    now = {name: keyed(copy, name) for name in KEYS}
    psql(copy, out / "recovered.sql")
    after = {name: keyed(copy, name) for name in KEYS}
    for name in KEYS:
        deleted = world.keyed[name].keys() - now[name].keys()
        assert len(deleted) == {"invoices": 10, "odd": 3}[name]
        # exactly the deleted rows came back, as the backup had them; nothing production had was touched
        assert after[name] == {**now[name], **{k: world.keyed[name][k] for k in deleted}}
    psql(copy, out / "recovered.sql")  # applied twice: ON CONFLICT DO NOTHING, the second time changes nothing
    assert {name: keyed(copy, name) for name in KEYS} == after

    audit = subprocess.run([sys.executable, "-m", "daemon", "actions", "--action", "recover_rows", "--json",
                            "--config", str(world.config)], capture_output=True, text=True, timeout=60, check=True)
    ends = [json.loads(line) for line in audit.stdout.splitlines() if '"done"' in line]
    assert ends and ends[-1]["target"] == DRILLED_DB, audit.stdout


def test_changed_rows_are_written_commented_out_with_the_backups_values(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = recover(world, out, "--table", ODD_NAME, "--changed")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (out / "recovered.sql").read_text()
    head, changed = text.split("-- ===== Changed since the backup", 1)
    assert head.rstrip().endswith("COMMIT;") and head.count("INSERT INTO ") == 3
    updates = [ln for ln in changed.splitlines() if "UPDATE" in ln and not ln.startswith("-- Each")]
    assert len(updates) == 1 and updates[0].startswith('-- UPDATE "Odd Schema"."We""ird Items" SET ')
    assert "\"line\" = E'20'" in updates[0] and "edited" not in updates[0]
    assert all(ln.startswith("--") for ln in ("--" + changed).splitlines() if ln)  # nothing of it runs
    copy = copy_of(world)  # uncommented, it puts the backup's row back
    (tmp_path / "changed.sql").write_text("\n".join(ln[3:] for ln in changed.splitlines()
                                                    if ln.startswith(("-- BEGIN", "-- UPDATE", "-- COMMIT"))))
    psql(copy, tmp_path / "changed.sql")
    assert rows(copy, ODD) - rows(world.url, ODD) <= world.before["odd"]
    assert len(rows(copy, ODD) - rows(world.url, ODD)) == 1


def test_dependent_rows_are_listed_and_parents_are_inserted_first(world: World, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = recover(world, out, "--table", "payments", "--table", "invoices")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [t["table"] for t in summary["tables"]] == ["public.invoices", "public.payments"]
    fks = {(f["child"], f["parent"]): f for f in summary["foreign_keys"]}
    paid = fks[("public.payments", "public.invoices")]
    assert paid["compared"] and paid["dependent_deleted_rows"] == 3 and paid["rows_without_parent"] == 0
    users = fks[("public.invoices", "public.users")]  # not named: compared, none of its rows is needed
    assert (users["compared"], users["not_named"], users["dependent_deleted_rows"]) == (True, "public.users", 0)
    copy = copy_of(world)
    psql(copy, out / "recovered.sql")
    assert rows(copy, sql.Identifier("public", "payments")) == world.before["payments"]


def test_deleted_rows_of_tables_not_named_are_listed_as_dependents_not_written(world: World, tmp_path: Path) -> None:
    parent = recover(world, tmp_path / "parent", "--table", "accounts")
    assert parent.returncode == 0, parent.stdout + parent.stderr
    [fk] = json.loads((tmp_path / "parent" / "summary.json").read_text())["foreign_keys"]
    assert (fk["child"], fk["not_named"], fk["dependent_deleted_rows"]) == ("public.orders", "public.orders", 4)
    assert "4 deleted row(s) of public.orders reference deleted rows of public.accounts; they are NOT in the " \
           "file: add --table public.orders to recover them too" in parent.stdout
    assert "orders" not in (tmp_path / "parent" / "recovered.sql").read_text().split("BEGIN;")[1]

    child = recover(world, tmp_path / "child", "--table", "orders")
    assert child.returncode == 0, child.stdout + child.stderr
    [fk] = json.loads((tmp_path / "child" / "summary.json").read_text())["foreign_keys"]
    assert (fk["parent"], fk["not_named"], fk["dependent_deleted_rows"]) == ("public.accounts", "public.accounts", 1)
    assert "add --table public.accounts, or the INSERTs of those public.orders rows fail" in child.stdout
    assert fingerprint(world.url)["public.orders"][0] == 16


def test_a_table_without_a_key_is_refused_unless_a_key_is_given(world: World, tmp_path: Path) -> None:
    refused = recover(world, tmp_path / "a", "--table", "nokey")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "no primary key" in refused.stderr and "--key" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "a").exists()
    done = recover(world, tmp_path / "b", "--table", "nokey", "--key", "a")
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "b" / "recovered.sql").read_text()
    assert [ln for ln in text.splitlines() if ln.startswith("INSERT")] == [
        f"INSERT INTO \"public\".\"nokey\" (\"a\", \"b\") VALUES (E'{i}', E'row {i}') ON CONFLICT DO NOTHING;"
        for i in (1, 2, 3)]  # the row whose key is NULL matches nothing: counted, not written
    [table] = json.loads((tmp_path / "b" / "summary.json").read_text())["tables"]
    assert (table["deleted"], table["null_key_rows"]) == (3, 1)
    assert "apply the file once" in done.stdout


@pytest.mark.parametrize(("args", "field"), [
    (["--table", "a.b.c"], "--table 'a.b.c'"),
    (["--table", "invoices", "--before", "2026-11-30T10:00:00"], "--before"),
    (["--table", "invoices", "--key", 'a,"b'], "--key"),
    (["--table", "app.nosuch"], "table app.nosuch: not in production"),
    (["--table", "invoices", "--backup", "b999"], "--backup 'b999': no good backup with that id"),
])
def test_a_bad_argument_is_named_and_exits_unknown(world: World, tmp_path: Path, args: list[str],
                                                   field: str) -> None:
    done = recover(world, tmp_path / "out", *args)
    assert done.returncode == 3 and "Traceback" not in done.stderr, done.stderr
    assert field in done.stderr


def test_an_older_backup_is_chosen_by_time_and_a_missing_one_refused(world: World, tmp_path: Path) -> None:
    config = json.loads(world.config.read_text())  # the world's archive, plus a backup taken after the deletions
    shutil.copytree(config["archive"]["path"], tmp_path / "archive")
    config.update(state_dir=str(tmp_path / "state"), archive={"path": str(tmp_path / "archive")})
    later = World(world.cluster, world.url, tmp_path / "later.json", world.before, world.keyed)
    later.config.write_text(json.dumps(config))
    between = datetime.now(UTC)
    capture(tmp_path, DRILLED_DB, world.url)

    newest = recover(later, tmp_path / "newest", "--table", "invoices")
    older = recover(later, tmp_path / "older", "--table", "invoices", "--before", between.isoformat())
    assert newest.returncode == older.returncode == 0, newest.stderr + older.stderr
    first, second = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("older", "newest"))
    assert first["backup"] != second["backup"]
    assert datetime.fromisoformat(first["recovery_point"]) <= between < datetime.fromisoformat(
        second["recovery_point"])
    assert (first["tables"][0]["deleted"], second["tables"][0]["deleted"]) == (10, 0)

    done = recover(later, tmp_path / "out", "--table", "invoices", "--before", "2000-01-01T00:00:00Z")
    assert done.returncode == 3 and "no good backup was taken at or before it" in done.stderr, done.stderr


def test_the_production_connection_cannot_write(world: World) -> None:
    with production_connection(world.url, 5) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE must_not_exist ()")
        conn.rollback()
        conn.autocommit = True  # even outside the read-only transaction the session default holds
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE must_not_exist ()")


def test_a_progress_bar_on_a_terminal_and_plain_lines_through_a_pipe(world: World, tmp_path: Path) -> None:
    piped = recover(world, tmp_path / "piped", "--table", "invoices")
    assert piped.returncode == 0 and "\x1b[" not in piped.stderr + piped.stdout
    assert {"download...", "restore...", "compare public.invoices..."} <= set(piped.stderr.splitlines())

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "PG", "NO_COLOR", "TTY_"))}
    proc = subprocess.Popen([sys.executable, "-m", "daemon", "recover-rows", "--config", str(world.config),
                             "--database", DRILLED_DB, "--out", str(tmp_path / "tty"), "--table", "invoices"],
                            stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"})
    os.close(slave)
    screen = b""
    try:
        while select.select([master], [], [], 120)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the command closed the terminal: it ended
                break
            if not chunk:
                break
            screen += chunk
    finally:
        os.close(master)
        assert proc.wait(timeout=60) == 0
    text = screen.decode(errors="replace")
    assert "\x1b[?25l" in text  # rich hides the cursor while its live progress display runs
    assert "restore...\r" not in text and "deleted since the backup (in the file): 10" in text


def test_a_scratch_server_that_cannot_be_reached_fails_critical_and_leaves_no_files(world: World,
                                                                                     tmp_path: Path) -> None:
    config = json.loads(world.config.read_text())
    config["databases"][0]["drill"]["scratch_url"] = "postgresql://drill:secret-pw@127.0.0.1:1/postgres"
    broken = World(world.cluster, world.url, tmp_path / "broken.json", world.before, world.keyed)
    broken.config.write_text(json.dumps(config))
    done = recover(broken, tmp_path / "out", "--table", "invoices")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "recover-rows FAILED: cannot connect to the scratch server 127.0.0.1:1" in done.stdout
    assert "secret-pw" not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_paused_actions_skip_the_recovery_with_a_warning(world: World, tmp_path: Path) -> None:
    def actions(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "daemon", "actions", *args, "--config", str(world.config)],
                       capture_output=True, timeout=60, check=True)

    actions("pause", "--reason", "incident review")
    try:
        done = recover(world, tmp_path / "out", "--table", "invoices")
    finally:
        actions("resume")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "recover-rows skipped" in done.stdout and "incident review" in done.stdout
    assert not (tmp_path / "out").exists()


def test_a_scratch_server_that_is_production_is_refused_before_anything_is_created(world: World,
                                                                                     tmp_path: Path) -> None:
    before = fingerprint(world.url)
    config = json.loads(world.config.read_text())
    config["databases"][0]["drill"]["scratch_url"] = world.cluster.url("postgres")  # production's own server
    same = World(world.cluster, world.url, tmp_path / "same.json", world.before, world.keyed)
    same.config.write_text(json.dumps(config))
    done = recover(same, tmp_path / "out", "--table", "invoices")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "IS the production server" in done.stdout
    assert not [d for d in databases(world.cluster) if d.startswith(PREFIX)]
    assert fingerprint(world.url) == before
