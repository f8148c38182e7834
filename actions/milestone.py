"""Milestones: a person marks an archived copy to be kept forever (`backup-guardian archive milestone`), e.g.
the last backup before a launch. The deletion plan never removes a milestone; marking one passes the guards of
its kind and leaves its history record and audit like every other change."""

from __future__ import annotations

from actions.audit import person
from actions.guards import Intent
from actions.pipeline import MILESTONE, Pipeline
from actions.runner import Outcome
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.store import ArchiveStore
from daemon.core.errors import ActionDeclined, ActionFailed, GuardianError


def mark_milestone(pipeline: Pipeline, store: ArchiveStore, database: str, backup_id: str | None,
                   label: str) -> BackupRecord:
    """Mark `backup_id` (default: the newest good copy) of `database`; returns its record. Raises GuardianError
    naming the reason when there is no good copy; ActionDeclined when the guards decline (e.g. paused), ActionFailed
    when the store refuses."""
    good = [o for o in store.objects(database) if o.succeeded]
    if not good:
        raise GuardianError(f"{database} has no good archived backup to mark")
    target = backup_id or max(good, key=lambda o: o.recovery_point).backup_id
    marked: list[BackupRecord] = []

    def mark(_id: int) -> Outcome:
        marked.append(store.set_tier(database, target, "milestone", label))
        return Outcome(True, f'marked as milestone "{label}"')

    intent = Intent("milestone", f"{database}/{target}", f'keep forever as "{label}"', manual=True,
                    requested_by=person())
    outcome = pipeline.run(MILESTONE, intent, mark)
    if outcome is None:
        raise ActionDeclined(f"{database} {target} not marked: declined (`backup-guardian actions` lists why)")
    if not outcome.ok or not marked:
        raise ActionFailed(f"{database} {target} not marked: {outcome.detail}")
    return marked[0]
