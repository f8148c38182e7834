"""Mirror: copy a provider's newest good backup into the archive, streamed, hashed and verified.

The dump is read from the provider's signed URL in 8 MiB blocks (`daemon.adapters.archive.download`: straight from
the socket into one reused buffer) and written to the store's writer (an S3 multipart upload or a local temp file),
so memory does not grow with the dump. The copy counts only once the store has verified it and written its record;
any failure (or a shutdown mid-copy) aborts the writer, so a crash or a retry never leaves a half object that counts
as a backup, and the next run starts that copy again from the beginning.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from loguru import logger

from actions.guards import Intent
from actions.pipeline import MIRROR, Pipeline
from actions.runner import Outcome
from collectors.heroku import require_transfer_num, transfer_num
from daemon.adapters.archive.download import BLOCK, Download, DownloadError
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.heroku import HerokuAPI, HerokuGone, deleted_meanwhile
from daemon.adapters.postgres.toc import TocTee
from daemon.config import DatabaseConfig
from daemon.core.errors import CaptureError, GuardianError
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, Backup, DatabaseState, Snapshot
from daemon.status import human_size


class BackupGone(CaptureError):
    """The provider deleted the backup (its retention expired it, or someone removed it) before or while it was
    copied: neither the guardian's failure nor the backup's."""


def backup_to_mirror(db: DatabaseState, provider: str = SOURCE_HEROKU,
                     gone: frozenset[str] = frozenset()) -> Backup | None:
    """The provider's newest good backup (leaving out the ids in `gone`, deleted since the provider was last
    read) when the archive does not hold a good copy of it yet."""
    src = db.sources.get(provider)
    good = [b for b in src.good if b.backup_id not in gone] if src is not None else []
    newest = max(good, key=lambda b: b.started_at) if good else None
    if newest is None or transfer_num(newest.backup_id) is None:
        return None  # legacy o-names carry no transfer number to ask a URL for
    archive = db.sources.get(SOURCE_ARCHIVE)
    held = {b.backup_id for b in archive.backups if b.succeeded} if archive is not None else set()
    return None if newest.backup_id in held else newest


class Mirror:
    """Copies Heroku backups into an archive store, one at a time."""

    def __init__(self, store: ArchiveStore, api: HerokuAPI, timeout: float = 60.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.store = store
        self.api = api
        self.clock = clock
        self.stopping = stopping  # checked at every block: a shutdown aborts the copy instead of waiting for it
        self.timeout = timeout
        self._lock = threading.Lock()

    def close(self) -> None:
        """Nothing to release: every mirror opens and closes its own connection."""

    def mirror(self, database: str, billing_app: str, backup: Backup,
               progress: Callable[[int, int | None], None] | None = None) -> BackupRecord:
        """Copy `backup` of `database` (transfers of `billing_app`). Raises CaptureError on any failure, and when
        the guardian starts shutting down mid-copy (the upload is aborted). `progress(bytes done, total)` is
        called after every block."""
        if not self._lock.acquire(blocking=False):
            raise CaptureError("a mirror is already running")
        try:
            return self._mirror(database, billing_app, backup, progress)
        finally:
            self._lock.release()

    def _mirror(self, database: str, billing_app: str, backup: Backup,
                progress: Callable[[int, int | None], None] | None) -> BackupRecord:
        num = require_transfer_num(backup.backup_id)
        try:
            url = str(self.api.public_url(billing_app, num)["url"])
        except HerokuGone:
            raise BackupGone(f"{backup.backup_id} of {database} was deleted by Heroku (410 Gone) before it could "
                             "be copied") from None
        except (GuardianError, KeyError) as exc:
            raise CaptureError(f"no download URL for {backup.backup_id} of {database}: {exc}") from None
        started = self.clock()
        writer = self.store.begin(database, backup.backup_id, recovery_point=backup.started_at, origin=SOURCE_HEROKU,
                                  size_hint=backup.size_bytes or None)
        tee = TocTee()
        sha, size = hashlib.sha256(), 0
        buf = bytearray(BLOCK)
        view = memoryview(buf)
        try:
            with Download(url, timeout=self.timeout) as body:
                if body.status in (404, 410):  # the object left the provider's storage after the URL was signed
                    raise BackupGone(f"{backup.backup_id} of {database} was deleted by Heroku while it was being "
                                     f"copied (its download answered HTTP {body.status})")
                if body.status != 200:
                    raise CaptureError(f"download of {backup.backup_id} failed: HTTP {body.status}")
                total = body.length or backup.size_bytes or None
                while n := body.fill(view):
                    if self.stopping():
                        raise CaptureError(f"the copy of {backup.backup_id} was stopped after {size} bytes because "
                                           "the guardian is shutting down")
                    block = view[:n]
                    sha.update(block)
                    size += n
                    writer.write(block)
                    tee.write(block)
                    if progress is not None:
                        progress(size, total)
            if size == 0:
                raise CaptureError(f"download of {backup.backup_id} was empty")
            if backup.size_bytes and backup.size_bytes != size:
                logger.warning("mirror of {} {}: Heroku reports {} bytes, the download had {}", database,
                               backup.backup_id, backup.size_bytes, size)
            toc = tee.result_during(writer.seal)  # pg_restore reads its last blocks while the copy is completed
            if not toc.judged:  # still copied; a pg_restore too old for it is a client_tools_too_old finding
                logger.warning("{} {} from Heroku was copied but not judged: {}", database, backup.backup_id,
                               toc.error)
            elif not toc.ok:  # still copied: it is the backup that exists; the finding says it will not restore
                logger.error("{} {} from Heroku is not a readable dump: {}", database, backup.backup_id, toc.error)
            record = BackupRecord(
                database=database, backup_id=backup.backup_id, kind=backup.kind, started_at=backup.started_at,
                finished_at=backup.finished_at or started, outcome="succeeded", size_bytes=size,
                sha256=sha.hexdigest(), origin=SOURCE_HEROKU, toc=toc.to_json(),
            )
            writer.commit(record)
        except DownloadError as exc:
            writer.abort()
            tee.abort()
            if deleted_meanwhile(self.api, billing_app, num):  # expired while it was read: gone, not failed
                raise BackupGone(f"{backup.backup_id} of {database} was deleted by Heroku while it was being "
                                 f"copied ({exc})") from None
            raise CaptureError(f"{backup.backup_id}: {exc}") from None
        except BaseException:
            writer.abort()
            tee.abort()
            raise
        seconds = (self.clock() - started).total_seconds()
        logger.info("mirrored {} {} into {}: {} bytes in {:.1f}s, sha256 {}", database, backup.backup_id,
                    self.store.describe(), size, seconds, record.sha256[:12] if record.sha256 else "")
        return record


#: Backups found deleted one after another in one run before the mirror of that database gives up until the
#: next collection (which lists only what remains).
MAX_GONE_IN_A_ROW = 3


@dataclass(frozen=True)
class MirrorJob:
    database: str
    billing_app: str
    backup: Backup


class Mirrors:
    """The mirror action: every Heroku backup the archive lacks, copied one at a time through the pipeline
    (pause, kill switch, leader, single flight, history and audit)."""

    def __init__(self, mirror: Mirror | None, pipeline: Pipeline, databases: dict[str, DatabaseConfig],
                 billing_app: Callable[[str], str | None], enabled: bool, stopping: Callable[[], bool],
                 after_copy: Callable[[str], object], snapshot: Callable[[], Snapshot]) -> None:
        """`enabled`: the archive mirrors Heroku backups; `after_copy(database)` re-reads its archive;
        `snapshot()` is the current one (what the archive lacks is read from it)."""
        self.snapshot = snapshot
        self.mirror = mirror
        self.pipeline = pipeline
        self.databases = databases
        self.billing_app = billing_app
        self.enabled = enabled
        self.stopping = stopping
        self.after_copy = after_copy
        # database -> backup ids Heroku deleted since it was last read (410): never asked for again; an id leaves
        # this set once the provider's list no longer holds it
        self.gone: dict[str, set[str]] = {}

    def jobs(self, snap: Snapshot) -> list[MirrorJob]:
        if self.mirror is None or not self.enabled:
            return []
        jobs = []
        for name, db in snap.databases.items():
            job = self._job(name, db)
            if job is not None:
                jobs.append(job)
        return jobs

    def _job(self, name: str, db: DatabaseState) -> MirrorJob | None:
        cfg = self.databases.get(name)
        if cfg is None or cfg.heroku is None:
            return None
        if SOURCE_ARCHIVE not in db.sources:
            return None  # the archive has not been read yet: do not copy blind
        src = db.sources.get(SOURCE_HEROKU)
        listed = {b.backup_id for b in src.backups} if src is not None else set()
        gone = self.gone.get(name, set()) & listed
        self.gone[name] = gone
        backup = backup_to_mirror(db, gone=frozenset(gone))
        app = self.billing_app(name)
        return MirrorJob(name, app, backup) if backup is not None and app is not None else None

    def pending(self, only: str | None = None, progress: Callable[[str, int, int | None], None] | None = None) -> int:
        """Copy every Heroku backup the current snapshot says the archive lacks (one at a time); returns how many
        were copied. `progress(what, bytes done, total)` follows each copy (else the log does, once a minute).
        When Heroku deleted the backup meanwhile (410, or its file gone mid-copy), the next good backup the
        archive lacks is copied instead, and the log and the audit record say so."""
        done = 0
        for job in self.jobs(self.snapshot()):
            if only is not None and job.database != only:
                continue
            for _ in range(MAX_GONE_IN_A_ROW):
                if self.stopping():
                    return done
                each = functools.partial(progress, f"{job.database} {job.backup.backup_id}") if progress else None
                if self.run(job, each):
                    done += 1
                if job.backup.backup_id not in self.gone.get(job.database, set()):
                    break
                db = self.snapshot().databases.get(job.database)
                following = self._job(job.database, db) if db is not None else None
                logger.warning("mirror of {}: {} was deleted by Heroku; {}", job.database, job.backup.backup_id,
                               f"copying the next good backup the archive lacks, {following.backup.backup_id}"
                               if following else "the archive already holds every good backup that remains")
                if following is None:
                    break
                job = following
            self.after_copy(job.database)
        return done

    def run(self, job: MirrorJob, progress: Callable[[int, int | None], None] | None = None) -> bool:
        """Copy one backup through the pipeline; progress goes to `progress`, else to the log once a minute.
        True when it was copied."""
        target = f"{job.database}/{job.backup.backup_id}"
        intent = Intent("mirror", target, "newest good provider backup was not archived")
        outcome = self.pipeline.run(MIRROR, intent, lambda _id: self._copy(job, target, progress))
        return outcome is not None and outcome.ok

    def _copy(self, job: MirrorJob, target: str, progress: Callable[[int, int | None], None] | None) -> Outcome:
        assert self.mirror is not None
        try:
            record = self.mirror.mirror(job.database, job.billing_app, job.backup, progress or logged(target))
        except BackupGone as exc:  # not a failure: the next good backup is copied instead (pending)
            self.gone.setdefault(job.database, set()).add(job.backup.backup_id)
            return Outcome(False, f"{exc}; not a failure of the guardian or of the backup, the next good backup "
                                  "is copied instead", skipped=True)
        except GuardianError as exc:
            logger.error("mirror of {} failed: {}", target, exc)
            raise
        return Outcome(True, "newest good provider backup was not archived",
                       {"size_bytes": record.size_bytes, "sha256": record.sha256,
                        "store": self.mirror.store.describe()})


def logged(target: str, every: float = 60.0) -> Callable[[int, int | None], None]:
    """A progress callback that logs a long copy's progress once every `every` seconds."""
    started = last = time.monotonic()

    def report(done: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < every:
            return
        last = now
        share = f" of {human_size(total)} ({done / total:.0%})" if total else ""
        logger.info("mirror of {}: {}{} copied, {:.0f} MiB/s", target, human_size(done), share,
                    done / (now - started) / 2**20)

    return report
