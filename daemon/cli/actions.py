"""`backup-guardian actions` (the audit log as a table; pause and resume) and `backup-guardian capture`
(a person's capture request, through the same guards as an automatic one)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from daemon.cli import terminal
from daemon.cli.exits import CRITICAL, OK, UNKNOWN, WARNING
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError
from daemon.core.redact import REDACTOR


def add_parsers(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    act = with_config(sub.add_parser("actions", help="list the audit log of actions; pause or resume them"))
    act.add_argument("--limit", type=int, default=50, help="the newest N records (default 50)")
    act.add_argument("--action", help="only this action (capture, scale, rollback, mirror, prune, drill, "
                                      "milestone, recover_rows, compliance_export)")
    act.add_argument("--target", help="only this target (a database name, an app for rollback, or "
                                      "app/process_type for scale)")
    act.add_argument("--json", action="store_true", help="print the records as JSON lines")
    act_sub = act.add_subparsers(dest="actions_command")

    def also_config(sp: argparse.ArgumentParser) -> None:
        # SUPPRESS: without it the subcommand's absent --config would overwrite the one given before it
        sp.add_argument("--config", "-c", default=argparse.SUPPRESS, help="YAML config file")

    pause = act_sub.add_parser("pause", help="stop every remedial action on every replica now")
    pause.add_argument("--reason", required=True, help="why (shown in status, logs and the audit log)")
    also_config(pause)
    also_config(act_sub.add_parser("resume", help="let remedial actions run again"))
    cap = with_config(sub.add_parser("capture", help="take a backup of one database now (guarded, audited)"))
    cap.add_argument("--database", required=True, help="the database's name in the configuration")
    cap.add_argument("--reason", default="requested by a person", help="why (goes into the audit log)")


def run_actions(args: argparse.Namespace, config: GuardianConfig) -> int:
    from actions.audit import AuditLog
    from actions.pipeline import PAUSE_KEY
    from daemon.adapters.statestore import open_state_store

    url = config.state.url.get_secret_value() if config.state.url is not None else None
    store = open_state_store(url, config.state_dir)
    try:
        audit = AuditLog(store)
        who = f"{os.environ.get('USER') or 'someone'}@{socket.gethostname()}"
        if args.actions_command == "pause":
            store.put(PAUSE_KEY, {"paused": True, "reason": args.reason, "by": who,
                                  "at": datetime.now(UTC).isoformat()})
            audit.record("actions", "all", "paused", args.reason, by=who)
            sys.stdout.write(f"remedial actions paused on every replica sharing {store.describe()}\n")
            return OK
        if args.actions_command == "resume":
            store.put(PAUSE_KEY, {"paused": False, "by": who, "at": datetime.now(UTC).isoformat()})
            audit.record("actions", "all", "resumed", "resumed by a person", by=who)
            sys.stdout.write("remedial actions resumed\n")
            return OK
        records = audit.read(limit=args.limit, action=args.action, target=args.target)
        if args.json:
            sys.stdout.writelines(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
        else:
            if records:
                terminal.table(AUDIT_HEAD, audit_rows(records), out=sys.stdout)
            else:
                sys.stdout.write("no audit records yet\n")
        return OK
    finally:
        store.close()


AUDIT_HEAD = ("TIME (UTC)", "ACTION", "TARGET", "OUTCOME", "REASON")


def audit_rows(records: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The audit log's rows: time, action, target, outcome, reason (a long reason cut at 160 characters)."""
    rows: list[tuple[str, ...]] = []
    for r in records:
        reason = str(r.get("reason", ""))
        rows.append((str(r.get("time", ""))[:19].replace("T", " "), str(r.get("action", "")),
                     str(r.get("target", "")), str(r.get("outcome", "")),
                     reason if len(reason) <= 160 else reason[:157] + "..."))
    return rows


def run_capture(args: argparse.Namespace, config: GuardianConfig) -> int:
    from daemon.app import Guardian

    names = {d.name for d in config.all_databases}
    if args.database not in names:
        sys.stderr.write(f"configuration error:\n  --database {args.database!r}: not a configured database "
                         f"(known: {', '.join(sorted(names)) or 'none'})\n")
        return UNKNOWN
    if config.archive.kind == "local":
        config.archive_dir.mkdir(parents=True, exist_ok=True)  # as the daemon's start does
    guardian = Guardian(config, quiet=True)
    try:
        if args.database not in guardian.databases:
            raise GuardianError(f"{args.database} belongs to another shard (state.shard_index)")
        guardian.collect_all(one_shot=True)  # the guards need the sources' current view
        decision = guardian.remedies.request_capture(args.database, args.reason)
    finally:
        guardian.stop()
    sys.stdout.write(REDACTOR(f"{decision.outcome}: {decision.reason}") + "\n")
    if decision.outcome in ("done", "dry_run"):
        return OK
    return CRITICAL if decision.outcome in ("failed", "interrupted") else WARNING  # else declined by a guard
