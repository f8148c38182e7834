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

#: Audited decisions kept per database in the snapshot for the status page (it shows the newest five).
DECISIONS_KEPT = 10
#: The newest audit records read back at every collection interval (what other processes decided meanwhile).
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
                 leader: Callable[[], bool | None], last_taken: Callable[[], dict[str, datetime]],
                 databases: Iterable[str] = ()) -> None:
        self.holder = holder
        self._names = sorted(databases, key=len, reverse=True)  # longest first: "shop/DATABASE" before "shop"
        self.config = config
        self.paused = paused
        self.leader = leader
        self.last_taken = last_taken

    def publish(self) -> None:
        """The switches, leadership and last actions, for metrics and status."""
        c = self.holder.current().control
        new = ActionsStatus(enabled=self.config.enabled, dry_run=self.config.dry_run, paused=self.paused(),
                            leader=bool(self.leader()), last_taken={**c.last_taken, **self.last_taken()},
                            probes=c.probes, decisions=c.decisions)
        if new == c:
            return  # unchanged: no new snapshot version, so the cached exposition stays valid

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(new, probes=snap.control.probes, decisions=snap.control.decisions))

        self.holder.update(apply)

    def publish_probes(self, probes: dict[str, ProbeState]) -> None:
        out = tuple(ProbeStatus(name, p.last.ok, p.consecutive_failures, p.last.latency_seconds, p.last.at,
                                p.last.error, p.scale_refused)
                    for name, p in sorted(probes.items()) if p.last is not None)

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(snap.control, probes=out))

        self.holder.update(apply)

    def database_of(self, target: str) -> str | None:
        """The watched database an action's target is about: its name, or "<name>/<backup id>" (a name may hold
        "/" itself, so the longest name that fits wins); None for targets of no database (the scratch servers)."""
        return next((n for n in self._names if target == n or target.startswith(n + "/")), None)

    def noted(self, entries: Iterable[dict[str, Any]]) -> None:
        """Add audit records (as the audit log stores them, oldest first) to each database's recent decisions,
        which the status page shows. Records already there are not added twice, so the state store's newest can
        be read back at any time (`backup-guardian capture` or a replica decided them); no new snapshot when
        nothing changed."""
        added: dict[str, list[Decision]] = {}
        for d in (_decision(e) for e in entries):
            name = self.database_of(d.target) if d is not None else None
            if d is not None and name is not None:
                added.setdefault(name, []).append(d)
        if not added or self._merged(self.holder.current().control.decisions, added) is None:
            return

        def apply(snap: Snapshot) -> Snapshot:
            merged = self._merged(snap.control.decisions, added)
            return snap if merged is None else replace(snap, control=replace(snap.control, decisions=merged))

        self.holder.update(apply)

    @staticmethod
    def _merged(current: dict[str, tuple[Decision, ...]],
                added: dict[str, list[Decision]]) -> dict[str, tuple[Decision, ...]] | None:
        """`current` with `added` merged in (each database's newest DECISIONS_KEPT), or None when unchanged."""
        out = dict(current)
        for name, new in added.items():
            seen = {(d.time, d.action, d.target, d.outcome): d for d in (*current.get(name, ()), *new)}
            out[name] = tuple(sorted(seen.values(), key=lambda d: d.time))[-DECISIONS_KEPT:]
        return None if out == current else out

    def count(self, action: str, outcome: str) -> None:
        """Count an action's outcome for pgbackup_actions_total."""

        def apply(snap: Snapshot) -> Snapshot:
            counts = dict(snap.actions)
            counts[(action, outcome)] = counts.get((action, outcome), 0) + 1
            return replace(snap, actions=counts)

        self.holder.update(apply)
