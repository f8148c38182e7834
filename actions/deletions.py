"""Deletions from the archive: the daily prune past each tier's keep, and keep_last after a good capture.

Both follow the one deletion plan (`daemon.core.retention.plan_prune`: never a milestone, a locked or held copy,
or the newest copy of a tier). Each copy is decided by the guards of its kind right before it goes (a pause that
comes during a long run stops it there); every deletion, refusal, dry run and decline is audited. The deletions
of one database are one execution of the action runner (`ActionRunner.run_held`): under its cross-process lock
(`prune:<database>`, `keep_last:<database>`), so the daemon's prune and a person's `archive prune --apply`, or
two replicas, never delete from the same archive at once, with a history record ("running" until it ends, so
one a crash cut short is found and closed as interrupted) and an audit record of its start and of its end
(how many copies went, were refused or were stopped). A dry run changes nothing and writes no history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from loguru import logger

from actions.audit import AuditLog
from actions.guards import Decision, Intent
from actions.pipeline import KEEP_LAST, PRUNE, ActionKind, Pipeline
from actions.runner import Outcome
from daemon.adapters.archive.store import ArchiveStore
from daemon.core.errors import GuardianError
from daemon.core.retention import EXPORT_TIER, ArchivedObject, PruneDecision, plan_exports, plan_prune

LISTED = 20  # backup ids named in one declined audit record (the count says the rest)


def copies(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


@dataclass
class _Run:
    """What one database's deletions did: copies deleted and refused, and the decision that stopped the rest."""

    deleted: int = 0
    refused: int = 0
    declined: Decision | None = None
    rest: list[PruneDecision] = field(default_factory=list)


class Deletions:
    """Prune and keep_last over one archive store."""

    def __init__(self, store: ArchiveStore, keeps: dict[str, timedelta | None], pipeline: Pipeline,
                 audit: AuditLog, count: Callable[[str, str], None], clock: Callable[[], datetime],
                 keep_years: dict[str, int] | None = None) -> None:
        """`keep_years`: per database with compliance exports, how many years the prune keeps each export."""
        self.store = store
        self.keeps = keeps
        self.keep_years = dict(keep_years or {})
        self.pipeline = pipeline
        self.audit = audit
        self.count = count
        self.clock = clock

    def prune(self, databases: list[str], apply: bool) -> list[PruneDecision]:
        """Plan (and with `apply`, carry out) deletions past each tier's keep, and of compliance exports past
        their database's keep_years; every deletion, refusal and pause is audited. Dry-run logs the exact list it
        would delete. Raises GuardianError when a listing fails (nothing is deleted then)."""
        now = self.clock()
        objects: list[ArchivedObject] = []
        exported: list[ArchivedObject] = []
        for name in databases:
            objects += self.store.objects(name)
            if name in self.keep_years:
                exported += self.store.exports(name)
        decisions = plan_prune(objects, dict(self.keeps), now) + plan_exports(exported, self.keep_years, now)
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
        """Delete what the plan says may go, database by database, each copy decided by the guards of its kind
        right before it goes (dry run: only say so; paused, killed or not the leader: one record per database
        says what stays and why); returns how many copies were deleted."""
        kind = PRUNE if action == "prune" else KEEP_LAST
        doomed = [d for d in decisions if d.delete]
        deleted = 0
        databases = list(dict.fromkeys(d.obj.database for d in doomed))
        for n, database in enumerate(databases):
            mine = [d for d in doomed if d.obj.database == database]
            run = self._database(action, kind, database, mine, apply)
            if run is None:
                continue
            deleted += run.deleted
            if run.declined is not None:  # paused, killed or not the leader: nothing more goes, in any database
                later = [d for d in doomed if d.obj.database in databases[n + 1:]]
                self._skip(action, run.rest + later, run.declined)
                return deleted
        return deleted

    def _database(self, action: str, kind: ActionKind, database: str, doomed: list[PruneDecision],
                  apply: bool) -> _Run | None:
        """One database's deletions: a dry run says what would go; otherwise, unless the guards decline the
        first copy already, one recorded execution under the database's lock. None when another process holds
        that lock or the lock cannot be had (audited)."""
        if not apply:
            return self._delete(action, kind, doomed, apply=False)
        first = doomed[0]
        decision = self.pipeline.gate.decide(kind, Intent(action, f"{database}/{first.obj.backup_id}", first.reason),
                                             dry_run=False)
        if not decision.go:
            return _Run(declined=decision, rest=doomed)
        run = _Run()

        def work(_action_id: int) -> Outcome:
            nonlocal run
            run = self._delete(action, kind, doomed, apply=True)
            return self._outcome(run, len(doomed))

        intent = Intent(action, database, f"{copies(len(doomed))} past their keep")
        result = self.pipeline.runner.run_held(intent, work, unlocked_ok=False)
        if result is None or result.skipped:  # busy, or its lock cannot be had: nothing was deleted
            outcome, why = ("skipped_busy", "another process is deleting from it") if result is None \
                else ("skipped_unavailable", result.detail)
            logger.info("{} of {} skipped: {}", action, database, why)
            self.audit.record(action, database, outcome, f"{copies(len(doomed))} not deleted now: {why}")
            self.count(action, outcome)
            return None
        return run

    @staticmethod
    def _outcome(run: _Run, planned: int) -> Outcome:
        """How one database's run ended, for its history and audit record (the copies are counted one by one)."""
        stopped = len(run.rest)
        detail = f"{run.deleted} of {copies(planned)} deleted"
        if run.refused:
            detail += f", {run.refused} refused by the store"
        if run.declined is not None:
            detail += f", {stopped} left: {run.declined.reason.split(' (wanted to ', 1)[0]}"
        return Outcome(ok=run.refused == 0, detail=detail, counted=False,
                       details={"deleted": run.deleted, "refused": run.refused, "left": stopped})

    def _delete(self, action: str, kind: ActionKind, doomed: list[PruneDecision], apply: bool) -> _Run:
        """One database's deletions, each decided right before it goes: how many went or were refused, and the
        declining decision that stopped the rest (with the copies it stopped)."""
        run = _Run()
        for i, d in enumerate(doomed):
            target = f"{d.obj.database}/{d.obj.backup_id}"
            decision = self.pipeline.gate.decide(kind, Intent(action, target, d.reason), dry_run=not apply)
            if decision.outcome == "dry_run":
                logger.info("{} (dry run) would delete {} {} ({})", action, d.obj.database, d.obj.backup_id,
                            d.reason)
                self.audit.record(action, target, "dry_run", d.reason)
                self.count(action, "dry_run")
                continue
            if not decision.go:  # read before every delete: a pause that comes during a long run stops it
                run.declined, run.rest = decision, doomed[i:]
                return run
            try:
                self._remove(d.obj)
            except (GuardianError, OSError) as exc:
                logger.warning("{} could not delete {}: {}", action, target, exc)
                self.audit.record(action, target, "refused", f"{d.reason}; the store refused: {exc}")
                self.count(action, "refused")
                run.refused += 1
                continue
            self.audit.record(action, target, "done", d.reason, tier=d.obj.tier, size_bytes=d.obj.size_bytes)
            self.count(action, "done")
            run.deleted += 1
        return run

    def _remove(self, obj: ArchivedObject) -> None:
        """Delete one planned copy from the store: a compliance export as a whole, else a backup."""
        if obj.tier == EXPORT_TIER:
            self.store.delete_export(obj.database, obj.backup_id)
        else:
            self.store.delete(obj.database, obj.backup_id)

    def _skip(self, action: str, doomed: list[PruneDecision], decision: Decision) -> None:
        """Declined (paused, kill switch, not the leader): nothing is deleted; one audit record per database
        says what would have gone and why not (a follower's only in the log)."""
        by_db: dict[str, list[PruneDecision]] = {}
        for d in doomed:
            by_db.setdefault(d.obj.database, []).append(d)
        why = decision.reason.split(" (wanted to ", 1)[0]
        for database, mine in by_db.items():
            reason = f"{copies(len(mine))} not deleted: {why}"
            logger.warning("{} of {}: {}", action, database, reason)
            if decision.outcome != "skipped_not_leader":
                self.audit.record(action, database, decision.outcome, reason,
                                  backups=[d.obj.backup_id for d in mine[:LISTED]])
        self.count(action, decision.outcome)
