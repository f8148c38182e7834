"""Missed-schedule boundaries in the schedule's own timezone, across DST changes, and the fleet's polling
intervals. Pure functions take `now`; freezegun freezes the clock where code reads it (the info parser)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from collectors.fleet import desired_interval
from daemon.config import HerokuPolling, Objectives
from daemon.core.policy import evaluate
from daemon.core.schedules import last_due, next_due
from daemon.core.snapshot import Backup, DatabaseState, Schedule, SourceState

NY = "America/New_York"
GRACE = timedelta(hours=1)


def db_with(schedule: Schedule | None, starts: list[datetime], in_progress: int = 0) -> DatabaseState:
    backups = tuple(Backup(backup_id=f"a{i:03d}", database="app/DATABASE", source="heroku", kind="scheduled",
                           started_at=s, finished_at=s + timedelta(minutes=5), succeeded=True, size_bytes=100)
                    for i, s in enumerate(starts))
    src = SourceState(source="heroku", backups=backups, in_progress=in_progress,
                      schedules=(schedule,) if schedule else (), schedules_known=True)
    return DatabaseState(name="app/DATABASE", rpo_seconds=86400, rto_seconds={}, sources={"heroku": src})


def missed(db: DatabaseState, now: datetime) -> bool:
    found = {f.check: f for f in evaluate(db, Objectives(schedule_grace=GRACE), [], now)}
    return found["missed_schedule"].active


def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)  # type: ignore[misc]


# -- when is a schedule due --------------------------------------------------------------------------------
@pytest.mark.parametrize(("tz", "now", "due"), [
    ("UTC", utc(2026, 11, 25, 2, 0), utc(2026, 11, 25, 2, 0)),
    ("UTC", utc(2026, 11, 25, 1, 59), utc(2026, 11, 24, 2, 0)),
    # 02:00 in New York is 07:00 UTC in winter (EST) and 06:00 UTC in summer (EDT)
    (NY, utc(2026, 1, 15, 12, 0), utc(2026, 1, 15, 7, 0)),
    (NY, utc(2026, 7, 15, 12, 0), utc(2026, 7, 15, 6, 0)),
    # spring forward, 2026-03-08: 02:00 does not exist in New York; the schedule falls at 03:00 EDT = 07:00 UTC
    (NY, utc(2026, 3, 8, 12, 0), utc(2026, 3, 8, 7, 0)),
    # fall back, 2026-11-01: 02:00 EST happens once, at 07:00 UTC (01:00 happens twice, 02:00 does not)
    (NY, utc(2026, 11, 1, 12, 0), utc(2026, 11, 1, 7, 0)),
    ("Asia/Kolkata", utc(2026, 11, 25, 0, 0), utc(2026, 11, 24, 20, 30)),  # 02:00 IST = 20:30 UTC the day before
    ("Not/AZone", utc(2026, 11, 25, 3, 0), utc(2026, 11, 25, 2, 0)),  # unknown zone: treated as UTC
])
def test_last_due_is_the_schedule_hour_in_its_own_timezone(tz: str, now: datetime, due: datetime) -> None:
    assert last_due(Schedule(hour=2, timezone=tz), now) == due
    assert next_due(Schedule(hour=2, timezone=tz), due - timedelta(seconds=1)) == due


def test_the_night_clocks_spring_forward_in_new_york() -> None:
    sched = Schedule(hour=2, timezone=NY)
    due = utc(2026, 3, 8, 7, 0)
    yesterday_run = utc(2026, 3, 7, 7, 1)
    assert not missed(db_with(sched, [yesterday_run]), due + GRACE)  # exactly at the grace: not yet
    assert missed(db_with(sched, [yesterday_run]), due + GRACE + timedelta(seconds=1))
    assert not missed(db_with(sched, [yesterday_run, due + timedelta(minutes=3)]), due + timedelta(hours=5))


def test_the_night_clocks_fall_back_in_new_york() -> None:
    sched = Schedule(hour=2, timezone=NY)
    due = utc(2026, 11, 1, 7, 0)  # 02:00 EST; a naive "02:00 local = 06:00 UTC" would be an hour early
    previous = utc(2026, 10, 31, 6, 1)
    assert not missed(db_with(sched, [previous]), utc(2026, 11, 1, 7, 30))
    assert not missed(db_with(sched, [previous]), due + GRACE)
    assert missed(db_with(sched, [previous]), due + GRACE + timedelta(seconds=1))


@pytest.mark.parametrize(("offset", "is_missed"), [
    (timedelta(minutes=59, seconds=59), False),
    (timedelta(hours=1), False),
    (timedelta(hours=1, seconds=1), True),
    (timedelta(hours=20), True),
])
def test_missed_schedule_boundary_is_grace_after_the_hour(offset: timedelta, is_missed: bool) -> None:
    sched = Schedule(hour=2, timezone="UTC")
    due = utc(2026, 11, 25, 2, 0)
    assert missed(db_with(sched, [utc(2026, 11, 24, 2, 5)]), due + offset) is is_missed


def test_a_backup_started_since_the_hour_or_running_now_is_not_missed() -> None:
    sched = Schedule(hour=2, timezone="UTC")
    now = utc(2026, 11, 25, 5, 0)
    assert not missed(db_with(sched, [utc(2026, 11, 25, 2, 0)]), now)  # started exactly at the hour
    assert missed(db_with(sched, [utc(2026, 11, 25, 1, 59)]), now)  # started before it: yesterday's slot
    assert not missed(db_with(sched, [utc(2026, 11, 24, 2, 0)], in_progress=1), now)


def test_a_schedule_created_after_its_hour_today_is_not_missed_today() -> None:
    sched = Schedule(hour=2, timezone="UTC", created_at=utc(2026, 11, 25, 10, 0))
    assert not missed(db_with(sched, []), utc(2026, 11, 25, 12, 0))
    assert missed(db_with(sched, []), utc(2026, 11, 26, 3, 1))


def test_no_schedule_is_a_warning_once_schedules_are_known() -> None:
    db = db_with(None, [utc(2026, 11, 25, 2, 0)])
    found = {f.check: f for f in evaluate(db, Objectives(), [], utc(2026, 11, 25, 3, 0))}
    assert found["no_schedule"].active and found["no_schedule"].severity == "warning"
    unknown = DatabaseState(name="x", rpo_seconds=1, rto_seconds={},
                            sources={"heroku": SourceState(source="heroku", schedules_known=False)})
    found = {f.check: f for f in evaluate(unknown, Objectives(), [], utc(2026, 11, 25, 3, 0))}
    assert not found["no_schedule"].active


def test_self_managed_interval_schedule_missed_after_half_the_interval() -> None:
    start = utc(2026, 11, 25, 0, 0)
    src = SourceState(source="archive", schedule_interval_seconds=3600, backups=(
        Backup("x", "db", "archive", "scheduled", start, start + timedelta(minutes=1), True, 10),))
    db = DatabaseState(name="db", rpo_seconds=86400, rto_seconds={}, sources={"archive": src})
    due = start + timedelta(hours=1)
    assert not missed(db, due + timedelta(minutes=30))
    assert missed(db, due + timedelta(minutes=30, seconds=1))


# -- adaptive polling --------------------------------------------------------------------------------------
POLL = HerokuPolling()


def test_polling_follows_up_an_overdue_outcome_and_a_capture_slow_otherwise() -> None:
    sched = Schedule(hour=2, timezone=NY)
    done_today = [utc(2026, 11, 25, 7, 1)]  # 02:00 EST = 07:00 UTC; it finished 6 minutes after its hour
    src = db_with(sched, done_today).sources["heroku"]
    assert desired_interval(src, POLL, 0, utc(2026, 11, 25, 12, 0)) == POLL.slow
    # before the hour and inside the window nothing is news yet: the planner polls as the window closes
    assert desired_interval(src, POLL, 0, utc(2026, 11, 26, 6, 45)) == POLL.slow
    assert desired_interval(src, POLL, 0, utc(2026, 11, 26, 7, 5)) == POLL.slow
    # the window closed at 07:06 and tomorrow's backup is not there: followed up, less often as it stays late
    assert desired_interval(src, POLL, 0, utc(2026, 11, 26, 7, 7)) == POLL.fast
    assert desired_interval(src, POLL, 0, utc(2026, 11, 26, 7, 26)) == timedelta(minutes=5)
    assert desired_interval(src, POLL, 0, utc(2026, 11, 26, 9, 7)) == POLL.slow  # long overdue: baseline
    running = db_with(sched, done_today, in_progress=1).sources["heroku"]
    assert desired_interval(running, POLL, 0, utc(2026, 11, 25, 12, 0)) == POLL.fast


def test_polling_backs_off_after_failures_up_to_the_slow_interval() -> None:
    now = utc(2026, 11, 25, 12, 0)
    got = [desired_interval(None, POLL, n, now) for n in (1, 2, 3, 4, 5, 10)]
    assert got == [timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8), POLL.slow, POLL.slow, POLL.slow]


@freeze_time("2026-11-25 12:00:00")
def test_info_parse_observed_at_uses_the_clock() -> None:
    from collectors.heroku import parse_database_info

    provider, _ = parse_database_info({"plan": "standard-0"})
    assert provider.observed_at == utc(2026, 11, 25, 12, 0)
