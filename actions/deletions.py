"""Deletions from the archive: the daily prune past each tier's keep, and keep_last after a good capture.

Both follow the one deletion plan (`daemon.core.retention.plan_prune`: never a milestone, a locked or held copy,
or the newest copy of a tier). Each copy is decided by the guards of its kind right before it goes (a pause that
comes during a long run stops it there); every deletion, refusal, dry run and decline is audited. The deletions
of one database run under its cross-process lock (`prune:<database>`, `keep_last:<database>`), so the daemon's
prune and a person's `archive prune --apply`, or two replicas, never delete from the same archive at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timedelta

from loguru import logger

from actions.audit import AuditLog
from actions.guards import Decision, Intent
from actions.pipeline import KEEP_LAST, PRUNE, ActionKind, Gate
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.statestore import LockBusy
from daemon.core.errors import GuardianError
from daemon.core.retention import PruneDecision, plan_prune

LISTED = 20  # backup ids named in one declined audit record (the count says the rest)


class Deletions:
    """Prune and keep_last over one archive store."""

    def __init__(self, store: ArchiveStore, keeps: dict[str, timedelta | None], gate: Gate, audit: AuditLog,
                 count: Callable[[str, str], None], clock: Callable[[], datetime],
                 exclusive: Callable[[str], AbstractContextManager[None]]) -> None:
        """`exclusive(name)` holds a cross-process lock (the state store's) or raises LockBusy."""
        self.exclusive = exclusive
        self.store = store
        self.keeps = keeps
        self.gate = gate
        self.audit = audit
        self.count = count
        self.clock = clock

    def prune(self, databases: list[str], apply: bool) -> list[PruneDecision]:
        """Plan (and with `apply`, carry out) deletions past each tier's keep; every deletion, refusal and
        pause is audited. Dry-run logs the exact list it would delete. Raises GuardianError when a listing
        fails (nothing is deleted then)."""
        now = self.clock()
        objects = []
        for name in databases:
            objects += self.store.objects(name)
        decisions = plan_prune(objects, dict(self.keeps), now)
        self._carry_out("prune", decisions, apply)
        return decisions

    def keep_last(self, database: str, count: int) -> int:
        """After a good capture of `database`: the same plan with `keep_last=count` (milestones, locked or held
        copies and the newest of each tier stay). Every deletion is audited; returns how many copies went.
        Never raises: a failed listing or delete is logged and audited, and never touches the capture."""
        try:
            decisions = plan_prune(self.store.objects(database), dict(self.keeps), self.clock(), keep_last=count)
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
        deleted = 0
        databases = list(dict.fromkeys(d.obj.database for d in doomed))
        for n, database in enumerate(databases):
            mine = [d for d in doomed if d.obj.database == database]
            try:
                with self.exclusive(f"{action}:{database}"):
                    done, declined, rest = self._delete(action, kind, mine, apply)
            except LockBusy as exc:
                logger.info("{} of {} skipped: {}", action, database, exc)
                copies = f"{len(mine)} cop{'y' if len(mine) == 1 else 'ies'}"
                self.audit.record(action, database, "skipped_busy", f"{copies} not deleted now: {exc}")
                self.count(action, "skipped_busy")
                continue
            deleted += done
            if declined is not None:  # paused, killed or not the leader: nothing more goes, in any database
                later = [d for d in doomed if d.obj.database in databases[n + 1:]]
                self._skip(action, rest + later, declined)
                return deleted
        return deleted

    def _delete(self, action: str, kind: ActionKind, doomed: list[PruneDecision],
                apply: bool) -> tuple[int, Decision | None, list[PruneDecision]]:
        """One database's deletions, each decided right before it goes. Returns how many went, the declining
        decision that stopped the rest (None when none did) and the copies it stopped."""
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
                return deleted, decision, doomed[i:]
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
        return deleted, None, []

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
