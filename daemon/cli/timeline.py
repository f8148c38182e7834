"""`backup-guardian timeline --since 48h [--database X] [--format markdown|json|table]`: what the guardian
recorded in a window (findings opened and resolved, notifications, actions, backups, drills, Heroku's
incidents), oldest first, for the post-incident review. Reads the state store (and a local archive's records)
only: works with the daemon running or not, and never needs the network."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon import timeline
from daemon.cli import terminal
from daemon.cli.exits import OK, UNKNOWN
from daemon.config import GuardianConfig

if TYPE_CHECKING:
    from daemon.adapters.statestore import StateStore

FORMATS = ("markdown", "json", "table")


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Add `timeline` to the CLI; `with_config` is the CLI's helper that gives a subcommand --config."""
    tl = with_config(sub.add_parser("timeline", help="what the guardian recorded in a window, oldest first, for "
                                                     "the post-incident review"))
    tl.add_argument("--since", default="48h", help="start of the window: 90m, 48h, 7d, 2w before now, or an ISO "
                                                   "time such as 2026-11-30T14:00Z (default 48h)")
    tl.add_argument("--database", help="only this database (and what concerns every database)")
    tl.add_argument("--format", choices=FORMATS, default="markdown",
                    help="markdown for the review document (default), json for tools, table for a terminal")


def provider_sources(config: GuardianConfig, state: StateStore) -> list[timeline.EventSource]:
    """The sources of provider incidents (kind "provider") the timeline also reads from `state`: Heroku's
    incidents as the status poller recorded them, when Heroku is configured (a database or a scale target);
    asked for one database, they are listed for a Heroku-backed one only."""
    if not (config.heroku_databases or config.actions.scale):
        return []
    return [timeline.ProviderIncidents(state, "heroku", [d.name for d in config.heroku_databases])]


def run(args: argparse.Namespace, config: GuardianConfig, now: datetime | None = None) -> int:
    from daemon.adapters.archive.local import LocalDirectoryStore
    from daemon.adapters.statestore import open_state_store

    now = now or datetime.now(UTC)
    try:
        since = timeline.parse_since(args.since, now)
    except ValueError as exc:
        sys.stderr.write(f"configuration error:\n  --since: {exc}\n")
        return UNKNOWN
    configured = [d.name for d in config.all_databases]
    url = config.state.url.get_secret_value() if config.state.url is not None else None
    store = open_state_store(url, config.state_dir)
    try:
        archive = LocalDirectoryStore(config.archive_dir) if config.archive.kind == "local" \
            and config.archive_dir.is_dir() else None
        apps: dict[str, list[str]] = {}
        for d in config.heroku_databases:  # an action on an app (rollback, scale) concerns its databases
            if d.heroku is not None:
                apps.setdefault(d.heroku.app, []).append(d.name)
        found = timeline.gather(store, since, now, args.database, configured, archive,
                                provider_sources(config, store), apps)
    finally:
        store.close()
    if args.database is not None and args.database not in configured \
            and not any(e.database == args.database for e in found.events):
        sys.stderr.write(f"configuration error:\n  --database {args.database!r}: not a configured database and "
                         f"nothing recorded about it in this window (known: {', '.join(configured) or 'none'})\n")
        return UNKNOWN
    if args.format == "json":
        sys.stdout.write(timeline.as_json(found))
    elif args.format == "table":
        if found.events:
            terminal.table(timeline.TABLE_HEAD, timeline.table_rows(found), out=sys.stdout,
                           title=timeline.markdown(found).splitlines()[0].lstrip("# "))
        else:
            sys.stdout.write("nothing recorded in this window\n")
    else:
        sys.stdout.write(timeline.markdown(found))
    return OK
