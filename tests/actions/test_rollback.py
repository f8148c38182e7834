"""Rolling back a bad deploy end to end: a real loopback app whose health the test switches, the guardian in
process on the double's clock, the Heroku double's releases as what is rolled back; plus the pure planner."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from actions.pipeline import PAUSE_KEY
from actions.rollback import Episode, plan_rollback, seen_incident, track
from actions.scale import ProbeResult, ProbeState
from daemon.adapters.heroku import HerokuClient
from daemon.app import Guardian
from daemon.config import GuardianConfig, RollbackConfig
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock, HealthApp


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app() -> Iterator[HealthApp]:
    a = HealthApp()
    yield a
    a.close()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-rollback-token-0123456789") as double:
        double.add_app("shop")
        yield double


def make_guardian(heroku: HerokuDouble, clock: FakeClock, app: HealthApp, state_dir: Path, *, dry_run: bool = False,
                  rollback: dict[str, Any] | None = None, enabled: bool = True) -> Guardian:
    actions: dict[str, Any] = {"enabled": enabled, "dry_run": dry_run, "scale": [{
        "name": "api", "url": app.url, "app": "shop", "process_type": "web", "failures": 3, "max_quantity": 1,
        "timeout": "2s"}]}
    if rollback is not None:
        actions["rollback"] = rollback
    config = GuardianConfig.model_validate({
        "state_dir": str(state_dir),
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "status": {"url": heroku.status_url}},
        "actions": actions,
        "databases": [{"name": "local", "url": "postgresql://u:pw@127.0.0.1:1/x", "capture": {"enabled": False}}],
    })
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url, sleep=clock.sleep)
    return Guardian(config, heroku_api=api, clock=clock)


ON = {"enabled": True, "within": "30m", "max_target_age": "7d"}


def releases(heroku: HerokuDouble) -> list[dict[str, Any]]:
    r = httpx.get(f"{heroku.platform_url}/apps/shop/releases",
                  headers={"Authorization": f"Bearer {heroku.token}", "Range": "version ..; max=5, order=desc",
                           "Accept": "application/vnd.heroku+json; version=3.sdk"})
    return list(r.json())


def rollback_posts(heroku: HerokuDouble) -> int:
    return sum(1 for r in heroku.requests if r.method == "POST" and r.path.endswith("/apps/shop/releases"))


def probe(g: Guardian, clock: FakeClock, n: int = 1) -> None:
    for _ in range(n):
        g.scaling.probe_all()
        clock.now += timedelta(seconds=30)


def deploy_good_then_bad(g: Guardian, heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                         good_age: timedelta = timedelta(hours=2), bad: str = "Deploy bad1234"
                         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A good deploy `good_age` ago, healthy probes, then a bad deploy and three failed probes after it."""
    good = heroku.add_release("shop", "Deploy good123", created_at=clock.now - good_age, email="alice@example.com")
    app.status = 200
    probe(g, clock, 2)
    bad_rel = heroku.add_release("shop", bad, created_at=clock.now, email="bob@example.com")
    clock.now += timedelta(minutes=1)
    app.status = 503
    probe(g, clock, 3)
    return good, bad_rel


def audit(g: Guardian) -> list[dict[str, Any]]:
    return g.audit.read(action="rollback")


def test_a_bad_release_after_a_healthy_one_is_rolled_back(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                                          tmp_path: Path) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        good, bad = deploy_good_then_bad(g, heroku, clock, app)
        newest = releases(heroku)[0]
        assert newest["description"] == f"Rollback to v{good['version']}" and newest["version"] == bad["version"] + 1
        records = audit(g)
        assert [r["outcome"] for r in records] == ["started", "done"]
        started, done = records
        for text in (f"v{bad['version']}", "bob@example.com", bad["created_at"]):
            assert text in started["reason"]
        assert f"from v{bad['version']} to v{good['version']}" in done["reason"]
    finally:
        g.stop()


def test_once_per_release_also_after_a_restart(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                               tmp_path: Path) -> None:
    """Heroku fails the rollback's POST, so the bad release stays current: its next failures, in this process
    or a new one reading the same state store, do not try it again (a person takes over)."""
    heroku.inject(r"POST /apps/shop/releases$", "500", times=1)
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        _, bad = deploy_good_then_bad(g, heroku, clock, app)
        assert rollback_posts(heroku) == 1 and releases(heroku)[0]["id"] == bad["id"]
        assert [r["outcome"] for r in audit(g)] == ["started", "failed"]
        app.status = 200
        probe(g, clock, 2)
        app.status = 503
        probe(g, clock, 4)
        assert rollback_posts(heroku) == 1
    finally:
        g.stop()
    g2 = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        app.status = 200
        probe(g2, clock, 2)
        app.status = 503
        probe(g2, clock, 4)
        assert rollback_posts(heroku) == 1
        assert [r["outcome"] for r in audit(g2)] == ["started", "failed"]
    finally:
        g2.stop()


def test_dry_run_only_audits(heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON, dry_run=True)
    try:
        good, bad = deploy_good_then_bad(g, heroku, clock, app)
        assert rollback_posts(heroku) == 0 and releases(heroku)[0]["id"] == bad["id"]
        (record,) = audit(g)
        assert record["outcome"] == "dry_run"
        assert f"would roll back shop from v{bad['version']} to v{good['version']}" in record["reason"]
        assert "bob@example.com" in record["reason"]
    finally:
        g.stop()


def test_off_by_default(heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state")
    try:
        deploy_good_then_bad(g, heroku, clock, app)
        assert rollback_posts(heroku) == 0 and audit(g) == []
        assert not any(r.path.endswith("/releases") for r in heroku.requests if r.method == "GET")
    finally:
        g.stop()


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        pytest.param({"bad": "Rollback to v2"}, "is itself a rollback", id="a_rollback_is_never_rolled_back"),
        pytest.param({"good_age": timedelta(days=8)}, "older than the limit of 7d", id="target_older_than_limit"),
    ],
)
def test_refused(heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path, kw: dict[str, Any],
                 why: str) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        _, bad = deploy_good_then_bad(g, heroku, clock, app, **kw)
        assert rollback_posts(heroku) == 0
        (record,) = audit(g)
        assert record["outcome"] == "skipped_declined" and why in record["reason"]
        assert f"v{bad['version']}" in record["reason"] and "bob@example.com" in record["reason"]
    finally:
        g.stop()


def test_refused_while_heroku_reports_an_incident(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                                  tmp_path: Path) -> None:
    """An incident on Apps, read from Heroku's status API as the daemon reads it: the deploy is not blamed."""
    heroku.open_incident("Elevated API errors", systems=("Apps",))
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        assert g.provider_status is not None
        g.provider_status.poll()
        deploy_good_then_bad(g, heroku, clock, app)
        assert rollback_posts(heroku) == 0
        (record,) = audit(g)
        assert record["outcome"] == "skipped_declined" and "Elevated API errors" in record["reason"]
    finally:
        g.stop()


def test_refused_after_the_incident_is_resolved_while_the_same_failures_go_on(heroku: HerokuDouble, clock: FakeClock,
                                                                             app: HealthApp, tmp_path: Path) -> None:
    """Failures that an incident overlapped stay the platform's once Heroku resolves it: no rollback until the
    probe has recovered and a new streak begins."""
    incident = heroku.open_incident("Elevated API errors", systems=("Apps",))
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        assert g.provider_status is not None
        g.provider_status.poll()
        deploy_good_then_bad(g, heroku, clock, app)
        heroku.resolve_incident(incident)
        g.provider_status.poll()
        assert g.provider_incident() is None
        probe(g, clock, 3)  # still failing, the incident over
        assert rollback_posts(heroku) == 0
        assert [r["outcome"] for r in audit(g)] == ["skipped_declined"]  # said once, while the incident was on
    finally:
        g.stop()


def test_refused_when_the_probe_was_failing_before_the_release(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                                               tmp_path: Path) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON)
    try:
        heroku.add_release("shop", "Deploy good123", created_at=clock.now - timedelta(hours=2))
        app.status = 200
        probe(g, clock, 2)
        app.status = 503
        probe(g, clock, 2)  # failing already
        bad = heroku.add_release("shop", "Deploy fix4567", created_at=clock.now, email="bob@example.com")
        clock.now += timedelta(seconds=5)
        probe(g, clock, 2)
        assert rollback_posts(heroku) == 0
        (record,) = audit(g)
        assert record["outcome"] == "skipped_declined" and "not caused by the deploy" in record["reason"]
        assert f"v{bad['version']}" in record["reason"]
    finally:
        g.stop()


# -- the pure planner ----------------------------------------------------------------------------------------
def test_track_keeps_the_healthy_period_the_streak_ended() -> None:
    t = FakeClock().now
    ok = ProbeResult(ok=True, status=200, latency_seconds=0.0, error=None, at=t)
    bad = ProbeResult(ok=False, status=503, latency_seconds=0.0, error="HTTP 503", at=t + timedelta(minutes=5))
    healthy = ProbeState(healthy_since=t, last=ok)
    first = ProbeState(consecutive_failures=1, last=bad)
    ep = track(Episode(), healthy, first)
    assert ep == Episode(failing_since=bad.at, healthy_before=t)
    assert track(ep, first, ProbeState(consecutive_failures=2, last=bad)) == ep
    assert track(ep, first, healthy) == Episode()


def test_nothing_to_say_when_the_failures_start_long_after_the_release() -> None:
    now = FakeClock().now
    rels = [{"id": "b", "version": 5, "current": True, "created_at": (now - timedelta(hours=2)).isoformat(),
             "description": "Deploy x", "eligible_for_rollback": True, "status": "succeeded"}]
    ep = Episode(failing_since=now - timedelta(minutes=1), healthy_before=now - timedelta(days=1))
    assert plan_rollback(rels, ep, RollbackConfig(enabled=True), set(), None, "api", now) is None


def test_an_incident_seen_during_the_streak_is_remembered_until_the_probe_recovers() -> None:
    now = FakeClock().now
    rels = [_rel(7, timedelta(minutes=10), current=True), _rel(6, timedelta(hours=1))]
    ep = seen_incident(Episode(failing_since=now - timedelta(minutes=8), healthy_before=now - timedelta(hours=1)),
                       "Heroku reports an incident on Apps: Elevated API errors")
    plan = plan_rollback(rels, ep, RollbackConfig(enabled=True), set(), None, "api", now)
    assert plan is not None and plan.declined is not None
    assert "reported an incident while the probe was failing (Heroku reports an incident on Apps" in plan.declined
    assert seen_incident(Episode(), "an incident") == Episode()  # not failing: nothing to remember
    assert seen_incident(ep, "a later one").incident == ep.incident  # the first one is kept


def _rel(version: int, age: timedelta, description: str = "Deploy x", eligible: bool = True,
         current: bool = False) -> dict[str, Any]:
    now = FakeClock().now
    return {"id": f"r{version}", "version": version, "current": current, "status": "succeeded",
            "created_at": (now - age).isoformat(), "description": description, "eligible_for_rollback": eligible,
            "user": {"id": "u", "email": "dev@example.com"}}


@pytest.mark.parametrize(
    ("rels", "incident", "healthy_before", "want_target", "declined_has"),
    [
        pytest.param([_rel(7, timedelta(minutes=10), current=True), _rel(6, timedelta(hours=3), eligible=False),
                      _rel(5, timedelta(days=1))], None, timedelta(hours=1), "r5", None,
                     id="an_ineligible_previous_release_is_passed_over"),
        pytest.param([_rel(7, timedelta(minutes=10), current=True), _rel(6, timedelta(days=8))], None,
                     timedelta(hours=1), "r6", "older than the limit of 7d", id="too_old"),
        pytest.param([_rel(7, timedelta(minutes=10), current=True, description="Rollback to v5"),
                      _rel(6, timedelta(hours=1))], None, timedelta(hours=1), None, "itself a rollback",
                     id="rollback_of_a_rollback"),
        pytest.param([_rel(7, timedelta(minutes=10), current=True), _rel(6, timedelta(hours=1))], "Heroku API down",
                     timedelta(hours=1), "r6", "Heroku API down", id="incident"),
        pytest.param([_rel(7, timedelta(minutes=10), current=True), _rel(6, timedelta(hours=1))], None,
                     timedelta(minutes=5), None, "no healthy probe was seen before v7", id="healthy_only_since_after"),
        pytest.param([_rel(7, timedelta(minutes=10), current=True)], None, timedelta(hours=1), None,
                     "no release before v7 is eligible", id="nothing_to_return_to"),
    ],
)
def test_plan_rollback_rules(rels: list[dict[str, Any]], incident: str | None, healthy_before: timedelta,
                             want_target: str | None, declined_has: str | None) -> None:
    now = FakeClock().now
    ep = Episode(failing_since=now - timedelta(minutes=8), healthy_before=now - healthy_before)
    plan = plan_rollback(rels, ep, RollbackConfig(enabled=True), set(), incident, "api", now)
    assert plan is not None and plan.bad["id"] == "r7"
    assert (plan.target or {}).get("id") == want_target
    if declined_has is None:
        assert plan.declined is None
    else:
        assert plan.declined is not None and declined_has in plan.declined
    assert "v7" in plan.reason and "dev@example.com" in plan.reason


# -- the pipeline's guards, as declared for rollback ----------------------------------------------------------
@pytest.mark.parametrize(("setup", "outcome"), [
    pytest.param("kill", "skipped_disabled", id="kill_switch"),
    pytest.param("pause", "skipped_paused", id="pause"),
])
def test_the_kill_switch_and_the_pause_stop_it(heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path,
                                               setup: str, outcome: str) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON, enabled=setup != "kill")
    if setup == "pause":
        g.state.put(PAUSE_KEY, {"paused": True, "reason": "maintenance"})
    try:
        deploy_good_then_bad(g, heroku, clock, app)
        assert rollback_posts(heroku) == 0
        assert [r["outcome"] for r in audit(g)] == [outcome]
    finally:
        g.stop()


@pytest.mark.parametrize(("limits", "outcome"), [
    pytest.param({"cooldown": "1h"}, "skipped_cooldown", id="cooldown"),
    pytest.param({"cooldown": "1s", "daily_cap": 1}, "skipped_cap", id="daily_cap"),
])
def test_a_second_bad_deploy_soon_after_a_rollback_waits_for_the_cooldown_and_the_cap(
        heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path, limits: dict[str, Any],
        outcome: str) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", rollback=ON | limits)
    try:
        deploy_good_then_bad(g, heroku, clock, app)
        assert rollback_posts(heroku) == 1
        clock.now += timedelta(minutes=5)
        deploy_good_then_bad(g, heroku, clock, app, bad="Deploy again99")
        assert rollback_posts(heroku) == 1
        assert audit(g)[-1]["outcome"] == outcome
    finally:
        g.stop()
