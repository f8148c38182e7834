"""Heroku Postgres plan families end to end: the guardian reads an Essential, a classic and an Advanced database
from the Heroku double over real HTTP, on the double's clock, and says what protects each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from prometheus_client import CollectorRegistry

from daemon.adapters.heroku import HerokuClient
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.snapshot import DatabaseState, Snapshot
from daemon.metrics.families import SnapshotCollector
from daemon.status import status_document
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock

#: The checks that speak about pg:backups (the transfer service), which is not established for Advanced.
PG_BACKUPS_CHECKS = {"no_schedule", "missed_schedule", "last_attempt_failed"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-plans-token-0123456789") as double:
        yield double


def guardian(heroku: HerokuDouble, clock: FakeClock, apps: list[str]) -> Guardian:
    config = GuardianConfig.model_validate({
        "collect_interval": "30s",
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "rate_budget_share": 0.5, "apps": apps},
    })
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                       sleep=clock.sleep, timeout=5, max_rate_wait=0)  # as the daemon builds it
    return Guardian(config, heroku_api=api, clock=clock)


def collected(g: Guardian, clock: FakeClock, name: str) -> tuple[Snapshot, DatabaseState]:
    """Passes until `name` was read once and evaluated (the fleet's credit starts empty and accrues)."""
    for _ in range(20):
        snap = g.collect_all()
        db = snap.databases.get(name)
        if ("heroku", name) in snap.collectors and db is not None and db.provider is not None and db.findings:
            assert snap.collectors[("heroku", name)].up, snap.collectors[("heroku", name)].last_error
            return snap, db
        clock.now += timedelta(seconds=30)
    raise AssertionError(f"{name} was never read")


def active(db: DatabaseState) -> dict[str, str]:
    return {f.check: f.hint for f in db.findings if f.active}


def an_old_schedule(heroku: HerokuDouble, clock: FakeClock, app: str) -> None:
    """A daily schedule due three hours ago that never ran: a miss wherever pg:backups applies."""
    heroku.add_schedule(app, hour=(clock.now - timedelta(hours=3)).hour, timezone="UTC",
                        created_at=clock.now - timedelta(days=10))


def test_an_advanced_database_with_continuous_protection_has_no_pg_backups_findings(
    heroku: HerokuDouble, clock: FakeClock
) -> None:
    heroku.add_app("shop", plan="heroku-postgresql:advanced")
    g = guardian(heroku, clock, ["shop"])
    snap, db = collected(g, clock, "shop/DATABASE")
    assert db.provider is not None and db.provider.family == "advanced"
    assert db.provider.continuous_protection is True
    assert db.provider.rollback_latest == clock.now - timedelta(minutes=1)
    assert db.provider.rollback_earliest == clock.now - timedelta(days=7)
    assert active(db) == {}
    assert not any(r.path.endswith("/transfer-schedules") or r.path == f"/client/v11/databases/{db.name}"
                   for r in heroku.requests)
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(g.holder))
    labels = {"database": "shop/DATABASE"}
    assert registry.get_sample_value("pgbackup_pitr_latest_timestamp_seconds", labels) == (
        clock.now - timedelta(minutes=1)).timestamp()
    assert registry.get_sample_value("pgbackup_plan_family_info", {**labels, "family": "advanced"}) == 1
    assert registry.get_sample_value("pgbackup_pitr_enabled", labels) == 1
    provider = status_document(snap, clock.now)["databases"][0]["provider"]
    assert (provider["family"], provider["rollback_latest"]) == (
        "advanced", (clock.now - timedelta(minutes=1)).isoformat(timespec="seconds"))


def test_an_advanced_database_with_continuous_protection_off_says_so_and_nothing_of_pg_backups(
    heroku: HerokuDouble, clock: FakeClock
) -> None:
    heroku.add_app("shop", plan="heroku-postgresql:advanced")
    heroku.set_advanced("shop", continuous_protection=False)
    _, db = collected(guardian(heroku, clock, ["shop"]), clock, "shop/DATABASE")
    found = active(db)
    assert "continuous protection is off" in found["continuous_protection_off"]
    assert "no recovery point known" in found["rpo_breach"]
    assert not PG_BACKUPS_CHECKS & set(found)


@pytest.mark.parametrize(("lag", "expected"), [
    (timedelta(minutes=5), set()),
    (timedelta(hours=20), {"rpo_at_risk"}),
    (timedelta(hours=30), {"rpo_breach"}),
])
def test_the_latest_rollback_point_of_an_advanced_database_is_its_recovery_point(
    heroku: HerokuDouble, clock: FakeClock, lag: timedelta, expected: set[str]
) -> None:
    heroku.add_app("shop", plan="heroku-postgresql:advanced")
    heroku.set_advanced("shop", rollback_lag=lag)
    _, db = collected(guardian(heroku, clock, ["shop"]), clock, "shop/DATABASE")
    assert set(active(db)) == expected


def test_an_essential_database_without_a_schedule_has_no_schedule_and_never_continuous_protection_off(
    heroku: HerokuDouble, clock: FakeClock
) -> None:
    heroku.add_app("shop", plan="heroku-postgresql:essential-0")
    start = clock.now - timedelta(hours=2)
    heroku.add_transfer("shop", scheduled=False, created_at=start, started_at=start,
                        finished_at=start + timedelta(minutes=2))
    _, db = collected(guardian(heroku, clock, ["shop"]), clock, "shop/DATABASE")
    assert db.provider is not None and db.provider.family == "essential"
    assert db.provider.continuous_protection is None and db.provider.rollback_earliest is None
    assert set(active(db)) == {"no_schedule"}


def test_an_essential_database_that_missed_its_schedule_is_told_so(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop", plan="heroku-postgresql:essential-0")
    an_old_schedule(heroku, clock, "shop")
    start = clock.now - timedelta(days=1, hours=3)
    heroku.add_transfer("shop", scheduled=False, created_at=start, started_at=start,
                        finished_at=start + timedelta(minutes=2))
    _, db = collected(guardian(heroku, clock, ["shop"]), clock, "shop/DATABASE")
    found = active(db)
    assert "missed_schedule" in found and "continuous_protection_off" not in found


def test_a_classic_database_is_watched_as_before(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop", plan="heroku-postgresql:standard-0")
    an_old_schedule(heroku, clock, "shop")
    _, db = collected(guardian(heroku, clock, ["shop"]), clock, "shop/DATABASE")
    assert db.provider is not None and db.provider.family == "classic"
    assert db.provider.continuous_protection is True and db.provider.rollback_latest is None
    found = active(db)
    assert {"missed_schedule", "rpo_breach"} <= set(found) and "continuous_protection_off" not in found
