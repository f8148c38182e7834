"""Health probe and dyno scale-up end to end: a real loopback app that fails and recovers, the guardian in
process on simulated time, the Heroku double's formation as the thing that is scaled."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from daemon.adapters.heroku import HerokuClient
from daemon.app import Guardian
from daemon.config import GuardianConfig
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
    with HerokuDouble(clock=clock, token="hrku-scale-token-0123456789") as double:
        double.add_app("shop")
        yield double


def make_guardian(heroku: HerokuDouble, clock: FakeClock, app: HealthApp, state_dir: Path, dry_run: bool = False,
                  daily_cap: int = 6) -> Guardian:
    config = GuardianConfig.model_validate({
        "state_dir": str(state_dir),
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "status": {"url": heroku.status_url}},
        "actions": {"dry_run": dry_run, "scale": [{
            "name": "api", "url": app.url, "app": "shop", "process_type": "web", "failures": 3,
            "max_quantity": 3, "healthy_for": "15m", "cooldown": "10m", "timeout": "2s", "daily_cap": daily_cap}]},
        "databases": [{"name": "local", "url": "postgresql://u:pw@127.0.0.1:1/x", "capture": {"enabled": False}}],
    })
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url, sleep=clock.sleep)
    return Guardian(config, heroku_api=api, clock=clock)


def quantity(heroku: HerokuDouble) -> int:
    r = httpx.get(f"{heroku.platform_url}/apps/shop/formation/web",
                  headers={"Authorization": f"Bearer {heroku.token}",
                           "Accept": "application/vnd.heroku+json; version=3"})
    return int(r.json()["quantity"])


def patches(heroku: HerokuDouble) -> list[bytes]:
    return [r.body for r in heroku.requests if r.method == "PATCH" and r.path.endswith("/formation/web")]


def probe(g: Guardian, clock: FakeClock, n: int = 1, every: timedelta = timedelta(seconds=30)) -> None:
    for _ in range(n):
        g.scaling.probe_all()
        clock.now += every


def test_failing_probes_scale_up_once_per_cooldown_up_to_the_max_and_back_after_recovery(
    heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path
) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state")
    try:
        app.status = 503
        probe(g, clock, 2)
        assert patches(heroku) == [] and quantity(heroku) == 1  # 2 of 3 failures: nothing yet
        probe(g, clock)
        assert quantity(heroku) == 2 and len(patches(heroku)) == 1  # the third failure: one up
        probe(g, clock, 5)  # still failing, within the 10 min cooldown
        assert quantity(heroku) == 2 and len(patches(heroku)) == 1
        assert g.audit.read(action="scale")[-1]["outcome"] == "skipped_cooldown"
        clock.now += timedelta(minutes=10)
        probe(g, clock)
        assert quantity(heroku) == 3 and len(patches(heroku)) == 2
        clock.now += timedelta(minutes=10)
        probe(g, clock)  # at the max of 3: blocked, said in the audit log
        assert quantity(heroku) == 3 and len(patches(heroku)) == 2
        blocked = g.audit.read(action="scale")[-1]
        assert blocked["outcome"] == "skipped_max" and "3" in blocked["reason"]

        app.status = 200
        probe(g, clock, 20)  # healthy for 10 minutes: not yet
        assert quantity(heroku) == 3
        probe(g, clock, 12)  # healthy for 16 minutes: back to the baseline in one step
        assert quantity(heroku) == 1 and len(patches(heroku)) == 3
        outcomes = [a["outcome"] for a in g.audit.read(action="scale")]
        assert outcomes.count("done") == 3
        status = g.holder.current().control.probes
        assert status[0].name == "api" and status[0].up and status[0].consecutive_failures == 0
    finally:
        g.stop()


def test_never_scales_below_what_a_person_set(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                              tmp_path: Path) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state")
    try:
        app.status = 500
        probe(g, clock, 3)
        assert quantity(heroku) == 2
        # a person scales to 3 by hand during the incident
        httpx.patch(f"{heroku.platform_url}/apps/shop/formation/web", json={"quantity": 3},
                    headers={"Authorization": f"Bearer {heroku.token}"}).raise_for_status()
        app.status = 200
        probe(g, clock, 40)  # 20 minutes healthy
        assert quantity(heroku) == 3  # the person's 3 stands
    finally:
        g.stop()


def test_dry_run_probes_and_decides_but_never_scales(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                                     tmp_path: Path) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", dry_run=True)
    try:
        app.status = 503
        probe(g, clock, 6)
        assert patches(heroku) == [] and quantity(heroku) == 1
        [record] = g.audit.read(action="scale")
        assert record["outcome"] == "dry_run" and "would scale shop/web from 1 to 2" in record["reason"]
    finally:
        g.stop()


def test_the_daily_cap_holds_scale_ups_but_never_the_way_back_to_the_baseline(
    heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path
) -> None:
    g = make_guardian(heroku, clock, app, tmp_path / "state", daily_cap=1)
    try:
        app.status = 503
        probe(g, clock, 3)
        assert quantity(heroku) == 2
        clock.now += timedelta(minutes=10)
        probe(g, clock)  # the cooldown is over but the cap of one change a day is spent
        assert quantity(heroku) == 2 and g.audit.read(action="scale")[-1]["outcome"] == "skipped_cap"
        app.status = 200
        probe(g, clock, 32)  # 16 minutes healthy
        assert quantity(heroku) == 1
    finally:
        g.stop()


def test_a_scale_up_waits_while_heroku_reports_an_incident_on_apps_and_goes_once_it_is_resolved(
    heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path
) -> None:
    """No PATCH reaches the formation while Heroku reports an incident on Apps; the decline is audited once as
    waiting, starts no cooldown, and the next probe after the resolution scales."""
    incident = heroku.open_incident("Increased H10 errors on dynos", systems=("Apps",))
    g = make_guardian(heroku, clock, app, tmp_path / "state")
    try:
        assert g.provider_status is not None
        g.provider_status.poll()
        app.status = 503
        probe(g, clock, 6)
        assert patches(heroku) == [] and quantity(heroku) == 1
        decisions = g.audit.read(action="scale")
        assert [d["outcome"] for d in decisions] == ["waiting_provider"]
        assert decisions[0]["reason"].startswith(
            "waiting: Heroku reports an incident on Apps: Increased H10 errors on dynos")
        heroku.resolve_incident(incident)
        g.provider_status.poll()
        probe(g, clock)  # at once, not after a cooldown: the wait started none
        assert quantity(heroku) == 2 and len(patches(heroku)) == 1
        assert [d["outcome"] for d in g.audit.read(action="scale")][-1] == "done"
    finally:
        g.stop()


@pytest.mark.parametrize("generation", ["cedar", "fir"])
def test_scales_up_and_back_on_an_app_of_either_generation(heroku: HerokuDouble, clock: FakeClock, app: HealthApp,
                                                           tmp_path: Path, generation: str) -> None:
    heroku.set_generation("shop", generation)
    g = make_guardian(heroku, clock, app, tmp_path / "state")
    try:
        app.status = 503
        probe(g, clock, 3)
        assert quantity(heroku) == 2
        app.status = 200
        probe(g, clock, 32)  # 16 minutes healthy
        assert quantity(heroku) == 1 and len(patches(heroku)) == 2
        assert [a["outcome"] for a in g.audit.read(action="scale") if a["outcome"] != "started"] == ["done", "done"]
    finally:
        g.stop()


def test_a_refused_formation_change_is_a_failure_with_herokus_message_and_not_retried_at_the_next_failure(
    heroku: HerokuDouble, clock: FakeClock, app: HealthApp, tmp_path: Path
) -> None:
    heroku.set_formation_size("shop", "web", "eco")  # Heroku refuses a second Eco dyno of a process type
    g = make_guardian(heroku, clock, app, tmp_path / "state")
    try:
        app.status = 503
        probe(g, clock, 3)
        assert quantity(heroku) == 1 and len(patches(heroku)) == 1
        failed = g.audit.read(action="scale")[-1]
        assert failed["outcome"] == "failed"
        assert "Cannot update to more than 1 Eco size dynos per process type" in failed["reason"]
        assert heroku.token not in str(failed)
        probe(g, clock, 5)  # still failing: the refused change is not asked again within the cooldown
        assert len(patches(heroku)) == 1
        assert g.audit.read(action="scale")[-1]["outcome"] == "skipped_cooldown"
        status = g.holder.current().control.probes[0]
        assert "Cannot update to more than 1 Eco" in (status.scale_refused or "")

        # a payment refusal (402) is handled the same way, with its own message
        heroku.set_formation_size("shop", "web", "standard-1X")
        heroku.refuse_formation("shop", "web", 402, {"id": "payment_required",
                                                     "message": "Please verify your account to scale dynos."})
        clock.now += timedelta(minutes=10)
        probe(g, clock)
        assert len(patches(heroku)) == 2 and quantity(heroku) == 1
        assert "Please verify your account" in g.audit.read(action="scale")[-1]["reason"]
        heroku.refuse_formation("shop", "web", 0, None)
        clock.now += timedelta(minutes=10)
        probe(g, clock)  # the cooldown is over and Heroku accepts again
        assert quantity(heroku) == 2
        assert g.holder.current().control.probes[0].scale_refused is None
    finally:
        g.stop()
