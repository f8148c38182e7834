"""The guards every remedial action passes: pure decisions, no I/O, `now` an argument.

An `Intent` is what a planner wants done and why; the caller gathers the facts the guards need into a
`Facts` (from the world where possible: a capture the source reports as running, a manual capture visible in
its history), and `decide` returns a `Decision` with an outcome and a reason a person can read. The order of
the guards is the order of the checks below, so the reason names the first one that stopped the action:

  1. kill switch (config `actions.enabled: false`)          -> skipped_disabled
  2. paused at run time (`backup-guardian actions pause`)   -> skipped_paused
  3. not the leader (another replica acts)                  -> skipped_not_leader
  4. already running (asked of the source itself)           -> skipped_running
  5. a planner block (e.g. the formation is at its max)     -> skipped_<block>
  6. Heroku reports an incident on Data or Apps             -> waiting_provider  (a target on Heroku only)
  7. cooldown since the last one (history or the world)     -> skipped_cooldown
  8. daily cap (24 hours, rolling)                          -> skipped_cap
  9. dry run                                                -> dry_run  ("would ...")
  otherwise                                                 -> execute
Dry run comes last, so a dry run says exactly what a live guardian would have done. Waiting for the provider
comes before the cooldown and the cap: it starts no cooldown and spends none of the cap (a declined decision is
no execution), so the action goes ahead at the first evaluation after Heroku resolves its incident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from daemon.core.durations import format_duration

EXECUTE = "execute"
#: Declined because Heroku reports an incident on the systems the action needs: not a failure, no cooldown.
WAITING_PROVIDER = "waiting_provider"
DRY_RUN = "dry_run"
#: An execution that did not end on its own: the shutdown stopped it, or its process died (closed later by
#: `ActionRunner.close_interrupted`).
INTERRUPTED = "interrupted"
#: Every outcome a decision or an execution can have (pre-initialised in pgbackup_actions_total).
OUTCOMES = ("done", "failed", INTERRUPTED, DRY_RUN, "skipped_disabled", "skipped_paused", "skipped_not_leader",
            "skipped_running", WAITING_PROVIDER, "skipped_cooldown", "skipped_cap", "skipped_max", "skipped_busy",
            "skipped_unavailable")


@dataclass(frozen=True)
class Intent:
    """A planner's wish: do `action` to `target` because of `reason` (triggered by `triggers`).

    Plain data: `to_json` / `from_json` carry it whole (to another process, a queue, the audit), with params
    limited to JSON values."""

    action: str  # capture | scale | mirror | prune | keep_last | drill | scratch_sweep | recover_rows
    target: str  # a database name, database/backup id, or app/process_type
    reason: str
    triggers: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    manual: bool = False  # a person asked for it (the `capture` and `drill` commands)
    blocked: str | None = None  # the planner found a reason of its own not to act (e.g. "max")
    requested_by: str | None = None  # who asked, for a person's request (user@host); None: the guardian itself

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "target": self.target, "reason": self.reason,
                "triggers": list(self.triggers), "params": dict(self.params), "manual": self.manual,
                "blocked": self.blocked, "requested_by": self.requested_by}

    @classmethod
    def from_json(cls, doc: Any) -> Intent:
        """Parse what `to_json` wrote; ValueError naming the field when something is missing or mistyped."""
        if not isinstance(doc, dict):
            raise ValueError("an intent must be an object")
        for key in ("action", "target", "reason"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise ValueError(f"intent field {key!r} must be a non-empty string")
        triggers, params = doc.get("triggers", []), doc.get("params", {})
        if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
            raise ValueError("intent field 'triggers' must be a list of strings")
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise ValueError("intent field 'params' must be an object")
        for key in ("blocked", "requested_by"):
            if doc.get(key) is not None and not isinstance(doc[key], str):
                raise ValueError(f"intent field {key!r} must be a string or null")
        if not isinstance(doc.get("manual", False), bool):
            raise ValueError("intent field 'manual' must be true or false")
        return cls(doc["action"], doc["target"], doc["reason"], tuple(triggers), dict(params),
                   bool(doc.get("manual", False)), doc.get("blocked"), doc.get("requested_by"))

    @property
    def describe(self) -> str:
        verb = {"capture": "capture a backup of", "scale": "scale", "rollback": "roll back"}.get(self.action,
                                                                                                   self.action)
        extra = ""
        if self.action == "scale" and "to_quantity" in self.params:
            extra = f" from {self.params.get('from_quantity')} to {self.params['to_quantity']}"
        if self.action == "rollback" and "to_version" in self.params:
            extra = f" from v{self.params.get('from_version')} to v{self.params['to_version']}"
        return f"{verb} {self.target}{extra}"


@dataclass(frozen=True)
class Facts:
    """What the guards look at, gathered by the caller at decision time."""

    enabled: bool = True
    paused: str | None = None  # the pause reason, when paused at run time
    dry_run: bool = True
    leader: bool = True
    running: str | None = None  # what is running, when something is
    last_taken: datetime | None = None  # the newest earlier action of this kind on this target
    last_taken_what: str = ""  # which one ("the guardian's capture", "manual backup b012 by a person")
    taken_24h: int = 0
    cooldown: timedelta = timedelta(0)
    daily_cap: int = 1
    on_heroku: bool = False  # the target lives on Heroku (a Heroku database, a Heroku app's formation)
    provider_incident: str | None = None  # Heroku's incident on Data or Apps, when it reports one


@dataclass(frozen=True)
class Decision:
    intent: Intent
    outcome: str
    reason: str

    @property
    def go(self) -> bool:
        return self.outcome == EXECUTE


def decide(intent: Intent, facts: Facts, now: datetime) -> Decision:
    """The first guard that stops `intent`, or dry_run / execute. Never raises."""
    why = intent.reason

    def stop(outcome: str, text: str) -> Decision:
        return Decision(intent, outcome, f"{text} (wanted to {intent.describe}: {why})")

    if not facts.enabled:
        return stop("skipped_disabled", "actions are disabled by the kill switch (actions.enabled: false)")
    if facts.paused is not None:
        return stop("skipped_paused", f"actions are paused: {facts.paused}")
    if not facts.leader:
        return stop("skipped_not_leader", "this replica is not the leader")
    if facts.running:
        return stop("skipped_running", f"already running: {facts.running}")
    if intent.blocked:
        return stop(f"skipped_{intent.blocked}", intent.params.get("blocked_reason", intent.blocked))
    if facts.provider_incident:
        return stop(WAITING_PROVIDER, f"waiting: {facts.provider_incident}")
    if facts.last_taken is not None and not intent.manual:
        since = now - facts.last_taken
        if since < facts.cooldown:
            return stop("skipped_cooldown", f"cooldown: {facts.last_taken_what or 'the last one'} was "
                        f"{format_duration(max(since, timedelta(0)))} ago, cooldown "
                        f"{format_duration(facts.cooldown)}")
    if facts.taken_24h >= facts.daily_cap:
        return stop("skipped_cap", f"daily cap reached: {facts.taken_24h} in the last 24h (cap {facts.daily_cap})")
    if facts.dry_run:
        return Decision(intent, DRY_RUN, f"dry run: would {intent.describe} because {why}")
    return Decision(intent, EXECUTE, f"{intent.describe} because {why}")
