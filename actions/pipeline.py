"""The one path every change to the world takes: an intent with its reasons -> the guards its kind declares ->
the execution under its cross-process lock -> its audit record.

Each kind of action declares which guards apply to it and, for each that does not, why (the README's action x
guard table is this declaration). The guards themselves are the pure ones of `actions.guards.decide`; this
module decides which facts they see: a guard that does not apply to a kind sees the neutral fact (enabled, not
paused, leader, no cooldown, no cap, live), so the order of the checks and the reasons stay those of `decide`.

A follower's decline (`skipped_not_leader`) is logged, not audited: the leader's decisions are the record, and
replicas sharing the state store would otherwise repeat each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from loguru import logger

from actions.guards import Decision, Facts, Intent, decide
from actions.runner import ActionRunner, Outcome
from daemon.adapters.statestore import StateStore
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError

KILL_SWITCH, PAUSE, LEADER, SINGLE_FLIGHT = "kill switch", "pause", "leader", "single flight"
PROVIDER, COOLDOWN, DAILY_CAP, DRY_RUN = "provider incident", "cooldown", "daily cap", "dry run"
#: Every guard, in the order `decide` checks them.
GUARDS = (KILL_SWITCH, PAUSE, LEADER, SINGLE_FLIGHT, PROVIDER, COOLDOWN, DAILY_CAP, DRY_RUN)
_NO_CAP = 1_000_000


@dataclass(frozen=True)
class ActionKind:
    """One kind of change: its audit name, what it does, and why each guard that does not apply does not."""

    name: str
    does: str
    exempt: dict[str, str] = field(default_factory=dict)
    dry_run_switch: str | None = None  # the setting that makes it a dry run, where the dry-run guard applies

    def applies(self, guard: str) -> bool:
        return guard not in self.exempt

    def __post_init__(self) -> None:
        unknown = set(self.exempt) - set(GUARDS)
        assert not unknown, f"{self.name}: unknown guards {unknown}"
        assert SINGLE_FLIGHT not in self.exempt, "every action runs single-flight under its lock"
        assert (self.dry_run_switch is None) == (DRY_RUN in self.exempt), f"{self.name}: dry-run switch"


_PACED = "its schedule sets the pace"
_NOT_HEROKU = "it does not act against Heroku"
EMERGENCY_CAPTURE = ActionKind("capture", "an emergency capture (Heroku capture or pg_dump) when backups are at risk",
                               dry_run_switch="actions.dry_run")
MANUAL_CAPTURE = ActionKind(
    "capture", "a capture a person asks for (`backup-guardian capture`)",
    {LEADER: "a person asked for it, in this process",
     PROVIDER: "a person decides, seeing Heroku's status on the status page",
     COOLDOWN: "a person's request is not a repeat"},
    dry_run_switch="actions.dry_run")
SCHEDULED_CAPTURE = ActionKind(
    "capture", "the scheduled pg_dump of a self-managed database",
    {KILL_SWITCH: "the kill switch stops remedies, never the backups the configuration schedules "
                  "(capture.enabled: false stops these)",
     PROVIDER: "a self-managed pg_dump does not act against Heroku", COOLDOWN: _PACED, DAILY_CAP: _PACED,
     DRY_RUN: "a dry run that skipped backups would leave the database unprotected (capture.enabled is its "
              "switch)"})
SCALE = ActionKind("scale", "dyno scale-up when the app fails its health probe", dry_run_switch="actions.dry_run")
ROLLBACK = ActionKind("rollback", "rolling back a bad deploy when the app fails its health probe soon after a "
                      "release (`actions.rollback.enabled`)", dry_run_switch="actions.dry_run")
MIRROR = ActionKind(
    "mirror", "a copy of a new Heroku backup into the archive",
    {KILL_SWITCH: "copies only add a protected copy; archive.mirror: false turns them off",
     PROVIDER: "a copy only reads Heroku; a failed copy is tried again",
     COOLDOWN: "one copy per new backup", DAILY_CAP: "one copy per new backup",
     DRY_RUN: "copies only add a protected copy; archive.mirror: false turns them off"})
PRUNE = ActionKind(
    "prune", "deletion of archived copies past their tier's keep (daily job, `archive prune --apply`)",
    {PROVIDER: _NOT_HEROKU, COOLDOWN: "a daily job", DAILY_CAP: "a daily job"},
    dry_run_switch="archive.prune_apply")
KEEP_LAST = ActionKind(
    "keep_last", "deletion of copies beyond capture.keep_last after a good capture",
    {PROVIDER: _NOT_HEROKU, COOLDOWN: "runs once after each good capture",
     DAILY_CAP: "runs once after each good capture",
     DRY_RUN: "setting capture.keep_last is the request to delete (archive.prune_apply is the tier prune's "
              "switch)"})
DRILL = ActionKind(
    "drill", "a restore drill into a proven scratch database",
    {KILL_SWITCH: "a drill changes only a scratch server proven not to be production (drill.enabled is its "
                  "switch)",
     PROVIDER: "it only reads a backup; a failed drill says why",
     COOLDOWN: "its cron sets the pace", DAILY_CAP: "its cron sets the pace",
     DRY_RUN: "a drill writes nothing but its own scratch database"})
SCRATCH_SWEEP = ActionKind(
    "scratch_sweep", "dropping scratch databases a crashed drill left behind",
    {KILL_SWITCH: "drops only databases the guardian created and proves, on the scratch server",
     PROVIDER: _NOT_HEROKU, COOLDOWN: "runs at start", DAILY_CAP: "runs at start",
     DRY_RUN: "drops only databases the guardian created and proves; keeping them fills the scratch server"})
_KEEPS = "marking only keeps a copy longer; it deletes nothing"
MILESTONE = ActionKind(
    "milestone", "marking an archived copy as a milestone, kept forever (`archive milestone`)",
    {KILL_SWITCH: _KEEPS, LEADER: "a person asks for it, in this process", PROVIDER: _NOT_HEROKU,
     COOLDOWN: "a person's request is not a repeat", DAILY_CAP: "a person's request is not a repeat", DRY_RUN: _KEEPS})
COMPLIANCE_EXPORT = ActionKind(
    "compliance_export", "a compliance export of the newest good backup's tables (restored into a proven scratch "
    "database) into the archive",
    {KILL_SWITCH: "it changes only a scratch server proven not to be production and adds objects to the archive "
                  "(removing the compliance section is its switch)",
     PROVIDER: "it only reads a backup; a failed export says why",
     COOLDOWN: "its cadence sets the pace", DAILY_CAP: "its cadence sets the pace",
     DRY_RUN: "a dry run would leave the export the procedures ask for undone"})
#: Every kind of change the guardian makes, for the README table and the tests.
KINDS = (EMERGENCY_CAPTURE, MANUAL_CAPTURE, SCHEDULED_CAPTURE, SCALE, ROLLBACK, MIRROR, PRUNE, KEEP_LAST, DRILL,
         SCRATCH_SWEEP, MILESTONE, COMPLIANCE_EXPORT)


@dataclass(frozen=True)
class Switches:
    """Where the pipeline reads the switches at decision time (the pause and leadership change at run time)."""

    enabled: Callable[[], bool]
    paused: Callable[[], str | None]
    leader: Callable[[], bool]
    dry_run: Callable[[ActionKind], bool]
    #: Heroku's incident on Data or Apps as readable text, or None (`HerokuStatusPoller.current_incident`)
    provider_incident: Callable[[], str | None] = lambda: None


class Gate:
    """The guards a kind declares, with the switches read at decision time: pure apart from the switches."""

    def __init__(self, switches: Switches, clock: Callable[[], datetime]) -> None:
        self.switches = switches
        self.clock = clock

    def facts(self, kind: ActionKind, intent: Intent, base: Facts | None = None, dry_run: bool | None = None) -> Facts:
        """The facts the guards see for `intent`: `base` (what the caller gathered: running, history; its
        switches can only narrow the ones read now) with the switches read now, and the neutral fact for every
        guard the kind is exempt from."""
        s = self.switches
        f = base or Facts(dry_run=False, daily_cap=_NO_CAP)
        return replace(
            f,
            enabled=(s.enabled() and f.enabled) if kind.applies(KILL_SWITCH) else True,
            paused=(s.paused() or f.paused) if kind.applies(PAUSE) else None,
            # the caller's fact can only narrow it (e.g. only shard group 0 scales)
            leader=(intent.manual or (s.leader() and f.leader)) if kind.applies(LEADER) else True,
            provider_incident=(f.provider_incident or s.provider_incident()) if kind.applies(PROVIDER) and f.on_heroku
            else None,
            last_taken=f.last_taken if kind.applies(COOLDOWN) else None,
            cooldown=f.cooldown if kind.applies(COOLDOWN) else timedelta(0),
            daily_cap=f.daily_cap if kind.applies(DAILY_CAP) else _NO_CAP,
            dry_run=(s.dry_run(kind) if dry_run is None else dry_run) if kind.applies(DRY_RUN) else False,
        )

    def decide(self, kind: ActionKind, intent: Intent, base: Facts | None = None,
               dry_run: bool | None = None) -> Decision:
        return decide(intent, self.facts(kind, intent, base, dry_run), self.clock())


class Pipeline:
    """Decides with the guards a kind declares, runs what goes under its lock, audits every outcome."""

    def __init__(self, runner: ActionRunner, gate: Gate) -> None:
        self.runner = runner
        self.gate = gate

    def decide(self, kind: ActionKind, intent: Intent, base: Facts | None = None,
               dry_run: bool | None = None) -> Decision:
        return self.gate.decide(kind, intent, base, dry_run)

    def note(self, decision: Decision) -> None:
        """Audit a decision that is not carried out (a follower's only in the log)."""
        if decision.outcome == "skipped_not_leader":
            logger.debug("action {} {}: {}", decision.intent.action, decision.intent.target, decision.reason)
            return
        self.runner.note(decision)

    def run(self, kind: ActionKind, intent: Intent, fn: Callable[[int], Outcome], base: Facts | None = None,
            dry_run: bool | None = None, recheck_base: Callable[[], Facts] | None = None) -> Outcome | None:
        """Decide; run `fn(action_id)` when it goes (single-flight under `exclusive("{action}:{target}")`,
        decided again under the lock with `recheck_base()`'s facts, or `base`); audit every outcome. None
        when it did not run (declined, dry run, busy)."""
        decision = self.decide(kind, intent, base, dry_run)
        if not decision.go:
            self.note(decision)
            return None

        def recheck() -> Decision:
            return self.decide(kind, intent, recheck_base() if recheck_base is not None else base, dry_run)

        return self.runner.execute(decision, fn, recheck)

    def run_held(self, kind: ActionKind, intent: Intent, fn: Callable[[int], Outcome],
                 unlocked_ok: bool = True) -> Outcome | Decision | None:
        """Routine work (a scheduled capture, a drill): decided by the guards its kind declares, then run the
        way `ActionRunner.run_held` runs it (when the state store fails, a capture still runs; a drill does not).
        Returns the Outcome, the declining Decision (already audited), or None when another process runs it."""
        decision = self.decide(kind, intent)
        if not decision.go:
            self.note(decision)
            return decision
        return self.runner.run_held(intent, fn, unlocked_ok=unlocked_ok)


def dry_run_of(config: GuardianConfig, kind: ActionKind) -> bool:
    """The dry-run switch `kind` declares, as configured: `actions.dry_run` for the remedies, the inverse of
    `archive.prune_apply` for the prune."""
    if kind.dry_run_switch == "archive.prune_apply":
        return not config.archive.prune_apply
    return config.actions.dry_run


#: Where `backup-guardian actions pause` keeps the switch, shared by every replica through the state store.
PAUSE_KEY = "actions.paused"


def pause_reason(store: StateStore) -> str | None:
    """Why actions are paused (`backup-guardian actions pause`, shared by every replica through the state
    store), or None when they are not. An unreadable store counts as paused: nothing acts blind."""
    try:
        doc = store.get(PAUSE_KEY)
    except GuardianError as exc:
        return f"the state store is unreadable ({exc}), so the pause switch cannot be read"
    if isinstance(doc, dict) and doc.get("paused"):
        return str(doc.get("reason") or "paused")
    return None
