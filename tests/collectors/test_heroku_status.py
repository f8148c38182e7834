"""Parsing Heroku's status API (`GET /api/v4/current-status`): the documented shape as `heroku status` reads it,
the Heroku double's answers over real HTTP, unknown fields, and documents of the wrong shape; the poller's
incident history in the real SQLite state store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from collectors.boundary import CollectorBoundary
from collectors.heroku_status import HerokuStatusPoller, IncidentHistory, parse_current_status
from daemon.adapters.heroku_status import HerokuStatusClient
from daemon.adapters.statestore import StateStore, open_state_store
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.errors import CollectorError
from daemon.core.provider import incident_text
from daemon.core.snapshot import Snapshot, StateHolder
from tests.doubles.heroku import HerokuDouble
from tests.support import FakeClock

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
GREEN = [{"system": "Apps", "status": "green"}, {"system": "Data", "status": "green"},
         {"system": "Tools", "status": "green"}]


def document(data: str = "green", apps: str = "green", incidents: list[Any] | None = None) -> dict[str, Any]:
    return {"status": [{"system": "Apps", "status": apps}, {"system": "Data", "status": data},
                       {"system": "Tools", "status": "green"}],
            "incidents": incidents or [], "scheduled": []}


def an_incident(**extra: Any) -> dict[str, Any]:
    """An incident with the fields `heroku status` reads (heroku/cli packages/cli/src/commands/status.ts)."""
    return {"title": "Heroku Postgres connection errors", "created_at": "2026-11-25T11:40:00Z",
            "full_url": "https://status.heroku.com/incidents/2871",
            "updates": [{"update_type": "update", "updated_at": "2026-11-25T11:55:00Z", "contents": "Fixing."},
                        {"update_type": "issue", "updated_at": "2026-11-25T11:40:00Z", "contents": "Looking."}],
            **extra}


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(clock=lambda: NOW) as double:
        yield double


def test_all_green_has_no_incident() -> None:
    status = parse_current_status(document(), NOW)
    assert status.systems == {"Apps": "green", "Data": "green", "Tools": "green"}
    assert status.incidents == () and incident_text(status) is None and status.observed_at == NOW
    assert status.colour_value("Data") == 0


def test_an_incident_on_data_with_its_title_url_and_times() -> None:
    status = parse_current_status(document(data="red", incidents=[an_incident()]), NOW)
    (inc,) = status.incidents
    assert inc.title == "Heroku Postgres connection errors" and inc.systems == ("Data",) and inc.status == "red"
    assert inc.url == "https://status.heroku.com/incidents/2871"
    assert inc.since == datetime(2026, 11, 25, 11, 40, tzinfo=UTC)
    assert inc.updated_at == datetime(2026, 11, 25, 11, 55, tzinfo=UTC)  # the newest update
    assert incident_text(status) == "Heroku reports an incident on Data: Heroku Postgres connection errors"
    assert status.colour_value("Data") == 2


def test_apps_and_data_both_troubled_name_both_at_the_worst_colour() -> None:
    status = parse_current_status(document(data="yellow", apps="red", incidents=[an_incident()]), NOW)
    assert status.incidents[0].systems == ("Apps", "Data") and status.incidents[0].status == "red"
    assert incident_text(status) == "Heroku reports an incident on Apps, Data: Heroku Postgres connection errors"


def test_a_colour_without_an_incident_listed_is_said_as_the_colour() -> None:
    status = parse_current_status(document(data="yellow"), NOW)
    assert incident_text(status) == "Heroku reports an incident on Data: Data is yellow"


def test_an_incident_while_only_tools_is_troubled_concerns_nobody_here() -> None:
    doc = document(incidents=[an_incident(title="Dashboard slow")])
    doc["status"][2]["status"] = "yellow"
    status = parse_current_status(doc, NOW)
    assert status.incidents == () and status.colour_value("Tools") == 1


def test_unknown_fields_and_a_resolved_incident_are_ignored() -> None:
    doc = document(data="red", incidents=[an_incident(id=7, impact="major", resolved=False),
                                          an_incident(title="Yesterday's", resolved=True)])
    doc["status"].append({"system": "Spaces", "status": "green", "region": "eu"})
    doc["generated_by"] = "a future version"
    doc["scheduled"] = [{"title": "Maintenance", "anything": 1}]
    status = parse_current_status(doc, NOW)
    assert [i.title for i in status.incidents] == ["Heroku Postgres connection errors"]
    assert status.incidents[0].incident_id == "7" and status.scheduled == 1


@pytest.mark.parametrize(("doc", "field"), [
    ([], "the document must be an object"),
    ({"incidents": []}, "'status' must be a list"),
    ({"status": GREEN}, "'incidents' must be a list"),
    ({"status": "green", "incidents": []}, "'status' must be a list"),
    ({"status": [{"system": "Data"}], "incidents": []}, "'status[0].status' must be a string"),
    ({"status": [{"status": "red"}], "incidents": []}, "'status[0].system' must be a non-empty string"),
    ({"status": ["Data"], "incidents": []}, "'status[0]' must be an object"),
    ({"status": GREEN, "incidents": [{"created_at": "x"}]}, "'incidents[0].title' must be a non-empty string"),
    ({"status": GREEN, "incidents": ["outage"]}, "'incidents[0]' must be an object"),
    ({"status": GREEN, "incidents": [{"title": "t", "full_url": 5}]}, "'incidents[0].full_url' must be a string"),
    ({"status": GREEN, "incidents": [{"title": "t", "updates": {}}]}, "'incidents[0].updates' must be a list"),
    ({"status": GREEN, "incidents": [], "scheduled": "none"}, "'scheduled' must be a list"),
])
def test_a_document_of_the_wrong_shape_is_a_clear_error_naming_the_field(doc: Any, field: str) -> None:
    with pytest.raises(CollectorError) as err:
        parse_current_status(doc, NOW)
    assert field in str(err.value) and str(err.value).startswith("Heroku status API")


def test_the_double_answers_as_the_real_api_over_http(heroku: HerokuDouble) -> None:
    client = HerokuStatusClient(heroku.status_url, timedelta(seconds=5))
    try:
        assert parse_current_status(client.current_status(), NOW).incidents == ()
        first = heroku.open_incident("Elevated Postgres errors", systems=("Data",), severity="yellow",
                                     created_at=NOW - timedelta(minutes=20))
        heroku.update_incident(first, "Engineers are fixing it.", severity="red")
        doc = client.current_status()
        assert doc["status"] == [{"system": "Apps", "status": "green"}, {"system": "Data", "status": "red"},
                                 {"system": "Tools", "status": "green"}]
        raw = doc["incidents"][0]
        assert {"title", "created_at", "full_url", "updates"} <= set(raw)
        assert [u["update_type"] for u in raw["updates"]] == ["update", "issue"]  # newest first
        status = parse_current_status(doc, NOW)
        assert status.incidents[0].since == NOW - timedelta(minutes=20)
        assert incident_text(status) == "Heroku reports an incident on Data: Elevated Postgres errors"
        heroku.resolve_incident(first)
        assert parse_current_status(client.current_status(), NOW).incidents == ()
        assert not any("Authorization" in r.headers for r in heroku.requests if r.host == "status")
    finally:
        client.close()


# -- the incident history ------------------------------------------------------------------------------------

@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ticking(clock: FakeClock) -> Iterator[HerokuDouble]:
    """The double on the test's fake clock, so its incidents' times move with the polls'."""
    with HerokuDouble(clock=clock) as double:
        yield double


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StateStore]:
    store = open_state_store(None, tmp_path / "state")
    yield store
    store.close()


def poller(heroku: HerokuDouble, clock: FakeClock, state: StateStore,
           keep: timedelta = timedelta(days=400)) -> tuple[HerokuStatusPoller, HerokuStatusClient]:
    """The poller as the guardian builds it: real HTTP to the double, the incident history in `state`."""
    client = HerokuStatusClient(heroku.status_url, timedelta(seconds=5))
    holder = StateHolder(Snapshot())
    boundary = CollectorBoundary(holder, {}, lambda _c: timedelta(minutes=9), clock)
    return HerokuStatusPoller(client.current_status, boundary, holder, clock, trust_for=540, on_change=lambda: None,
                              record=IncidentHistory(state, keep)), client


def test_an_incident_is_recorded_once_per_transition_however_often_it_is_polled(
    ticking: HerokuDouble, clock: FakeClock, state: StateStore
) -> None:
    """Opened, updated (a new update that turns it red), resolved, each seen by two or three polls three
    minutes apart: three records, dated by the poll that first saw each, with what the incident said."""
    poll, client = poller(ticking, clock, state)
    start = clock.now
    try:
        poll.poll()  # all green: nothing to record
        clock.now += timedelta(minutes=3)
        incident = ticking.open_incident("Elevated Heroku Postgres errors", systems=("Data",), severity="yellow")
        for _ in range(3):
            poll.poll()
            clock.now += timedelta(minutes=3)
        ticking.update_incident(incident, "Engineers found the cause.", severity="red")
        for _ in range(2):
            poll.poll()
            clock.now += timedelta(minutes=3)
        ticking.resolve_incident(incident)
        for _ in range(2):
            poll.poll()
            clock.now += timedelta(minutes=3)
    finally:
        client.close()
    history = state.provider_history()
    assert [(e.event, e.time - start, e.status) for e in history] == [
        ("opened", timedelta(minutes=3), "yellow"), ("updated", timedelta(minutes=12), "red"),
        ("resolved", timedelta(minutes=18), "red")]
    assert {(e.incident, e.title, e.systems, e.url) for e in history} == {
        (str(incident), "Elevated Heroku Postgres errors", ("Data",),
         f"https://status.heroku.com/incidents/{incident}")}
    assert history[0].since == start + timedelta(minutes=3) and history[2].opened_at == history[0].time


def test_a_restarted_poller_does_not_record_an_open_incident_again(
    ticking: HerokuDouble, clock: FakeClock, state: StateStore
) -> None:
    incident = ticking.open_incident("Apps degraded", systems=("Apps",))
    first, client = poller(ticking, clock, state)
    first.poll()
    client.close()
    clock.now += timedelta(minutes=10)
    again, client = poller(ticking, clock, state)  # a new process on the same store, the incident still on
    try:
        again.poll()
        ticking.resolve_incident(incident)
        clock.now += timedelta(minutes=3)
        again.poll()
    finally:
        client.close()
    assert [e.event for e in state.provider_history()] == ["opened", "resolved"]


def test_a_state_store_that_fails_is_logged_and_the_poll_still_stands(
    ticking: HerokuDouble, clock: FakeClock, state: StateStore
) -> None:
    ticking.open_incident("Heroku Postgres connection errors", systems=("Data",))
    poll, client = poller(ticking, clock, state)
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    state.close()  # every write now fails
    try:
        poll.poll()
    finally:
        logger.remove(sink)
        client.close()
    assert poll.current_incident() == "Heroku reports an incident on Data: Heroku Postgres connection errors"
    assert poll.holder.current().collectors[("heroku_status", "")].up
    assert any(line.startswith("Heroku incident history not recorded: state store sqlite") for line in lines)


def test_the_history_older_than_the_keep_is_pruned_as_the_poller_records(
    ticking: HerokuDouble, clock: FakeClock, state: StateStore
) -> None:
    poll, client = poller(ticking, clock, state, keep=timedelta(days=1))
    try:
        old = ticking.open_incident("Last week's outage", systems=("Data",))
        poll.poll()
        ticking.resolve_incident(old)
        clock.now += timedelta(hours=2)
        poll.poll()
        clock.now += timedelta(days=7)
        ticking.open_incident("Today's outage", systems=("Data",))
        poll.poll()
    finally:
        client.close()
    assert [(e.title, e.event) for e in state.provider_history()] == [("Today's outage", "opened")]


def test_only_the_leader_records_the_incident_history(
    ticking: HerokuDouble, clock: FakeClock, tmp_path: Path
) -> None:
    """As the guardian wires it: while another replica holds the leadership this one polls (and its findings
    would say so) but records nothing; once it leads, the incident still on is recorded as opened, once."""
    config = GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"),
        "heroku": {"api_key": "hrku-history-token-0123456789", "status": {"url": ticking.status_url}},
        "databases": [{"heroku": {"app": "shop"}}]})
    leader = open_state_store(None, tmp_path / "state")
    g = Guardian(config, clock=clock)
    try:
        assert leader.try_leadership(g.leadership.key)
        assert g.leadership.elect() is False
        ticking.open_incident("Heroku Postgres connection errors", systems=("Data",))
        assert g.provider_status is not None
        g.provider_status.poll()
        assert g.provider_incident() == "Heroku reports an incident on Data: Heroku Postgres connection errors"
        assert g.state.provider_history() == []
        leader.release_leadership()
        assert g.leadership.elect() is True
        clock.now += timedelta(minutes=3)
        g.provider_status.poll()
        g.provider_status.poll()
        assert [(e.event, e.time) for e in g.state.provider_history()] == [("opened", clock.now)]
    finally:
        g.stop()
        leader.close()
