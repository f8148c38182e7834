"""The archive side of the guardian: which store, which databases it covers, mirror and prune runs.

Kept out of the composition root so `app.py` only wires it: `ArchiveService` owns the store, the bucket
posture cache, the mirror action and the prune plan, and reports every decision to the audit log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from loguru import logger

from actions.mirror import Mirror, backup_to_mirror
from collectors.archive import collect_archive_facts
from daemon.archive import ArchiveStore, LocalDirectoryStore
from daemon.audit import AuditLog
from daemon.config import DatabaseConfig, GuardianConfig
from daemon.errors import GuardianError
from daemon.heroku import HerokuAPI
from daemon.policy import ArchivePolicy
from daemon.state import ArchiveFacts, Backup, Snapshot, SourceState
from daemon.status import human_size
from daemon.tiers import PruneDecision, plan_prune

POSTURE_EVERY = timedelta(hours=1)


def make_store(config: GuardianConfig) -> ArchiveStore:
    """The configured archive store (S3 imports boto3 only when used)."""
    if config.archive.kind == "s3" and config.archive.s3 is not None:
        from daemon.s3store import S3ArchiveStore

        return S3ArchiveStore(config.archive.s3)
    return LocalDirectoryStore(config.archive_dir)


@dataclass(frozen=True)
class MirrorJob:
    database: str
    billing_app: str
    backup: Backup


class ArchiveService:
    """Store, posture, mirror and prune for every database the archive covers."""

    def __init__(self, config: GuardianConfig, store: ArchiveStore, audit: AuditLog,
                 heroku_api: HerokuAPI | None, clock: Callable[[], datetime],
                 count: Callable[[str, str], None], stopping: Callable[[], bool] = lambda: False) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.clock = clock
        self.count = count
        self.mirror = Mirror(store, heroku_api, clock=clock, stopping=stopping) if heroku_api is not None else None
        self._posture: tuple[str, ...] = ()
        self._posture_at: datetime | None = None
        self._lock = threading.Lock()

    def covers(self, db: DatabaseConfig) -> bool:
        """The archive holds this database's captures (the guardian's own, or written by another guardian or
        job when captures are off here), or mirrors its Heroku backups."""
        return db.url is not None or (db.heroku is not None and self.config.archive.mirrors)

    def policy(self, db: DatabaseConfig) -> ArchivePolicy | None:
        if not self.covers(db):
            return None
        a = self.config.archive
        mirrored = "heroku" if db.heroku is not None and a.mirrors else None
        return ArchivePolicy(copy_grace=a.copy_grace, gap_grace=a.gap_grace, mirrored_from=mirrored)

    def posture(self) -> tuple[str, ...]:
        """Bucket posture problems, read at most once an hour (a failure to read is itself a problem)."""
        now = self.clock()
        with self._lock:
            if self._posture_at is None or now - self._posture_at >= POSTURE_EVERY:
                try:
                    self._posture = tuple(self.store.posture())
                except Exception as exc:  # posture is advisory; never let it take the collector down
                    self._posture = (f"posture unreadable: {exc}",)
                self._posture_at = now
            return self._posture

    def collect(self, name: str) -> tuple[SourceState, ArchiveFacts]:
        return collect_archive_facts(self.store, name, self.config.archive.kind, self.posture(), self.clock())

    # -- mirror -------------------------------------------------------------------------------------------
    def mirror_jobs(self, snap: Snapshot, databases: dict[str, DatabaseConfig],
                    billing_app: Callable[[str], str | None]) -> list[MirrorJob]:
        if self.mirror is None or not self.config.archive.mirrors:
            return []
        jobs = []
        for name, db in snap.databases.items():
            cfg = databases.get(name)
            if cfg is None or cfg.heroku is None:
                continue
            if "archive" not in db.sources:
                continue  # the archive has not been read yet: do not copy blind
            backup = backup_to_mirror(db)
            app = billing_app(name)
            if backup is not None and app is not None:
                jobs.append(MirrorJob(name, app, backup))
        return jobs

    def run_mirror(self, job: MirrorJob, progress: Callable[[int, int | None], None] | None = None) -> bool:
        """Copy one backup; progress goes to `progress`, else to the log once a minute."""
        assert self.mirror is not None
        target = f"{job.database}/{job.backup.backup_id}"
        try:
            record = self.mirror.mirror(job.database, job.billing_app, job.backup, progress or _logged(target))
        except GuardianError as exc:
            logger.error("mirror of {} failed: {}", target, exc)
            self.audit.record("mirror", target, "failed", str(exc))
            self.count("mirror", "failed")
            return False
        self.audit.record("mirror", target, "done", "newest good provider backup was not archived",
                          size_bytes=record.size_bytes, sha256=record.sha256, store=self.store.describe())
        self.count("mirror", "done")
        return True

    # -- prune --------------------------------------------------------------------------------------------
    def prune(self, databases: list[str], apply: bool) -> list[PruneDecision]:
        """Plan (and with `apply`, carry out) deletions past each tier's keep; every deletion and every
        refusal is audited. Dry-run logs the exact list it would delete."""
        keeps = dict(self.config.archive.keeps)
        now = self.clock()
        objects = []
        for name in databases:
            objects += self.store.objects(name)
        decisions = plan_prune(objects, keeps, now)
        doomed = [d for d in decisions if d.delete]
        if not apply:
            for d in doomed:
                logger.info("prune (dry run) would delete {} {} ({})", d.obj.database, d.obj.backup_id, d.reason)
                self.audit.record("prune", f"{d.obj.database}/{d.obj.backup_id}", "dry_run", d.reason)
            if doomed:
                self.count("prune", "dry_run")
            return decisions
        for d in doomed:
            target = f"{d.obj.database}/{d.obj.backup_id}"
            try:
                self.store.delete(d.obj.database, d.obj.backup_id)
            except GuardianError as exc:
                logger.warning("prune could not delete {}: {}", target, exc)
                self.audit.record("prune", target, "refused", f"{d.reason}; the store refused: {exc}")
                self.count("prune", "refused")
                continue
            self.audit.record("prune", target, "done", d.reason, tier=d.obj.tier, size_bytes=d.obj.size_bytes)
            self.count("prune", "done")
        return decisions

    def close(self) -> None:
        if self.mirror is not None:
            self.mirror.close()


def _logged(target: str, every: float = 60.0) -> Callable[[int, int | None], None]:
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
