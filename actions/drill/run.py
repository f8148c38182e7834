"""Restore drills: restore the newest good backup into a scratch database, check it and time it (the report, the
history and the schedule are `actions.drill.service`'s).

Scenarios (the RTO table of the SuoOps backup and recovery procedures): `database_corruption` is the full
drill, `accidental_deletion` the table drill (only the configured critical tables, as scenario 2 of those
procedures does for invoices with `pg_restore -t`: their entries chosen by exact name into a
`pg_restore --use-list`, their schemas created first).
Phases are timed: download (streamed to a temp file), verify (sha256 and the readability check), restore,
checks; the recovery time is download + restore + checks, wall clock, compared with the scenario's RTO.
One drill at a time; a timeout; killable on shutdown; the scratch database is always dropped. The scratch
target is proven not to be production on the connections that create and drop (daemon.adapters.postgres.scratch);
pg_restore dies with the guardian (daemon.adapters.processes).

This module is the drill's course (`DrillRunner`: pick, download, prove the scratch target, restore, check,
drop) and its cross-process lock; the steps live beside it: `restore` (verify, version gate, pg_restore),
`checks` (smoke checks), `outcome` (`DrillRun` and the scenarios).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from loguru import logger

from actions.drill.checks import run_checks
from actions.drill.outcome import TABLE, CheckResult, DrillRun, Progress
from actions.drill.restore import restore, verify_dump, version_gate
from actions.drill.sweep import SweepReport, sweep
from collectors.heroku import deleted_while_read, require_transfer_num, transfer_num
from daemon.adapters.archive.download import DownloadError, stream
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.heroku import HerokuAPI, HerokuGone
from daemon.adapters.postgres import scratch as scratchdb
from daemon.adapters.postgres.scratch import DrillRefused, Production, ScratchServer, ScratchTarget
from daemon.adapters.postgres.tools import ProcessRegistry
from daemon.adapters.statestore import StateStore
from daemon.config import DatabaseConfig
from daemon.core.errors import GuardianError
from daemon.core.redact import REDACTOR
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, Backup, DatabaseState


class DrillRunner:
    """Runs drills for the guardian. `run()` never raises for a failed drill: the failure is the result."""

    def __init__(self, store: ArchiveStore | None, heroku: HerokuAPI | None, state_dir: Path,
                 processes: ProcessRegistry, ledger: StateStore, watched: Sequence[DatabaseConfig],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`ledger` records scratch databases; `watched` are every configured database: those with a url are
        the production servers no scratch target may be."""
        self.store = store
        self.heroku = heroku
        self.state_dir = state_dir
        self.processes = processes
        self.ledger = ledger
        self.watched = list(watched)
        self.clock = clock
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release: every download opens and closes its own connection."""

    def sweep_downloads(self) -> int:
        """Remove downloads a killed drill left behind (at start, when no drill runs)."""
        removed = 0
        for folder in (self.state_dir / "drills" / "tmp").glob("download-*"):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
        return removed

    def scratch_for(self, db: DatabaseConfig) -> ScratchServer:
        url = db.drill.scratch_url.get_secret_value() if db.drill.scratch_url is not None else None
        return ScratchServer(self.state_dir, url)

    def sweep_scratch(self) -> SweepReport:
        """Sweep the scratch databases on the ledger (the caller holds the drill lock): every configured scratch
        server once, then the embedded cluster."""
        servers: dict[str | None, ScratchServer] = {}
        for db in self.watched:
            server = self.scratch_for(db)
            servers.setdefault(server.url, server)
        embedded = servers.pop(None, None) or ScratchServer(self.state_dir)
        configs = {d.name: d for d in self.watched}

        def rules(name: str) -> tuple[bool, bool] | None:
            db = configs.get(name)
            return None if db is None else (db.drill.allow_unproven_scratch, db.url is not None)

        return sweep(self.ledger, [*servers.values(), embedded], self.production(), rules)

    def production(self, timeout: float = 10) -> Production:
        """The identities of every watched production server (read now)."""
        return Production.read(((d.name, d.url.get_secret_value()) for d in self.watched if d.url is not None),
                               timeout)

    # -- the drill ----------------------------------------------------------------------------------------
    def run(self, db: DatabaseConfig, state: DatabaseState, scenario: str, billing_app: str | None = None,
            progress: Progress | None = None) -> DrillRun:
        run = DrillRun(database=db.name, scenario=scenario, started_at=self.clock())
        run.rto_seconds = getattr(db.objectives.rto, scenario).total_seconds()
        tools = next((f for f in state.findings if f.check == "client_tools_too_old" and f.active), None)
        if tools is not None:  # it would fail after the download, for a reason that is not the backup's
            run.skipped, run.reason = True, f"not drilled: {tools.hint}"
            logger.warning("{} drill of {} skipped: {}", scenario, db.name, run.reason)
            return run
        if not self._lock.acquire(blocking=False):
            run.skipped, run.reason = True, "another drill is running in this guardian (one at a time)"
            return run
        try:
            with drill_lock(self.state_dir):  # also across processes: the daemon and `backup-guardian drill`
                self._run(db, state, run, billing_app, progress or (lambda *_: None))
        except (DrillBusy, BackupsGone) as exc:
            run.skipped, run.reason = True, str(exc)
        except GuardianError as exc:
            run.reason = REDACTOR(str(exc))
            run.skipped = run.stopped = self.processes.closing.is_set()  # not a verdict on the backup
        except Exception as exc:  # a drill must never take the daemon down; the report says what happened
            logger.opt(exception=exc).error("drill of {} crashed", db.name)
            run.reason = REDACTOR(f"{type(exc).__name__}: {exc}")
        finally:
            self._lock.release()
        if run.skipped:
            logger.info("{} drill of {} skipped: {}", scenario, db.name, run.reason)
            return run
        level = "INFO" if run.succeeded else "ERROR"
        logger.log(level, "{} drill of {}: {} (recovery {:.1f}s, RTO {:.0f}s){}", scenario, db.name,
                   "succeeded" if run.succeeded else "FAILED", run.recovery_seconds, run.rto_seconds or 0,
                   "" if run.succeeded else f": {run.reason}")
        return run

    def _run(self, db: DatabaseConfig, state: DatabaseState, run: DrillRun, billing_app: str | None,
             progress: Progress) -> None:
        if run.scenario == TABLE and not db.drill.tables:
            raise DrillRefused("no critical tables configured for the table drill (drill.tables)")
        deadline = time.monotonic() + db.drill.timeout.total_seconds()
        downloads = self.state_dir / "drills" / "tmp"  # not /tmp: a killed drill's download is swept at start
        downloads.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=downloads) as tmp:
            dump = Path(tmp) / "drill.dump"
            t0 = time.monotonic()
            backup = self._download(db, state, run, billing_app, dump, progress, deadline)
            run.phases["download"] = time.monotonic() - t0
            run.dump_bytes = dump.stat().st_size
            t0 = time.monotonic()
            verify_dump(backup, dump, run)
            run.phases["verify"] = time.monotonic() - t0
            self._in_scratch(db, run, dump, deadline, progress)
        failed = [c for c in run.checks if not c.ok]
        run.succeeded = not failed
        run.reason = "all checks passed" if not failed else "failed checks: " + ", ".join(c.name for c in failed)

    def _in_scratch(self, db: DatabaseConfig, run: DrillRun, dump: Path, deadline: float,
                    progress: Progress) -> None:
        """Create a proven scratch database, restore and check it, and always drop it (proven again)."""
        production_url = db.url.get_secret_value() if db.url is not None else None
        with self.scratch_for(db).session() as target:
            production = self.production(db.connect_timeout.total_seconds())
            production.require(target, db.drill.allow_unproven_scratch, has_url=production_url is not None)
            version_gate(target, run)
            name = ScratchServer.new_name(self.clock())
            entry, run.safety = scratchdb.create(target, production, self.ledger, db.name, name, self.clock())
            run.scratch = name
            try:
                t0 = time.monotonic()
                progress("restore", 0, None)
                restore(db, run, dump, target, entry, deadline, self.processes, self.ledger)
                run.phases["restore"] = time.monotonic() - t0
                t0 = time.monotonic()
                progress("checks", 0, None)
                run.checks = self.inside(db, run, target, name, production_url)
                run.phases["checks"] = time.monotonic() - t0
            finally:
                t0 = time.monotonic()
                try:
                    scratchdb.drop(target, production, self.ledger, entry)
                except GuardianError as exc:  # never hide the drill's own error behind this one
                    run.notes.append(f"the scratch database was not dropped ({exc}); the next start sweeps it")
                run.phases["drop"] = time.monotonic() - t0

    def inside(self, db: DatabaseConfig, run: DrillRun, target: ScratchTarget, name: str,
               production_url: str | None) -> list[CheckResult]:
        """What is done in the restored scratch database `name` before it is dropped: the drill's checks. A
        subclass (the compliance export) replaces it and keeps the whole course, its safety included."""
        return run_checks(db, run, target, name, production_url)

    def _download(self, db: DatabaseConfig, state: DatabaseState, run: DrillRun, billing_app: str | None,
                  dump: Path, progress: Progress, deadline: float) -> Backup:
        """Download the newest good backup into `dump`. When Heroku deleted it meanwhile (410, or its file gone
        mid-read: its retention expired it), the next good backup is drilled instead and the notes say so:
        neither the guardian nor the backup failed."""
        gone: set[str] = set()
        while True:
            backup, source = self._pick(state, gone)
            run.backup, run.source = backup, source
            try:
                self._fetch(db, backup, source, billing_app, dump, progress, deadline)
                return backup
            except (HerokuGone, DownloadError) as exc:
                if isinstance(exc, DownloadError) and not self._gone(exc, backup, source, billing_app):
                    raise
                gone.add(backup.backup_id)
                run.notes.append(f"{backup.backup_id} was deleted by Heroku while the drill read it ({exc}); the "
                                 "next good backup is drilled instead")
                logger.warning("drill of {}: {}", db.name, run.notes[-1])
                if len(gone) >= MAX_GONE:
                    raise BackupsGone(f"{len(gone)} backups were deleted by Heroku while the drill read them: it "
                                      "waits for the next collection to list what remains") from None

    def _gone(self, exc: DownloadError, backup: Backup, source: str, billing_app: str | None) -> bool:
        """Whether a failed download means Heroku deleted the backup: its URL's object was gone, or the stream
        broke off and Heroku now answers 410 for it (expired mid-read)."""
        return deleted_while_read(exc, self.heroku if source == SOURCE_HEROKU else None, billing_app,
                                  transfer_num(backup.backup_id))

    def _pick(self, state: DatabaseState, gone: set[str] | None = None) -> tuple[Backup, str]:
        """The newest good backup (not among `gone`): an archive copy (whose sha256 is known) wins a tie with
        the provider."""
        candidates = []
        for name, src in state.sources.items():
            good = [b for b in src.good if b.backup_id not in (gone or set())]  # deleted since the listing
            b = max(good, key=lambda b: b.started_at) if good else None
            if b is not None and (name == SOURCE_ARCHIVE or (name == SOURCE_HEROKU and self.heroku is not None)):
                candidates.append((b.recovery_point, name == SOURCE_ARCHIVE, b, name))
        if not candidates and gone:
            raise BackupsGone("every good backup listed was deleted by Heroku before the drill could read it: it "
                              "waits for the next collection to list what remains")
        if not candidates:
            raise GuardianError("no good backup to drill")
        _, _, backup, source = max(candidates, key=lambda c: (c[0], c[1]))
        return backup, source

    def fetch(self, db: DatabaseConfig, backup: Backup, source: str, billing_app: str | None, dump: Path,
              progress: Progress, deadline: float) -> None:
        """Download `backup` from `source` into `dump` as a drill does (streamed, progress, deadline, shutdown);
        for `actions.recovery`, which restores from a backup a person names. HerokuGone / ObjectGone when it
        was deleted, GuardianError otherwise."""
        self._fetch(db, backup, source, billing_app, dump, progress, deadline)

    def _fetch(self, db: DatabaseConfig, backup: Backup, source: str, billing_app: str | None, dump: Path,
               progress: Progress, deadline: float) -> None:
        if source == SOURCE_ARCHIVE:
            assert self.store is not None
            chunks = self.store.open_dump(db.name, backup.backup_id)
            total = backup.size_bytes or None
        else:
            assert self.heroku is not None and billing_app is not None
            url = str(self.heroku.public_url(billing_app, require_transfer_num(backup.backup_id))["url"])
            chunks = stream(url)
            total = backup.size_bytes or None
        done = 0
        with contextlib.closing(chunks), dump.open("wb") as fh:  # type: ignore[type-var]
            for chunk in chunks:
                if time.monotonic() > deadline:
                    raise GuardianError("the drill ran past its timeout while downloading")
                if self.processes.closing.is_set():
                    raise GuardianError("the drill was stopped because the guardian is shutting down")
                fh.write(chunk)
                done += len(chunk)
                progress("download", done, total)


#: Backups found deleted one after another in one drill before it gives up until the next collection.
MAX_GONE = 3


class BackupsGone(GuardianError):
    """Heroku deleted the backups the drill was to read (MAX_GONE in a row, or every good one listed): the drill
    is skipped, not failed; the next collection lists what remains."""


class DrillBusy(GuardianError):
    """Another process of this guardian (the daemon, or `backup-guardian drill`) is drilling."""


@contextlib.contextmanager
def drill_lock(state_dir: Path) -> Iterator[None]:
    """One drill (or scratch sweep) at a time across processes sharing the state directory."""
    path = state_dir / "drills" / "drill.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DrillBusy("another drill is running (the daemon or a `backup-guardian drill`)") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
