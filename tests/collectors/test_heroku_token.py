"""The guardian reads the Heroku API token's lifetime (in process against the double, over loopback HTTP) and
says it: a finding on every Heroku database, a metric of the expiry, and "unknown" when it cannot be read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.adapters.heroku import HerokuClient
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.snapshot import Finding
from daemon.jobs import periodic_jobs
from daemon.metrics import Exposition
from daemon.status import status_document
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock

METRIC = "pgbackup_heroku_token_expiry_timestamp_seconds"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-token-SECRET-0123456789") as double:
        double.add_app("shop")
        yield double


@pytest.fixture
def guardian(heroku: HerokuDouble, clock: FakeClock) -> Iterator[Guardian]:
    config = GuardianConfig.model_validate({
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "apps": ["shop"], "token_warn_before": "30d"}})
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url, sleep=clock.sleep)
    g = Guardian(config, heroku_api=api, clock=clock)
    yield g
    g.stop()


def token_finding(g: Guardian) -> Finding:
    snap = g.collect_all()
    [f] = [f for f in snap.databases["shop/DATABASE"].findings if f.check == "heroku_token_expiring"]
    return f


def expiry_metric(g: Guardian) -> list[float]:
    text = Exposition(g.holder).render()[0].decode()
    return [s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == METRIC]


def test_a_token_with_ten_days_left_warns_with_its_expiry_in_metrics_and_status(
    heroku: HerokuDouble, clock: FakeClock, guardian: Guardian
) -> None:
    heroku.add_authorization(heroku.token, timedelta(days=10), "guardian")
    assert "heroku-token" in [j.id for j in periodic_jobs(guardian, clock())]
    assert guardian.token_watch is not None
    guardian.token_watch.read()
    f = token_finding(guardian)
    assert f.active and f.severity == "warning" and "expires in" in f.hint
    expires_at = clock() + timedelta(days=10)
    assert expiry_metric(guardian) == [pytest.approx(expires_at.timestamp(), abs=2)]
    token = status_document(guardian.holder.current(), clock())["heroku_token"]
    assert token["expires"] == "at"
    assert abs(datetime.fromisoformat(token["expires_at"]) - expires_at) < timedelta(seconds=2)
    assert heroku.token not in str(status_document(guardian.holder.current(), clock()))


def test_an_expired_token_is_critical(heroku: HerokuDouble, guardian: Guardian) -> None:
    heroku.add_authorization(heroku.token, -timedelta(hours=1), "guardian")
    assert guardian.token_watch is not None
    guardian.token_watch.read()
    f = token_finding(guardian)
    assert f.active and f.severity == "critical"


def test_a_token_that_cannot_read_its_authorization_is_unknown_without_finding_or_metric(
    heroku: HerokuDouble, clock: FakeClock, guardian: Guardian
) -> None:
    heroku.authorizations_forbidden = True
    assert guardian.token_watch is not None
    guardian.token_watch.read()  # a 403 is no error
    f = token_finding(guardian)
    assert not f.active and f.hint.startswith("unknown")
    assert expiry_metric(guardian) == []
    assert status_document(guardian.holder.current(), clock())["heroku_token"]["expires"] == "unknown"


def test_a_token_that_never_expires_has_no_finding_and_no_metric(
    heroku: HerokuDouble, clock: FakeClock, guardian: Guardian
) -> None:
    assert guardian.token_watch is not None
    guardian.token_watch.read()  # the double's own token never expires unless a test says so
    assert not token_finding(guardian).active
    assert expiry_metric(guardian) == []
    assert status_document(guardian.holder.current(), clock())["heroku_token"]["expires"] == "never"
