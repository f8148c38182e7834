"""Daily backup schedules in their own timezone (pure; no clock: `now` is an argument)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from daemon.core.snapshot import Schedule

#: The abbreviations the Heroku CLI maps when a schedule is created (reference 1.5); stored names may carry them.
_ABBREVIATIONS = {"PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "MST": "America/Boise",
                  "MDT": "America/Boise", "CST": "America/Chicago", "CDT": "America/Chicago",
                  "EST": "America/New_York", "EDT": "America/New_York", "GMT": "Europe/London",
                  "BST": "Europe/London", "CET": "Europe/Paris", "CEST": "Europe/Paris", "Z": "UTC", "": "UTC"}


def zone(name: str) -> ZoneInfo:
    """The IANA zone, or UTC for an unknown name (Heroku maps abbreviations itself, reference 1.5)."""
    name = _ABBREVIATIONS.get(name.strip().upper(), name.strip()) if len(name.strip()) <= 4 else name.strip()
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
