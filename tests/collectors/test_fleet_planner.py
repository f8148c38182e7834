"""The fleet planner places Heroku polls by schedule: right after each schedule's window closes, then at the
even baseline cadence, within the rate budget. Pure: simulated passes over a table of databases, every time
built relative to the schedules under test (no clock, no HTTP: the watchers are never asked to poll)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from collectors.fleet import DEFAULT_WINDOW, MAX_WINDOW, HerokuFleet, usual_window, window_close_after
from collectors.heroku import HerokuWatcher
from daemon.adapters.heroku import HerokuClient, ResolvedDatabase
from daemon.config import HerokuPolling
from daemon.core.schedules import last_due, next_due
from daemon.core.snapshot import Backup, Schedule, SourceState

PASS = timedelta(seconds=30)
TARGET = timedelta(minutes=5)
POLL = HerokuPolling()
LONG = timedelta(days=365)  # resolution, schedules and info are cached: every poll costs one request
HISTORY_DAYS = 3


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Db:
    """One watched database of the table: its schedule (or none), how long after the due time its scheduled
    backups finish, and what happens at the occurrence under test ("ok", "failed", "missed")."""

    name: str
    schedule: Schedule | None
    span: timedelta = timedelta(minutes=5)
    outcome: str = "ok"
    polls: list[datetime] = field(default_factory=list)

    def backups(self, due: datetime, now: datetime) -> tuple[Backup, ...]:
        """Scheduled backups finished by `now`: HISTORY_DAYS days before `due`, and the one due at `due`."""
        if self.schedule is None:
            return ()
        dues = [due]
        for _ in range(HISTORY_DAYS):  # the schedule's own earlier occurrences (a DST change moves them in UTC)
            dues.insert(0, last_due(self.schedule, dues[0] - timedelta(seconds=1)))
        out = []
        for days, at in zip(range(HISTORY_DAYS, -1, -1), dues, strict=True):
            if days == 0 and self.outcome == "missed":
                continue
            if at + self.span <= now:
                out.append(Backup(backup_id=f"a{days:03d}", database=self.name, source="heroku", kind="scheduled",
                                  started_at=at + timedelta(seconds=30), finished_at=at + self.span,
                                  succeeded=days > 0 or self.outcome == "ok", size_bytes=100))
        return tuple(out)

    def source(self, due: datetime, now: datetime) -> SourceState:
        return SourceState(source="heroku", backups=self.backups(due, now), schedules_known=True,
                           schedules=(self.schedule,) if self.schedule else ())


@pytest.fixture
def api() -> Iterator[HerokuClient]:
    # The watchers carry an API handle but the planner never calls it: nothing listens on this address.
    client = HerokuClient("hrku-planner-token-0123456789", platform_url="http://127.0.0.1:9",
                          data_url="http://127.0.0.1:9")
    yield client
    client.close()


def fleet_of(dbs: list[Db], api: HerokuClient, share: float, start: datetime) -> HerokuFleet:
    watchers = {}
    for db in dbs:
        w = HerokuWatcher(db.name, db.name, "DATABASE", api, resolve_every=LONG, schedules_every=LONG,
                          info_every=LONG)
        w.resolved = ResolvedDatabase(db.name, "DATABASE", f"id-{db.name}", f"pg-{db.name}", db.name, "standard-0")
        w.resolved_at = w.schedules_at = w.info_at = start
        watchers[db.name] = w
    return HerokuFleet(watchers=watchers, polling=POLL, share=share)


def run(dbs: list[Db], api: HerokuClient, share: float, start: datetime, end: datetime,
        due_of: dict[str, datetime]) -> list[tuple[datetime, int]]:
    """Passes every 30 s from `start` to `end`; each database already polled once at `start` (its schedule
    known, as after the first cycle). Returns (pass time, requests) of every pass."""
    fleet = fleet_of(dbs, api, share, start)
    by_name = {db.name: db for db in dbs}
    known: dict[str, SourceState | None] = {}
    for db in dbs:
        known[db.name] = db.source(due_of[db.name], start)
        fleet.record(db.name, known[db.name], True, start)
    spent: list[tuple[datetime, int]] = []
    now = start + PASS
    while now <= end:
        chosen, report = fleet.plan(now, PASS.total_seconds(), None)
        for name in chosen:
            db = by_name[name]
            db.polls.append(now)
            known[name] = db.source(due_of[name], now)
            fleet.record(name, known[name], True, now)
        report.requests = report.polled = len(chosen)
        fleet.finish(report, PASS.total_seconds(), known, now)
        spent.append((now, len(chosen)))
        now += PASS
    return spent


def most_in_any_hour(spent: list[tuple[datetime, int]]) -> int:
    """The most requests spent by the passes of any 60 minutes."""
    best = 0
    for i, (at, _) in enumerate(spent):
        best = max(best, sum(n for t, n in spent[i:] if t < at + timedelta(hours=1)))
    return best


def hour_budget(share: float) -> float:
    """The share of the account's 4,500 requests an hour, plus the one minute of refill the fleet's own bucket
    may hold at the start of any hour (the burst `HerokuFleet.allowance` allows by design)."""
    return share * 4500 + share * 75


def first_poll_after(db: Db, moment: datetime) -> datetime | None:
    return next((p for p in db.polls if p >= moment), None)


# -- the window ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("spans", "window"), [
    ([], DEFAULT_WINDOW),  # no history yet
    ([timedelta(minutes=4), timedelta(minutes=6), timedelta(minutes=5)], timedelta(minutes=5)),  # the median
    ([timedelta(seconds=10)] * 3, timedelta(minutes=1)),  # bounded below
    ([timedelta(hours=5)] * 3, MAX_WINDOW),  # bounded above
])
def test_the_window_is_the_median_time_its_scheduled_backups_take_bounded(
        spans: list[timedelta], window: timedelta) -> None:
    sched = Schedule(hour=2, timezone="Europe/Berlin")
    due = utc(2026, 11, 20, 1, 0)  # 02:00 CET
    backups = tuple(Backup(f"a{i:03d}", "db", "heroku", "scheduled", due + timedelta(days=i, seconds=20),
                           due + timedelta(days=i) + span, True, 1) for i, span in enumerate(spans))
    assert usual_window(SourceState(source="heroku", backups=backups, schedules=(sched,))) == window


@pytest.mark.parametrize(("tz", "after", "closes"), [
    # Berlin springs forward on 2026-03-29: 02:00 does not exist, the slot falls at 03:00 CEST = 01:00 UTC
    ("Europe/Berlin", utc(2026, 3, 28, 12, 0), utc(2026, 3, 29, 1, 10)),
    ("Europe/Berlin", utc(2026, 3, 29, 12, 0), utc(2026, 3, 30, 0, 10)),  # 02:00 CEST = 00:00 UTC
    # New York falls back on 2026-11-01: 02:00 EST = 07:00 UTC
    ("America/New_York", utc(2026, 10, 31, 12, 0), utc(2026, 11, 1, 7, 10)),
    # a window still open at `after` closes today, one that closed already closes again tomorrow
    ("UTC", utc(2026, 11, 25, 2, 5), utc(2026, 11, 25, 2, 10)),
    ("UTC", utc(2026, 11, 25, 2, 10), utc(2026, 11, 26, 2, 10)),
])
def test_the_next_window_closes_at_due_plus_window_in_the_schedules_own_zone(
        tz: str, after: datetime, closes: datetime) -> None:
    assert window_close_after((Schedule(hour=2, timezone=tz),), timedelta(minutes=10), after) == closes
    assert window_close_after((), timedelta(minutes=10), after) is None


# -- placing polls ------------------------------------------------------------------------------------------
def test_databases_sharing_one_schedule_hour_are_each_polled_within_5_minutes_after_their_window(
        api: HerokuClient) -> None:
    """40 databases back up at 02:00 Berlin time on the night its clocks spring forward, taking 2 to 12
    minutes; one in ten fails, one in ten is missed. 160 more have no schedule. The budget (10% of the
    account: 7.5 requests/min) cannot poll everyone every 15 minutes, but it can poll each of the 40 once as
    its window closes."""
    sched = Schedule(hour=2, timezone="Europe/Berlin")
    due = next_due(sched, utc(2026, 3, 28, 12, 0))
    assert due == utc(2026, 3, 29, 1, 0)
    outcomes = ("failed", "missed") + ("ok",) * 8
    scheduled = [Db(f"s{i:03d}", sched, timedelta(minutes=2 + i % 11), outcomes[i % 10]) for i in range(40)]
    others = [Db(f"n{i:03d}", None) for i in range(160)]
    dbs = scheduled + others
    start = due - timedelta(hours=2)
    spent = run(dbs, api, 0.1, start, due + timedelta(hours=1), {db.name: due for db in dbs})
    late = {}
    for db in scheduled:
        window_end = due + db.span
        seen = first_poll_after(db, window_end)
        if seen is None or seen - window_end > TARGET:
            late[db.name] = (db.outcome, db.span, seen)
    assert late == {}
    assert most_in_any_hour(spent) <= hour_budget(0.1)


def test_a_database_without_schedule_keeps_its_cadence_while_a_schedule_hour_is_busy(api: HerokuClient) -> None:
    """The budget covers the baseline (200 databases every 15 minutes) plus the 40 windows closing around 02:00
    New York time on the night the clocks fall back: the unscheduled databases are polled every 15 minutes
    throughout, not more, not less."""
    sched = Schedule(hour=2, timezone="America/New_York")
    due = next_due(sched, utc(2026, 10, 31, 12, 0))
    assert due == utc(2026, 11, 1, 7, 0)
    dbs = ([Db(f"s{i:03d}", sched, timedelta(minutes=2 + i % 11)) for i in range(40)]
           + [Db(f"n{i:03d}", None) for i in range(160)])
    start = due - timedelta(hours=1)
    spent = run(dbs, api, 0.4, start, due + timedelta(hours=2), {db.name: due for db in dbs})
    for db in dbs:
        if db.schedule is None:
            # (the first poll after `start` may wait a few minutes: every database was polled at `start`)
            gaps = [b - a for a, b in zip(db.polls, db.polls[1:], strict=False)]
            kept = all(POLL.slow <= g <= POLL.slow + timedelta(minutes=1) for g in gaps)
            assert len(gaps) >= 10 and kept, (db.name, gaps)
        else:
            assert first_poll_after(db, due + db.span) - (due + db.span) <= TARGET  # type: ignore[operator]
    assert most_in_any_hour(spent) <= hour_budget(0.4)


def test_schedules_spread_over_hours_and_zones_across_a_dst_change_are_each_seen_within_5_minutes(
        api: HerokuClient) -> None:
    """96 databases, one per hour of the day in each of four zones, over the 26 hours around Berlin's spring
    forward (2026-03-29), with the budget of a large fleet's share (5%: 3.75 requests/min); every window of
    the day is polled within 5 minutes of closing, and no 60 minutes spend more than the share."""
    zones = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")
    start = utc(2026, 3, 28, 22, 0)
    dbs = [Db(f"{z}-{h:02d}", Schedule(hour=h, timezone=z), timedelta(minutes=3 + (h * 7) % 20),
              ("ok", "ok", "ok", "failed", "missed")[h % 5]) for z in zones for h in range(24)]
    due_of = {db.name: next_due(db.schedule, start) for db in dbs if db.schedule}
    spent = run(dbs, api, 0.05, start, start + timedelta(hours=26), due_of)
    late = {}
    for db in dbs:
        window_end = due_of[db.name] + db.span
        seen = first_poll_after(db, window_end)
        if seen is None or seen - window_end > TARGET:
            late[db.name] = (due_of[db.name], db.span, seen)
    assert late == {}
    assert most_in_any_hour(spent) <= hour_budget(0.05)
