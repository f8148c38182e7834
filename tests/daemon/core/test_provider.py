"""What changed in Heroku's incidents between the recorded history and a poll (`transitions`), and how each
transition reads: pure, a table of cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from daemon.core.provider import (
    OPENED,
    RESOLVED,
    UPDATED,
    ProviderEvent,
    ProviderIncident,
    ProviderStatus,
    event_text,
    transitions,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DATA = ProviderIncident("Heroku Postgres connection errors", ("Data",), "yellow",
                        "https://status.heroku.com/incidents/2871", NOW - timedelta(hours=1), "2871",
                        NOW - timedelta(minutes=30))


def status(*incidents: ProviderIncident) -> ProviderStatus:
    return ProviderStatus({}, incidents, 0, NOW)


def recorded(inc: ProviderIncident, key: str | None = None, at: datetime = NOW - timedelta(minutes=3),
             opened_at: datetime = NOW - timedelta(minutes=40)) -> ProviderEvent:
    """The newest record of `inc` as the history holds it."""
    return ProviderEvent(at, key or inc.incident_id or inc.title, UPDATED, inc.title, inc.systems, inc.status,
                         inc.url, inc.since, inc.updated_at, opened_at)


def test_a_new_incident_opens_with_what_it_says_and_the_polls_time() -> None:
    (e,) = transitions([], status(DATA), NOW)
    assert e == ProviderEvent(NOW, "2871", OPENED, DATA.title, ("Data",), "yellow", DATA.url, DATA.since,
                              DATA.updated_at, NOW)
    assert event_text(e) == "Heroku reports an incident on Data: Heroku Postgres connection errors"


def test_the_same_incident_seen_again_records_nothing() -> None:
    assert transitions([recorded(DATA)], status(DATA), NOW) == []
    assert transitions([], status(), NOW) == []


def test_a_new_title_colour_systems_or_update_is_an_update_that_keeps_the_opening_time() -> None:
    for changed in (replace(DATA, title="Connection errors in EU"), replace(DATA, status="red"),
                    replace(DATA, systems=("Apps", "Data")), replace(DATA, updated_at=NOW)):
        (e,) = transitions([recorded(DATA)], status(changed), NOW)
        assert (e.event, e.time, e.opened_at) == (UPDATED, NOW, NOW - timedelta(minutes=40))
        assert (e.title, e.systems, e.status, e.updated_at) == (changed.title, changed.systems, changed.status,
                                                                 changed.updated_at)
    (e,) = transitions([recorded(DATA)], status(replace(DATA, status="red")), NOW)
    assert event_text(e) == "Heroku updated the incident on Data: Heroku Postgres connection errors"


def test_an_incident_no_longer_reported_is_resolved_with_what_it_last_said() -> None:
    apps = replace(DATA, incident_id="2900", title="Apps slow", systems=("Apps",))
    events = transitions([recorded(DATA), recorded(apps)], status(apps), NOW)
    assert [(e.incident, e.event, e.time, e.title, e.status) for e in events] == [
        ("2871", RESOLVED, NOW, DATA.title, "yellow")]
    assert event_text(events[0]) == "Heroku resolved the incident on Data: Heroku Postgres connection errors"


def test_an_incident_without_an_id_is_known_by_its_url_else_its_title() -> None:
    by_url = replace(DATA, incident_id=None)
    colour = ProviderIncident("Data is red", ("Data",), "red", None, None)
    events = transitions([], status(by_url, colour, colour), NOW)  # listed twice: said once
    assert [(e.incident, e.event) for e in events] == [(DATA.url, OPENED), ("Data is red", OPENED)]
    assert transitions([recorded(by_url, key=DATA.url), recorded(colour)], status(by_url, colour), NOW) == []
