"""Which remedial actions the current findings call for: pure functions of state, config and `now`.

`plan_captures` turns the active findings of each database into emergency-capture intents; `capture_facts`
gathers what the guards need about one database from the world itself (a capture the source shows running,
the newest manual capture in the source's own history) merged with the guardian's action history, so a
restarted guardian, or a replica that just became leader, does not fire a second time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from actions.guards import INTERRUPTED, Facts, Intent
from daemon.config import ActionsConfig, DatabaseConfig
from daemon.core.plans import offers_pg_backups
from daemon.core.snapshot import SOURCE_ARCHIVE, SOURCE_HEROKU, DatabaseState

#: Backups a person or the guardian asked for (not made by a schedule).
ON_REQUEST = ("manual", "emergency")
#: The error of the failed attempt recorded in the archive for a capture whose process died during it.
INTERRUPTED_CAPTURE = "interrupted: the guardian stopped during this capture"


@dataclass(frozen=True)
class TakenAction:
    """One earlier execution from the action history (the state store)."""

    started_at: datetime
    outcome: str
    detail: str = ""
    kind: str = ""  # a capture's kind when recorded ("scheduled" for one on its schedule)


def plan_captures(states: dict[str, DatabaseState], configs: dict[str, DatabaseConfig],
                  actions: ActionsConfig) -> list[Intent]:
    """One capture intent per database with an active trigger finding, naming every trigger."""
    if not actions.capture.enabled:
        return []
    triggers = set(actions.capture.triggers)
    out = []
    for name, db in sorted(states.items()):
        cfg = configs.get(name)
        if cfg is None or not capturable(cfg):
            continue
        if capture_source(cfg) == SOURCE_HEROKU and db.provider is not None \
                and not offers_pg_backups(db.provider.family):
            continue  # an Advanced database: a pg:backups capture of it is not established to exist
        hits = [f for f in db.findings if f.active and f.check in triggers]
        if not hits:
            continue
        reason = "; ".join(f"{f.check}: {f.hint}" for f in hits)
        out.append(Intent("capture", name, reason, triggers=tuple(f.check for f in hits)))
    return out


def capturable(cfg: DatabaseConfig) -> bool:
    """The guardian can take a backup of it: a Heroku database (capture API) or one it pg_dumps itself."""
    return cfg.heroku is not None or cfg.self_managed


def capture_source(cfg: DatabaseConfig) -> str:
    """Where an emergency capture of this database goes (Heroku first: the provider's own backups)."""
    return SOURCE_HEROKU if cfg.heroku is not None else SOURCE_ARCHIVE


def capture_facts(db: DatabaseState, cfg: DatabaseConfig, actions: ActionsConfig, history: Iterable[TakenAction],
                  now: datetime, *, leader: bool, paused: str | None, running_here: bool = False) -> Facts:
    """The guards' facts for an emergency capture of `db`.

    `history` is the guardian's own capture executions of this database (any replica). The world adds what it
    knows: a running capture in the capture source, and the newest on-request backup in the source's history,
    whoever took it.

    The cooldown and the cap are about captures asked for on top of the schedule, so scheduled ones count for
    neither. An interrupted capture (its process died; it left no backup) holds no cooldown, neither in the
    history nor as the failed attempt it left in the archive, so the emergency capture its failure calls for
    goes at once; it still counts toward the daily cap, which is what stops a crash loop capturing without
    end."""
    source = capture_source(cfg)
    src = db.sources.get(source)
    running = None
    if running_here:
        running = "a capture started by this guardian"
    elif src is not None and src.in_progress:
        running = f"{src.in_progress} capture(s) in progress at {source}"
    last, what = None, ""
    if src is not None:
        requested = [b for b in src.backups if b.kind in ON_REQUEST and b.error != INTERRUPTED_CAPTURE]
        if requested:
            newest = max(requested, key=lambda b: b.started_at)
            last = newest.started_at
            state = "succeeded" if newest.succeeded else "failed"
            what = f"on-request backup {newest.backup_id} at {source} ({state})"
    taken = [t for t in history if t.kind != "scheduled"]
    for t in taken:
        if t.outcome == INTERRUPTED:
            continue
        if last is None or t.started_at > last:
            last, what = t.started_at, f"the guardian's capture ({t.outcome}{': ' + t.detail if t.detail else ''})"
    day_ago = now - timedelta(hours=24)
    return Facts(
        enabled=actions.enabled, paused=paused, dry_run=actions.dry_run, leader=leader, running=running,
        last_taken=last, last_taken_what=what, taken_24h=sum(1 for t in taken if t.started_at >= day_ago),
        cooldown=actions.capture.cooldown, daily_cap=actions.capture.daily_cap, on_heroku=source == SOURCE_HEROKU,
    )
