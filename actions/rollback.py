"""Rolling back a bad deploy (scenario 3 of the SuoOps backup and recovery procedures, steps 2-3: review recent
deployments, roll back if a bad deploy caused the outage), opt-in through `actions.rollback.enabled`.

The scale probes (actions/scale.py) tell when an app fails; this module asks whether the newest release caused
it and, if so, rolls back to the release before it, through the pipeline's guards (kill switch, pause, leader,
single flight, cooldown, daily cap, dry run) plus its own refusals, each one audited with its reason:
  - the probe was failing before the release, or no healthy probe was seen before it: not the deploy's fault;
  - the bad release is itself a rollback ("Rollback to vN", as Heroku and the CLI describe one): never undone;
  - no eligible release before it, or the one there is older than `max_target_age`;
  - Heroku reports an incident (`provider_incident()`), or reported one at any time during the failure streak:
    a platform fault is not the deploy's.
Each release is rolled back (or tried) at most once: the release ids handled are kept in the state store, so a
restart or another replica does not repeat it. `Episode`, `track` and `plan_rollback` are pure; `Rollbacks`
reads releases and acts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from actions.guards import Decision, Facts, Intent
from actions.pipeline import ROLLBACK, Gate, pause_reason
from actions.runner import ActionRunner, Outcome
from actions.scale import ProbeState
from daemon.adapters.heroku import HerokuAPI
from daemon.adapters.statestore import StateStore
from daemon.config import ActionsConfig, RollbackConfig, ScaleTarget
from daemon.core.durations import format_duration
from daemon.core.errors import GuardianError
from daemon.leadership import Leadership

#: A release Heroku created by rolling back (the description the API and the CLI give it).
ROLLBACK_DESCRIPTION = re.compile(r"^Rollback to v\d+")
RELEASES_READ = 10  # the CLI's `releases` page: the previous release is always among them
HANDLED_KEPT = 50  # release ids remembered per app


@dataclass(frozen=True)
class Episode:
    """The probe's current failure streak: when it began, and since when the probe had been healthy before it
    (None when no healthy probe preceded it in this process)."""

    failing_since: datetime | None = None
    healthy_before: datetime | None = None
    incident: str | None = None  # Heroku's incident seen while the probe was failing: the streak is not the deploy's


def seen_incident(episode: Episode, incident: str | None) -> Episode:
    """The episode remembering the first Heroku incident reported during its failure streak: a streak that an
    incident overlapped stays the platform's even once Heroku resolves it, until the probe recovers."""
    if incident and episode.failing_since is not None and episode.incident is None:
        return replace(episode, incident=incident)
    return episode


def track(episode: Episode, before: ProbeState, after: ProbeState) -> Episode:
    """The episode after one probe moved the state from `before` to `after`."""
    if after.consecutive_failures == 0:
        return Episode()
    if before.consecutive_failures == 0 and after.last is not None:
        return Episode(failing_since=after.last.at, healthy_before=before.healthy_since)
    return episode


@dataclass(frozen=True)
class RollbackPlan:
    """A rollback the probe calls for (`declined` None) or the reason it must not happen. `bad` is the release
    to undo, `target` the one to return to (None when there is none)."""

    bad: dict[str, Any]
    target: dict[str, Any] | None
    reason: str
    declined: str | None = None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def describe_release(release: dict[str, Any]) -> str:
    """`v12 ("Deploy abc") by dev@example.com at 2026-11-30T12:00:00Z`: what a person needs to find it."""
    user = release.get("user") if isinstance(release.get("user"), dict) else {}
    email = (user or {}).get("email") or "an unknown user"
    return f"v{release.get('version')} (\"{release.get('description')}\") by {email} at {release.get('created_at')}"


def plan_rollback(releases: list[dict[str, Any]], episode: Episode, cfg: RollbackConfig, handled: set[str],
                  incident: str | None, probe_name: str, now: datetime) -> RollbackPlan | None:
    """Decide about the current release of `releases` (newest first). None when there is nothing to say: no
    failure streak, no current release, a release already handled, or a release older than the failures by more
    than `cfg.within` (the failures are not the deploy's to answer). Otherwise the plan, declined or not."""
    failing = episode.failing_since
    current = next((r for r in releases if r.get("current") is True), None)
    if failing is None or current is None or str(current.get("id")) in handled:
        return None
    created = _time(current.get("created_at"))
    if created is None:
        return None
    bad = describe_release(current)
    if failing < created:
        if created - failing > cfg.within:
            return None
        return RollbackPlan(current, None, f"probe {probe_name} failing since {failing.isoformat()}", declined=(
            f"{bad} came after the probe began failing ({failing.isoformat()}): not caused by the deploy"))
    if failing - created > cfg.within:
        return None
    reason = (f"probe {probe_name} failing since {failing.isoformat()}, {format_duration(failing - created)} "
              f"after {bad}")

    def no(why: str, target: dict[str, Any] | None = None) -> RollbackPlan:
        return RollbackPlan(current, target, reason, declined=why)

    if episode.healthy_before is None or episode.healthy_before > created:
        return no(f"no healthy probe was seen before {bad}, so the deploy is not known to have caused it")
    if ROLLBACK_DESCRIPTION.match(str(current.get("description") or "")):
        return no(f"{bad} is itself a rollback; a rollback is never rolled back")
    version = current.get("version")
    target = next((r for r in releases if isinstance(r.get("version"), int) and isinstance(version, int)
                   and r["version"] < version and r.get("eligible_for_rollback") is True
                   and r.get("status") == "succeeded"), None)
    if target is None:
        return no(f"no release before v{version} is eligible for rollback")
    target_at = _time(target.get("created_at"))
    if target_at is None or now - target_at > cfg.max_target_age:
        return no(f"the previous release {describe_release(target)} is older than the limit of "
                  f"{format_duration(cfg.max_target_age)}", target)
    if incident:
        return no(f"Heroku reports an incident ({incident}); a platform fault is not the deploy's", target)
    if episode.incident:
        return no(f"Heroku reported an incident while the probe was failing ({episode.incident}); the failures "
                  "are not known to be the deploy's", target)
    return RollbackPlan(current, target, reason)


class Rollbacks:
    """Watches each scale probe's failure streak and rolls back a bad deploy of its app through the pipeline."""

    def __init__(self, cfg: ActionsConfig, runner: ActionRunner, gate: Gate, state: StateStore,
                 leadership: Leadership, api: HerokuAPI | None, provider_incident: Callable[[], str | None],
                 clock: Callable[[], datetime]) -> None:
        self.cfg = cfg
        self.runner = runner
        self.gate = gate
        self.state = state
        self.leadership = leadership
        self.api = api
        self.provider_incident = provider_incident
        self.clock = clock
        self.episodes: dict[str, Episode] = {}

    def observe(self, target: ScaleTarget, before: ProbeState, after: ProbeState) -> None:
        """After each probe of `target` (by the leader): follow its streak and, once it reaches the probe's
        `failures`, decide about the app's current release. Raises GuardianError when Heroku or the state store
        fails (the caller logs it)."""
        incident = self.provider_incident()
        episode = seen_incident(track(self.episodes.get(target.name, Episode()), before, after), incident)
        self.episodes[target.name] = episode
        rb = self.cfg.rollback
        if not rb.enabled or self.api is None or after.consecutive_failures < target.failures:
            return
        key = f"rollback.{target.app}"
        handled = self._handled(key)
        releases = self.api.releases(target.app, RELEASES_READ)
        plan = plan_rollback(releases, episode, rb, set(handled), incident, target.name, self.clock())
        if plan is None:
            return
        intent = self._intent(target, plan)
        decision = self._decide(intent, self.leadership.is_leader())
        if not decision.go:
            self.runner.note(decision)
            return
        assert plan.target is not None
        api, app, bad, to = self.api, target.app, plan.bad, plan.target

        def run(_id: int) -> Outcome:
            # remembered before the POST: a crash or an error afterwards must never roll the same release back twice
            self._remember(key, handled, bad, self.clock())
            new = api.rollback(app, str(to["id"]))
            return Outcome(True, f"rolled {app} back from v{bad.get('version')} to v{to.get('version')} (new "
                           f"release v{new.get('version')})", {"new_version": new.get("version")})

        self.runner.execute(decision, run, lambda: self._decide(intent, self.leadership.elect()))

    def _intent(self, target: ScaleTarget, plan: RollbackPlan) -> Intent:
        bad, to = plan.bad, plan.target
        user = bad.get("user") if isinstance(bad.get("user"), dict) else {}
        params: dict[str, Any] = {"probe": target.name, "release": f"v{bad.get('version')}",
                                  "release_id": bad.get("id"), "author": (user or {}).get("email"),
                                  "released_at": bad.get("created_at"), "from_version": bad.get("version")}
        if to is not None:
            params |= {"to_version": to.get("version"), "to_release_id": to.get("id")}
        if plan.declined:
            params["blocked_reason"] = f"declined: {plan.declined}"
        return Intent("rollback", target.app, plan.reason, triggers=("probe_failing_after_release",),
                      params=params, blocked="declined" if plan.declined else None)

    def _decide(self, intent: Intent, leader: bool) -> Decision:
        rb = self.cfg.rollback
        try:
            history = self.runner.history("rollback", intent.target, max(rb.cooldown, timedelta(hours=24)))
        except GuardianError as exc:
            return Decision(intent, "skipped_unavailable", f"action history unavailable, not deciding blind: {exc}")
        now = self.clock()
        facts = Facts(enabled=self.cfg.enabled, paused=pause_reason(self.state), dry_run=self.cfg.dry_run,
                      leader=leader, last_taken=max((h.started_at for h in history), default=None),
                      last_taken_what="the last rollback", cooldown=rb.cooldown, daily_cap=rb.daily_cap,
                      taken_24h=sum(1 for h in history if h.started_at >= now - timedelta(hours=24)),
                      on_heroku=True)  # a Heroku app's releases: never while Heroku reports an incident
        return self.gate.decide(ROLLBACK, intent, base=facts)

    def _handled(self, key: str) -> dict[str, Any]:
        doc = self.state.get(key)
        handled = doc.get("handled") if isinstance(doc, dict) else None
        return dict(handled) if isinstance(handled, dict) else {}

    def _remember(self, key: str, handled: dict[str, Any], bad: dict[str, Any], now: datetime) -> None:
        handled = handled | {str(bad.get("id")): {"version": bad.get("version"), "at": now.isoformat()}}
        newest = sorted(handled.items(), key=lambda kv: str(kv[1].get("at", "")))[-HANDLED_KEPT:]
        self.state.put(key, {"handled": dict(newest)})
