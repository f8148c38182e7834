"""The Heroku double over real HTTP: every behaviour the reference (`../shared/reference/heroku-api.md`, beside
the checkout) asks of it, including a real capture with pg_dump against the test cluster."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.tools import find_tool
from tests.doubles.heroku import HerokuDouble, RequestRecord, _demo_state, _iso
from tests.support import REPO, create_database

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.heroku+json; version=3"}
HEROKU_TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000$")
ISO_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
TRANSFER_FIELDS = {"uuid", "num", "from_type", "to_type", "from_name", "to_name", "from_url", "to_url", "succeeded",
                   "created_at", "started_at", "finished_at", "canceled_at", "updated_at", "deleted_at", "purged_at",
                   "processed_bytes", "source_bytes", "warnings", "options", "num_keep"}


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 12, 20, 12, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, **kw: float) -> None:
        with self._lock:
            self.now += timedelta(**kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def double(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock) as d:
        yield d


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers=AUTH, timeout=10) as c:
        yield c


def data(d: HerokuDouble, path: str) -> str:
    return f"{d.data_url}/client/v11{path}"


def wait_until(what: str, predicate: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last {last!r}")


# -- auth, request ids, errors ------------------------------------------------------------------------------

def test_every_api_request_needs_the_bearer_token(double: HerokuDouble) -> None:
    double.add_app("shop")
    for url in (f"{double.platform_url}/apps/shop", data(double, "/apps/shop/transfers")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            r = httpx.get(url, headers=headers)
            assert r.status_code == 401
            assert r.json() == {"id": "unauthorized", "message": "Invalid credentials provided."}
        assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_request_id_is_echoed_or_generated(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    r = client.get(f"{double.platform_url}/apps/shop", headers={"Request-Id": "abc-123"})
    assert r.headers["Request-Id"] == "abc-123"
    r = client.get(f"{double.platform_url}/apps/shop")
    assert re.fullmatch(r"[0-9a-f-]{36}", r.headers["Request-Id"])
    r = httpx.get(f"{double.platform_url}/apps/shop", headers={"Request-Id": "xyz"})
    assert r.status_code == 401 and r.headers["Request-Id"] == "xyz"


def test_unknown_app_and_route_are_404_with_json_bodies(double: HerokuDouble, client: httpx.Client) -> None:
    r = client.get(f"{double.platform_url}/apps/nope")
    assert r.status_code == 404 and r.json() == {"id": "not_found", "message": "Couldn't find that app."}
    r = client.get(data(double, "/apps/nope/transfers"))
    assert r.status_code == 404 and r.json()["id"] == "not_found"
    r = client.get(f"{double.platform_url}/no/such/route")
    assert r.status_code == 404 and r.json()["id"] == "not_found"
    # the data routes live only on the data host
    assert client.get(f"{double.platform_url}/client/v11/apps/x/transfers").status_code == 404
    r = client.get(data(double, "/databases/00000000-0000-0000-0000-000000000000"))
    assert r.status_code == 404 and r.json()["id"] == "not_found"


def test_requests_are_recorded(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    client.get(f"{double.platform_url}/apps/shop?x=1")
    client.get(data(double, "/apps/shop/transfers"))
    rec = double.requests[0]
    assert isinstance(rec, RequestRecord)
    assert (rec.method, rec.path, rec.query, rec.host, rec.status) == ("GET", "/apps/shop", "x=1", "platform", 200)
    assert rec.headers["Authorization"] == f"Bearer {TOKEN}"
    assert double.request_count() == 2 and double.request_count("data") == 1 and double.request_count("download") == 0


# -- transfers ------------------------------------------------------------------------------------------------

def test_transfer_fields_and_both_timestamp_formats(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    sched = double.add_schedule("shop", hour=3)
    at = datetime(2016, 10, 1, 0, 42, 54, tzinfo=UTC)
    a = double.add_transfer("shop", created_at=at, processed_bytes=1437, source_bytes=1_000_000, warnings=2)
    b = double.add_transfer("shop", scheduled=False, created_at=at, timestamp_format="iso", pgbackups_name="b001")
    got = client.get(data(double, "/apps/shop/transfers")).json()
    assert [t["num"] for t in got] == [1, 2]
    first, second = got
    assert set(first) >= TRANSFER_FIELDS and set(second) >= TRANSFER_FIELDS
    assert "logs" not in first
    assert first["created_at"] == "2016-10-01 00:42:54 +0000"
    assert all(HEROKU_TS.match(first[k]) for k in ("created_at", "started_at", "finished_at", "updated_at"))
    assert first["canceled_at"] is first["deleted_at"] is first["purged_at"] is None
    assert first["schedule"] == {"uuid": sched["uuid"]}
    assert (first["from_type"], first["to_type"], first["from_name"]) == ("pg_dump", "gof3r", "DATABASE")
    assert (first["processed_bytes"], first["source_bytes"], first["warnings"], first["succeeded"]) == (
        1437, 1_000_000, 2, True)
    assert isinstance(first["num_keep"], int) and first["options"] == {}
    assert second["created_at"] == "2016-10-01T00:42:54Z"
    assert all(ISO_TS.match(second[k]) for k in ("created_at", "started_at", "finished_at", "updated_at"))
    assert "schedule" not in second and second["options"] == {"pgbackups_name": "b001"}
    assert a["uuid"] == first["uuid"] and b["uuid"] == second["uuid"]


def test_transfer_states(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    for state in ("created", "started", "finished", "failed", "canceled"):
        double.add_transfer("shop", state=state)
    double.add_transfer("shop", state="failed", deleted=True)
    double.add_transfer("shop", state="canceled", purged=True)
    t = {x["num"]: x for x in client.get(data(double, "/apps/shop/transfers")).json()}
    assert t[1]["started_at"] is None and t[1]["finished_at"] is None and t[1]["succeeded"] is False
    assert t[2]["started_at"] and t[2]["finished_at"] is None
    assert t[3]["finished_at"] and t[3]["succeeded"] is True
    assert t[4]["finished_at"] and t[4]["succeeded"] is False
    assert t[5]["canceled_at"] and t[5]["finished_at"] and t[5]["succeeded"] is False
    assert all(x["deleted_at"] is None and x["purged_at"] is None for x in t.values())
    assert set(t) == {1, 2, 3, 4, 5}  # the deleted and the purged one leave the list


def test_list_includes_every_kind(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    double.add_transfer("shop")
    double.add_transfer("shop", scheduled=False, from_type="gof3r", to_type="pg_restore")
    double.add_transfer("shop", scheduled=False, from_type="pg_dump", to_type="pg_restore")
    kinds = [(t["from_type"], t["to_type"]) for t in client.get(data(double, "/apps/shop/transfers")).json()]
    assert kinds == [("pg_dump", "gof3r"), ("gof3r", "pg_restore"), ("pg_dump", "pg_restore")]


def test_logs_only_with_verbose_true(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    logs = [{"created_at": "2016-10-01 00:42:55 +0000", "level": "info", "message": "pg_dump: dumping contents"}]
    double.add_transfer("shop", logs=logs)
    assert "logs" not in client.get(data(double, "/apps/shop/transfers/1")).json()
    assert "logs" not in client.get(data(double, "/apps/shop/transfers/1?verbose=false")).json()
    assert client.get(data(double, "/apps/shop/transfers/1?verbose=true")).json()["logs"] == logs
    double.add_transfer("shop", state="failed")
    generated = client.get(data(double, "/apps/shop/transfers/2?verbose=true")).json()["logs"]
    assert generated and all({"created_at", "level", "message"} == set(e) for e in generated)
    assert HEROKU_TS.match(generated[0]["created_at"])


def test_num_uuid_app_name_and_app_id_lookups(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop")
    double.add_transfer("shop")
    t = double.add_transfer("shop")
    for app in ("shop", info.app_id):
        for key in ("2", t["uuid"]):
            r = client.get(data(double, f"/apps/{app}/transfers/{key}"))
            assert r.status_code == 200 and r.json()["uuid"] == t["uuid"]
    assert client.get(data(double, f"/apps/{info.app_id}/transfers")).status_code == 200
    assert client.get(data(double, "/apps/shop/transfers/99")).status_code == 404


def test_billing_app_owns_the_sequence_and_attached_apps_see_it(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("web", billing_app="db-owner")
    assert info.billing_app == "db-owner"
    double.add_transfer("web")
    for app in ("web", "db-owner"):
        assert [t["num"] for t in client.get(data(double, f"/apps/{app}/transfers")).json()] == [1]
    second = double.add_app("web", attachment="HEROKU_POSTGRESQL_RED", plan="heroku-postgresql:essential-0")
    assert second.addon_id != info.addon_id and second.app_id == info.app_id
    config = client.get(f"{double.platform_url}/apps/web/config-vars").json()
    assert set(config) == {"DATABASE_URL", "HEROKU_POSTGRESQL_RED_URL"}


# -- pagination -----------------------------------------------------------------------------------------------

def test_range_pagination_round_trip(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    for _ in range(7):
        double.add_transfer("shop")
    url = data(double, "/apps/shop/transfers")
    seen: list[int] = []
    headers = {"Range": "num ..; max=3"}
    statuses = []
    while True:
        r = client.get(url, headers=headers)
        statuses.append(r.status_code)
        seen += [t["num"] for t in r.json()]
        if r.status_code != 206:
            break
        headers = {"Range": r.headers["Next-Range"]}
    assert statuses == [206, 206, 200] and seen == [1, 2, 3, 4, 5, 6, 7]
    r = client.get(url, headers={"Range": "num ..; max=4, order=desc"})
    assert r.status_code == 206 and [t["num"] for t in r.json()] == [7, 6, 5, 4]
    r = client.get(url, headers={"Range": r.headers["Next-Range"]})
    assert r.status_code == 200 and [t["num"] for t in r.json()] == [3, 2, 1]
    assert client.get(url, headers={"Range": "bogus ..; max=3"}).status_code == 416


def test_releases_range_version_desc_like_the_cli(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    url = f"{double.platform_url}/apps/shop/releases"
    r = client.get(url, headers={"Range": "version ..; max=2, order=desc"})
    versions = [x["version"] for x in r.json()]
    assert r.status_code == 206 and versions == sorted(versions, reverse=True) and len(versions) == 2
    assert r.json()[0]["current"] is True
    r2 = client.get(url, headers={"Range": r.headers["Next-Range"]})
    assert r2.json()[0]["version"] == versions[-1] - 1
    r = client.get(url, headers={"Range": "version ..; max=10; order=desc"})
    assert r.status_code == 200 and "Next-Range" not in r.headers


def test_default_page_size_truncates_without_range(clock: FakeClock) -> None:
    with HerokuDouble(clock=clock, page_size=3) as d, httpx.Client(headers=AUTH) as c:
        d.add_app("shop")
        for _ in range(4):
            d.add_transfer("shop")
        r = c.get(data(d, "/apps/shop/transfers"))
        assert r.status_code == 206 and len(r.json()) == 3
        r = c.get(data(d, "/apps/shop/transfers"), headers={"Range": r.headers["Next-Range"]})
        assert r.status_code == 200 and [t["num"] for t in r.json()] == [4]
        # max is capped at 1000, and a larger max returns everything here
        assert c.get(data(d, "/apps/shop/transfers"), headers={"Range": "num ..; max=5000"}).status_code == 200
        for path in ("/formation", "/addon-attachments", "/releases"):
            assert c.get(f"{d.platform_url}/apps/shop{path}").status_code in (200, 206)


# -- rate limit -----------------------------------------------------------------------------------------------

def test_rate_limit_counts_down_then_429_without_retry_after(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    assert double.rate_remaining() == 4500
    double.set_rate_remaining(3)
    seen = [client.get(f"{double.platform_url}/apps/shop").headers["RateLimit-Remaining"] for _ in range(2)]
    seen.append(client.get(data(double, "/apps/shop/transfers")).headers["RateLimit-Remaining"])  # shared bucket
    assert seen == ["2", "1", "0"]
    r = client.get(f"{double.platform_url}/apps/shop")
    assert r.status_code == 429
    body = r.json()
    assert body["id"] == "rate_limit" and body["message"] == "Your account reached the API rate limit"
    assert "url" in body
    assert "Retry-After" not in r.headers and r.headers["RateLimit-Remaining"] == "0"
    # /account/rate-limits does not count and still answers
    for _ in range(3):
        r = client.get(f"{double.platform_url}/account/rate-limits")
        assert r.status_code == 200 and r.json() == {"remaining": 0}


def test_rate_limit_refills_with_the_clock(double: HerokuDouble, client: httpx.Client, clock: FakeClock) -> None:
    double.add_app("shop")
    double.set_rate_remaining(0)
    assert client.get(f"{double.platform_url}/apps/shop").status_code == 429
    clock.advance(seconds=1)  # 75/min -> 1.25 tokens
    r = client.get(f"{double.platform_url}/apps/shop")
    assert r.status_code == 200 and r.headers["RateLimit-Remaining"] == "0"
    clock.advance(minutes=2)
    assert double.rate_remaining() == 150
    clock.advance(hours=5)
    assert client.get(f"{double.platform_url}/account/rate-limits").json() == {"remaining": 4500}


# -- attachment resolution (ref §4) --------------------------------------------------------------------------

def test_resolve_returns_an_array_with_plan_when_included(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop", billing_app="owner")
    url = f"{double.platform_url}/actions/addon-attachments/resolve"
    inc = {"Accept-Inclusion": "addon:plan,config_vars", "Accept": "application/vnd.heroku+json; version=3.sdk"}
    for name in ("DATABASE_URL", "DATABASE"):
        r = client.post(url, json={"addon_attachment": name, "app": "shop"}, headers=inc)
        assert r.status_code == 200 and isinstance(r.json(), list) and len(r.json()) == 1
        att = r.json()[0]
        assert att["name"] == "DATABASE" and att["namespace"] is None and att["config_vars"] == ["DATABASE_URL"]
        assert att["app"] == {"id": info.app_id, "name": "shop"}
        assert att["addon"]["id"] == info.addon_id and att["addon"]["app"]["name"] == "owner"
        assert att["addon"]["plan"]["name"] == "heroku-postgresql:standard-0"
    plain = client.post(url, json={"addon_attachment": "DATABASE_URL", "app": "shop"}).json()[0]
    assert "plan" not in plain["addon"]
    r = client.post(url, json={"addon_attachment": "NOPE_URL", "app": "shop"})
    assert r.status_code == 404 and r.json()["id"] == "not_found"


def test_resolve_404_injection_forces_the_fallback_path(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop")
    double.inject(r"POST /actions/addon-attachments/resolve", "404")
    r = client.post(f"{double.platform_url}/actions/addon-attachments/resolve",
                    json={"addon_attachment": "DATABASE_URL", "app": "shop"})
    assert r.status_code == 404 and r.json()["id"] == "not_found"
    # the fallback of ref §4 step 5 works: attachments list + config vars
    atts = client.get(f"{double.platform_url}/apps/shop/addon-attachments",
                      headers={"Accept-Inclusion": "addon:plan,config_vars"}).json()
    config = client.get(f"{double.platform_url}/apps/shop/config-vars").json()
    pg = [a for a in atts if a["addon"]["plan"]["name"].startswith("heroku-postgresql:")]
    assert config[pg[0]["config_vars"][0]] == config["DATABASE_URL"] and pg[0]["addon"]["id"] == info.addon_id
    double.clear_faults()
    assert client.post(f"{double.platform_url}/actions/addon-attachments/resolve",
                       json={"addon_attachment": "DATABASE_URL", "app": "shop"}).status_code == 200


def test_addon_resolve_and_list(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop")
    r = client.post(f"{double.platform_url}/actions/addons/resolve", json={"addon": "DATABASE", "app": "shop"})
    assert r.status_code == 200 and r.json()[0]["id"] == info.addon_id
    assert r.json()[0]["addon_service"]["name"] == "heroku-postgresql"
    assert r.json()[0]["plan"]["name"] == info.plan
    addons = client.get(f"{double.platform_url}/apps/shop/addons").json()
    assert [a["name"] for a in addons] == [info.addon_name]
    r = client.post(f"{double.platform_url}/actions/addons/resolve", json={"addon": "nope", "app": "shop"})
    assert r.status_code == 404


# -- database info (ref §2) -----------------------------------------------------------------------------------

def test_database_info_shape(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop", database_url="postgres://u:secret@db.example.com:5432/d1")
    body = client.get(data(double, f"/databases/{info.addon_id}")).json()
    for key in ("addon_id", "name", "plan", "created_at", "resource_url", "num_bytes", "num_tables",
                "num_connections", "postgres_version", "following", "forked_from", "leader", "hot_standby?",
                "waiting?", "info"):
        assert key in body
    assert body["resource_url"] == "postgres://db.example.com:5432/d1"
    values = {e["name"]: e["values"] for e in body["info"]}
    assert values["Plan"] == ["Standard 0"] and values["Status"] == ["Available"]
    assert re.fullmatch(r"[\d.]+ [kMGT]?B / 64 GB \(\d+\.\d\d%\)", values["Data Size"][0])
    assert re.fullmatch(r"earliest from \d{4}-\d\d-\d\d \d\d:\d\d UTC", values["Rollback"][0])
    assert values["Continuous Protection"] == ["On"]
    assert {"Tables", "PG Version", "Connections", "Fork/Follow"} <= set(values)


def test_database_info_overrides_and_essential_plan(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop", plan="heroku-postgresql:essential-0")
    values = {e["name"]: e["values"] for e in client.get(data(double, f"/databases/{info.addon_id}")).json()["info"]}
    # Essential plans offer no continuous protection or rollback: neither line is shown
    assert "Rollback" not in values and "Continuous Protection" not in values and values["Plan"] == ["Essential 0"]
    double.set_database_info("shop", num_bytes=40 * 1024**3, num_tables=51, postgres_version="16.4")
    body = client.get(data(double, f"/databases/{info.addon_id}")).json()
    assert (body["num_tables"], body["postgres_version"]) == (51, "16.4")
    assert {e["name"]: e["values"] for e in body["info"]}["Tables"] == ["51"]
    double.set_database_info("shop", info=[{"name": "Plan", "values": ["Custom"]}])
    assert client.get(data(double, f"/databases/{info.addon_id}")).json()["info"] == [
        {"name": "Plan", "values": ["Custom"]}]
    assert client.get(data(double, f"/databases/{info.addon_id}/wait_status")).json() == {
        "waiting?": False, "error?": False, "message": "Available"}
    double.set_database_info("shop", waiting=True)
    assert client.get(data(double, f"/databases/{info.addon_id}/wait_status")).json()["waiting?"] is True


# -- real capture, download, signatures ------------------------------------------------------------------------

def test_real_capture_download_and_signatures(pg_cluster: LocalCluster, clock: FakeClock, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    with HerokuDouble(clock=clock, capture_delay=0.3) as d, httpx.Client(headers=AUTH, timeout=30) as c:
        info = d.add_app("shop", database_url=url)
        r = c.post(data(d, f"/databases/{info.addon_id}/backups"))
        assert r.status_code == 200
        created = r.json()
        assert (created["from_type"], created["to_type"], created["from_name"]) == ("pg_dump", "gof3r", "DATABASE")
        assert created["started_at"] is None and created["finished_at"] is None
        assert "schedule" not in created

        def finished() -> dict[str, Any] | None:
            t = c.get(data(d, f"/apps/shop/transfers/{created['uuid']}")).json()
            return t if t["finished_at"] else None

        done = wait_until("capture to finish", finished, timeout=60)
        assert done["succeeded"] is True and done["processed_bytes"] > 0 and done["source_bytes"] > 0
        assert done["started_at"] and HEROKU_TS.match(done["finished_at"])
        logs = c.get(data(d, f"/apps/shop/transfers/{created['num']}?verbose=true")).json()["logs"]
        assert any("pg_dump" in e["message"] for e in logs)

        pub = c.post(data(d, f"/apps/shop/transfers/{created['num']}/actions/public-url"))
        assert pub.status_code == 201 and set(pub.json()) == {"url", "expires_at"}
        signed = pub.json()["url"]
        before = d.rate_remaining()
        dl = httpx.get(signed)  # no token: a signed URL, not an API call
        assert dl.status_code == 200 and len(dl.content) == done["processed_bytes"]
        assert dl.content.startswith(b"PGDMP")
        assert d.rate_remaining() == before and d.request_count("download") == 1
        dump = tmp_path / "latest.dump"
        dump.write_bytes(dl.content)
        toc = subprocess.run([find_tool("pg_restore"), "--list", str(dump)], capture_output=True, text=True,
                             check=True)
        assert "TABLE" in toc.stdout

        forged = re.sub(r"X-Amz-Signature=[0-9a-f]+", "X-Amz-Signature=" + "0" * 64, signed)
        assert httpx.get(forged).status_code == 403
        longer = re.sub(r"X-Amz-Expires=\d+", "X-Amz-Expires=999999", signed)
        assert httpx.get(longer).status_code == 403
        clock.advance(minutes=59)
        assert httpx.get(signed).status_code == 200  # signed for about an hour, as S3 presigns them
        clock.advance(minutes=2)
        expired = httpx.get(signed)
        assert expired.status_code == 403 and b"expired" in expired.content


def test_capture_against_an_unreachable_database_fails_with_a_log(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop")  # a fake URL
    t = client.post(data(double, f"/databases/{info.addon_id}/backups")).json()
    done = wait_until("failure", lambda: (x := client.get(
        data(double, f"/apps/shop/transfers/{t['uuid']}?verbose=true")).json())["finished_at"] and x)
    assert done["succeeded"] is False and done["canceled_at"] is None
    assert any(e["level"] == "error" for e in done["logs"])
    r = client.post(data(double, f"/apps/shop/transfers/{t['num']}/actions/public-url"))
    assert r.status_code == 400 and r.json()["message"] == "Can only generate public URL for completed transfers"


def test_seeded_backup_downloads_filler_of_processed_bytes(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    double.add_transfer("shop", processed_bytes=1234)
    pub = client.post(data(double, "/apps/shop/transfers/1/actions/public-url")).json()
    assert HEROKU_TS.match(pub["expires_at"])
    assert len(httpx.get(pub["url"]).content) == 1234


def test_running_state_is_observable_and_finish_running(clock: FakeClock) -> None:
    with HerokuDouble(clock=clock, capture_delay=30) as d, httpx.Client(headers=AUTH) as c:
        info = d.add_app("shop")
        t = c.post(data(d, f"/databases/{info.addon_id}/backups")).json()
        d.add_transfer("shop", state="started")
        assert c.get(data(d, f"/apps/shop/transfers/{t['uuid']}")).json()["started_at"] is None
        d.finish_running("shop")
        got = c.get(data(d, "/apps/shop/transfers")).json()
        assert all(x["finished_at"] and x["succeeded"] for x in got)


# -- cancel, delete, schedules -------------------------------------------------------------------------------

def test_cancel(clock: FakeClock) -> None:
    with HerokuDouble(clock=clock, capture_delay=30) as d, httpx.Client(headers=AUTH) as c:
        info = d.add_app("shop")
        t = c.post(data(d, f"/databases/{info.addon_id}/backups")).json()
        r = c.post(data(d, f"/apps/shop/transfers/{t['uuid']}/actions/cancel"))
        assert r.status_code == 200 and r.json() == {}
        got = c.get(data(d, f"/apps/shop/transfers/{t['num']}")).json()
        assert got["canceled_at"] and got["finished_at"] and got["succeeded"] is False
        running = d.add_transfer("shop", state="started")
        c.post(data(d, f"/apps/shop/transfers/{running['uuid']}/actions/cancel"))
        assert c.get(data(d, f"/apps/shop/transfers/{running['uuid']}")).json()["canceled_at"]


def test_cancel_kills_a_running_pg_dump(double: HerokuDouble, client: httpx.Client) -> None:
    # a "database" that accepts the TCP connection and never answers keeps pg_dump running
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        info = double.add_app("shop", database_url=f"postgres://u:p@127.0.0.1:{port}/db")
        t = client.post(data(double, f"/databases/{info.addon_id}/backups")).json()
        wait_until("pg_dump to start", lambda: client.get(
            data(double, f"/apps/shop/transfers/{t['uuid']}")).json()["started_at"])
        wait_until("pg_dump process", lambda: double._transfers[0].proc is not None)
        proc = double._transfers[0].proc
        t0 = time.monotonic()
        client.post(data(double, f"/apps/shop/transfers/{t['uuid']}/actions/cancel"))
        assert proc is not None
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 3  # killed, not its own 5 s connect timeout
        got = client.get(data(double, f"/apps/shop/transfers/{t['uuid']}")).json()
        assert got["canceled_at"] and got["succeeded"] is False
    finally:
        srv.close()


def test_a_deleted_transfer_leaves_the_list_and_answers_410_gone(double: HerokuDouble, client: httpx.Client) -> None:
    """The transfer service lists transfers `where deleted_at is null` and answers 410 for GET, DELETE,
    public-url and cancel of a deleted one (reference, Corrections Nov 2026); an unknown one stays 404."""
    double.add_app("shop")
    double.add_transfer("shop")
    double.add_transfer("shop")
    r = client.delete(data(double, "/apps/shop/transfers/1"))
    assert r.status_code == 200 and HEROKU_TS.match(r.json()["deleted_at"])
    assert [t["num"] for t in client.get(data(double, "/apps/shop/transfers")).json()] == [2]
    for method, path in (("GET", "/apps/shop/transfers/1"), ("DELETE", "/apps/shop/transfers/1"),
                         ("POST", "/apps/shop/transfers/1/actions/public-url"),
                         ("POST", "/apps/shop/transfers/1/actions/cancel")):
        gone = client.request(method, data(double, path))
        assert gone.status_code == 410 and gone.json()["id"] == "gone", (method, path)
    assert client.delete(data(double, "/apps/shop/transfers/9")).status_code == 404


def test_schedules_create_list_delete(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop")
    url = data(double, f"/databases/{info.addon_id}/transfer-schedules")
    r = client.post(url, json={"hour": "06", "timezone": "America/New_York", "schedule_name": "DATABASE_URL"})
    assert r.status_code == 201 and r.content == b""
    listed = client.get(url).json()
    assert len(listed) == 1 and set(listed[0]) == {"uuid", "name", "hour", "timezone", "days", "created_at",
                                                   "updated_at", "deleted_at", "retain_weeks", "retain_months"}
    assert listed[0]["deleted_at"] is None and len(listed[0]["days"]) == 7
    assert HEROKU_TS.match(listed[0]["created_at"]) and isinstance(listed[0]["retain_months"], int)
    assert (listed[0]["name"], listed[0]["hour"], listed[0]["timezone"]) == ("DATABASE_URL", 6, "America/New_York")
    assert client.post(url, json={"hour": "25", "timezone": "UTC", "schedule_name": "X"}).status_code == 422
    assert client.post(url, json={"hour": 1, "timezone": "Mars/Olympus", "schedule_name": "X"}).status_code == 422
    assert client.delete(f"{url}/{listed[0]['uuid']}").status_code == 200
    assert client.get(url).json() == []
    assert client.delete(f"{url}/{listed[0]['uuid']}").status_code == 404
    seeded = double.add_schedule("shop", hour="2")
    assert client.get(url).json() == [seeded] and seeded["hour"] == 2


# -- platform API ---------------------------------------------------------------------------------------------

def test_app_formation_dynos_and_scaling(double: HerokuDouble, client: httpx.Client) -> None:
    info = double.add_app("shop")
    app = client.get(f"{double.platform_url}/apps/{info.app_id}").json()
    assert app["id"] == info.app_id and app["name"] == "shop" and app["maintenance"] is False
    base = f"{double.platform_url}/apps/shop"
    formation = {f["type"]: f for f in client.get(f"{base}/formation").json()}
    assert formation["web"]["quantity"] == 1 and formation["worker"]["quantity"] == 1
    assert formation["web"]["app"] == {"id": info.app_id, "name": "shop"} and "dyno_size" in formation["web"]
    r = client.patch(f"{base}/formation/web", json={"quantity": 3})
    assert r.status_code == 200 and r.json()["quantity"] == 3
    r = client.patch(f"{base}/formation", json={"updates": [{"type": "worker", "quantity": "2", "size": "standard-2X"},
                                                            {"type": "web", "quantity": "+1"}]})
    assert r.status_code == 200 and {f["type"]: f["quantity"] for f in r.json()} == {"worker": 2, "web": 4}
    assert client.get(f"{base}/formation/worker").json()["size"] == "standard-2X"
    names = sorted(dy["name"] for dy in client.get(f"{base}/dynos").json())
    assert names == ["web.1", "web.2", "web.3", "web.4", "worker.1", "worker.2"]
    assert client.get(f"{base}/dynos/web.2").json()["state"] == "up"
    assert client.patch(f"{base}/formation/web", json={"quantity": "lots"}).status_code == 422
    assert client.patch(f"{base}/formation/clock", json={"quantity": 1}).status_code == 404
    assert client.patch(f"{base}/formation", json={"updates": [{"quantity": 1}]}).status_code == 422


def test_releases_and_rollback(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    base = f"{double.platform_url}/apps/shop/releases"
    rels = client.get(base, headers={"Range": "version ..; max=10, order=desc"}).json()
    assert len(rels) >= 3 and rels[0]["current"] and rels[0]["status"] == "succeeded"
    target = [r for r in rels if r["eligible_for_rollback"]][1]
    assert client.get(f"{base}/{target['version']}").json()["id"] == target["id"]
    assert client.get(f"{base}/{target['id']}").json()["version"] == target["version"]
    r = client.post(base, json={"release": target["id"]})
    assert r.status_code == 201
    new = r.json()
    assert new["version"] == rels[0]["version"] + 1 and new["current"] is True
    assert new["description"] == f"Rollback to v{target['version']}" and "output_stream_url" in new
    assert client.get(f"{base}/{rels[0]['version']}").json()["current"] is False
    assert client.post(base, json={}).status_code == 422


def test_a_deploy_added_by_the_test_carries_its_author_time_and_a_rollback_copies_its_target(
        double: HerokuDouble, client: httpx.Client, clock: FakeClock) -> None:
    double.add_app("shop")
    when = clock() - timedelta(minutes=5)
    deploy = double.add_release("shop", "Deploy 9f8e7d6", created_at=when, email="dev@example.com")
    base = f"{double.platform_url}/apps/shop/releases"
    newest = client.get(base, headers={"Range": "version ..; max=2, order=desc"})
    assert newest.status_code == 206 and [r["version"] for r in newest.json()] == [deploy["version"],
                                                                                   deploy["version"] - 1]
    top = newest.json()[0]
    assert (top["user"]["email"], top["created_at"], top["current"]) == ("dev@example.com", _iso(when), True)
    before = newest.json()[1]
    rolled = client.post(base, json={"release": before["id"]}).json()
    assert rolled["description"] == f"Rollback to v{before['version']}"
    assert rolled["slug"] == before["slug"] and rolled["eligible_for_rollback"] is True
    assert client.get(f"{base}/{deploy['version']}").json()["current"] is False


# -- faults ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "status", "fault_id"), [("429", 429, "rate_limit"), ("500", 500, None),
                                                          ("503", 503, None), ("404", 404, "not_found")])
def test_error_faults(double: HerokuDouble, client: httpx.Client, kind: str, status: int, fault_id: str | None) -> None:
    double.add_app("shop")
    url = data(double, "/apps/shop/transfers")
    double.inject(r"GET /client/v11/apps/[^/]+/transfers$", kind, times=1)
    r = client.get(url)
    assert r.status_code == status and {"id", "message"} <= set(r.json())
    if fault_id:
        assert r.json()["id"] == fault_id
    if kind == "429":
        assert "Retry-After" not in r.headers
    assert client.get(url).status_code == 200  # times=1


def test_status_fault_and_times_none_until_cleared(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    double.inject("", "status", status=418)
    for url in (f"{double.platform_url}/apps/shop", data(double, "/apps/shop/transfers")):
        assert client.get(url).status_code == 418
    double.clear_faults()
    assert client.get(f"{double.platform_url}/apps/shop").status_code == 200
    with pytest.raises(ValueError, match="status"):
        double.inject("", "status")
    with pytest.raises(ValueError, match="unknown"):
        double.inject("", "explode")


def test_slow_fault(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    double.inject("GET /apps/shop$", "slow", delay=0.4, times=1)
    t0 = time.monotonic()
    r = client.get(f"{double.platform_url}/apps/shop")
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.4


def test_timeout_fault_holds_the_connection_and_does_not_block_stop(clock: FakeClock) -> None:
    d = HerokuDouble(clock=clock).start()
    d.add_app("shop")
    d.inject("GET /apps/shop$", "timeout", times=1)  # default: 30 s
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{d.platform_url}/apps/shop", headers=AUTH, timeout=0.5)
    assert time.monotonic() - t0 < 5
    # a second held request, still in flight when the double stops
    d.inject("GET /apps/shop$", "timeout", times=1)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.get(f"{d.platform_url}/apps/shop", headers=AUTH, timeout=20)
        except BaseException as exc:
            errors.append(exc)

    th = threading.Thread(target=call)
    th.start()
    wait_until("held request", lambda: d.request_count() == 2)
    t0 = time.monotonic()
    d.stop()
    th.join(timeout=10)
    assert time.monotonic() - t0 < 8 and not th.is_alive()
    assert errors and isinstance(errors[0], httpx.TransportError)


def test_timeout_fault_with_delay_then_drops(double: HerokuDouble) -> None:
    double.add_app("shop")
    double.inject("GET /apps/shop$", "timeout", delay=0.3, times=1)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{double.platform_url}/apps/shop", headers=AUTH, timeout=5)
    assert double.requests[-1].status is None


def test_malformed_and_truncated_faults(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    double.inject("transfers", "malformed", times=1)
    r = client.get(data(double, "/apps/shop/transfers"))
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)
    double.inject("transfers", "truncated", times=1)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(data(double, "/apps/shop/transfers"))
    assert client.get(data(double, "/apps/shop/transfers")).status_code == 200


def test_faults_do_not_spend_rate_tokens(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    double.inject("", "500", times=3)
    for _ in range(3):
        client.get(f"{double.platform_url}/apps/shop")
    assert double.rate_remaining() == 4500


# -- by hand --------------------------------------------------------------------------------------------------

def test_demo_state_and_module_help(double: HerokuDouble, client: httpx.Client) -> None:
    info = _demo_state(double, None)
    assert len(client.get(data(double, f"/apps/{info.app_name}/transfers")).json()) == 4
    out = subprocess.run([sys.executable, "-m", "tests.doubles.heroku", "--help"], capture_output=True,
                         text=True, check=True, cwd=REPO)
    assert "--database-url" in out.stdout


def test_addon_create_for_rollback(double: HerokuDouble, client: httpx.Client) -> None:
    double.add_app("shop")
    body = {"plan": {"name": "heroku-postgresql:standard-0"},
            "config": {"rollback": "DATABASE_URL", "to": "2025-12-19"}}
    r = client.post(f"{double.platform_url}/apps/shop/addons", json=body)
    assert r.status_code == 201 and r.json()["plan"]["name"] == "heroku-postgresql:standard-0"
    assert r.json()["config_vars"] == ["HEROKU_POSTGRESQL_RED_URL"]
    assert double._addons[r.json()["id"]].config == body["config"]
    assert "HEROKU_POSTGRESQL_RED_URL" in client.get(f"{double.platform_url}/apps/shop/config-vars").json()
    assert client.post(f"{double.platform_url}/apps/shop/addons", json={}).status_code == 422


def test_database_info_is_measured_from_the_real_database_behind_it(
    double: HerokuDouble, client: httpx.Client, fresh_db: str
) -> None:
    """The info agrees with the database a dump of it would contain (its server version above all: the
    guardian compares it with its pg_restore), and follows it as it changes."""
    info = double.add_app("shop", database_url=fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
                              "('pg_catalog', 'information_schema')").fetchone()[0]  # type: ignore[index]
        body = client.get(data(double, f"/databases/{info.addon_id}")).json()
        assert (body["postgres_version"], body["num_tables"]) == (version, tables)
        assert body["num_bytes"] > 1_000_000 and body["num_connections"] >= 1
        values = {e["name"]: e["values"] for e in body["info"]}
        assert values["PG Version"] == [version] and values["Tables"] == [str(tables)]
        conn.execute("CREATE TABLE added_later (id int)")
    assert client.get(data(double, f"/databases/{info.addon_id}")).json()["num_tables"] == tables + 1


def test_account_process_tier_and_a_stable_add_on_order(double: HerokuDouble, client: httpx.Client) -> None:
    """What the CLI's `ps` reads (GET /account, the app's process_tier), and add-ons listed in the order they were
    created, the same at every call (reference, Corrections Nov 2026)."""
    double.add_app("shop")
    for name in ("CACHE", "ANALYTICS", "REPLICA"):
        double.add_app("shop", attachment=name)
    account = client.get(f"{double.platform_url}/account").json()
    app = client.get(f"{double.platform_url}/apps/shop").json()
    assert account["email"] and account["id"] == app["owner"]["id"] and account["verified"] is True
    assert app["process_tier"] == "production"
    first = [a["name"] for a in client.get(f"{double.platform_url}/apps/shop/addons").json()]
    again = [a["name"] for a in client.get(f"{double.platform_url}/apps/shop/addons").json()]
    attachments = client.get(f"{double.platform_url}/apps/shop/addon-attachments").json()
    by_addon = {a["addon"]["name"]: a["name"] for a in attachments}
    assert first == again and [by_addon[n] for n in first] == ["DATABASE", "CACHE", "ANALYTICS", "REPLICA"]


def test_the_cli_data_host_is_served_as_the_data_api_on_the_platform_port(clock: FakeClock,
                                                                          client: httpx.Client) -> None:
    """The real CLI sends Data API calls to HEROKU_DATA_HOST on HEROKU_HOST's scheme and port; with that host
    name set, the double's platform port answers them as the Data API, and only under that name. The account's
    attachment list (what the CLI's `addons` reads) has every app's."""
    with HerokuDouble(clock=clock, cli_data_host="localhost") as d:
        d.add_app("shop")
        d.add_app("other")
        d.add_transfer("shop")
        port = d.platform_url.rsplit(":", 1)[1]
        as_data = client.get(f"http://localhost:{port}/client/v11/apps/shop/transfers")
        as_platform = client.get(f"{d.platform_url}/client/v11/apps/shop/transfers")
        assert as_data.status_code == 200 and [t["num"] for t in as_data.json()] == [1]
        assert as_platform.status_code == 404
        every = client.get(f"{d.platform_url}/addon-attachments").json()
        assert sorted(a["app"]["name"] for a in every) == ["other", "shop"]


def test_a_backup_can_expire_while_it_is_downloaded(double: HerokuDouble, client: httpx.Client) -> None:
    """expire_during_download: the next download sends a part and breaks off, and from that moment the transfer
    is deleted (410, out of the list, its object gone), as when retention expires a backup being read."""
    double.add_app("shop")
    double.add_transfer("shop", processed_bytes=50_000)
    double.expire_during_download("shop", 1, after_bytes=1000)
    url = client.post(data(double, "/apps/shop/transfers/1/actions/public-url")).json()["url"]
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert client.get(data(double, "/apps/shop/transfers/1")).status_code == 410
    assert client.get(data(double, "/apps/shop/transfers")).json() == []
    assert client.get(url).status_code == 404


def test_an_advanced_database_has_its_own_info_with_a_rollback_window_moving_with_the_clock(
    double: HerokuDouble, client: httpx.Client, clock: FakeClock
) -> None:
    info = double.add_app("shop", plan="heroku-postgresql:advanced")
    url = f"{double.data_url}/data/postgres/v1/{info.addon_id}/info"
    body = client.get(url).json()
    assert body["tier"] == "advanced" and body["features"]["continuous_protection"] == {"enabled": True}
    rollback = body["features"]["rollback"]
    assert rollback["enabled"] is True
    assert rollback["latest_time"] == (clock.now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(hours=2)
    moved = client.get(url).json()["features"]["rollback"]
    assert moved["latest_time"] == (clock.now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert moved["earliest_time"] == (clock.now - timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    double.set_advanced("shop", continuous_protection=False)
    off = client.get(url).json()["features"]
    assert off["continuous_protection"] == {"enabled": False}
    assert (off["rollback"]["earliest_time"], off["rollback"]["latest_time"]) == (None, None)
    # the pg:backups routes of the transfer service do not know it (a CHOICE: not established)
    for method, path in (("GET", f"/databases/{info.addon_id}"), ("POST", f"/databases/{info.addon_id}/backups"),
                         ("GET", f"/databases/{info.addon_id}/transfer-schedules")):
        assert client.request(method, data(double, path)).status_code == 404
    classic = double.add_app("other")
    assert client.get(f"{double.data_url}/data/postgres/v1/{classic.addon_id}/info").status_code == 404
