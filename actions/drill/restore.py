"""A drill's restore steps, between the download and the checks: verify the dump (sha256, readable listing),
refuse a dump newer than pg_restore, build the table drill's restore list, and run pg_restore into the proven
scratch database (its own process group, killed on shutdown or timeout, dying with the guardian, its pid on the
scratch ledger for the sweep).
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from loguru import logger
from psycopg import sql

from actions.drill.checks import critical_tables
from actions.drill.outcome import TABLE, DrillRun
from daemon.adapters.postgres.scratch import DrillRefused, ScratchTarget
from daemon.adapters.postgres.toc import explain, read_toc, table_entries
from daemon.adapters.postgres.tools import ProcessRegistry, find_tool, kill_group, tool_version
from daemon.adapters.processes import GroupReaper, describe, die_with_parent
from daemon.adapters.statestore import ScratchEntry, StateStore
from daemon.config import DatabaseConfig
from daemon.core.errors import GuardianError
from daemon.core.snapshot import Backup
from daemon.core.versions import major_of


def verify_dump(backup: Backup, dump: Path, run: DrillRun) -> None:
    """Check the download: its sha256 against the archive record (when known), then that pg_restore can read
    its listing (`run.toc`). GuardianError when either fails."""
    if backup.sha256:
        sha = hashlib.sha256()
        with dump.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        if sha.hexdigest() != backup.sha256:
            raise GuardianError(f"sha256 mismatch: the archive says {backup.sha256[:12]}, the download is "
                                f"{sha.hexdigest()[:12]}")
        run.notes.append("sha256 verified against the archive record")
    run.toc = read_toc(dump)
    if not run.toc.ok:
        raise GuardianError(f"the dump is not readable: {run.toc.error}")


def version_gate(target: ScratchTarget, run: DrillRun) -> None:
    """Plain words when the dump cannot restore here: a newer dump than pg_restore, or than the server."""
    toc = run.toc
    dump_major = major_of(toc.dumped_from) if toc is not None else None
    if dump_major is None:
        return
    with target.connect() as conn:
        scratch_major = conn.info.server_version // 10000
    if dump_major > scratch_major:
        run.notes.append(f"the dump comes from PostgreSQL {dump_major}; the scratch server runs "
                         f"{scratch_major}: some objects may not restore")
    tool = tool_version("pg_restore")
    tool_major = major_of(tool)
    if tool_major and dump_major > tool_major:
        raise DrillRefused(f"the dump comes from PostgreSQL {dump_major} but pg_restore is {tool}: install the "
                           f"PostgreSQL {dump_major} client tools")


def restore(db: DatabaseConfig, run: DrillRun, dump: Path, target: ScratchTarget, entry: ScratchEntry,
            deadline: float, processes: ProcessRegistry, ledger: StateStore) -> None:
    """pg_restore into the scratch database on the pinned target. It runs in its own process group (shutdown
    kills the group) and dies with the guardian (childguard); its pid is on the ledger for the sweep."""
    args = [find_tool("pg_restore"), f"--jobs={db.drill.jobs}", "--no-owner", "--no-privileges",
            "--exit-on-error", f"--dbname={target.conninfo(entry.name, with_password=False)}"]
    if run.scenario == TABLE:
        args.append(f"--use-list={table_list(db, run, dump, target, entry.name, deadline)}")
    args.append(str(dump))
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, env=target.restore_env(),
                                start_new_session=True, preexec_fn=die_with_parent())
        reaper = GroupReaper(proc.pid)
        processes.add(proc)
        try:
            _record_process(ledger, entry, describe(proc.pid))
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait()
            raise GuardianError("the drill ran past its timeout; pg_restore was stopped") from None
        finally:
            processes.discard(proc)
            reaper.release()
            _record_process(ledger, entry, None)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        if processes.closing.is_set():
            raise GuardianError("the drill was stopped because the guardian is shutting down")
        raise GuardianError(f"pg_restore failed: {explain(stderr)}")


def table_list(db: DatabaseConfig, run: DrillRun, dump: Path, target: ScratchTarget, dbname: str,
               deadline: float) -> Path:
    """The table drill's restore list (next to the dump): the TABLE and TABLE DATA entries of each critical
    table, as pg_restore selects them by exact schema and name. The schemas of those tables are created
    first in the scratch database (pg_restore creates no schema for a table it restores alone), so a table
    outside public restores like one inside it. Tables the dump lacks go to `run.not_in_dump`."""
    tables = critical_tables(db)
    lines, run.not_in_dump = table_entries(dump, tables, timeout=max(1.0, deadline - time.monotonic()))
    schemas = sorted({t.schema for t in tables if t not in run.not_in_dump})
    with target.connect(dbname) as conn:  # the pinned scratch server, like every drill connection
        present = {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)",
                                              (schemas,))}
        for schema in schemas:
            if schema not in present:
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    listfile = dump.with_name("tables.list")
    listfile.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return listfile


def _record_process(ledger: StateStore, entry: ScratchEntry, process: dict[str, Any] | None) -> None:
    """Note on the ledger which process restores into `entry` (the sweep kills it if it outlives us)."""
    try:
        ledger.set_scratch_process(entry.server_id, entry.name, process)
    except GuardianError as exc:  # the restore is still tied to our life (childguard): only log it
        logger.warning("the restoring process is not on the scratch ledger: {}", exc)
