"""The scratch sweep: drop the scratch databases a killed drill left behind, on the server they are on.

The ledger (state store) keys every scratch database by its server's `system_identifier`. The sweep visits
every scratch server that has entries: each configured `drill.scratch_url` and the embedded cluster under the
state directory, identifies each by reading its identity, and for the entries recorded on it:
1. kills the entry's pg_restore if it still runs and is provably ours (same host and boot, same start time,
   a pg_restore command line naming the database), with its process group;
2. drops the database through `daemon.adapters.postgres.scratch.drop` (proven not production on the dropping connection,
   recorded server, recorded marker, sessions ended first); the entry goes only after the drop.
Whatever it cannot reach or prove stays on the ledger and is reported (`kept`); nothing is guessed.
Runs under the drill lock (the caller holds it), so no drill of this state directory is writing meanwhile. The
ledger is shared by every process using the state store (replicas, a `backup-guardian drill` elsewhere): an
entry is touched only while the sweep holds its database's `drill:<database>` lock, which a live drill holds
for its whole run (`ActionRunner.run_held`); a live drill's entry is kept, its restore and database left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from loguru import logger

from daemon.adapters.postgres import scratch as scratchdb
from daemon.adapters.postgres.scratch import Production, ScratchServer, ScratchTarget
from daemon.adapters.processes import kill_proven
from daemon.adapters.statestore import LockBusy, ScratchEntry, StateStore
from daemon.core.errors import GuardianError

#: (allow_unproven_scratch, has a production url) of a database name; None for a database no longer configured.
Rules = Callable[[str], tuple[bool, bool] | None]


@dataclass
class SweepReport:
    """What one sweep did: dropped entries (with how), kept ones (with why), killed orphan restores, and the
    entries of drills running in another process (`live`: not leftovers, left alone)."""

    dropped: list[tuple[ScratchEntry, str]] = field(default_factory=list)
    kept: list[tuple[ScratchEntry, str]] = field(default_factory=list)
    killed: list[ScratchEntry] = field(default_factory=list)
    live: list[ScratchEntry] = field(default_factory=list)


def sweep(ledger: StateStore, servers: Iterable[ScratchServer], production: Production, rules: Rules) -> SweepReport:
    """Sweep every ledger entry on the server it was recorded on (see the module docstring). `servers` are the
    candidate scratch servers (configured ones first, the embedded one last); the embedded cluster is started
    only when entries remain that no configured server claimed. StateStoreError when the ledger is unreadable."""
    report = SweepReport()
    with contextlib.ExitStack() as held:
        entries = _not_live(ledger, ledger.scratch_entries(), held, report)
        _sweep_dead(ledger, entries, servers, production, rules, report)
    return report


def _not_live(ledger: StateStore, entries: list[ScratchEntry], held: contextlib.ExitStack,
              report: SweepReport) -> list[ScratchEntry]:
    """The entries whose database no live process drills: `held` keeps each such database's drill lock (the
    one a drill holds for its whole run) until the sweep ends. The others go to `report.live` (a drill runs)
    or `report.kept` (the lock could not be asked for)."""
    busy: set[str] = set()
    unknown: dict[str, str] = {}
    for database in dict.fromkeys(e.database for e in entries):
        try:
            held.enter_context(ledger.exclusive(f"drill:{database}"))  # as ActionRunner.run_held names it
        except LockBusy:
            busy.add(database)
        except GuardianError as exc:
            unknown[database] = f"cannot tell whether a drill of {database} runs in another process ({exc})"
    report.live.extend(e for e in entries if e.database in busy)
    report.kept.extend((e, unknown[e.database]) for e in entries if e.database in unknown)
    return [e for e in entries if e.database not in busy and e.database not in unknown]


def _sweep_dead(ledger: StateStore, entries: list[ScratchEntry], servers: Iterable[ScratchServer],
                production: Production, rules: Rules, report: SweepReport) -> None:
    pending: dict[str, list[ScratchEntry]] = {}
    for entry in entries:
        pending.setdefault(entry.server_id, []).append(entry)
        if entry.process and kill_proven(entry.process, "pg_restore", entry.name):
            report.killed.append(entry)
    unreached: list[str] = []
    for server in servers:
        if not pending:
            break
        if server.embedded and not server.embedded_cluster().initialized:
            continue  # never started: it cannot hold anything
        try:
            with server.session() as target:
                with target.connect() as conn:
                    found = pending.pop(str(target.identity(conn)), [])
                for entry in found:
                    _drop_one(target, production, ledger, entry, rules, report)
        except GuardianError as exc:
            unreached.append(str(exc))
    for entries in pending.values():
        why = "no configured scratch server has this identity now" + (
            f" ({'; '.join(unreached)})" if unreached else "")
        report.kept.extend((e, why) for e in entries)


def _drop_one(target: ScratchTarget, production: Production, ledger: StateStore, entry: ScratchEntry,
              rules: Rules, report: SweepReport) -> None:
    rule = rules(entry.database)
    try:
        allow, has_url = rule if rule is not None else (False, True)
        production.require(target, allow, has_url)
        report.dropped.append((entry, scratchdb.drop(target, production, ledger, entry)))
    except GuardianError as exc:
        logger.debug("scratch database {} kept: {}", entry.name, exc)
        report.kept.append((entry, str(exc)))
