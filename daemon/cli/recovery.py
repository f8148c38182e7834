"""`backup-guardian recovery-plan --database X --scenario corruption|deletion|failure|outage [--format text|json]
[--before TIME]`: the runbook for the scenario, filled with what the guardian knows now.

The facts come from one collection, the way `check` reads them; the plan is `daemon.core.runbook`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.text import Text

from daemon.app import Guardian
from daemon.cli import terminal
from daemon.cli.exits import OK
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError
from daemon.core.recovery import SCENARIOS, RecoveryPlan
from daemon.core.runbook import plan_lines
from daemon.recovery import parse_time, recovery_plan, targets

#: How each kind of line looks on a terminal.
LINE_STYLES = {"title": "bold", "heading": "bold underline", "ok": "green", "warning": "yellow",
               "critical": "bold red", "command": "cyan", "plain": ""}


def add_parser(sub: Any, add: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add `recovery-plan` to the CLI; `add` is the CLI's helper that gives a subcommand --config."""
    rp = add(sub.add_parser("recovery-plan", help="the recovery runbook for one database and scenario, with "
                                                  "today's backups, rollback window, drill times and commands"))
    rp.add_argument("--database", required=True, help="the watched database's name")
    rp.add_argument("--scenario", required=True, choices=list(SCENARIOS),
                    help="corruption (1), deletion (2), failure (3) or outage (the provider's)")
    rp.add_argument("--format", choices=["text", "json"], default="text", help="text for people, json for tools")
    rp.add_argument("--before", help="the moment just before the damage (ISO 8601; UTC unless it says otherwise): "
                                     "picks the backups and the rollback time")


def run(args: argparse.Namespace, config: GuardianConfig) -> int:
    before = parse_time(args.before, "--before") if args.before is not None else None
    if args.database not in {db.name for db in config.all_databases}:
        known = ", ".join(db.name for db in config.all_databases) or "none"
        raise GuardianError(f"unknown database {args.database!r}; known: {known}")
    guardian = Guardian(config, quiet=True)
    try:
        snap = guardian.collect_all(one_shot=True)
    finally:
        guardian.stop()
    plan = recovery_plan(snap, targets(config), args.database, args.scenario, datetime.now(UTC), before)
    if args.format == "json":
        sys.stdout.write(json.dumps(plan.to_json(), indent=2) + "\n")
    else:
        show(plan)
    return OK


def show(plan: RecoveryPlan, out: Any = None) -> None:
    """The plan in words: coloured on a terminal, plain text otherwise."""
    con = terminal.console(out)
    lines = plan_lines(plan)
    if not terminal.wants_rich(con):
        con.file.write("\n".join(text for _, text in lines) + "\n")
        return
    for style, text in lines:
        con.print(Text(text, style=LINE_STYLES.get(style, "")))
