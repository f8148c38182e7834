"""Heroku's own status (status.heroku.com): parse `GET /api/v4/current-status`, and poll it on its interval.

The document, as `heroku status` reads it (heroku/cli `packages/cli/src/commands/status.ts`; see
tests/HEROKU_DOUBLE.md "Heroku's status API"):

    {"status": [{"system": "Apps", "status": "green"}, {"system": "Data", "status": "red"}, ...],
     "incidents": [{"title": ..., "created_at": ..., "full_url": ..., "updates": [{"update_type": ...,
                    "updated_at": ..., "contents": ...}, ...], ...}],
     "scheduled": [...]}

No public source says which system an incident of this API affects, so an incident is attributed to every
system the `status` list reports not green (a red Data with no incident listed becomes an incident of its
own, "Data is red"). Unknown fields are ignored; a wrong shape raises `CollectorError` naming the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from loguru import logger

from collectors.boundary import CollectorBoundary
from collectors.heroku import parse_timestamp
from daemon.core.errors import CollectorError, GuardianError
from daemon.core.provider import (
    COLOURS,
    SYSTEMS,
    WATCHED_SYSTEMS,
    ProviderIncident,
    ProviderStatus,
    event_text,
    incident_text,
    transitions,
)
from daemon.core.snapshot import Snapshot, StateHolder

if TYPE_CHECKING:
    from daemon.adapters.statestore import StateStore

#: The collector's name in `pgbackup_collector_up{collector}`; global, so its database label is empty.
COLLECTOR = "heroku_status"


def _fail(field: str, must: str) -> CollectorError:
    return CollectorError(f"Heroku status API: field {field!r} {must}")


def _list(doc: dict[str, Any], key: str, required: bool = True) -> list[Any]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise _fail(key, "must be a list")
    return value


def _systems(entries: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise _fail(f"status[{n}]", "must be an object with 'system' and 'status'")
        system, colour = entry.get("system"), entry.get("status")
        if not isinstance(system, str) or not system:
            raise _fail(f"status[{n}].system", "must be a non-empty string")
        if not isinstance(colour, str):
            raise _fail(f"status[{n}].status", "must be a string (green, yellow or red)")
        out[system] = colour
    return out


def _worst(colours: list[str]) -> str:
    known = [c for c in colours if c in COLOURS]
    return max(known, key=COLOURS.index) if known else (colours[0] if colours else "unknown")


def _incident(n: int, entry: Any, affected: tuple[str, ...], colour: str) -> ProviderIncident | None:
    if not isinstance(entry, dict):
        raise _fail(f"incidents[{n}]", "must be an object")
    title = entry.get("title")
    if not isinstance(title, str) or not title.strip():
        raise _fail(f"incidents[{n}].title", "must be a non-empty string")
    if entry.get("resolved") is True:
        return None
    url = entry.get("full_url")
    if url is not None and not isinstance(url, str):
        raise _fail(f"incidents[{n}].full_url", "must be a string")
    updates = entry.get("updates")
    if updates is not None and not isinstance(updates, list):
        raise _fail(f"incidents[{n}].updates", "must be a list")
    stamps = [parse_timestamp(u.get("updated_at")) for u in updates or [] if isinstance(u, dict)]
    updated = max((s for s in stamps if s is not None), default=parse_timestamp(entry.get("updated_at")))
    ident = entry.get("id")
    return ProviderIncident(title=title.strip(), systems=affected, status=colour, url=url or None,
                            since=parse_timestamp(entry.get("created_at")), updated_at=updated,
                            incident_id=str(ident) if isinstance(ident, int | str) and ident != "" else None)


def parse_current_status(doc: Any, now: datetime) -> ProviderStatus:
    """The status document as a `ProviderStatus`: each system's colour and the incidents affecting Data or
    Apps. Raises CollectorError naming the field when the shape is wrong."""
    if not isinstance(doc, dict):
        raise CollectorError("Heroku status API: the document must be an object with 'status' and 'incidents'")
    systems = _systems(_list(doc, "status"))
    entries = _list(doc, "incidents")
    scheduled = _list(doc, "scheduled", required=False)
    troubled = tuple(s for s in SYSTEMS if systems.get(s, "green") != "green")
    watched = tuple(s for s in troubled if s in WATCHED_SYSTEMS)
    colour = _worst([systems[s] for s in watched])
    incidents = []
    for n, entry in enumerate(entries):
        inc = _incident(n, entry, watched, colour)  # validated even when no watched system is troubled
        if inc is not None and watched:
            incidents.append(inc)
    if watched and not incidents:  # a colour without an incident text: say the colour
        incidents = [ProviderIncident(f"{' and '.join(watched)} {'is' if len(watched) == 1 else 'are'} {colour}",
                                      watched, colour, None, None)]
    return ProviderStatus(systems=systems, incidents=tuple(incidents), scheduled=len(scheduled), observed_at=now)


class HerokuStatusPoller:
    """Polls the status API behind the collectors' boundary and publishes `Snapshot.provider`.

    A failed poll marks the collector down and changes nothing else (the last known status stays, and
    `current_incident` stops trusting it once it is older than `trust_for`). When the incident text changes,
    `on_change` re-evaluates, so findings say so without waiting for the next collection pass. Every successful
    poll is handed to `record` (the incident history: `IncidentHistory`), after it is published."""

    def __init__(self, fetch: Callable[[], Any], boundary: CollectorBoundary, holder: StateHolder,
                 clock: Callable[[], datetime], trust_for: float, on_change: Callable[[], Any],
                 record: Callable[[ProviderStatus], Any] = lambda _status: None) -> None:
        self.fetch = fetch
        self.boundary = boundary
        self.holder = holder
        self.clock = clock
        self.trust_for = trust_for
        self.on_change = on_change
        self.record = record

    def poll(self) -> None:
        before = self.current_incident()
        now = self.clock()
        status, collector = self.boundary.run(COLLECTOR, "", lambda: parse_current_status(self.fetch(), now))

        def apply(snap: Snapshot) -> Snapshot:
            cols = {**snap.collectors, (COLLECTOR, ""): collector}
            return replace(snap, collectors=cols, provider=status if status is not None else snap.provider)

        self.holder.update(apply)
        if status is not None:
            self.record(status)
        after = self.current_incident()
        if after != before:
            logger.warning("{}", after) if after else logger.info("Heroku reports no incident on Data or Apps")
            self.on_change()

    def current_incident(self) -> str | None:
        """The readable incident text on Data or Apps ("Heroku reports an incident on Data: <title>"), or None:
        none reported, never polled, or the last good poll is older than `trust_for` seconds (an unreachable
        status API never holds actions back for good)."""
        status = self.holder.current().provider
        if status is None or status.observed_at is None:
            return None
        if (self.clock() - status.observed_at).total_seconds() > self.trust_for:
            return None
        return incident_text(status)


class IncidentHistory:
    """Keeps each transition of Heroku's incidents on Data or Apps (opened, updated, resolved) in the state
    store's provider history, for `backup-guardian timeline`: one record per transition, dated by the poll that
    saw it, compared with what the store already holds (so neither repeated polls, nor a restart, nor several
    replicas record one twice). Entries older than `keep` are deleted as new ones are written. `recording` says
    whether this replica records (the leader does, as with the finding history). A store that fails is logged;
    the poll's result stands."""

    PROVIDER = "heroku"

    def __init__(self, state: StateStore, keep: timedelta, recording: Callable[[], bool] = lambda: True) -> None:
        self.state = state
        self.keep = keep
        self.recording = recording

    def __call__(self, status: ProviderStatus) -> None:
        if status.observed_at is None or not self.recording():
            return
        now = status.observed_at
        try:
            added = self.state.record_provider_transitions(
                self.PROVIDER, lambda recorded: transitions(recorded, status, now), prune_before=now - self.keep)
        except GuardianError as exc:
            logger.warning("Heroku incident history not recorded: {}", exc)
            return
        for e in added:
            logger.info("incident history: {} ({})", event_text(e), e.event)
