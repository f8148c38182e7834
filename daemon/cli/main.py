"""Command line: `backup-guardian run | check | config validate | config example | archive | drill | actions |
capture | recover-rows | timeline | recovery-plan | compliance-export`.

Exit codes follow the Nagios plugin convention for every command (`daemon.cli.exits`): 0 OK, 1 WARNING, 2 CRITICAL,
3 UNKNOWN (including a configuration error or a bad argument).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, NoReturn, TextIO

from loguru import logger

from daemon import __version__
from daemon.cli.exits import CRITICAL, INTERRUPTED, OK, UNKNOWN, WARNING, worst
from daemon.config import GuardianConfig, example_yaml, load_config
from daemon.core.errors import ActionDeclined, ActionFailed, ConfigError, GuardianError
from daemon.core.redact import REDACTOR
from daemon.logs import configure_logging

if TYPE_CHECKING:
    from daemon.core.snapshot import Snapshot

#: Commands that, given no configuration of their own, work on the guardian running in the state directory.
ATTACHING = ("check", "drill", "capture", "archive", "actions", "recover-rows", "timeline", "recovery-plan",
             "compliance-export")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument exits UNKNOWN (3), as a Nagios plugin's does, not argparse's 2 (CRITICAL)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(UNKNOWN, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="backup-guardian", description="Watches PostgreSQL backups against RPO/RTO.")
    p.add_argument("--version", action="version", version=f"pg-backup-guardian {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", help="YAML config file (default: $GUARDIAN_CONFIG; optional)")
        return sp

    with_config(sub.add_parser("run", help="run the daemon (embedded demo when nothing is configured)"))
    chk = with_config(sub.add_parser("check", help="collect once, evaluate, print a table; exit 0 OK, 1 WARNING, "
                                                   "2 CRITICAL, 3 UNKNOWN"))
    chk.add_argument("--json", action="store_true", help="print the status document as JSON")
    with_config(sub.add_parser("health", help="ask the running daemon's /healthz (the container health check); "
                                              "exit 0 OK, 2 CRITICAL, 3 UNKNOWN"))
    cfg = sub.add_parser("config", help="configuration helpers")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    with_config(cfg_sub.add_parser("validate", help="load the configuration and report every problem"))
    cfg_sub.add_parser("example", help="print a commented example configuration")
    from daemon.cli import archive as archivecli

    archivecli.add_parser(sub, with_config)
    from daemon.cli import actions as actionscli

    actionscli.add_parsers(sub, with_config)
    from daemon.cli import timeline as timelinecli

    timelinecli.add_parser(sub, with_config)
    from daemon.cli import recovery as recoverycli

    recoverycli.add_parser(sub, with_config)
    drill = with_config(sub.add_parser("drill", help="restore the newest good backup into a scratch database now"))
    drill.add_argument("--database", help="only this database (default: every one)")
    drill.add_argument("--scenario", choices=["full", "table"], default="full",
                       help="full restore (database corruption) or critical tables only (accidental deletion)")
    from daemon.cli import recover as recovercli

    recovercli.add_parser(sub, with_config)
    export = with_config(sub.add_parser("compliance-export", help="export the compliance tables of the newest good "
                                        "backup (restored into a scratch database) to the archive now"))
    export.add_argument("--database", required=True, help="the database (it needs a compliance section)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config" and args.config_command == "example":
        sys.stdout.write(example_yaml())
        return OK
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write("configuration error:\n" + "".join(f"  {line}\n" for line in exc.problems))
        return UNKNOWN
    configure_logging(config.log_format, config.log_level)
    own_config = getattr(args, "config", None) or os.environ.get("GUARDIAN_CONFIG")
    if args.command in ATTACHING and not config.all_databases and not own_config:
        from daemon.cli.running import attach

        running = attach(config.state_dir)
        if running is not None:
            config, said = running
            sys.stderr.write(said + "\n")
    try:
        if args.command == "config":
            return _validate(config)
        if args.command == "check":
            return _check(config, as_json=args.json)
        if args.command == "health":
            from daemon.cli import health

            return health.run(config)
        if args.command == "drill":
            from daemon.cli import drill as drillcli

            return drillcli.run(config, args.database, args.scenario)
        if args.command == "recover-rows":
            from daemon.cli import recover as recovercli

            return recovercli.run(args, config)
        if args.command == "compliance-export":
            from daemon.cli import compliance as compliancecli

            return compliancecli.run(config, args.database)
        if args.command in ("actions", "capture"):
            from daemon.cli import actions as actionscli

            if args.command == "actions":
                return actionscli.run_actions(args, config)
            return actionscli.run_capture(args, config)
        if args.command == "recovery-plan":
            from daemon.cli import recovery as recoverycli

            return recoverycli.run(args, config)
        if args.command == "archive":
            from daemon.cli import archive as archivecli

            return archivecli.run(args, config)
        if args.command == "timeline":
            from daemon.cli import timeline as timelinecli

            return timelinecli.run(args, config)
        return _run(config)
    except ActionDeclined as exc:
        logger.warning("{}", REDACTOR(str(exc)))
        return WARNING
    except ActionFailed as exc:
        logger.error("{}", REDACTOR(str(exc)))
        return CRITICAL
    except GuardianError as exc:  # could not be done or evaluated: a store, the archive, an unknown name
        logger.error("{}", REDACTOR(str(exc)))
        return UNKNOWN


def _validate(config: GuardianConfig) -> int:
    names = ", ".join(d.name for d in config.all_databases) or "none (the embedded demo would run)"
    sys.stdout.write(f"configuration is valid; databases: {names}\n")
    return OK


def _check(config: GuardianConfig, as_json: bool) -> int:
    from daemon.app import Guardian
    from daemon.cli import terminal
    from daemon.status import status_document

    if not config.all_databases:
        sys.stderr.write("configuration error:\n  no database to check: set DATABASE_URL, list databases in the "
                         f"config file, or start `backup-guardian run` with the state directory {config.state_dir}\n")
        return UNKNOWN
    guardian = Guardian(config, quiet=True)
    try:
        snap = guardian.collect_all(one_shot=True)
    finally:
        guardian.stop()
    now = datetime.now(UTC)
    if as_json:
        sys.stdout.write(json.dumps(status_document(snap, now), indent=2) + "\n")
    else:
        terminal.status(snap, now, sys.stdout)
    return _check_verdict(snap, now, out=sys.stderr if as_json else sys.stdout)


def _check_verdict(snap: Snapshot, now: datetime, out: TextIO) -> int:
    """The worst of: CRITICAL (2) when a critical finding is active (a breach seen is reported even if other
    facts are missing), UNKNOWN (3) when any collector failed or is stale (each named, with since when), WARNING
    (1) when a warning finding is active (at risk; a standing one such as `rpo_unachievable` is in the table,
    not in the code: a check that always warns would be ignored); else OK (0)."""
    from daemon.core.policy import STANDING

    active = [f for db in snap.databases.values() for f in db.findings if f.active]
    unknown = [c for c in snap.collectors.values() if not c.up or c.stale(now)]
    for c in sorted(unknown, key=lambda c: (c.database, c.collector)):
        state = "down" if not c.up else "late"
        since = c.last_success_at.isoformat(timespec="seconds") if c.last_success_at else "ever (never succeeded)"
        why = f": {c.last_error}" if c.last_error else ""
        out.write(f"UNKNOWN: collector {c.collector} of {c.database} is {state}; its facts are stale since {since}"
                  f"{why}\n")
    return worst(CRITICAL if any(f.severity == "critical" for f in active) else OK,
                 UNKNOWN if unknown else OK,
                 WARNING if any(f.severity == "warning" and f.check not in STANDING for f in active) else OK)


def _check_listen(config: GuardianConfig) -> None:
    """Fail early, with a plain message, when the HTTP address is taken (before any demo cluster starts)."""
    import socket

    host, port = config.listen_host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise GuardianError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                                "(another guardian running? set GUARDIAN_LISTEN or listen: in the config)") from None


def _run(config: GuardianConfig) -> int:
    from daemon import heap
    from daemon.app import Guardian
    from daemon.cli import running
    from daemon.embedded import DemoDatabase, demo_config
    from daemon.runtime import Runtime

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            os._exit(INTERRUPTED)  # a second signal: the person means it
        stop.set()  # flag only: the main thread does the ordered shutdown

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    _check_listen(config)
    logger.info("state directory: {}", config.state_dir)
    demo: DemoDatabase | None = None
    if not config.all_databases:
        if not config.demo.enabled:
            raise GuardianError("no database configured and the demo is disabled: set DATABASE_URL or list "
                                "databases in a config file (see `backup-guardian config example`)")
        logger.info("no database configured: starting the embedded demo (a throwaway local PostgreSQL with "
                    "sample invoicing data). To watch your own database, set DATABASE_URL=postgresql://... "
                    "or pass --config FILE (see `backup-guardian config example`).")
        demo = DemoDatabase(config.state_dir)
        url = demo.start()
        config = demo_config(config, url)

    guardian = Guardian(config, demo=demo is not None)
    try:
        guardian.start()
        heap.freeze_after_publish(guardian.holder)  # full garbage collections only when the daemon chooses
        guardian.runtime.add_job("full-garbage-collection", heap.collect_frozen, heap.FULL_COLLECTION_EVERY)
        running.record(config)  # `check`, `drill`, `capture`, `archive`, `actions` with no configuration find it
        if demo is not None:
            demo_url = config.databases[0].url.get_secret_value() if config.databases[0].url else ""
            guardian.runtime.add_job("demo-activity", lambda: demo.add_activity(demo_url), timedelta(seconds=20))
        logger.info("pg-backup-guardian {} running; watching {} database(s)", __version__, len(config.all_databases))
        while not stop.wait(0.5):  # timed: a signal delivered to another thread is still seen within 0.5 s
            pass
        logger.info("shutting down")
    finally:
        running.remove(config)
        guardian.stop()
        if demo is not None:
            demo.stop()
        logger.info("stopped")
    if Runtime.unfinished_threads():  # the interpreter's exit would wait for them, without a bound
        logger.warning("some worker threads did not finish within the shutdown budget; exiting anyway")
        sys.stderr.flush()
        os._exit(OK)
    return OK
