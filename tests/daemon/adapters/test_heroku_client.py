"""The Heroku client over real HTTP against the double: headers, resolution, pagination, retries, rate
limits, error translation, and the token kept out of every message."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from daemon.adapters.heroku import (
    ACCEPT_SDK,
    ACCEPT_V3,
    HerokuAuthError,
    HerokuClient,
    HerokuError,
    HerokuNotFound,
    HerokuProtocolError,
    HerokuRateLimited,
    HerokuUnavailable,
)
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-SECRET-token-0123456789") as double:
        yield double


def client_for(heroku: HerokuDouble, clock: FakeClock, **kw: object) -> HerokuClient:
    return HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                        sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def test_requests_carry_the_cli_headers(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    api = client_for(heroku, clock)
    resolved = api.resolve_database("shop")
    api.list_transfers(resolved.billing_app)
    resolve_req = next(r for r in heroku.requests if r.path == "/actions/addon-attachments/resolve")
    assert resolve_req.headers["Authorization"] == f"Bearer {heroku.token}"
    assert resolve_req.headers["Accept"] == ACCEPT_SDK
    assert resolve_req.headers["Accept-Inclusion"] == "addon:plan,config_vars"
    transfers_req = next(r for r in heroku.requests if r.path.endswith("/transfers"))
    assert transfers_req.host == "data" and transfers_req.headers["Accept"] == ACCEPT_V3
    assert transfers_req.headers["Authorization"] == f"Bearer {heroku.token}"
    assert api.ratelimit_remaining == heroku.rate_remaining()


def test_resolution_gives_addon_id_and_billing_app(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("billing")
    info = heroku.add_app("shop", billing_app="billing", attachment="RED")
    got = client_for(heroku, clock).resolve_database("shop", "RED")
    assert (got.addon_id, got.billing_app, got.attachment) == (info.addon_id, "billing", "RED")
    assert got.plan.startswith("heroku-postgresql:")


def test_resolution_falls_back_to_attachments_and_config_vars_on_404(heroku: HerokuDouble, clock: FakeClock) -> None:
    info = heroku.add_app("shop", database_url="postgres://u:p@db.example.com:5432/shop")
    heroku.inject(r"POST /actions/addon-attachments/resolve", "404")
    got = client_for(heroku, clock).resolve_database("shop", "DATABASE_URL")
    assert got.addon_id == info.addon_id
    paths = [r.path for r in heroku.requests]
    assert "/apps/shop/addon-attachments" in paths and "/apps/shop/config-vars" in paths


def test_unknown_app_keeps_herokus_message(heroku: HerokuDouble, clock: FakeClock) -> None:
    with pytest.raises(HerokuNotFound) as err:
        client_for(heroku, clock).list_transfers("no-such-app")
    assert "Couldn't find that app." in str(err.value) and err.value.error_id == "not_found"


def test_bad_token_is_an_auth_error_without_the_token(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    api = HerokuClient("wrong-token-9876543210", platform_url=heroku.platform_url, data_url=heroku.data_url,
                       sleep=clock.sleep)
    with pytest.raises(HerokuAuthError) as err:
        api.list_transfers("shop")
    assert "wrong-token-9876543210" not in str(err.value) and err.value.status == 401


def test_pagination_follows_next_range(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    for _ in range(450):
        heroku.add_transfer("shop")
    api = client_for(heroku, clock)
    got = api.list_transfers("shop")
    assert len(got) == 450 and len({t["num"] for t in got}) == 450
    pages = [r for r in heroku.requests if r.path == "/client/v11/apps/shop/transfers"]
    assert len(pages) == 3 and [p.status for p in pages] == [206, 206, 200]
    assert "Range" not in pages[0].headers and pages[1].headers["Range"]


def test_5xx_is_retried_with_backoff_then_succeeds(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.inject(r"GET /client/v11/apps/shop/transfers$", "500", times=2)
    api = client_for(heroku, clock, backoff=1.0, retries=3)
    assert api.list_transfers("shop") == []
    assert clock.slept == [1.0, 2.0]
    assert heroku.request_count("data") == 3


def test_5xx_gives_up_after_the_retries(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.inject(r"GET /client/v11/apps/shop/transfers$", "503")
    with pytest.raises(HerokuUnavailable, match="HTTP 503 after 4 attempts"):
        client_for(heroku, clock, retries=3).list_transfers("shop")
    assert heroku.request_count("data") == 4


def test_4xx_other_than_429_is_not_retried(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.inject(r"GET /client/v11/apps/shop/transfers$", "status", status=422)
    heroku.add_app("shop")
    with pytest.raises(Exception):  # noqa: B017 - any HerokuError; the point is the request count
        client_for(heroku, clock).list_transfers("shop")
    assert heroku.request_count("data") == 1 and clock.slept == []


def test_429_waits_for_the_bucket_to_refill_without_retry_after(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.set_rate_remaining(0)
    api = client_for(heroku, clock)
    assert api.list_transfers("shop") == []
    assert clock.slept and sum(clock.slept) >= 60 / 75  # waited (simulated) for at least one token
    statuses = [r.status for r in heroku.requests if r.host == "data"]
    assert statuses[0] == 429 and statuses[-1] == 200
    assert api.ratelimit_remaining is not None


def test_429_that_never_clears_gives_up_within_the_wait_budget(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.inject("", "429")
    with pytest.raises(HerokuRateLimited):
        client_for(heroku, clock, max_rate_wait=60).list_transfers("shop")
    assert sum(clock.slept) <= 60
    assert heroku.request_count("data") <= 8  # a bounded number of attempts, not a storm


def test_malformed_json_is_a_protocol_error(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.inject(r"GET /client/v11/apps/shop/transfers$", "malformed", times=1)
    with pytest.raises(HerokuProtocolError, match="not valid JSON"):
        client_for(heroku, clock).list_transfers("shop")


def test_truncated_body_is_retried_as_a_connection_error(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.inject(r"GET /client/v11/apps/shop/transfers$", "truncated", times=1)
    assert client_for(heroku, clock).list_transfers("shop") == []
    assert clock.slept == [1.0]


def test_a_call_that_never_answers_times_out(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.inject(r"GET /client/v11/apps/shop/transfers$", "timeout", delay=5)
    with pytest.raises(HerokuUnavailable, match="Timeout"):
        client_for(heroku, clock, timeout=0.3, retries=1).list_transfers("shop")


def test_database_info_schedules_capture_and_public_url(heroku: HerokuDouble, clock: FakeClock) -> None:
    info = heroku.add_app("shop")
    heroku.add_schedule("shop", hour="06", timezone="America/New_York")
    api = client_for(heroku, clock)
    db = api.database_info(info.addon_id)
    assert db["addon_id"] == info.addon_id and isinstance(db["info"], list)
    [sched] = api.list_schedules(info.addon_id)
    assert sched["hour"] == 6 and sched["timezone"] == "America/New_York"
    t = heroku.add_transfer("shop")
    url = api.public_url("shop", t["num"])
    assert url["url"].startswith(heroku.download_url)
    assert api.transfer_info("shop", t["num"], verbose=True)["num"] == t["num"]


def test_releases_are_read_newest_first_as_the_cli_asks_and_a_rollback_posts_the_release_id(
        heroku: HerokuDouble, clock: FakeClock) -> None:
    client = client_for(heroku, clock)
    heroku.add_app("shop")
    heroku.add_release("shop", "Deploy 1a2b3c4", email="dev@example.com")
    rels = client.releases("shop", 3)
    assert [r["version"] for r in rels] == sorted((r["version"] for r in rels), reverse=True) and len(rels) == 3
    assert rels[0]["current"] is True and rels[0]["user"]["email"] == "dev@example.com"
    listed = [r for r in heroku.requests if r.method == "GET" and r.path == "/apps/shop/releases"][-1]
    assert listed.headers["Range"] == "version ..; max=3, order=desc" and listed.headers["Accept"] == ACCEPT_SDK
    new = client.rollback("shop", rels[1]["id"])
    assert new["description"] == f"Rollback to v{rels[1]['version']}" and new["version"] == rels[0]["version"] + 1
    posted = [r for r in heroku.requests if r.method == "POST" and r.path == "/apps/shop/releases"]
    assert [json.loads(r.body) for r in posted] == [{"release": rels[1]["id"]}]
    assert posted[0].headers["Accept"] == ACCEPT_SDK


def test_a_failed_rollback_is_not_retried(heroku: HerokuDouble, clock: FakeClock) -> None:
    """A second POST would create a second release: a 5xx is the caller's to handle, never repeated here."""
    client = client_for(heroku, clock)
    heroku.add_app("shop")
    target = client.releases("shop", 2)[1]
    heroku.inject(r"POST /apps/shop/releases$", "503", times=1)
    with pytest.raises(HerokuError):
        client.rollback("shop", target["id"])
    assert sum(1 for r in heroku.requests if r.method == "POST" and r.path == "/apps/shop/releases") == 1
