"""RPO risk projected from the schedule, the breach tolerance and `rpo_unachievable`, as tables.

Every time is built relative to the due time of the schedule under test (a daily backup at 02:00 UTC, the
SuoOps configuration), never read from the wall clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.config import Objectives
from daemon.core.policy import evaluate, is_healthy
from daemon.core.risk import next_expected, tolerance_seconds
from daemon.core.snapshot import (
    DatabaseState,
    Finding,
    Schedule,
    Snapshot,
    StateHolder,
)
from daemon.metrics import SnapshotCollector
from daemon.status import database_status, status_table
from tests.support import DAILY, JITTERY, TOOK, world

DUE = datetime(2024, 6, 10, 2, 0, tzinfo=UTC)  # a due time of the schedule; history is the week before it
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MOVED = Schedule(hour=8, timezone="UTC", created_at=DUE + 10 * HOUR)  # moved from 02:00 to 08:00 today at noon
#: The usual start delays of the past week (minutes after 02:00), oldest first (JITTERY in tests.support).
STEADY = (3, 3, 3, 3, 3, 3, 3)


def starts(delays: Iterable[float], first: datetime = DUE - 7 * DAY) -> list[datetime]:
    """One scheduled start a day from `first`, `delay` minutes after the due time."""
    return [first + i * DAY + d * MIN for i, d in enumerate(delays)]


def objectives(**overrides: Any) -> Objectives:
    return Objectives.model_validate(overrides)


def check(db: DatabaseState, now: datetime, objs: Objectives | None = None) -> dict[str, Finding]:
    return {f.check: f for f in evaluate(db, objs or objectives(), [], now)}


def active(db: DatabaseState, now: datetime, objs: Objectives | None = None) -> set[str]:
    return {c for c, f in check(db, now, objs).items() if f.active}


# -- a healthy daily schedule ------------------------------------------------------------------------------

HEALTHY = starts(JITTERY + JITTERY[:4])  # the past week and the next three days (plus one), on time


@pytest.mark.parametrize("offset", [timedelta(minutes=m) for m in range(0, 3 * 24 * 60, 15)],
                         ids=lambda o: f"due+{int(o.total_seconds() // 60)}m")
def test_a_healthy_daily_schedule_is_never_at_risk_nor_breached(offset: timedelta) -> None:
    now = DUE + offset
    found = active(world(now, HEALTHY), now)
    assert not found & {"rpo_at_risk", "rpo_breach", "missed_schedule", "last_attempt_failed"}, found


@pytest.mark.parametrize("minute", range(0, 12), ids=lambda m: f"02:{m:02d}")
def test_a_healthy_schedule_is_not_breached_in_the_minutes_its_backup_starts_and_runs(minute: int) -> None:
    """The minutes when yesterday's recovery point is just over 24 h old: today's start is due or running."""
    now = DUE + minute * MIN
    found = active(world(now, starts((*JITTERY, 5))), now)
    assert not found & {"rpo_at_risk", "rpo_breach"}, found


# -- late starts, misses, failures -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("today", "offset", "expected"),
    [
        pytest.param(13, 12 * MIN, set(), id="10m-later-than-usual-pending"),
        pytest.param(13, 14 * MIN, set(), id="10m-later-than-usual-running"),
        pytest.param(13, 16 * MIN, set(), id="10m-later-than-usual-done"),
        pytest.param(80, 18 * MIN, set(), id="late-at-tolerance-exactly"),
        pytest.param(80, 18 * MIN + timedelta(seconds=1), {"rpo_breach"}, id="late-beyond-tolerance"),
        pytest.param(80, 61 * MIN, {"rpo_breach", "missed_schedule"}, id="late-beyond-grace"),
        pytest.param(None, 17 * MIN, set(), id="not-started-inside-tolerance"),
        pytest.param(None, 59 * MIN, {"rpo_breach"}, id="not-started-beyond-tolerance"),
    ],
)
def test_start_later_than_usual(today: int | None, offset: timedelta, expected: set[str]) -> None:
    """Usual start 02:03 (2 min capture): tolerance is the 15 min floor, so data at risk may reach 24h15m."""
    begun = starts(STEADY) + ([DUE + today * MIN] if today is not None else [])
    now = DUE + offset
    found = active(world(now, begun), now) & {"rpo_breach", "rpo_at_risk", "missed_schedule"}
    assert found == expected


def test_a_missed_schedule_is_at_risk_before_it_is_a_breach() -> None:
    """A longer tolerance (history of late starts) leaves room for the miss to show before the breach."""
    jitter = (3, 50, 3, 50, 3, 50, 3)  # tolerance 47 min jitter + 2 min capture = 49 min; grace 30 min
    objs = objectives(schedule_grace="30m")
    now = DUE + 31 * MIN
    db = world(now, starts(jitter))
    found = check(db, now, objs)
    assert found["missed_schedule"].active and found["rpo_at_risk"].active
    assert not found["rpo_breach"].active
    assert "missed" in found["rpo_at_risk"].hint


@pytest.mark.parametrize(
    ("begun", "failed", "offset", "expected"),
    [
        pytest.param([], [], HOUR, {"rpo_breach"}, id="no-backup-at-all"),
        pytest.param([*starts(STEADY), DUE + 3 * MIN], [DUE + 3 * MIN], HOUR,
                     {"rpo_breach", "last_attempt_failed"}, id="todays-backup-failed"),
        pytest.param(starts(STEADY), [], 2 * HOUR, {"rpo_breach", "missed_schedule"}, id="missed-for-2h"),
    ],
)
def test_breach_cases(begun: list[datetime], failed: list[datetime], offset: timedelta, expected: set[str]) -> None:
    now = DUE + offset
    found = active(world(now, begun, failed=failed), now) & {"rpo_breach", "rpo_at_risk", "missed_schedule",
                                                              "last_attempt_failed"}
    assert found == expected


# -- projection -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("rpo", "schedule", "offset", "at_risk"),
    [
        pytest.param("12h", DAILY, 3 * HOUR, False, id="12h-rpo-daily-fresh"),
        pytest.param("12h", DAILY, 9 * HOUR + 30 * MIN, False, id="12h-rpo-daily-below-80pct"),
        pytest.param("12h", DAILY, 10 * HOUR, True, id="12h-rpo-daily-next-backup-too-late"),
        pytest.param("24h", MOVED, 21 * HOUR, True, id="schedule-moved-later"),
        pytest.param("24h", MOVED, 12 * HOUR, False, id="schedule-moved-later-early"),
        pytest.param("24h", DAILY, 21 * HOUR, False, id="24h-rpo-daily-21h"),
        pytest.param("24h", DAILY, 23 * HOUR + 59 * MIN, False, id="24h-rpo-daily-just-before-due"),
    ],
)
def test_at_risk_is_projected_from_the_next_expected_backup(rpo: str, schedule: Schedule, offset: timedelta,
                                                            at_risk: bool) -> None:
    """Today's backup ran at 02:03; at risk when the next expected one comes too late and the data at risk has
    reached the at-risk share of the RPO (so an emergency capture is timely, not taken right after a backup)."""
    begun = starts((*STEADY, 3))
    now = DUE + offset
    found = check(world(now, begun, schedules=(schedule,)), now, objectives(rpo=rpo))
    assert found["rpo_at_risk"].active is at_risk
    assert not found["rpo_breach"].active


def test_next_expected_backup_is_the_due_time_plus_the_usual_delay_or_the_running_capture() -> None:
    objs = objectives()
    history = starts(JITTERY)  # median delay 3 min
    before = DUE - HOUR
    assert next_expected(world(before, history), objs, before) == {"heroku": DUE + 3 * MIN}
    late = DUE + 10 * MIN  # due, not started: expected now
    assert next_expected(world(late, history), objs, late) == {"heroku": late}
    running = DUE + 4 * MIN + 30 * timedelta(seconds=1)
    assert next_expected(world(running, [*history, DUE + 4 * MIN]), objs, running) == {"heroku": DUE + 4 * MIN}
    after = DUE + HOUR  # the last seven delays now have a median of 4 min
    assert next_expected(world(after, [*history, DUE + 4 * MIN]), objs, after) == {"heroku": DUE + DAY + 4 * MIN}


# -- tolerance --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("delays", "took", "overrides", "tolerance"),
    [
        pytest.param(STEADY, TOOK, {}, 15 * MIN, id="steady-floor"),
        pytest.param((3, 3), TOOK, {}, 15 * MIN, id="short-history-floor"),
        pytest.param((0, 40, 10, 20, 5, 0, 30), 5 * MIN, {}, 45 * MIN, id="learned-jitter-plus-capture"),
        pytest.param((0, 90, 10, 20, 5, 0, 30), 5 * MIN, {}, HOUR, id="ceiling"),
        pytest.param(STEADY, TOOK, {"rpo_breach_tolerance_min": "5m"}, 5 * MIN, id="configured-floor"),
        pytest.param((0, 40, 10, 20, 5, 0, 30), 5 * MIN, {"rpo_breach_tolerance_max": "30m"}, 30 * MIN,
                     id="configured-ceiling"),
    ],
)
def test_breach_tolerance_is_learned_and_bounded(delays: tuple[int, ...], took: timedelta,
                                                 overrides: dict[str, str], tolerance: timedelta) -> None:
    now = DUE - HOUR
    db = world(now, starts(delays), took=took)
    assert tolerance_seconds(db, objectives(**overrides), now) == tolerance.total_seconds()
    assert check(db, now, objectives(**overrides))["rpo_breach"].threshold == (DAY + tolerance).total_seconds()


def test_without_a_schedule_the_age_rule_stays_and_there_is_no_tolerance() -> None:
    now = DUE + 19 * HOUR  # 80 % of the RPO is reached at 21:15 after the 02:03 backup
    db = world(now, starts((*STEADY, 3)), schedules=())
    assert tolerance_seconds(db, objectives(), now) == 0
    assert check(db, now)["rpo_at_risk"].active is False
    later = DUE + 3 * MIN + 19 * HOUR + 12 * MIN
    assert check(world(later, starts((*STEADY, 3)), schedules=()), later)["rpo_at_risk"].active
    past = DUE + DAY + 3 * MIN + timedelta(seconds=1)
    assert check(world(past, starts((*STEADY, 3)), schedules=()), past)["rpo_breach"].active


# -- rpo_unachievable -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kw", "rpo", "active"),
    [
        pytest.param({}, "24h", True, id="suoops-daily-24h-rpo"),
        pytest.param({"schedules": (DAILY, Schedule(hour=14, timezone="UTC"))}, "24h", False, id="twice-daily"),
        pytest.param({}, "25h", False, id="daily-25h-rpo"),
        pytest.param({"pitr": True}, "24h", False, id="continuous-protection-on"),
        pytest.param({"schedules": (), "interval": 6 * 3600.0, "source": "archive"}, "24h", False,
                     id="self-managed-every-6h"),
        pytest.param({"schedules": ()}, "24h", False, id="no-schedule"),
    ],
)
def test_rpo_unachievable_when_interval_jitter_and_capture_time_exceed_the_rpo(kw: dict[str, Any], rpo: str,
                                                                                active: bool) -> None:
    now = DUE + HOUR
    begun = starts((*JITTERY, 3))
    if kw.get("interval"):
        begun = [DUE - 20 * HOUR + i * 6 * HOUR for i in range(4)]
    found = check(world(now, begun, **kw), now, objectives(rpo=rpo))
    assert found["rpo_unachievable"].active is active


def test_rpo_unachievable_is_one_warning_with_the_numbers_and_what_to_change() -> None:
    now = DUE + HOUR
    found = check(world(now, starts((*JITTERY, 3))), now)
    f = found["rpo_unachievable"]
    assert f.severity == "warning"
    assert f.value == pytest.approx((DAY + 3 * MIN + TOOK).total_seconds())  # jitter 5m - 2m = 3m
    for words in ("daily at 02:00 UTC", "interval 1d", "start jitter 3m", "capture time 2m", "RPO",
                  "second scheduled backup", "continuous protection", "honest RPO of at least 24h15m"):
        assert words in f.hint, (words, f.hint)
    assert is_healthy(found.values())


def test_rpo_unachievable_without_history_is_not_claimed() -> None:
    now = DUE + HOUR
    assert not check(world(now, []), now)["rpo_unachievable"].active


# -- metrics ----------------------------------------------------------------------------------------------

def test_next_expected_backup_and_tolerance_are_exported() -> None:
    now = DUE + HOUR
    db = world(now, starts((*JITTERY, 3)))
    db = DatabaseState(**{**db.__dict__, "evaluated_at": now, "rpo_tolerance_seconds": 900.0,
                          "next_expected": next_expected(db, objectives(), now)})
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(StateHolder(Snapshot(databases={"shop": db}))))
    labels = {"database": "shop", "source": "heroku"}
    assert registry.get_sample_value("pgbackup_next_expected_backup_timestamp_seconds", labels) == (
        DUE + DAY + 3 * MIN).timestamp()
    assert registry.get_sample_value("pgbackup_rpo_tolerance_seconds", {"database": "shop"}) == 900.0


def test_the_status_document_and_table_say_when_the_next_backup_is_expected_and_when_a_breach_would_begin() -> None:
    now = DUE + HOUR
    db = world(now, starts((*JITTERY, 3)))
    objs = objectives()
    db = DatabaseState(**{**db.__dict__, "evaluated_at": now, "findings": evaluate(db, objs, [], now),
                          "rpo_tolerance_seconds": tolerance_seconds(db, objs, now),
                          "next_expected": next_expected(db, objs, now)})
    doc = database_status(db, now)
    newest = DUE + 3 * MIN  # today's backup, started 3 minutes after 02:00
    assert doc["next_expected_backup"] == (DUE + DAY + 3 * MIN).isoformat()
    assert doc["next_expected_by_source"] == {"heroku": (DUE + DAY + 3 * MIN).isoformat()}
    assert doc["rpo_tolerance_seconds"] == db.rpo_tolerance_seconds > 0
    assert doc["breach_at"] == (newest + DAY + timedelta(seconds=db.rpo_tolerance_seconds)).isoformat()
    table = status_table(Snapshot(databases={"shop": db}), now)
    assert "next good backup expected from heroku at 2024-06-11 02:03 UTC (in 23h3m)" in table
    assert f"breach after 2024-06-11 02:{3 + int(db.rpo_tolerance_seconds // 60):02d} UTC (RPO 1d + " in table


def test_without_a_schedule_the_status_has_no_next_backup_but_still_the_breach_time() -> None:
    now = DUE + HOUR
    db = world(now, [DUE], schedules=())
    db = DatabaseState(**{**db.__dict__, "evaluated_at": now})
    doc = database_status(db, now)
    assert doc["next_expected_backup"] is None and doc["next_expected_by_source"] == {}
    assert doc["breach_at"] == (DUE + DAY).isoformat()
    assert "next good backup expected" not in status_table(Snapshot(databases={"shop": db}), now)


def test_the_check_tables_header_stands_over_its_values_whatever_their_length() -> None:
    """Each column starts where its header starts, however long a database name or backup id is."""
    now = DUE + HOUR
    short = DatabaseState(**{**world(now, [DUE]).__dict__, "name": "a", "evaluated_at": now})
    long = DatabaseState(**{**world(now, [DUE]).__dict__, "name": "billing-" * 6 + "primary", "evaluated_at": now})
    table = status_table(Snapshot(databases={"a": short, long.name: long}), now).splitlines()
    header = next(line for line in table if line.startswith("DATABASE"))
    rows = [line for line in table if line.startswith(("a ", "billing-"))]
    assert len(rows) == 2
    starts = [header.index(h) for h in ("STATUS", "NEWEST GOOD BACKUP")]
    for row in rows:
        for start in starts:
            assert row[start - 2:start] == "  " and row[start] != " ", (header, row)
    ends = [header.index("DATA AT RISK") + len("DATA AT RISK"), len(header)]
    for row in rows:
        assert all(row[end - 1] != " " and (end == len(row) or row[end] == " ") for end in ends), (header, row)


def test_an_evaluation_runs_outside_the_snapshot_lock_and_keeps_what_others_wrote_meanwhile() -> None:
    """A slow evaluation (a large fleet) must not hold up a capture's progress or a drill's result: the other
    writer finishes while the evaluation is still running, and the evaluation, run again on the newer snapshot,
    keeps what it wrote."""
    import threading

    holder = StateHolder(Snapshot(databases={"shop": DatabaseState(name="shop", rpo_seconds=86400, rto_seconds={})}))
    evaluating, go, written = threading.Event(), threading.Event(), threading.Event()
    calls: list[int] = []

    def evaluate_all(snap: Snapshot) -> Snapshot:
        calls.append(snap.version)
        if len(calls) == 1:
            evaluating.set()
            assert go.wait(30), "the other writer never finished"
        return Snapshot(databases={n: DatabaseState(**{**db.__dict__, "evaluated_at": DUE})
                                   for n, db in snap.databases.items()}, version=snap.version)

    evaluation = threading.Thread(target=holder.update_outside, args=(evaluate_all,))
    evaluation.start()
    assert evaluating.wait(30)

    def other_writer() -> None:  # e.g. a capture starting: its progress on the database
        holder.update_database("shop", lambda db: DatabaseState(**{**db.__dict__, "rpo_seconds": 3600}))
        written.set()

    threading.Thread(target=other_writer).start()
    assert written.wait(10), "the other writer waited for the evaluation (it ran under the snapshot lock)"
    go.set()
    evaluation.join(30)
    final = holder.current().databases["shop"]
    assert final.rpo_seconds == 3600 and final.evaluated_at == DUE  # both writes kept
    assert len(calls) == 2 and holder.current().version == 2


# -- the clocks change under a daily schedule in its own timezone ----------------------------------------------

BERLIN = Schedule(hour=2, timezone="Europe/Berlin")
NEW_YORK = Schedule(hour=2, timezone="America/New_York")


def dues(schedule: Schedule, around: datetime, days: int) -> list[datetime]:
    """The schedule's due times from `days` before `around` to `days` after it (its own timezone's rules)."""
    from daemon.core.schedules import last_due, next_due

    out = [last_due(schedule, around - days * DAY)]
    while out[-1] < around + days * DAY:
        out.append(next_due(schedule, out[-1]))
    return out


@pytest.mark.parametrize("schedule, change", [
    (BERLIN, datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),  # summer time ends in Europe/Berlin
    (NEW_YORK, datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),  # and in America/New_York
])
def test_the_night_the_clocks_go_back_a_schedule_on_time_is_not_a_breach(schedule: Schedule, change: datetime) -> None:
    """A daily backup at 02:00 local time is 25 h after the one before when summer time ends: its schedule, run
    on time, neither breaches a 1 d RPO nor calls for an emergency capture; the tolerance says why."""
    times = dues(schedule, change, 8)
    gaps = [(b - a) for a, b in itertools.pairwise(times)]
    long_gap = gaps.index(25 * HOUR)  # the schedule itself: one gap of 25 h
    before, after = times[long_gap], times[long_gap + 1]
    begun = [d + 3 * MIN for d in times if d <= after]  # every backup 3 minutes after its due time
    for now in (before + 23 * HOUR, before + 24 * HOUR + 30 * MIN, after + 2 * MIN):  # 24h32m at risk at most
        db = world(now, begun, schedules=(schedule,))
        found = check(db, now)
        assert not found["rpo_breach"].active and not found["rpo_at_risk"].active, (now, found["rpo_breach"].hint)
        assert tolerance_seconds(db, objectives(), now) == pytest.approx(15 * 60 + 3600)
    assert "the clocks going back added to the schedule's gap" in found["rpo_breach"].hint
    # the next backup missed: a breach once 25 h plus the usual tolerance have passed, not an hour later
    missed = [b for b in begun if b < after]
    db = world(after + 30 * MIN, missed, schedules=(schedule,))
    assert check(db, after + 30 * MIN)["rpo_breach"].active
    assert not check(world(after + 10 * MIN, missed, schedules=(schedule,)), after + 10 * MIN)["rpo_breach"].active


def test_spring_forward_and_ordinary_days_add_nothing_to_the_tolerance() -> None:
    spring = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # summer time begins in Europe/Berlin: a 23 h gap
    for around in (spring, spring + 30 * DAY):
        times = dues(BERLIN, around, 3)
        begun = [d + 3 * MIN for d in times if d <= around]
        db = world(around + 20 * HOUR, begun, schedules=(BERLIN,))
        assert tolerance_seconds(db, objectives(), around + 20 * HOUR) == pytest.approx(15 * 60)
