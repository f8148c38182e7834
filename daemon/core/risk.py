"""RPO risk projected from a database's backup schedules (pure; no clock: `now` is an argument).

A schedule's backups do not start on the second: Heroku starts a scheduled backup some minutes into its hour,
and a capture takes a while before it counts. So on a healthy schedule the data at risk passes
"interval" by a little every day. This module learns, from the history of each scheduled source:

- the usual start delay (median of the recent scheduled starts after their due time),
- the start jitter (spread of those delays) and the usual capture time,

and from them answers three questions the policy asks:

- `tolerance_seconds`: how far past the RPO data at risk may normally go before it is a breach
  (jitter + capture time, bounded by the objectives' floor and ceiling; 0 without a schedule), plus the hour a
  daily schedule's own gap grows the night its timezone leaves summer time (25 h between two backups that the
  schedule delivers on time: a fact of the schedule, not a failure, so it is no page);
- `next_expected`: when the next good backup of each scheduled source is expected to start (its
  recovery point): a capture running now, the current due time plus the usual delay when it has not started
  yet, or the next due time plus the usual delay;
- `cadences`: the numbers `rpo_unachievable` compares with the RPO (interval + jitter + capture time).
"""

from __future__ import annotations

import itertools
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.config import Objectives
from daemon.core.durations import format_duration
from daemon.core.schedules import last_due, next_due
from daemon.core.snapshot import Backup, DatabaseState, SourceState

#: How many recent scheduled starts the delay, jitter and capture time are learned from.
HISTORY = 7
#: Fewer learned starts than this: the jitter is unknown and the tolerance is the objectives' floor.
MIN_HISTORY = 3
DAY = 86400.0


@dataclass(frozen=True)
class Cadence:
    """What one scheduled source's history shows (seconds)."""

    source: str
    interval: float  # the longest gap between two scheduled starts
    delay: float  # usual start delay after the due time
    jitter: float  # spread of the recent start delays (0 while the history is short)
    duration: float  # usual capture time of its good scheduled backups
    samples: int  # starts learned from
    what: str  # the schedule in words, for hints

    @property
    def worst_exposure(self) -> float:
        """Data at risk just before the next backup of this schedule completes, on a normal day."""
        return self.interval + self.jitter + self.duration


def cadence(src: SourceState, objectives: Objectives, now: datetime) -> Cadence | None:
    """The cadence of a scheduled source, None when it has no schedule."""
    if src.schedules:
        interval = _daily_interval(src, now)
        delays = [d for b in _scheduled(src, now) if (d := _daily_delay(src, b)) is not None and d < interval / 2]
        what = ", ".join(f"daily at {s.hour:02d}:00 {s.timezone or 'UTC'}" for s in src.schedules)
    elif src.schedule_interval_seconds:
        interval = src.schedule_interval_seconds
        starts = sorted(b.started_at for b in _scheduled(src, now))
        gaps = [(b - a).total_seconds() - interval for a, b in itertools.pairwise(starts)]
        delays = [max(0.0, g) for g in gaps if g < interval / 2]
        what = f"every {_human(interval)}"
    else:
        return None
    ceiling = objectives.rpo_breach_tolerance_max.total_seconds()
    recent = delays[-HISTORY:]
    delay = min(statistics.median(recent), ceiling) if recent else 0.0
    jitter = min(max(recent) - min(recent), ceiling) if len(recent) >= MIN_HISTORY else 0.0
    durations = [d for b in _scheduled(src, now) if b.succeeded and (d := b.duration_seconds) is not None]
    duration = statistics.median(durations[-HISTORY:]) if durations else 0.0
    return Cadence(src.source, interval, delay, jitter, duration, len(recent), what)


def cadences(db: DatabaseState, objectives: Objectives, now: datetime) -> list[Cadence]:
    """The cadence of every scheduled source of the database."""
    return [c for s in db.sources.values() if (c := cadence(s, objectives, now)) is not None]


def tolerance_seconds(db: DatabaseState, objectives: Objectives, now: datetime) -> float:
    """How far past the RPO data at risk may go before it is a breach: 0 without a schedule; otherwise the
    normal overshoot of the best-known schedule (start jitter + capture time), at least the floor and at most
    the ceiling of the objectives (the floor alone while the history is short)."""
    found = cadences(db, objectives, now)
    if not found:
        return 0.0
    floor = objectives.rpo_breach_tolerance_min.total_seconds()
    ceiling = objectives.rpo_breach_tolerance_max.total_seconds()
    learned = max((c.jitter + c.duration) if c.samples >= MIN_HISTORY else 0.0 for c in found)
    return min(max(learned, floor), ceiling) + clock_change_seconds(db)


def clock_change_seconds(db: DatabaseState) -> float:
    """How much longer than its normal interval the gap after the newest good scheduled backup is, because the
    schedule's timezone changes its clocks in between (a daily backup at 02:00 Europe/Berlin is 25 h after the
    one before on the night summer time ends); 0 otherwise. Taken from the due time that backup answered, so it
    holds for the whole exposure until the next backup lands, however late."""
    extra = 0.0
    for src in db.sources.values():
        newest = src.newest_good
        if not src.schedules or newest is None:
            continue
        answered = max(last_due(s, newest.started_at) for s in src.schedules)
        following = min(next_due(s, answered) for s in src.schedules)
        normal = _daily_interval(src, answered)
        extra = max(extra, (following - answered).total_seconds() - normal)
    return extra


def next_expected(db: DatabaseState, objectives: Objectives, now: datetime) -> dict[str, datetime]:
    """Per scheduled source, the expected start (recovery point) of its next good backup."""
    out = {}
    for src in db.sources.values():
        c = cadence(src, objectives, now)
        if c is None:
            continue
        expected = _next_start(src, c, now)
        if expected is not None:
            out[src.source] = expected
    return out


def _next_start(src: SourceState, c: Cadence, now: datetime) -> datetime | None:
    delay = timedelta(seconds=c.delay)
    newest = src.newest_good
    running = [r for r in src.running_started if newest is None or r > newest.started_at]
    if running:
        return min(running)  # a capture under way: its start is the next recovery point
    if src.in_progress:
        return now  # running, start unknown: as if it started now
    starts = [b.started_at for b in src.backups if b.started_at <= now]
    if src.schedules:
        expected = []
        for sched in src.schedules:
            due = last_due(sched, now)
            pending = not any(s >= due for s in starts) and (sched.created_at is None or sched.created_at <= due)
            expected.append(max(now, due + delay) if pending else next_due(sched, now) + delay)
        return min(expected)
    interval = timedelta(seconds=c.interval)
    if starts:
        return max(now, max(starts) + interval + delay)
    return src.schedule_next_at


def _scheduled(src: SourceState, now: datetime) -> list[Backup]:
    """The source's scheduled attempts up to `now`, oldest first."""
    return sorted((b for b in src.backups if b.kind == "scheduled" and b.started_at <= now),
                  key=lambda b: b.started_at)


def _daily_delay(src: SourceState, b: Backup) -> float | None:
    """Seconds between a scheduled start and the due time it answered (the nearest one before it)."""
    delays = [(b.started_at - last_due(s, b.started_at)).total_seconds() for s in src.schedules]
    return min(delays) if delays else None


def _daily_interval(src: SourceState, now: datetime) -> float:
    """The longest gap between consecutive due times of the source's daily schedules (24 h for one)."""
    first = min(next_due(s, now) for s in src.schedules)
    dues = sorted({next_due(s, first - timedelta(seconds=1)) for s in src.schedules})  # one day from `first`
    if len(dues) < 2:
        return DAY
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(dues)]
    gaps.append(DAY - (dues[-1] - dues[0]).total_seconds())
    return max(gaps)


def _human(seconds: float) -> str:
    return format_duration(timedelta(seconds=round(seconds)))
