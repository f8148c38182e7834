"""Daily backup schedules in their own timezone (pure; no clock: `now` is an argument)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.state import Schedule


def zone(name: str) -> ZoneInfo:
    """The IANA zone, or UTC for an unknown name (Heroku maps abbreviations itself, reference 1.5)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def occurrence(schedule: Schedule, day: datetime) -> datetime:
    """The schedule's instant on the local calendar day of `day` (UTC). A nonexistent local time (spring
    forward) resolves to the instant after the gap, an ambiguous one (fall back) to its first occurrence."""
    tz = zone(schedule.timezone)
    local = datetime.combine(day.astimezone(tz).date(), time(schedule.hour), tzinfo=tz)
    return local.astimezone(UTC)


def last_due(schedule: Schedule, now: datetime) -> datetime:
    """The most recent scheduled instant at or before `now`."""
    today = occurrence(schedule, now)
    if today <= now:
        return today
    local_yesterday = now.astimezone(zone(schedule.timezone)) - timedelta(days=1)
    return occurrence(schedule, local_yesterday)


def next_due(schedule: Schedule, now: datetime) -> datetime:
    """The next scheduled instant after `now`."""
    today = occurrence(schedule, now)
    if today > now:
        return today
    local_tomorrow = now.astimezone(zone(schedule.timezone)) + timedelta(days=1)
    return occurrence(schedule, local_tomorrow)
