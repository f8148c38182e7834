"""The guardian with a Heroku fleet, in process against the double, on simulated time: an API outage of
ten minutes, and a fleet of 1,000 apps polled within the rate budget."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from daemon.adapters.heroku import HerokuClient
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.snapshot import Snapshot
from daemon.status import status_document
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def heroku(clock: FakeClock) -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=clock, token="hrku-outage-token-0123456789") as double:
        yield double


def guardian(heroku: HerokuDouble, clock: FakeClock, apps: list[str], share: float = 0.5) -> Guardian:
    config = GuardianConfig.model_validate({
        "collect_interval": "30s",
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "rate_budget_share": share, "apps": apps},
    })
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                       sleep=clock.sleep, timeout=5, max_rate_wait=0)  # as the daemon builds it
    return Guardian(config, heroku_api=api, clock=clock)


def due_now_with_a_one_minute_window(heroku: HerokuDouble, clock: FakeClock) -> None:
    """Yesterday's scheduled backup of "shop" finished a minute after its hour, today's is due now: the
    planner polls right after today's window (a minute from now) and follows up every minute or so while
    the backup stays unseen."""
    heroku.add_schedule("shop", hour=clock.now.hour, timezone="UTC")
    yesterday = clock.now - timedelta(days=1)
    heroku.add_transfer("shop", created_at=yesterday, started_at=yesterday + timedelta(seconds=10),
                        finished_at=yesterday + timedelta(minutes=1))


def first_poll(g: Guardian, clock: FakeClock) -> Snapshot:
    """Passes until every Heroku database has been read once (the fleet's credit starts empty and accrues)."""
    for _ in range(20):
        snap = g.collect_all()
        if all(("heroku", name) in snap.collectors for name in (g.heroku.fleet.watchers if g.heroku.fleet else {})):
            return snap
        clock.now += timedelta(seconds=30)
    raise AssertionError("the fleet never polled")


def test_ten_minutes_of_500s_and_429s_keep_the_last_known_good_backup_and_no_request_storm(
    heroku: HerokuDouble, clock: FakeClock
) -> None:
    heroku.add_app("shop")
    good_start = clock.now - timedelta(hours=3)
    heroku.add_transfer("shop", created_at=good_start, started_at=good_start,
                        finished_at=good_start + timedelta(minutes=4))
    due_now_with_a_one_minute_window(heroku, clock)
    g = guardian(heroku, clock, ["shop"])
    db = "shop/DATABASE"

    snap = first_poll(g, clock)
    assert snap.collectors[("heroku", db)].up
    newest = snap.databases[db].sources["heroku"].newest_good
    assert newest is not None and newest.recovery_point == good_start

    heroku.inject(r"^GET /client/v11/", "429")  # five minutes of 429s on the data API ...
    before = heroku.request_count()
    passes = 0
    for minute in range(20):
        if minute == 10:
            heroku.clear_faults()
            heroku.inject(r"/transfers$", "500")  # ... then five minutes of 500s
        clock.now += timedelta(seconds=30)
        snap = g.collect_all()  # never raises
        passes += 1
    during = heroku.request_count() - before
    seen = {r.status for r in heroku.requests[-during:]}
    assert {429, 500} <= seen

    assert not snap.collectors[("heroku", db)].up
    assert snap.collectors[("heroku", db)].errors_total >= 1
    doc = status_document(snap, clock.now)
    [status] = doc["databases"]
    assert status["sources"]["heroku"]["stale"] is True
    assert status["newest_good_backup"]["id"] == "a001"
    # data at risk still computed from the last known good backup
    assert status["data_at_risk_seconds"] == pytest.approx((clock.now - good_start).total_seconds())
    active = {f["check"] for f in status["findings"] if f["active"]}
    assert "collector_down" in active and "rpo_breach" not in active
    # polls back off after failures: a handful of attempts, not one burst per 30-second pass
    assert passes == 20 and during <= 20, f"{during} requests in {passes} passes"

    heroku.clear_faults()
    for _ in range(40):
        clock.now += timedelta(seconds=30)
        snap = g.collect_all()
        if snap.collectors[("heroku", db)].up:
            break
    assert snap.collectors[("heroku", db)].up
    assert status_document(snap, clock.now)["databases"][0]["sources"]["heroku"]["stale"] is False


def test_a_fleet_of_1000_apps_stays_within_the_rate_budget(heroku: HerokuDouble, clock: FakeClock) -> None:
    apps = [f"app-{i:04d}" for i in range(1000)]
    for name in apps:
        heroku.add_app(name)
        heroku.add_transfer(name, created_at=clock.now - timedelta(hours=5))
    share = 0.5
    g = guardian(heroku, clock, apps, share=share)
    assert g.heroku.fleet is not None
    per_pass, window = [], []
    for _ in range(30):  # fifteen minutes of passes
        before = heroku.request_count()
        snap = g.collect_all()
        spent = heroku.request_count() - before
        report = g.heroku.fleet.last_report
        assert spent == report.requests <= report.allowance + 1e-9
        per_pass.append(spent)
        window.append(spent)
        clock.now += timedelta(seconds=30)
    # 15 minutes at 50% of 75/min is 562.5 requests, plus at most one minute of banked credit
    assert sum(window) <= share * 75 * 15 + share * 75
    assert sum(window) >= share * 75 * 15 * 0.8  # and the budget is actually used
    assert all(r.status != 429 for r in heroku.requests)
    assert snap.heroku is not None and snap.heroku.stretch > 1  # 1,000 apps cannot all be polled at will
    assert snap.heroku.pass_deferred > 0
    assert max(per_pass) <= share * 75  # never more than a minute's share in one pass


def test_missed_schedule_on_the_new_york_spring_forward_night_with_the_real_clock_frozen() -> None:
    """The guardian's own clock (datetime.now) frozen around 02:00 America/New_York on 2026-03-08, when
    02:00 does not exist: the slot falls at 03:00 EDT = 07:00 UTC, missed after the one-hour grace."""
    from freezegun import freeze_time

    from daemon.app import utcnow

    with freeze_time("2026-03-08 07:59:59", tz_offset=0) as frozen, HerokuDouble(token="hrku-dst-0123456789") as h:
        h.add_app("shop")
        h.add_schedule("shop", hour=2, timezone="America/New_York")
        yesterday = utcnow() - timedelta(days=1)
        h.add_transfer("shop", created_at=yesterday, started_at=yesterday, finished_at=yesterday)
        config = GuardianConfig.model_validate({"heroku": {"api_key": h.token, "platform_url": h.platform_url,
                                                           "data_url": h.data_url, "apps": ["shop"]}})
        g = Guardian(config, heroku_api=HerokuClient(h.token, platform_url=h.platform_url, data_url=h.data_url))

        def missed() -> bool:
            snap = g.collect_all(one_shot=True)
            return next(f for f in snap.databases["shop/DATABASE"].findings if f.check == "missed_schedule").active

        assert not missed()  # 07:59:59 UTC: 59 min 59 s after the slot
        frozen.move_to("2026-03-08 08:00:01")
        assert missed()
        h.add_transfer("shop", created_at=utcnow(), started_at=utcnow(), finished_at=utcnow())
        assert not missed()


def test_two_databases_on_one_app_never_borrow_each_others_backups(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    heroku.add_app("shop", attachment="HEROKU_POSTGRESQL_RED")
    start = clock.now - timedelta(hours=1)
    heroku.add_transfer("shop", created_at=start, started_at=start, finished_at=start, attachment="DATABASE")
    g = guardian(heroku, clock, ["shop", "shop::HEROKU_POSTGRESQL_RED"])
    snap = g.collect_all(one_shot=True)
    main, red = snap.databases["shop/DATABASE"], snap.databases["shop/HEROKU_POSTGRESQL_RED"]
    assert [b.backup_id for b in main.sources["heroku"].backups] == ["a001"]
    assert red.sources["heroku"].backups == ()
    assert {f.check: f for f in red.findings}["rpo_breach"].active
    assert not {f.check: f for f in main.findings}["rpo_breach"].active


def test_polling_resumes_after_the_account_bucket_ran_dry(heroku: HerokuDouble, clock: FakeClock) -> None:
    heroku.add_app("shop")
    due_now_with_a_one_minute_window(heroku, clock)
    g = guardian(heroku, clock, ["shop"])
    first_poll(g, clock)
    clock.now += timedelta(minutes=1)  # the next poll is due now
    heroku.set_rate_remaining(0)  # and another client of the account has just emptied the bucket
    snap = g.collect_all()
    for _ in range(4):
        clock.now += timedelta(seconds=30)
        snap = g.collect_all()
    assert snap.heroku is not None and snap.heroku.ratelimit_remaining is not None
    assert snap.heroku.ratelimit_remaining < 4500 * 0.5  # below the others' reserve: the guardian holds back
    assert not snap.collectors[("heroku", "shop/DATABASE")].up
    statuses = [r.status for r in heroku.requests if r.host == "data"]
    assert statuses.count(429) == 1  # one 429 ends the pass; no retry storm against an empty bucket
    # the bucket refills (75/min); the guardian learns it for free and polls again within the hour
    for _ in range(120):
        clock.now += timedelta(seconds=30)
        snap = g.collect_all()
        if snap.collectors[("heroku", "shop/DATABASE")].up:
            break
    assert snap.collectors[("heroku", "shop/DATABASE")].up
    assert any(r.path == "/account/rate-limits" for r in heroku.requests)


def test_new_heroku_backups_are_read_through_when_no_archive_copies_them(
    heroku: HerokuDouble, clock: FakeClock, sample_dump: Path
) -> None:
    heroku.add_app("shop")
    heroku.add_app("bad")
    start = clock.now - timedelta(hours=1)
    good = heroku.add_transfer("shop", created_at=start, started_at=start, finished_at=start)
    heroku.set_dump_file("shop", good["num"], sample_dump)
    heroku.add_transfer("bad", created_at=start, started_at=start, finished_at=start)  # PGDMP + zeros
    g = guardian(heroku, clock, ["shop", "bad"])
    try:
        g.collect_all(one_shot=True)
        assert g.readthrough.check() == 2
        assert g.readthrough.check() == 0  # each backup is read once
        snap = g.holder.current()
        # a newer backup is read in turn; the verdict of one the source no longer lists is forgotten (bounded)
        newer = clock.now - timedelta(minutes=30)
        second = heroku.add_transfer("shop", created_at=newer, started_at=newer, finished_at=newer)
        heroku.set_dump_file("shop", second["num"], sample_dump)
        gone = httpx.delete(f"{heroku.data_url}/client/v11/apps/shop/transfers/{good['num']}",
                            headers={"Authorization": f"Bearer {heroku.token}"}, timeout=10)
        assert gone.status_code == 200  # deleted: the guardian's list leaves it out
        g.collect_all(one_shot=True)
        assert g.readthrough.check() == 1
        assert sorted(k for k in g.readthrough.verdicts if k[0] == "shop/DATABASE") == [
            ("shop/DATABASE", f"a{second['num']:03d}")]  # a scheduled backup
    finally:
        g.stop()
    shop, bad = snap.databases["shop/DATABASE"], snap.databases["bad/DATABASE"]
    assert shop.sources["heroku"].backups[0].readable is True
    assert not {f.check: f for f in shop.findings}["unreadable_backup"].active
    found = {f.check: f for f in bad.findings}
    assert found["unreadable_backup"].active and "a001" in found["unreadable_backup"].hint
    assert found["rpo_breach"].active  # an unreadable dump is no backup at all


@pytest.mark.parametrize("when", ["before", "mid-read"])
def test_a_backup_heroku_deletes_before_or_while_it_is_read_through_gets_no_verdict_and_the_next_one_is_read(
    heroku: HerokuDouble, clock: FakeClock, sample_dump: Path, when: str
) -> None:
    """Heroku's retention deletes the newest backup after the collection listed it (410 for its URL), or while
    the read-through streams it (the stream breaks off, and Heroku answers 410 since): neither the backup nor the
    guardian failed, so there is no verdict and no unreadable_backup; the next collection lists what remains and
    its newest good backup is read."""
    heroku.add_app("shop")
    for minutes in (90, 30):
        at = clock.now - timedelta(minutes=minutes)
        t = heroku.add_transfer("shop", created_at=at, started_at=at, finished_at=at)
        heroku.set_dump_file("shop", t["num"], sample_dump)
    g = guardian(heroku, clock, ["shop"])
    try:
        g.collect_all(one_shot=True)
        if when == "before":
            gone = httpx.delete(f"{heroku.data_url}/client/v11/apps/shop/transfers/2",
                                headers={"Authorization": f"Bearer {heroku.token}"}, timeout=10)
            assert gone.status_code == 200
        else:
            heroku.expire_during_download("shop", 2, after_bytes=sample_dump.stat().st_size // 2)
        g.readthrough.check()
        assert not [k for k in g.readthrough.verdicts if k[0] == "shop/DATABASE"]  # no verdict on a002
        snap = g.collect_all(one_shot=True)
        assert not {f.check: f for f in snap.databases["shop/DATABASE"].findings}["unreadable_backup"].active
        assert [b.backup_id for b in snap.databases["shop/DATABASE"].sources["heroku"].backups] == ["a001"]
        g.readthrough.check()
        assert [k[1] for k in g.readthrough.verdicts if k[0] == "shop/DATABASE"] == ["a001"]
        snap = g.collect_all(one_shot=True)
    finally:
        g.stop()
    shop = snap.databases["shop/DATABASE"]
    assert shop.sources["heroku"].backups[0].readable is True
    assert not {f.check: f for f in shop.findings}["unreadable_backup"].active
