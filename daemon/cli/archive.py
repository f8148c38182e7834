"""`backup-guardian archive list | milestone | prune | mirror`: the archive from the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from actions.milestone import mark_milestone
from daemon.app import Guardian
from daemon.cli import terminal
from daemon.cli.exits import CRITICAL, OK, WARNING
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError
from daemon.core.retention import TIERS
from daemon.status import human_size


def add_parser(sub: Any, add: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add `archive ...` to the CLI; `add` is the CLI's helper that gives a subcommand --config."""
    arc = sub.add_parser("archive", help="the archive: tiers, milestones, prune, mirror")
    arc_sub = arc.add_subparsers(dest="archive_command", required=True)
    ls = add(arc_sub.add_parser("list", help="print each database's archive tiers as a table"))
    ls.add_argument("--database", help="only this database")
    ms = add(arc_sub.add_parser("milestone", help="keep a backup forever, with a label"))
    ms.add_argument("--database", required=True)
    ms.add_argument("--label", required=True, help='e.g. "v2 launch"')
    ms.add_argument("--backup", help="backup id (default: the newest good one)")
    pr = add(arc_sub.add_parser("prune", help="delete copies past their tier's keep (dry run by default)"))
    pr.add_argument("--apply", action="store_true", help="really delete (default: list what would go)")
    mi = add(arc_sub.add_parser("mirror", help="copy the newest good Heroku backups the archive lacks"))
    mi.add_argument("--database", help="only this database")


def run(args: argparse.Namespace, config: GuardianConfig) -> int:
    guardian = Guardian(config, quiet=True)
    try:
        covered = [n for n, db in guardian.databases.items() if guardian.archive.covers(db)]
        if not covered:
            raise GuardianError("no database is archived: configure archive.kind s3 (mirrors Heroku backups) or a "
                                "database with a url (self-managed captures)")
        cmd = args.archive_command
        if cmd == "list":
            return _list(guardian, [n for n in covered if args.database in (None, n)])
        if cmd == "milestone":
            return _milestone(guardian, args.database, args.backup, args.label)
        if cmd == "prune":
            return _prune(guardian, args.apply)
        return _mirror(guardian, args.database)
    finally:
        guardian.stop()


def _list(guardian: Guardian, names: list[str]) -> int:
    for name in names:
        objects = guardian.store.objects(name)
        tiers = []
        for tier in TIERS:
            mine = [o for o in objects if o.succeeded and o.tier == tier]
            newest = max((o.recovery_point for o in mine), default=None)
            tiers.append((tier, str(len(mine)), human_size(sum(o.size_bytes for o in mine)),
                          newest.isoformat(timespec="seconds") if newest else "-"))
        terminal.table(("TIER", "COPIES", "BYTES", "NEWEST RECOVERY POINT"), tiers, frozenset({1, 2}),
                       out=sys.stdout, title=f"{name}  ({guardian.store.describe()})")
        copies = [(o.backup_id, o.tier, o.recovery_point.isoformat(timespec="seconds"), human_size(o.size_bytes),
                   {True: "encrypted", False: "NOT ENCRYPTED", None: "-"}[o.encrypted],
                   f'"{o.label}"' if o.label else "", "" if o.succeeded else "FAILED")  # quoted: free text
                  for o in sorted(objects, key=lambda o: o.recovery_point, reverse=True)]
        if copies:
            terminal.table(("BACKUP", "TIER", "RECOVERY POINT", "SIZE", "ENCRYPTION", "LABEL", "STATE"), copies,
                           frozenset({3}), out=sys.stdout)
    return OK


def _milestone(guardian: Guardian, database: str, backup_id: str | None, label: str) -> int:
    if database not in guardian.databases:
        raise GuardianError(f"unknown database {database!r}; known: {', '.join(guardian.databases)}")
    record = mark_milestone(guardian.pipeline, guardian.store, database, backup_id, label)
    sys.stdout.write(f"{database} {record.backup_id} ({record.started_at.isoformat(timespec='seconds')}) is now a "
                     f'milestone "{label}", kept forever\n')
    return OK


def _prune(guardian: Guardian, apply: bool) -> int:
    paused = guardian.paused() if apply else None
    before = guardian.holder.current().actions.get(("prune", "refused"), 0)
    decisions = guardian.prune(apply=apply)  # paused: deletes nothing and audits skipped_paused
    refused = guardian.holder.current().actions.get(("prune", "refused"), 0) - before
    doomed = [d for d in decisions if d.delete]
    if paused is not None:
        for d in doomed:
            sys.stdout.write(f"not deleted {d.obj.database} {d.obj.backup_id} ({d.obj.tier}): {d.reason}\n")
        sys.stdout.write(f"nothing deleted: actions are paused ({paused}); {len(doomed)} would go. "
                         "`backup-guardian actions resume` lets prune run again.\n")
        return WARNING
    verb = "deleted" if apply else "would delete"
    for d in doomed:
        sys.stdout.write(f"{verb} {d.obj.database} {d.obj.backup_id} ({d.obj.tier}): {d.reason}\n")
    kept = len(decisions) - len(doomed)
    sys.stdout.write(f"{len(doomed)} {verb}, {kept} kept" + ("" if apply else " (dry run: pass --apply)") + "\n")
    if refused:
        sys.stdout.write(f"{refused} deletion(s) refused by the store (the audit log says why)\n")
        return CRITICAL
    return OK


def _mirror(guardian: Guardian, database: str | None) -> int:
    guardian.collect_all(one_shot=True)
    if database is not None and database not in guardian.databases:
        raise GuardianError(f"unknown database {database!r}")
    before = dict(guardian.holder.current().actions)
    bar = terminal.ProgressBar()  # on a terminal; otherwise the log says how a long copy goes, once a minute
    try:
        copied = guardian.mirrors.pending(only=database, progress=bar if bar.tty else None)
    finally:
        bar.done()
    failed = guardian.holder.current().actions.get(("mirror", "failed"), 0) - before.get(("mirror", "failed"), 0)
    sys.stdout.write(f"{copied} backup(s) mirrored, {failed} failed\n")
    return CRITICAL if failed else OK
