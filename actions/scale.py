"""Dyno scale-up on a failing health probe, and back to the person's quantity once healthy.

Four parts, from the outside in:
  - `probe()` GETs one app URL and turns every outcome (an answer, a slow answer, a timeout, a refused
    connection) into a `ProbeResult`; it never raises;
  - `advance()`, `plan_scale()` and `remember()` are pure: they take `now` and decide, from the probe history,
    the current dyno quantity and the `ScaleMemory` the caller keeps in its key-value store, what one step to
    take. The guardian only ever scales up one dyno at a time, never above `max_quantity`, and only ever scales
    down to the quantity a person had set (the baseline), never below it; a change a person made is adopted,
    never undone;
  - `HerokuScaler` reads and sets the formation through a `HerokuAPI`;
  - `Scaling` probes each target on its interval and takes the step through the pipeline: cooldown, daily cap,
    dry run, pause, leadership and the kill switch are the guards' (from the action history), not decided here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from loguru import logger

from actions.guards import Decision, Facts, Intent
from actions.pipeline import SCALE, Gate, pause_reason
from actions.runner import ActionRunner, Outcome
from daemon.adapters.heroku import HerokuAPI, HerokuError, HerokuProtocolError, HerokuRateLimited
from daemon.adapters.statestore import StateStore
from daemon.config import ActionsConfig, ScaleTarget
from daemon.core.durations import format_duration
from daemon.core.errors import GuardianError
from daemon.core.redact import MASK, REDACTOR
from daemon.leadership import Leadership

UP, DOWN, NONE = "up", "down", "none"


@dataclass(frozen=True)
class ProbeResult:
    """One probe. `status` is None when nothing was answered; `error` says why a probe failed (None when ok)."""

    ok: bool
    status: int | None
    latency_seconds: float
    error: str | None
    at: datetime


@dataclass(frozen=True)
class ProbeState:
    """What the planner needs from the probe history: the failure streak and since when the probe is healthy.
    `scale_refused` is Heroku's message when it refused the last formation change (None once one succeeds), so
    the status says why the dynos did not change while the cooldown holds the next attempt."""

    consecutive_failures: int = 0
    healthy_since: datetime | None = None
    last: ProbeResult | None = None
    scale_refused: str | None = None


@dataclass(frozen=True)
class ScaleMemory:
    """What the guardian remembers about one formation between runs (persisted with `to_json`).

    `baseline` is the quantity a person had set before the guardian scaled up; `ours` the quantity the guardian
    itself last set, None while the current quantity is a person's; `changed_at` when the guardian last changed it.
    """

    baseline: int | None = None
    ours: int | None = None
    changed_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "ours": self.ours,
                "changed_at": self.changed_at.isoformat() if self.changed_at else None}

    @classmethod
    def from_json(cls, doc: Any) -> ScaleMemory:
        """The inverse of `to_json`; missing keys take their defaults. Raises ValueError on a malformed document
        (a naive time is read as UTC)."""
        if not isinstance(doc, dict):
            raise ValueError(f"scale memory: expected an object, got {type(doc).__name__}")
        ints = {}
        for key in ("baseline", "ours"):
            value = doc.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"scale memory: {key} must be a non-negative integer or null, got {value!r}")
            ints[key] = value
        changed = doc.get("changed_at")
        if changed is not None and not isinstance(changed, str):
            raise ValueError(f"scale memory: changed_at must be an ISO time or null, got {changed!r}")
        at = datetime.fromisoformat(changed) if changed else None
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        return cls(baseline=ints["baseline"], ours=ints["ours"], changed_at=at)


@dataclass(frozen=True)
class ScaleStep:
    """One decision. `direction` is "up" | "down" | "none"; `blocked` names what stopped a needed scale-up
    ("max": the formation is at `max_quantity`; "zero": a person scaled it to 0)."""

    direction: str
    from_quantity: int
    to_quantity: int
    reason: str
    blocked: str | None = None


# -- probing -----------------------------------------------------------------------------------------------
def safe_url(url: str) -> str:
    """`url` without user info, query or fragment: what may appear in an error, a log line or an audit record."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<invalid url>"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _scrub(text: str, url: str) -> str:
    """Mask the URL's credentials and query wherever an exception message quotes them, then redact."""
    text = text.replace(url, safe_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed [IPv6] host: the whole URL was all there was to find
        return REDACTOR(text)
    userinfo = parts.netloc.rpartition("@")[0]
    # Distinctive forms only ("user:pw@", "?query"): a bare short value would mask ordinary words.
    for piece in (f"{userinfo}@" if userinfo else "", f"?{parts.query}" if parts.query else ""):
        if piece:
            text = text.replace(piece, MASK)
    return REDACTOR(text)


def probe(client: httpx.Client, target: ScaleTarget, now: datetime) -> ProbeResult:
    """GET `target.url` within `target.timeout`; ok when the status is expected and the answer came within
    `target.max_latency`. Never raises: a timeout or a connection error is a failed result whose `error` names
    the error and the URL without credentials or query. Redirects follow the client's own setting."""
    start = time.monotonic()
    try:
        resp = client.get(target.url, timeout=target.timeout.total_seconds())
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        latency = time.monotonic() - start
        text = f"{type(exc).__name__} GET {safe_url(target.url)}: {_scrub(str(exc), target.url)}"
        return ProbeResult(ok=False, status=None, latency_seconds=latency, error=text, at=now)
    latency = time.monotonic() - start
    limit = target.max_latency.total_seconds()
    error: str | None = None
    if resp.status_code not in target.expect_status:
        expected = ", ".join(str(s) for s in target.expect_status)
        error = f"HTTP {resp.status_code} (expected {expected})"
    elif latency > limit:
        error = f"slow: answered in {latency:.2f}s (max {limit:g}s)"
    return ProbeResult(ok=error is None, status=resp.status_code, latency_seconds=latency, error=error, at=now)


def advance(state: ProbeState, result: ProbeResult) -> ProbeState:
    """The state after one more probe: a failure extends the streak and ends the healthy period; a success
    clears the streak and starts the healthy period if it has not started."""
    if not result.ok:
        return replace(state, consecutive_failures=state.consecutive_failures + 1, healthy_since=None, last=result)
    return replace(state, consecutive_failures=0, healthy_since=state.healthy_since or result.at, last=result)


# -- planning ----------------------------------------------------------------------------------------------
def _last_failure(state: ProbeState) -> str:
    last = state.last
    if last is None:
        return "no probe recorded"
    return last.error or (f"HTTP {last.status}" if last.status is not None else "failed")


def plan_scale(target: ScaleTarget, probe: ProbeState, current: int, memory: ScaleMemory,
               now: datetime) -> tuple[ScaleStep, ScaleMemory]:
    """Decide one step for `target`'s formation, now at `current` dynos. Returns the step and the memory adjusted
    for what a person did (the caller stores it whether or not the step is carried out).

    a. `memory.ours` set but the formation differs: a person changed it; that quantity becomes the baseline and
       the guardian forgets its own change (it will not scale below or undo it).
    b. `target.failures` consecutive failures: one dyno up, unless at `max_quantity` (blocked "max") or at 0
       (blocked "zero": a person switched the process off; starting it would undo that).
    c. Healthy for `target.healthy_for` after a scale-up of ours: all the way down to the baseline in one step.
    d. Otherwise nothing, with the reason.
    """
    pt = target.process_type
    if memory.ours is not None and current != memory.ours:
        memory = replace(memory, baseline=current, ours=None)

    def none(reason: str, blocked: str | None = None) -> tuple[ScaleStep, ScaleMemory]:
        return ScaleStep(NONE, current, current, reason, blocked), memory

    failures = probe.consecutive_failures
    if failures >= target.failures:
        why = f"{failures} consecutive failed probes (last: {_last_failure(probe)})"
        if current >= target.max_quantity:
            return none(f"{why}, but {pt} is at the max of {target.max_quantity} dynos", "max")
        if current == 0:
            return none(f"{why}, but {pt} is scaled to 0 by a person", "zero")
        return ScaleStep(UP, current, current + 1, f"{why}: {pt} {current} -> {current + 1}"), memory

    if failures:
        return none(f"{failures} of {target.failures} failures")
    if probe.healthy_since is None:
        return none("no probe yet")
    baseline = memory.baseline
    if memory.ours is None or baseline is None or current <= baseline:
        return none("healthy")  # the quantity is a person's (or already theirs): nothing of ours to undo
    healthy = now - probe.healthy_since
    if healthy >= target.healthy_for:
        return ScaleStep(DOWN, current, baseline, f"healthy for {format_duration(healthy)}: {pt} {current} -> "
                         f"{baseline}, the quantity set before the scale-up"), memory
    return none(f"healthy for {format_duration(healthy)} of {format_duration(target.healthy_for)}")


def remember(memory: ScaleMemory, step: ScaleStep, now: datetime) -> ScaleMemory:
    """The memory after `step` was carried out; pass the memory `plan_scale` returned. A scale-up keeps the
    baseline while the quantity is still ours, else the quantity it started from is the person's baseline;
    a scale-down hands the formation back to the person. A "none" step changes nothing."""
    if step.direction == UP:
        keep = memory.baseline is not None and memory.ours is not None
        baseline = memory.baseline if keep else step.from_quantity
        return ScaleMemory(baseline=baseline, ours=step.to_quantity, changed_at=now)
    if step.direction == DOWN:
        return ScaleMemory(baseline=memory.baseline, ours=None, changed_at=now)
    return memory


# -- the dyno scaler -----------------------------------------------------------------------------------------
class DynoScaler(Protocol):
    """Reads and sets the dyno quantity of one process type. Raises a `HerokuError` subclass on failure."""

    def quantity(self, app: str, process_type: str) -> int: ...

    def scale(self, app: str, process_type: str, quantity: int) -> int: ...


class HerokuScaler:
    """`DynoScaler` over the Heroku Platform API formation endpoints (reference 3.1)."""

    def __init__(self, api: HerokuAPI) -> None:
        self.api = api

    def quantity(self, app: str, process_type: str) -> int:
        """The current quantity; `HerokuNotFound` for an unknown app or process type."""
        return _quantity(self.api.formation(app, process_type), app, process_type)

    def scale(self, app: str, process_type: str, quantity: int) -> int:
        """Set the absolute quantity and return the quantity Heroku answered with."""
        return _quantity(self.api.update_formation(app, process_type, quantity), app, process_type)


def _quantity(formation: dict[str, Any], app: str, process_type: str) -> int:
    value = formation.get("quantity")
    if not isinstance(value, int) or isinstance(value, bool):
        raise HerokuProtocolError(f"formation {process_type} of {app}: no integer quantity")
    return value


class Scaling:
    """Health probes on their own intervals, and the dyno scaling they call for, through the pipeline."""

    def __init__(self, cfg: ActionsConfig, runner: ActionRunner, gate: Gate, state: StateStore,
                 leadership: Leadership, api: HerokuAPI | None, shard_index: int,
                 publish_probes: Callable[[dict[str, ProbeState]], None], clock: Callable[[], datetime],
                 on_probe: Callable[[ScaleTarget, ProbeState, ProbeState], None] | None = None) -> None:
        self.cfg = cfg
        self.runner = runner
        self.gate = gate
        self.state = state
        self.leadership = leadership
        self.api = api
        self.shard_index = shard_index
        self.publish_probes = publish_probes
        self.clock = clock
        self.on_probe = on_probe  # told each probe's state before and after (the rollback of a bad deploy)
        self.probes: dict[str, ProbeState] = {t.name: ProbeState() for t in cfg.scale}
        self._probe_due: dict[str, datetime] = {}
        self._http = httpx.Client(follow_redirects=False) if cfg.scale else None

    def probe_all(self) -> None:
        """Probe every target that is due (each on its own interval), then plan its scaling. Only the leader
        of shard group 0 scales: an app is not a database, so one group owns every formation."""
        assert self._http is not None
        now = self.clock()
        for target in self.cfg.scale:
            due = self._probe_due.get(target.name)
            if due is not None and now < due:
                continue
            self._probe_due[target.name] = now + target.interval
            result = probe(self._http, target, now)
            before = self.probes.get(target.name, ProbeState())
            state = advance(before, result)
            self.probes[target.name] = state
            if not result.ok and state.consecutive_failures in (1, target.failures):
                logger.warning("probe {} failed ({} in a row): {}", target.name, state.consecutive_failures,
                               result.error or f"HTTP {result.status}")
            if self.shard_index == 0 and self.leadership.is_leader():
                try:
                    self._scale(target, state)
                except GuardianError as exc:
                    logger.warning("scaling {} not planned: {}", target.name, exc)
                if self.on_probe is not None:
                    try:
                        self.on_probe(target, before, state)
                    except GuardianError as exc:
                        logger.warning("rollback for {} not planned: {}", target.name, exc)
        self.publish_probes(dict(self.probes))

    def _scale(self, target: ScaleTarget, state: ProbeState) -> None:
        api = self.api
        if api is None:
            return
        scaler = HerokuScaler(api)
        key = f"scale.{target.app}/{target.process_type}"
        try:
            memory = ScaleMemory.from_json(self.state.get(key) or {})
        except ValueError as exc:
            logger.warning("scale memory of {} unreadable ({}); starting from the current formation", key, exc)
            memory = ScaleMemory()
        current = scaler.quantity(target.app, target.process_type)
        step, adjusted = plan_scale(target, state, current, memory, self.clock())
        if adjusted != memory:
            self.state.put(key, adjusted.to_json())
            logger.info("scale {}: a person set {} to {}; that is the new baseline", target.name,
                        target.process_type, current)
        if step.direction == "none" and step.blocked is None:
            return
        name = f"{target.app}/{target.process_type}"
        params: dict[str, Any] = {"from_quantity": step.from_quantity, "to_quantity": step.to_quantity,
                                  "probe": target.name}
        if step.blocked:
            params["blocked_reason"] = step.reason
        intent = Intent("scale", name, step.reason, triggers=(f"probe_{step.direction}",), params=params,
                        blocked=step.blocked)
        decision = self._decide_scale(intent, target, adjusted, leader=True)
        if not decision.go:
            self.runner.note(decision)
            return

        def run(_id: int) -> Outcome:
            # the memory is written before the change: a store failure afterwards must never leave extra dynos
            # that the guardian no longer knows are its own
            pending = remember(adjusted, step, self.clock())
            self.state.put(key, pending.to_json())
            try:
                new = scaler.scale(target.app, target.process_type, step.to_quantity)
            except GuardianError as exc:
                self.state.put(key, adjusted.to_json())
                self._note_refusal(target, exc)
                raise
            self._note_refusal(target, None)
            if new != step.to_quantity:
                self.state.put(key, replace(pending, ours=new).to_json())
            return Outcome(True, f"scaled {name} from {step.from_quantity} to {new}",
                           {"from_quantity": step.from_quantity, "to_quantity": new})

        self.runner.execute(decision, run, lambda: self._decide_scale(intent, target, adjusted,
                                                                      leader=self.leadership.elect()))

    def _note_refusal(self, target: ScaleTarget, exc: GuardianError | None) -> None:
        """Keep Heroku's message when it refused the change (a 4xx other than 429: asking again at once would be
        refused again; the failed execution in the action history holds the next attempt for the cooldown), and
        forget it once a change succeeds. Other failures (network, 5xx, rate limit) are not a refusal."""
        refused = (isinstance(exc, HerokuError) and not isinstance(exc, HerokuRateLimited)
                   and 400 <= exc.status < 500)
        state = self.probes.get(target.name, ProbeState())
        self.probes[target.name] = replace(state, scale_refused=str(exc) if refused else None)

    def _decide_scale(self, intent: Intent, target: ScaleTarget, memory: ScaleMemory, leader: bool) -> Decision:
        try:
            history = self.runner.history("scale", intent.target, max(target.cooldown, timedelta(hours=24)))
        except GuardianError as exc:
            return Decision(intent, "skipped_unavailable", f"action history unavailable, not deciding blind: {exc}")
        now = self.clock()
        last = max((h.started_at for h in history), default=None)
        if memory.changed_at is not None and (last is None or memory.changed_at > last):
            last = memory.changed_at
        taken = sum(1 for h in history if h.started_at >= now - timedelta(hours=24))
        # scaling back to the person's baseline is never held by the cap: a capped day must not keep extra dynos
        down = intent.params.get("to_quantity", 0) < intent.params.get("from_quantity", 0)
        facts = Facts(enabled=self.cfg.enabled, paused=pause_reason(self.state), dry_run=self.cfg.dry_run,
                      leader=leader, running=None, last_taken=last, last_taken_what="the last scale change",
                      taken_24h=taken, cooldown=target.cooldown, daily_cap=taken + 1 if down else target.daily_cap,
                      on_heroku=True)  # a Heroku app's formation: it waits while Heroku reports an incident
        return self.gate.decide(SCALE, intent, base=facts)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
