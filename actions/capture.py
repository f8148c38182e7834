"""Self-managed capture: `pg_dump -Fc` of one database, streamed into the archive store.

The dump is read from pg_dump's stdout in chunks, hashed (sha256) on the way and written to the store's
writer; only a clean exit of pg_dump commits it. Any failure aborts the writer (no partial file remains)
and is recorded as a failed attempt. The password reaches pg_dump through PGPASSWORD, never argv.

`Capturer` runs one pg_dump; `CaptureService` is the guardian's capture action: each capture (scheduled,
emergency or a person's) under `capture:<name>` with its history record, then keep_last and a re-read of the
archive; it also sweeps the partial files a crash left, and says when the first capture after a start is due.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from loguru import logger
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from actions.guards import Decision, Intent
from actions.pipeline import SCHEDULED_CAPTURE, Pipeline
from actions.planner import INTERRUPTED_CAPTURE, capture_source
from actions.runner import Outcome
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.postgres.toc import TocTee
from daemon.adapters.postgres.tools import (
    PROCESSES,
    ProcessRegistry,
    find_tool,
    kill_group,
    program_error,
    tool_version,
)
from daemon.adapters.sentry import Notifier
from daemon.adapters.statestore import ActionRecord
from daemon.config import DatabaseConfig
from daemon.core.errors import CaptureError, GuardianError, StoppedByShutdown
from daemon.core.redact import REDACTOR
from daemon.core.retention import KEEP_FAILED_RECORDS
from daemon.core.snapshot import SOURCE_ARCHIVE, Backup, DatabaseState, SourceState, StateHolder

CHUNK = 1 << 20


@dataclass(frozen=True)
class CaptureRequest:
    database: str
    url: str
    kind: str = "scheduled"
    timeout_seconds: float = 7200
    extra_args: tuple[str, ...] = ()
    server_version: str | None = None


def pg_dump_command(url: str, extra_args: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """The pg_dump argument list and environment for `url`; the password goes only into the environment."""
    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # psycopg raises ProgrammingError; the message may quote the URL
        raise CaptureError(REDACTOR(f"invalid database URL: {exc}")) from None
    password = params.pop("password", None)
    env = dict(os.environ)  # PGSSLMODE, PGSSLROOTCERT, ... apply to pg_dump as they do to the live collector
    if password:
        env["PGPASSWORD"] = str(password)
    conninfo = make_conninfo(**{k: str(v) for k, v in params.items()})
    args = [find_tool("pg_dump"), "--format=custom", "--no-password", f"--dbname={conninfo}", *extra_args]
    return args, env


def _server_of(url: str) -> str:
    """host:port/dbname of a connection URL or conninfo, for messages (never its password or user)."""
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "the database"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or '?'}"


class Capturer:
    """Runs captures, one at a time per database, and remembers failures the store could not record."""

    def __init__(self, store: ArchiveStore, processes: ProcessRegistry = PROCESSES,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.processes = processes
        self.clock = clock
        self.host = socket.gethostname()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._unrecorded: dict[str, deque[Backup]] = {}

    def running(self, database: str) -> bool:
        lock = self._locks.get(database)
        return bool(lock and lock.locked())

    def unrecorded(self, database: str) -> list[Backup]:
        return list(self._unrecorded.get(database, ()))

    def _lock(self, database: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(database, threading.Lock())

    def capture(self, req: CaptureRequest) -> BackupRecord:
        """Capture `req.database` now. Returns the committed record; raises CaptureError on failure
        (after recording the failed attempt) or when a capture of that database is already running, and
        StoppedByShutdown (nothing recorded, only logged) when the shutdown came first or stopped pg_dump."""
        lock = self._lock(req.database)
        if not lock.acquire(blocking=False):
            raise CaptureError(f"a capture of {req.database} is already running")
        try:
            return self._capture(req)
        finally:
            lock.release()

    def record_interrupted(self, database: str, kind: str, started: datetime) -> BackupRecord:
        """Record, as a failed attempt, a capture of `database` whose process died during it (found later:
        its action record was still running). The archive then shows a failed last attempt, as it would
        have had the capture failed; the error says why (`INTERRUPTED_CAPTURE`)."""
        record = BackupRecord(database=database, backup_id=capture_id(started, kind), kind=kind,
                              started_at=started, finished_at=self.clock(), outcome="failed",
                              error=INTERRUPTED_CAPTURE, host=self.host)
        self._record_failure(record)
        logger.error("capture of {} started {} was interrupted: recorded as a failed attempt", database,
                     started.isoformat(timespec="seconds"))
        return record

    def _capture(self, req: CaptureRequest) -> BackupRecord:
        started = self.clock()
        backup_id = capture_id(started, req.kind)
        logger.info("capture of {} started ({})", req.database, backup_id)
        try:
            record = self._run_dump(req, backup_id, started)
        except StoppedByShutdown:
            logger.info("capture of {} stopped: the guardian is shutting down (not a failed attempt)", req.database)
            raise
        except GuardianError as exc:
            finished = self.clock()
            error = REDACTOR(str(exc))
            record = BackupRecord(database=req.database, backup_id=backup_id, kind=req.kind, started_at=started,
                                  finished_at=finished, outcome="failed", error=error,
                                  pg_dump_version=_safe_version(), server_version=req.server_version,
                                  host=self.host)
            self._record_failure(record)
            logger.error("capture of {} failed after {:.1f}s: {}", req.database,
                         (finished - started).total_seconds(), error)
            raise CaptureError(error) from None
        logger.info("capture of {} succeeded: {} bytes in {:.1f}s, sha256 {}", req.database, record.size_bytes,
                    (record.finished_at - started).total_seconds(), (record.sha256 or "")[:12])
        return record

    def _run_dump(self, req: CaptureRequest, backup_id: str, started: datetime) -> BackupRecord:
        args, env = pg_dump_command(req.url, req.extra_args)
        if self.processes.closing.is_set():  # the last moment to not start at all
            raise StoppedByShutdown(f"capture of {req.database} not started: the guardian is shutting down")
        writer = self.store.begin(req.database, backup_id, recovery_point=started)
        tee = TocTee()
        sha, size = hashlib.sha256(), 0
        timed_out = threading.Event()
        with tempfile.TemporaryFile() as errfile:
            try:
                proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL,
                                        env=env, start_new_session=True)
            except OSError as exc:
                writer.abort()
                raise CaptureError(f"cannot start pg_dump: {exc.strerror}") from None
            self.processes.add(proc)

            def on_timeout() -> None:
                timed_out.set()
                kill_group(proc)

            timer = threading.Timer(req.timeout_seconds, on_timeout)
            timer.daemon = True
            timer.start()
            try:
                assert proc.stdout is not None
                while chunk := proc.stdout.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    writer.write(chunk)
                    tee.write(chunk)
                rc = proc.wait()
            except BaseException:
                kill_group(proc)
                proc.wait()
                writer.abort()
                tee.abort()
                raise
            finally:
                timer.cancel()
                self.processes.discard(proc)
                if proc.stdout is not None:
                    proc.stdout.close()
            errfile.seek(0)
            stderr = errfile.read().decode(errors="replace").strip()
        if rc != 0 or timed_out.is_set():
            writer.abort()
            tee.abort()
            if timed_out.is_set():
                raise CaptureError(f"pg_dump timed out after {req.timeout_seconds:.0f}s and was killed")
            if self.processes.stopped_by_shutdown(proc):
                raise StoppedByShutdown(f"pg_dump of {req.database} was stopped: the guardian is shutting down")
            cause = program_error("pg_dump", stderr) if stderr else f"exit code {rc}"
            raise CaptureError(f"pg_dump of {_server_of(req.url)} failed: {cause}")
        if size == 0:
            writer.abort()
            tee.abort()
            raise CaptureError("pg_dump produced an empty dump")
        try:
            toc = tee.result_during(writer.seal)  # pg_restore reads its last blocks while the copy is completed
        except BaseException:
            writer.abort()
            raise
        if not toc.ok:
            writer.abort()
            raise CaptureError(f"the dump pg_dump wrote is not readable: {toc.error}")
        record = BackupRecord(
            database=req.database, backup_id=backup_id, kind=req.kind,
            started_at=started, finished_at=self.clock(), outcome="succeeded",
            size_bytes=size, sha256=sha.hexdigest(), pg_dump_version=_safe_version(),
            server_version=req.server_version, host=self.host, toc=toc.to_json(),
        )
        writer.commit(record)
        return record

    def _record_failure(self, record: BackupRecord) -> None:
        try:
            self.store.record_failure(record)
        except GuardianError as exc:
            logger.error("the failed attempt could not be recorded in the archive: {}", exc)
            queue = self._unrecorded.setdefault(record.database, deque(maxlen=KEEP_FAILED_RECORDS))
            queue.append(record.to_backup(SOURCE_ARCHIVE))


def capture_id(started: datetime, kind: str) -> str:
    """The id of a capture that started at `started`: its UTC time to the millisecond, and its kind."""
    return f"{started.strftime('%Y%m%dT%H%M%S')}{started.microsecond // 1000:03d}Z-{kind}"


def _safe_version() -> str | None:
    try:
        return tool_version("pg_dump")
    except (GuardianError, OSError, subprocess.SubprocessError):
        return None


class CaptureService:
    """The guardian's own captures of its self-managed databases: scheduled, emergency or a person's, each run
    under `capture:<name>` with its history record, followed by keep_last and a re-read of the archive."""

    def __init__(self, databases: dict[str, DatabaseConfig], all_databases: list[DatabaseConfig],
                 capturer: Capturer, pipeline: Pipeline, holder: StateHolder, notifier: Notifier,
                 reread: Callable[[str], object], keep_last: Callable[[str, int], int],
                 stopping: Callable[[], bool]) -> None:
        """`reread(database)` re-reads its archive and re-evaluates; `keep_last(database, n)` applies the
        archive's deletion plan after a good capture (returns how many copies went)."""
        self.databases = databases
        self.all_databases = all_databases
        self.capturer = capturer
        self.pipeline = pipeline
        self.holder = holder
        self.notifier = notifier
        self.reread = reread
        self.keep_last = keep_last
        self.stopping = stopping

    def capture(self, name: str, kind: str = "scheduled", lock: bool = True) -> tuple[bool, str]:
        """Capture one database now (scheduled job, emergency or manual request); failures are recorded, not
        raised. Returns (succeeded, what happened). With `lock`, the capture runs as a recorded execution: it
        holds `capture:<name>` in the state store, so no other process (the `capture` command, another
        replica) dumps the same database at the same time (a busy lock skips this one quietly), and its
        history record lets the next start close it as interrupted should this process die during it.
        Raises StoppedByShutdown when the shutdown came first; a pg_dump the shutdown stops ends the history
        record as interrupted (without `lock`, the exception reaches the caller's runner): never a failed
        attempt, no check-in. After a good capture is committed and reported, keep_last applies the archive's
        deletion plan; its outcome (even a refused delete) never changes the capture's."""
        if self.stopping():
            raise StoppedByShutdown(f"capture of {name} not started: the guardian is shutting down")
        if not lock:
            return self._capture(name, kind)
        intent = Intent("capture", name, f"{kind} capture", params={"kind": kind})
        outcome = self.pipeline.run_held(SCHEDULED_CAPTURE, intent, lambda _id: Outcome(*self._capture(name, kind)))
        if outcome is None:
            logger.info("capture of {} skipped: another process is capturing it now", name)
            return False, f"a capture of {name} is already running in another process"
        if isinstance(outcome, Decision):  # paused, or not the leader: audited by the pipeline
            return False, outcome.reason
        return outcome.ok, outcome.detail

    def record_interrupted(self, record: ActionRecord) -> None:
        """A capture this guardian dumps itself, found interrupted: the archive gets its failed attempt."""
        cfg = next((d for d in self.all_databases if d.name == record.target), None)
        if record.action != "capture" or cfg is None or not cfg.self_managed or capture_source(cfg) != SOURCE_ARCHIVE:
            return  # a drill, a scale change, or a Heroku capture (Heroku keeps its own record of that one)
        kind = str(record.details.get("kind") or ("manual" if record.details.get("manual") else "emergency"))
        self.capturer.record_interrupted(record.target, kind, record.started_at)

    def _capture(self, name: str, kind: str) -> tuple[bool, str]:
        db = self.databases[name]
        if db.url is None:
            raise GuardianError(f"{name} has no URL: the guardian cannot pg_dump it")
        live = self.holder.current().databases[name].live
        req = CaptureRequest(
            database=name, url=db.url.get_secret_value(), kind=kind,
            timeout_seconds=db.capture.timeout.total_seconds(), extra_args=tuple(db.capture.extra_args),
            server_version=live.server_version if live else None,
        )
        self._set_in_progress(name, 1)
        minutes = max(1, int(db.capture_interval.total_seconds() // 60))
        schedule = {"schedule": {"type": "interval", "value": minutes, "unit": "minute"},
                    "checkin_margin": max(5, minutes // 10),
                    "max_runtime": int(db.capture.timeout.total_seconds() // 60)}
        scheduled = kind != "emergency"  # an emergency capture is off the monitor's schedule: no check-in
        token = self.notifier.job_started(f"capture-{name}", schedule) if scheduled else None
        t0, ok, detail, stopped = time.monotonic(), False, "", False
        try:
            record = self.capturer.capture(req)
            ok, detail = True, f"capture {record.backup_id} succeeded ({record.size_bytes} bytes)"
        except StoppedByShutdown:
            stopped = True  # logged by the capturer; not a failed attempt, so no check-in and nothing to read
            raise
        except GuardianError as exc:
            detail = str(exc)  # logged and recorded by the capturer; the archive collector shows it
        finally:
            self._set_in_progress(name, 0)
            if not stopped:
                if scheduled:
                    self.notifier.job_finished(f"capture-{name}", token, ok, time.monotonic() - t0)
                self.reread(name)
        # audits and catches its own failures: a refused delete never turns this capture into a failed one
        if ok and db.capture.keep_last and not self.stopping() and self.keep_last(name, db.capture.keep_last):
            self.reread(name)
        return ok, detail

    def _set_in_progress(self, name: str, n: int) -> None:
        def apply(db: DatabaseState) -> DatabaseState:
            src = db.sources.get(SOURCE_ARCHIVE) or SourceState(SOURCE_ARCHIVE, listed=False)
            return replace(db, sources={**db.sources, SOURCE_ARCHIVE: replace(src, in_progress=n)})

        self.holder.update_database(name, apply)

    def clean_partials(self) -> int:
        """At start: remove the partial dump files a crashed capture left (the writer's own temp files, never a
        committed dump); returns how many went."""
        swept = self.capturer.store.sweep_partials()
        if swept:
            logger.info("removed {} partial dump file(s) left by an earlier crash", swept)
        return swept

    def first_capture_at(self, db: DatabaseConfig, now: datetime) -> datetime:
        """When the first capture after start is due: the newest good backup plus the interval, or now.

        Deriving it from the archive means a restart neither captures again at once nor skips a capture.
        """
        try:
            good = [r for r in self.capturer.store.list_records(db.name) if r.outcome == "succeeded"]
        except GuardianError:
            return now
        if not good:
            return now
        due = max(r.started_at for r in good) + db.capture_interval
        return max(due, now)
