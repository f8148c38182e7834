"""The archive side of the guardian: which store, which databases it covers, mirror and prune runs.

Kept out of the composition root so `app.py` only wires it: `ArchiveService` owns the store, the bucket
posture cache, the mirror action and the deletions (prune and keep_last, both from `daemon.core.retention.plan_prune`),
and reports every decision to the audit log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from loguru import logger

from actions.audit import AuditLog
from actions.guards import Decision, Intent
from actions.mirror import Mirror, backup_to_mirror
from actions.pipeline import KEEP_LAST, MIRROR, PRUNE, Gate, Pipeline, Switches
from actions.runner import Outcome
from collectors.archive import collect_archive_facts
from daemon.adapters.archive.store import ArchiveStore, LocalDirectoryStore
from daemon.adapters.heroku import HerokuAPI
from daemon.config import DatabaseConfig, GuardianConfig
from daemon.core.errors import GuardianError
from daemon.core.policy import ArchivePolicy
from daemon.core.retention import PruneDecision, plan_prune
from daemon.core.snapshot import ArchiveFacts, Backup, Snapshot, SourceState
from daemon.status import human_size

POSTURE_EVERY = timedelta(hours=1)
LISTED = 20  # backup ids named in one skipped_paused audit record (the count says the rest)


def make_store(config: GuardianConfig) -> ArchiveStore:
    """The configured archive store (S3 imports boto3 only when used)."""
    if config.archive.kind == "s3" and config.archive.s3 is not None:
        from daemon.adapters.archive.s3 import S3ArchiveStore

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
                 count: Callable[[str, str], None], stopping: Callable[[], bool] = lambda: False,
                 gate: Gate | None = None, pipeline: Callable[[], Pipeline | None] = lambda: None) -> None:
        """`gate` decides each deletion with the guards of its kind (a paused, killed or follower guardian
        deletes nothing; default: every switch open); `pipeline()` carries out the mirror copies (None: copied
        without a history record, as the CLI's own process does)."""
        self.config = config
        self.gate = gate or Gate(Switches(enabled=lambda: True, paused=lambda: None, leader=lambda: True,
                                          dry_run=lambda _kind: False), clock)
        self.pipeline = pipeline
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
        """Copy one backup through the guarded path (pause, leader, single flight, audit); progress goes to
        `progress`, else to the log once a minute. True when it was copied."""
        assert self.mirror is not None
        target = f"{job.database}/{job.backup.backup_id}"
        intent = Intent("mirror", target, "newest good provider backup was not archived")
        pipeline = self.pipeline()
        if pipeline is None:  # no runner (a bare service): decided by the gate, audited here
            decision = self.gate.decide(MIRROR, intent)
            if not decision.go:
                self.audit.record("mirror", target, decision.outcome, decision.reason)
                return False
            try:
                result = self._copy(job, target, progress)
            except GuardianError as exc:
                result = Outcome(False, str(exc))
            self.audit.record("mirror", target, result.outcome, result.detail, **result.details)
            self.count("mirror", result.outcome)
            return result.ok
        outcome = pipeline.run(MIRROR, intent, lambda _id: self._copy(job, target, progress))
        return outcome is not None and outcome.ok

    def _copy(self, job: MirrorJob, target: str, progress: Callable[[int, int | None], None] | None) -> Outcome:
        assert self.mirror is not None
        try:
            record = self.mirror.mirror(job.database, job.billing_app, job.backup, progress or _logged(target))
        except GuardianError as exc:
            logger.error("mirror of {} failed: {}", target, exc)
            raise
        return Outcome(True, "newest good provider backup was not archived",
                       {"size_bytes": record.size_bytes, "sha256": record.sha256, "store": self.store.describe()})

    # -- deletions: prune and keep_last ---------------------------------------------------------------------
    def prune(self, databases: list[str], apply: bool) -> list[PruneDecision]:
        """Plan (and with `apply`, carry out) deletions past each tier's keep; every deletion, refusal and
        pause is audited. Dry-run logs the exact list it would delete. Raises GuardianError when a listing
        fails (nothing is deleted then)."""
        now = self.clock()
        objects = []
        for name in databases:
            objects += self.store.objects(name)
        decisions = plan_prune(objects, dict(self.config.archive.keeps), now)
        self._carry_out("prune", decisions, apply)
        return decisions

    def keep_last(self, database: str, count: int) -> int:
        """After a good capture of `database`: the same plan with `keep_last=count` (milestones, locked or held
        copies and the newest of each tier stay). Every deletion is audited; returns how many copies went.
        Never raises: a failed listing or delete is logged and audited, and never touches the capture."""
        try:
            decisions = plan_prune(self.store.objects(database), dict(self.config.archive.keeps), self.clock(),
                                   keep_last=count)
            return self._carry_out("keep_last", decisions, apply=True)
        except (GuardianError, OSError) as exc:
            logger.warning("keep_last of {} not applied: {}", database, exc)
            self.audit.record("keep_last", database, "failed", f"keep_last={count} not applied: {exc}")
            self.count("keep_last", "failed")
            return 0

    def _carry_out(self, action: str, decisions: list[PruneDecision], apply: bool) -> int:
        """Delete what the plan says may go, each copy decided by the guards of its kind right before it goes
        (dry run: only say so; paused, killed or not the leader: one record per database says what stays and
        why); returns how many copies were deleted."""
        kind = PRUNE if action == "prune" else KEEP_LAST
        doomed = [d for d in decisions if d.delete]
        if not doomed:
            return 0
        deleted = 0
        for i, d in enumerate(doomed):
            target = f"{d.obj.database}/{d.obj.backup_id}"
            decision = self.gate.decide(kind, Intent(action, target, d.reason), dry_run=not apply)
            if decision.outcome == "dry_run":
                logger.info("{} (dry run) would delete {} {} ({})", action, d.obj.database, d.obj.backup_id,
                            d.reason)
                self.audit.record(action, target, "dry_run", d.reason)
                self.count(action, "dry_run")
                continue
            if not decision.go:  # read before every delete: a pause that comes during a long run stops it
                self._skip(action, doomed[i:], decision)
                return deleted
            try:
                self.store.delete(d.obj.database, d.obj.backup_id)
            except (GuardianError, OSError) as exc:
                logger.warning("{} could not delete {}: {}", action, target, exc)
                self.audit.record(action, target, "refused", f"{d.reason}; the store refused: {exc}")
                self.count(action, "refused")
                continue
            self.audit.record(action, target, "done", d.reason, tier=d.obj.tier, size_bytes=d.obj.size_bytes)
            self.count(action, "done")
            deleted += 1
        return deleted

    def _skip(self, action: str, doomed: list[PruneDecision], decision: Decision) -> None:
        """Declined (paused, kill switch, not the leader): nothing is deleted; one audit record per database
        says what would have gone and why not (a follower's only in the log)."""
        by_db: dict[str, list[PruneDecision]] = {}
        for d in doomed:
            by_db.setdefault(d.obj.database, []).append(d)
        why = decision.reason.split(" (wanted to ", 1)[0]
        for database, mine in by_db.items():
            reason = f"{len(mine)} cop{'y' if len(mine) == 1 else 'ies'} not deleted: {why}"
            logger.warning("{} of {}: {}", action, database, reason)
            if decision.outcome != "skipped_not_leader":
                self.audit.record(action, database, decision.outcome, reason,
                                  backups=[d.obj.backup_id for d in mine[:LISTED]])
        self.count(action, decision.outcome)

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
