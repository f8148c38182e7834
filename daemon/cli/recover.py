"""`backup-guardian recover-rows --database X --table T [--table T ...] --out DIR [--backup ID | --before TIME]
[--key COL[,COL]] [--changed]`: the rows a backup holds and production has lost, as an SQL file and CSVs.

Every argument is checked before anything starts, and a bad one is named (exit 3, no traceback); the run itself
goes through the guarded path (`actions.recovery.service`). On a terminal a progress bar, otherwise one plain
line per step on stderr; the summary on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.cli.exits import CRITICAL, OK, UNKNOWN, WARNING
from daemon.cli.terminal import ProgressBar
from daemon.config import GuardianConfig
from daemon.core.names import TableName, parse_table, shown_text, split_name


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    rec = with_config(sub.add_parser(
        "recover-rows", help="restore tables of a backup into a scratch database and write the rows production "
                             "lacks as SQL and CSV (production is only read)"))
    rec.add_argument("--database", required=True, help="the database's name in the configuration")
    rec.add_argument("--table", action="append", required=True, dest="tables",
                     help='a table in SQL syntax (invoices, app.invoices, "My Schema"."we""ird"); repeat for more')
    rec.add_argument("--out", required=True, help="a new or empty directory for the files")
    which = rec.add_mutually_exclusive_group()
    which.add_argument("--backup", help="the backup's id (default: the newest good backup)")
    which.add_argument("--before", help="the newest good backup whose recovery point is at or before this time "
                                        "(ISO 8601 with a time zone, e.g. 2026-11-30T14:00:00Z)")
    rec.add_argument("--key", help="the columns that identify a row (col[,col]), for every table given; needed "
                                   "for a table without a primary key")
    rec.add_argument("--changed", action="store_true",
                     help="also the rows changed since the backup (written commented out: you decide)")


def parse_key(text: str) -> tuple[str, ...]:
    """`col[,col]`, each column in SQL syntax (double quotes for a name holding a comma). ValueError."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    cols = tuple(split_name(p.strip(), 1)[0] for p in parts)
    if len(set(cols)) != len(cols):
        raise ValueError("a column is named twice")
    return cols


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with its zone. ValueError."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an ISO 8601 time (e.g. 2026-11-30T14:00:00Z)") from None
    if when.tzinfo is None:
        raise ValueError("no time zone: add Z for UTC or an offset such as +01:00")
    return when


def _problems(args: argparse.Namespace, config: GuardianConfig) -> tuple[list[str], dict[str, Any]]:
    """Every problem with the arguments (each naming its field), and the parsed values."""
    problems: list[str] = []
    parsed: dict[str, Any] = {}
    names = {d.name for d in config.all_databases}
    if args.database not in names:
        problems.append(f"--database {args.database!r}: not a configured database "
                        f"(known: {', '.join(sorted(names)) or 'none'})")
    tables: list[TableName] = []
    for text in args.tables:
        try:
            tables.append(parse_table(text))
        except ValueError as exc:
            problems.append(f"--table {shown_text(text)!r}: {exc}")
    if len(set(tables)) != len(tables):
        problems.append("--table: a table is named twice")
    parsed["tables"] = tuple(dict.fromkeys(tables))
    for field, fn in (("key", parse_key), ("before", parse_time)):
        value = getattr(args, field)
        if value is None:
            parsed[field] = None
            continue
        try:
            parsed[field] = fn(value)
        except ValueError as exc:
            problems.append(f"--{field} {shown_text(value)!r}: {exc}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        problems.append(f"--out {shown_text(args.out)!r}: exists and is not an empty directory (earlier files are "
                        "never overwritten)")
    return problems, parsed


class Steps:
    """Progress: the terminal's bar, or one plain line on stderr per new step when not on a terminal."""

    def __init__(self) -> None:
        self.bar = ProgressBar()
        self.phase = ""

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        if self.bar.tty:
            self.bar(phase, done, total)
        elif phase != self.phase:
            sys.stderr.write(f"{phase}...\n")
        self.phase = phase


def run(args: argparse.Namespace, config: GuardianConfig) -> int:
    problems, parsed = _problems(args, config)
    if problems:
        sys.stderr.write("configuration error:\n" + "".join(f"  {p}\n" for p in problems))
        return UNKNOWN
    from actions.recovery.output import prepare_dir
    from actions.recovery.service import RecoverRequest, RowRecovery
    from daemon.app import Guardian

    request = RecoverRequest(args.database, parsed["tables"], Path(args.out), args.backup, parsed["before"],
                             parsed["key"], args.changed)
    guardian = Guardian(config, quiet=True)
    steps = Steps()
    try:
        if args.database not in guardian.databases:
            sys.stderr.write(f"configuration error:\n  --database {args.database!r}: belongs to another shard "
                             "(state.shard_index)\n")
            return UNKNOWN
        guardian.collect_all(one_shot=True)  # the backups as the sources list them now
        prepare_dir(request.out_dir)
        drills = guardian.drills
        recovery = RowRecovery(guardian.databases, drills.runner, drills.pipeline, drills.billing_app, drills.clock)
        state = guardian.holder.current().databases[args.database]
        try:
            result = recovery.recover(request, state, steps)
        finally:
            steps.bar.done()
    finally:
        guardian.stop()
    for note in result.notes:
        sys.stderr.write(f"note: {note}\n")
    if result.summary is not None:
        sys.stdout.write("\n".join(result.summary.lines()) + "\n")
        return OK
    if request.out_dir.exists() and not any(request.out_dir.iterdir()):
        request.out_dir.rmdir()  # nothing was written: the same --out works for the next try
    if result.refused:
        sys.stderr.write(f"configuration error:\n  {result.reason}\n")
        return UNKNOWN
    sys.stdout.write(f"recover-rows {'skipped' if result.skipped else 'FAILED'}: {result.reason}\n")
    return WARNING if result.skipped else CRITICAL
