"""A restore drill can never touch production: two real clusters (production and scratch) per test, real
pg_dump/pg_restore, the real `python -m daemon drill` process where the case is a crash.

Every drill case checks afterwards that production's databases, row counts and table checksums are unchanged
and that no scratch database exists on production.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.scratch import MARKER, PREFIX, DrillRefused, ScratchTarget
from daemon.adapters.statestore import ScratchEntry
from daemon.app import Guardian
from tests.support import (
    capture,
    create_database,
    databases,
    make_cluster,
    pids_of,
    production_db,
    read_config,
    throwaway_cluster,
    write_config,
)


@pytest.fixture
def scratch_cluster() -> Iterator[LocalCluster]:
    """A second real cluster: the scratch server."""
    with throwaway_cluster() as cluster:
        yield cluster


# -- helpers -------------------------------------------------------------------------------------------------

def fingerprint(cluster: LocalCluster) -> dict[str, Any]:
    """Production as a value: its databases, and per user table the row count and a checksum of the rows."""
    out: dict[str, Any] = {"databases": databases(cluster)}
    for name in sorted(out["databases"] - {"template0"}):
        with psycopg.connect(cluster.url(name), autocommit=True) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
            out[name] = {t: conn.execute(
                f'SELECT count(*), md5(coalesce(string_agg(x::text, \',\' ORDER BY x::text), \'\')) '
                f'FROM public."{t}" x').fetchone() for t in tables}
    return out


def assert_production_untouched(cluster: LocalCluster, before: dict[str, Any]) -> None:
    after = fingerprint(cluster)
    assert not [d for d in after["databases"] if d.startswith(PREFIX) and d not in before["databases"]]
    assert after == before


def cli(cfg: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m daemon <args> --config cfg` in its own session, output captured."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "PG"))}
    full.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "daemon", *args, "--config", str(cfg)], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_restore(scratch: LocalCluster, proc: subprocess.Popen[bytes], timeout: float = 180) -> str:
    """Poll the scratch server until a drill's pg_restore is building the slow index; the scratch database."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (proc.stdout.read() if proc.stdout else b"").decode(errors="replace")
        with psycopg.connect(scratch.url("postgres"), autocommit=True) as conn:
            row = conn.execute("SELECT datname FROM pg_stat_activity WHERE datname LIKE %s AND state = 'active' "
                               "AND query ILIKE 'CREATE INDEX%%'", (PREFIX.replace("_", r"\_") + "%",)).fetchone()
        if row:
            return str(row[0])
        time.sleep(0.1)
    raise AssertionError("the restore never reached the slow index")


def restore_processes(name: str) -> list[int]:
    """pids of running pg_restore processes (leaders and --jobs workers) writing into scratch database `name`."""
    return pids_of("pg_restore", name)


def wait_until(what: str, predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def sessions_on(cluster: LocalCluster, name: str) -> int:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else 0


def identity(cluster: LocalCluster) -> str:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
def sweep() -> Iterator[Callable[[Path], Guardian]]:
    """What the next start does: a guardian that swept, to inspect (stopped after the test)."""
    made: list[Guardian] = []

    def run(cfg: Path) -> Guardian:
        g = Guardian(read_config(cfg))
        made.append(g)
        # as the leader's sweep at start (the earlier guardians of a test, still open, hold the leadership)
        g.drills.sweep_scratch(manual=True)
        return g

    yield run
    for g in made:
        g.stop()


def leftovers(g: Guardian, database: str) -> float | None:
    """The database's pgbackup_drill_scratch_leftovers sample (None when there is none)."""
    body = g.exposition.render()[0].decode()
    for line in body.splitlines():
        if line.startswith(f'pgbackup_drill_scratch_leftovers{{database="{database}"}}'):
            return float(line.split()[-1])
    return None


def finding(g: Guardian, database: str, check: str) -> Any:
    return {f.check: f for f in g.holder.current().databases[database].findings}[check]


# -- (1) the sweep drops nothing without proof -----------------------------------------------------------------

@pytest.mark.parametrize("scratch_is", ["production", "the scratch server"])
def test_names_in_the_old_json_ledger_are_never_dropped_and_a_production_scratch_url_is_refused(
    scratch_is: str, own_cluster: LocalCluster, scratch_cluster: LocalCluster, open_tmp: Path
) -> None:
    """A hand-edited (or old) ledger file names an existing database: the start-up sweep of `drill` leaves it."""
    url = production_db(own_cluster)
    capture(open_tmp, "shop", url)
    server = own_cluster if scratch_is == "production" else scratch_cluster
    victim = f"{PREFIX}20240101000000_aaaaaa"  # exists, carries the prefix, but no drill of ours created it
    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{victim}"')
    ledger = open_tmp / "state" / "drills" / "scratch-ledger.json"
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps([victim]))
    before = fingerprint(own_cluster)
    cfg = write_config(open_tmp, [{"name": "shop", "url": url, "drill": {"scratch_url": server.url("postgres")}}])

    proc = cli(cfg, "drill")
    out = proc.communicate(timeout=300)[0].decode(errors="replace")

    assert victim in databases(server), out
    assert "is ignored" in out and "scratch-ledger.json" in out  # said once, the file left alone
    assert ledger.read_text() == json.dumps([victim])
    if scratch_is == "production":
        assert proc.returncode == 2 and "IS the production server" in out  # the drill failed: CRITICAL
    else:
        assert proc.returncode == 0, out
    assert_production_untouched(own_cluster, before)


def test_ledger_entries_without_the_marker_or_on_production_are_kept_and_reported(
    own_cluster: LocalCluster, scratch_cluster: LocalCluster, open_tmp: Path, sweep: Callable[[Path], Guardian]
) -> None:
    """Forged state-store entries: one names a production database (recorded under production's identity), one
    an unmarked database on the real scratch server, one a database whose marker carries another token."""
    url = production_db(own_cluster)
    on_prod, unmarked, other_token = (f"{PREFIX}20240101000000_{x}" for x in ("cccccc", "dddddd", "eeeeee"))
    with psycopg.connect(own_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{on_prod}"')
        conn.execute(f"COMMENT ON DATABASE \"{on_prod}\" IS '{MARKER}t1'")  # even a correct marker
    with psycopg.connect(scratch_cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{unmarked}"')
        conn.execute(f'CREATE DATABASE "{other_token}"')
        conn.execute(f"COMMENT ON DATABASE \"{other_token}\" IS '{MARKER}not-the-ledger-token'")
    cfg = write_config(open_tmp, [
        {"name": "shop", "url": url, "drill": {"scratch_url": scratch_cluster.url("postgres")}},
        # a second database whose scratch_url is production: the sweep visits it, and must refuse there too
        {"name": "shop2", "url": url, "drill": {"scratch_url": own_cluster.url("postgres")}},
    ])
    g = Guardian(read_config(cfg))
    try:
        t0 = g.clock()
        g.state.add_scratch(ScratchEntry(identity(own_cluster), on_prod, "t1", "shop2", t0))
        g.state.add_scratch(ScratchEntry(identity(scratch_cluster), unmarked, "t2", "shop", t0))
        g.state.add_scratch(ScratchEntry(identity(scratch_cluster), other_token, "t3", "shop", t0))
    finally:
        g.stop()
    before = fingerprint(own_cluster)

    g = sweep(cfg)

    assert on_prod in databases(own_cluster)
    assert {unmarked, other_token} <= databases(scratch_cluster)
    assert {e.name for e in g.state.scratch_entries()} == {on_prod, unmarked, other_token}
    assert leftovers(g, "shop") == 2 and leftovers(g, "shop2") == 1
    assert finding(g, "shop", "scratch_leftover").active and finding(g, "shop", "scratch_leftover").severity \
        == "warning"
    hint = finding(g, "shop2", "scratch_leftover").hint
    assert "IS the production server" in hint
    assert "marker" in finding(g, "shop", "scratch_leftover").hint
    assert {a["outcome"] for a in g.state.audit(action="scratch_sweep")} == {"kept"}
    assert_production_untouched(own_cluster, before)


# -- (2) one pinned scratch server ----------------------------------------------------------------------------

MULTI_SERVER = [
    "postgresql://drill:{pw}@127.0.0.1:{s},127.0.0.1:{p}/postgres",
    "postgresql://drill:{pw}@127.0.0.1:{s}/postgres?load_balance_hosts=random",
    "postgresql://drill:{pw}@127.0.0.1:{s}/postgres?target_session_attrs=read-write",
    "postgresql://drill:{pw}@127.0.0.1:{s}/postgres?service=scratch",
    "postgresql://drill:{pw}@/postgres",
    "postgresql://drill:{pw}@127.0.0.1/postgres?host=127.0.0.1,127.0.0.2&port={s}",
]


@pytest.mark.parametrize("spelling", MULTI_SERVER)
def test_a_scratch_url_that_is_not_one_server_is_a_config_error_and_refused_by_the_target(
    spelling: str, tmp_path: Path
) -> None:
    url = spelling.format(pw="sekret-pw-123", s=5433, p=5432)
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(json.dumps({"state_dir": str(tmp_path / "state"), "databases": [
        {"name": "shop", "url": "postgresql://u@127.0.0.1:5432/shop", "drill": {"scratch_url": url}}]}))
    proc = cli(cfg, "config", "validate")
    out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 3, out
    assert "databases[0].drill.scratch_url" in out and "sekret-pw-123" not in out
    with pytest.raises(DrillRefused, match="scratch_url") as err:
        ScratchTarget.from_url(url)
    assert "sekret-pw-123" not in str(err.value)


def _log(cluster: LocalCluster) -> str:
    return (cluster.data_dir / "server.log").read_text(errors="replace")


def test_every_connection_of_a_drill_lands_on_the_pinned_scratch_server(
    own_cluster: LocalCluster, open_tmp: Path
) -> None:
    """Scratch listens on 127.0.0.2 at production's port; the drill's environment says PGHOSTADDR=127.0.0.1
    (production). libpq would send a URL's host name there; the pinned hostaddr keeps the CREATE, the
    pg_restore and the DROP on the scratch server."""
    url = production_db(own_cluster)
    capture(open_tmp, "shop", url)
    scratch, base = make_cluster()
    try:
        with psycopg.connect(scratch.url("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET listen_addresses = '127.0.0.2'")
            conn.execute("ALTER SYSTEM SET log_statement = 'ddl'")
            conn.execute("ALTER SYSTEM SET log_connections = on")
        scratch.stop()
        scratch.start(port=own_cluster.port)
        with psycopg.connect(own_cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET log_statement = 'ddl'")
            conn.execute("ALTER SYSTEM SET log_connections = on")
            conn.execute("SELECT pg_reload_conf()")
        scratch_url = f"postgresql://postgres:{scratch.password}@127.0.0.2:{own_cluster.port}/postgres"
        before = fingerprint(own_cluster)
        cfg = write_config(open_tmp, [{"name": "shop", "url": url, "drill": {"scratch_url": scratch_url}}])
        proc = cli(cfg, "drill", env={"PGHOSTADDR": "127.0.0.1", "PGHOST": "127.0.0.1",
                                      "PGPORT": str(own_cluster.port)})
        out = proc.communicate(timeout=300)[0].decode(errors="replace")
        assert proc.returncode == 0, out
        log = _log(scratch)
        assert "statement: CREATE DATABASE \"guardian_drill_" in log
        assert "application_name=pg_restore" in log and f"database={PREFIX}" in log
        assert "statement: DROP DATABASE \"guardian_drill_" in log
        assert PREFIX not in _log(own_cluster)
        assert not [d for d in databases(scratch, tcp=False) if d.startswith(PREFIX)]
        assert_production_untouched(own_cluster, before)
    finally:
        scratch.destroy()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


# -- (3) each scratch server swept where its databases are ---------------------------------------------------

def test_a_killed_drill_of_b_is_swept_on_bs_scratch_server_and_never_claimed_by_as_embedded_one(
    own_cluster: LocalCluster, scratch_cluster: LocalCluster, open_tmp: Path, sweep: Callable[[Path], Guardian]
) -> None:
    url_a, url_b = production_db(own_cluster), production_db(own_cluster, slow=True)
    capture(open_tmp, "a", url_a)
    capture(open_tmp, "b", url_b)
    cfg = write_config(open_tmp, [{"name": "a", "url": url_a},  # embedded scratch cluster
                                  {"name": "b", "url": url_b, "drill": {"scratch_url": scratch_cluster.url()}}])
    first = cli(cfg, "drill", "--database", "a")  # the embedded cluster exists from now on
    assert first.wait(timeout=300) == 0, (first.stdout.read() if first.stdout else b"").decode()
    before = fingerprint(own_cluster)
    scratch_id = identity(scratch_cluster)

    moving = {"PGHOST": "127.0.0.1", "PGPORT": str(own_cluster.port), "PGHOSTADDR": "127.0.0.1"}
    proc = cli(cfg, "drill", "--database", "b", env=moving)
    try:
        name = wait_for_restore(scratch_cluster, proc)
        [leader, *_] = sorted(restore_processes(name))
        argv = Path(f"/proc/{leader}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{leader}/environ").read_bytes().split(b"\0")
        os.kill(proc.pid, signal.SIGKILL)  # the drill process dies mid-restore
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert name in databases(scratch_cluster)

    scratch_cluster.stop()  # B's scratch server is down at the next start: nothing may be "dropped" elsewhere
    down = sweep(cfg)
    down_metrics = (leftovers(down, "a"), leftovers(down, "b"))
    down_findings = [(db, {f.check: f.active for f in down.holder.current().databases[db].findings}
                      .get("scratch_leftover")) for db in ("a", "b")]
    down_audit = [(a["outcome"], a.get("scratch"), a.get("server")) for a in down.state.audit(action="scratch_sweep")]

    scratch_cluster.start(port=scratch_cluster.port)
    assert name in databases(scratch_cluster)
    up = sweep(cfg)
    # dropped where it is: the ledger entry survived the sweep that could not reach B's server (A's embedded
    # cluster did not claim it), and only this drop removed it
    assert name not in databases(scratch_cluster)
    assert down_audit == [("kept", name, scratch_id)]
    assert down_metrics == (0, 1) and down_findings == [("a", False), ("b", True)]
    assert up.state.scratch_entries() == []
    assert leftovers(up, "b") == 0 and not finding(up, "b", "scratch_leftover").active
    assert [a["outcome"] for a in up.state.audit(action="scratch_sweep")] == ["kept", "done"]
    # pg_restore was given the pinned server, and none of the variables that could move it
    dbname_arg = next(a for a in argv if a.startswith(b"--dbname="))
    assert b"hostaddr=127.0.0.1" in dbname_arg and f"port={scratch_cluster.port}".encode() in dbname_arg
    assert not [v for v in environ if v.split(b"=")[0] in (b"PGHOST", b"PGPORT", b"PGHOSTADDR")]
    assert_production_untouched(own_cluster, before)


# -- (4) no orphaned restore ----------------------------------------------------------------------------------

def test_a_killed_drill_leaves_no_running_pg_restore_and_the_sweep_ends_sessions_before_dropping(
    own_cluster: LocalCluster, scratch_cluster: LocalCluster, open_tmp: Path, sweep: Callable[[Path], Guardian]
) -> None:
    url = production_db(own_cluster, slow=True)
    capture(open_tmp, "shop", url)
    cfg = write_config(open_tmp, [{"name": "shop", "url": url,
                                   "drill": {"scratch_url": scratch_cluster.url(), "jobs": 2}}])
    before = fingerprint(own_cluster)
    proc = cli(cfg, "drill")
    try:
        name = wait_for_restore(scratch_cluster, proc)
        assert restore_processes(name)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the drill process only, not of its process group
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()

    wait_until("every pg_restore of the killed drill to end", lambda: not restore_processes(name))
    assert sessions_on(scratch_cluster, name) >= 1  # the server still works for the dead client

    g = sweep(cfg)
    assert name not in databases(scratch_cluster) and sessions_on(scratch_cluster, name) == 0
    [record] = g.state.audit(action="scratch_sweep")
    assert record["outcome"] == "done" and "session(s) ended first" in record["reason"]
    assert g.state.scratch_entries() == []
    assert_production_untouched(own_cluster, before)


# -- (5) a live drill's scratch database belongs to it -----------------------------------------------------------

def test_a_sweep_sharing_the_state_store_leaves_another_processes_live_drill_alone(
    own_cluster: LocalCluster, scratch_cluster: LocalCluster, pg_cluster: LocalCluster, open_tmp: Path,
    sweep: Callable[[Path], Guardian]
) -> None:
    url = production_db(own_cluster, slow=True)
    capture(open_tmp, "shop", url)
    shared = create_database(pg_cluster, with_schema=False)  # the state store both processes use
    db = {"name": "shop", "url": url, "drill": {"scratch_url": scratch_cluster.url()}}
    drilling, starting = open_tmp / "drilling.json", open_tmp / "starting.json"
    for path, state in ((drilling, "state-a"), (starting, "state-b")):  # e.g. two hosts: two state directories
        path.write_text(json.dumps({"state_dir": str(open_tmp / state), "state": {"url": shared},
                                    "archive": {"path": str(open_tmp / "archive")}, "databases": [db]}))
    proc = cli(drilling, "drill")
    try:
        name = wait_for_restore(scratch_cluster, proc)
        g = sweep(starting)
        assert name in databases(scratch_cluster)  # neither dropped ...
        assert restore_processes(name)  # ... nor its restore killed
        assert [e.name for e in g.state.scratch_entries()] == [name]
        assert g.state.audit(action="scratch_sweep") == []  # nothing was decided about it
        assert not finding(g, "shop", "scratch_leftover").active  # and it is no leftover
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    later = sweep(starting)  # its owner is dead now: the same sweep drops it
    assert name not in databases(scratch_cluster) and later.state.scratch_entries() == []
    assert [a["outcome"] for a in later.state.audit(action="scratch_sweep")] == ["done"]
