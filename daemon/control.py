"""The guardian's control state in the snapshot: the action switches, leadership, the last actions taken, the
health probes and the action counters (for metrics and status)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from actions.scale import ProbeState
from daemon.config import ActionsConfig
from daemon.core.snapshot import ActionsStatus, Decision, ProbeStatus, Snapshot, StateHolder

#: Audited decisions kept in the snapshot for the status page (across every database; each card shows its own).
RECENT_DECISIONS = 200


def _decision(entry: dict[str, Any]) -> Decision | None:
    try:
        when = datetime.fromisoformat(str(entry["time"]))
    except (KeyError, ValueError):
        return None
    return Decision(time=when, action=str(entry.get("action", "")), target=str(entry.get("target", "")),
                    outcome=str(entry.get("outcome", "")), reason=str(entry.get("reason", "")))


class ControlPanel:
    """Publishes what the actions side is and did into the snapshot."""

    def __init__(self, holder: StateHolder, config: ActionsConfig, paused: Callable[[], str | None],
                 leader: Callable[[], bool | None], last_taken: Callable[[], dict[str, datetime]]) -> None:
        self.holder = holder
        self.config = config
        self.paused = paused
        self.leader = leader
        self.last_taken = last_taken

    def publish(self) -> None:
        """The switches, leadership and last actions, for metrics and status."""
        c = self.holder.current().control
        new = ActionsStatus(enabled=self.config.enabled, dry_run=self.config.dry_run, paused=self.paused(),
                            leader=bool(self.leader()), last_taken={**c.last_taken, **self.last_taken()},
                            probes=c.probes, recent=c.recent)
        if new == c:
            return  # unchanged: no new snapshot version, so the cached exposition stays valid

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(new, probes=snap.control.probes, recent=snap.control.recent))

        self.holder.update(apply)

    def publish_probes(self, probes: dict[str, ProbeState]) -> None:
        out = tuple(ProbeStatus(name, p.last.ok, p.consecutive_failures, p.last.latency_seconds, p.last.at,
                                p.last.error) for name, p in sorted(probes.items()) if p.last is not None)

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(snap.control, probes=out))

        self.holder.update(apply)

    def noted(self, entries: Iterable[dict[str, Any]]) -> None:
        """Add audit records (as the audit log stores them) to the recent decisions the status page shows."""
        added = tuple(d for d in (_decision(e) for e in entries) if d is not None)
        if not added:
            return

        def apply(snap: Snapshot) -> Snapshot:
            recent = (*snap.control.recent, *added)[-RECENT_DECISIONS:]
            return replace(snap, control=replace(snap.control, recent=recent))

        self.holder.update(apply)

    def reload(self, entries: Iterable[dict[str, Any]]) -> None:
        """Replace the recent decisions with the state store's newest (`entries`, oldest first): what another
        process sharing the store decided (a `backup-guardian capture` or `drill`, another replica) shows too.
        No new snapshot when nothing changed."""
        recent = tuple(d for d in (_decision(e) for e in entries) if d is not None)[-RECENT_DECISIONS:]
        if recent == self.holder.current().control.recent:
            return

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(snap.control, recent=recent))

        self.holder.update(apply)

    def count(self, action: str, outcome: str) -> None:
        """Count an action's outcome for pgbackup_actions_total."""

        def apply(snap: Snapshot) -> Snapshot:
            counts = dict(snap.actions)
            counts[(action, outcome)] = counts.get((action, outcome), 0) + 1
            return replace(snap, actions=counts)

        self.holder.update(apply)
