"""heroku_token_expiring: the lifetime of the Heroku API token in use, read from its OAuth authorization through
the real client over loopback HTTP against the double, and the policy that warns before it expires."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from daemon.adapters.heroku import HerokuAuthError, HerokuClient
from daemon.core.policy.token import TokenLifetime, seconds_left, token_check, token_lifetime
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock

DAY = timedelta(days=1)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-SECRET-token-0123456789") as double:
        yield double


def read_lifetime(heroku: HerokuDouble, clock: FakeClock) -> TokenLifetime:
    """What the guardian reads: its own authorization, or unknown when the token may not list them."""
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url, sleep=clock.sleep)
    try:
        return token_lifetime(api.token_authorization(), clock())
    except HerokuAuthError as exc:
        return TokenLifetime(False, None, str(exc), clock())
    finally:
        api.close()


@pytest.mark.parametrize(("lifetime", "active", "severity", "words"), [
    pytest.param(10 * DAY, True, "warning", ["expires in", "heroku authorizations:create"], id="10_days_warns"),
    pytest.param(100 * DAY, False, "warning", ["expires in"], id="100_days_is_fine"),
    pytest.param(None, False, "warning", ["never expires"], id="no_expiry_is_fine"),
    pytest.param(-2 * DAY, True, "critical", ["expired", "ago", "every Heroku read"], id="expired_is_critical"),
])
def test_the_token_lifetime_read_from_heroku_decides_the_finding(
    heroku: HerokuDouble, clock: FakeClock, lifetime: timedelta | None, active: bool, severity: str,
    words: list[str]
) -> None:
    heroku.add_authorization(heroku.token, lifetime, "guardian")
    read = read_lifetime(heroku, clock)
    clock.now += timedelta(hours=1)  # judged later than read: the expiry is a moment, not a countdown
    f = token_check("shop/DATABASE", read, clock())
    assert (f.check, f.active, f.severity) == ("heroku_token_expiring", active, severity)
    for word in words:
        assert word in f.hint
    want = None if lifetime is None else (lifetime - timedelta(hours=1)).total_seconds()
    if want is None:
        assert seconds_left(read, clock()) is None and f.value is None
    else:
        assert seconds_left(read, clock()) == pytest.approx(want, abs=1) and f.value == pytest.approx(want, abs=1)
    assert heroku.token not in f.hint


def test_a_token_that_may_not_list_authorizations_has_an_unknown_lifetime_and_no_finding(
    heroku: HerokuDouble, clock: FakeClock
) -> None:
    heroku.authorizations_forbidden = True
    read = read_lifetime(heroku, clock)
    f = token_check("shop/DATABASE", read, clock())
    assert not read.readable and not f.active and f.hint.startswith("unknown")
    assert seconds_left(read, clock()) is None
    assert heroku.token not in f.hint


def test_only_the_authorization_of_the_token_in_use_counts(heroku: HerokuDouble, clock: FakeClock) -> None:
    # the CLI session's token expires soon; the guardian's own never does
    heroku.add_authorization("cli-session-token-abcdef", 3 * DAY, "Heroku CLI login")
    f = token_check("shop/DATABASE", read_lifetime(heroku, clock), clock())
    assert not f.active and "never expires" in f.hint


def test_no_authorization_listing_the_token_is_unknown(clock: FakeClock) -> None:
    f = token_check("shop/DATABASE", token_lifetime(None, clock()), clock())
    assert not f.active and f.hint.startswith("unknown") and f.value is None


T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("left", "warn_before", "active", "severity"), [
    pytest.param(30 * DAY, 30 * DAY, True, "warning", id="at_the_threshold_warns"),
    pytest.param(30 * DAY + timedelta(seconds=1), 30 * DAY, False, "warning", id="just_before_the_threshold"),
    pytest.param(50 * DAY, 60 * DAY, True, "warning", id="configurable_threshold"),
    pytest.param(timedelta(seconds=1), 30 * DAY, True, "warning", id="one_second_left_warns"),
    pytest.param(timedelta(0), 30 * DAY, True, "critical", id="at_expiry_is_critical"),
])
def test_token_check_policy_table(left: timedelta, warn_before: timedelta, active: bool, severity: str) -> None:
    lifetime = TokenLifetime(True, T0 + left, "", T0)
    f = token_check("shop/DATABASE", lifetime, T0, warn_before)
    assert (f.active, f.severity, f.threshold) == (active, severity, warn_before.total_seconds())
