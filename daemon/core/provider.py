"""What the hosting provider says about itself: Heroku's public status (status.heroku.com), as plain data.

Global, not per database: one value in the snapshot (`Snapshot.provider`). The guardian only reads it; the
incident is Heroku's. While Heroku reports an incident on the systems a Heroku-backed database depends on
(Data for the database, Apps for the dynos the scale action changes), findings say so and the actions that
would act against Heroku wait instead of failing into their cooldowns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

#: The systems of Heroku's status API whose incidents concern the guardian ("Apps" is the runtime).
WATCHED_SYSTEMS = ("Data", "Apps")
#: Every system the status API reports, in its order (pre-initialised in the metrics).
SYSTEMS = ("Apps", "Data", "Tools")
#: The colours the status API uses, worst last.
COLOURS = ("green", "yellow", "red")


@dataclass(frozen=True)
class ProviderIncident:
    """One current incident: its title, the systems it affects, their colour, where to read it, since when."""

    title: str
    systems: tuple[str, ...]
    status: str  # the worst colour of its systems: yellow | red
    url: str | None
    since: datetime | None
    incident_id: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class ProviderStatus:
    """Heroku's current status: each system's colour and the incidents affecting Data or Apps."""

    systems: dict[str, str] = field(default_factory=dict)  # "Apps" | "Data" | "Tools" -> colour
    incidents: tuple[ProviderIncident, ...] = ()  # only those affecting a WATCHED_SYSTEMS system
    scheduled: int = 0  # scheduled maintenances announced
    observed_at: datetime | None = None

    def colour_value(self, system: str) -> int | None:
        """0 green, 1 yellow, 2 red; None when the system was not reported or its colour is unknown."""
        colour = self.systems.get(system)
        return COLOURS.index(colour) if colour in COLOURS else None


def incident_text(status: ProviderStatus | None, systems: tuple[str, ...] = WATCHED_SYSTEMS) -> str | None:
    """The readable text of the current incident on `systems` ("Heroku reports an incident on Data: <title>";
    several are joined with "; "), or None when there is none. The one wording findings, notifications, the
    status page and the actions' "waiting" reasons share."""
    if status is None:
        return None
    parts = []
    for inc in status.incidents:
        on = [s for s in inc.systems if s in systems]
        if on:
            parts.append(f"Heroku reports an incident on {', '.join(on)}: {inc.title}")
    return "; ".join(parts) or None


#: The events of an incident's life as the guardian saw it, in the provider history.
OPENED, UPDATED, RESOLVED = "opened", "updated", "resolved"


@dataclass(frozen=True)
class ProviderEvent:
    """One transition of a provider incident, as kept in the state store's provider history: at `time` (the
    poll that saw it), `incident` (its stable key: the provider's id, else its URL or title) was `event`
    (OPENED, UPDATED: its title, systems, colour or newest update changed, RESOLVED: it left the current
    incidents). The other fields are what the incident said at that moment (for RESOLVED, what it last said);
    `opened_at` is when the guardian first saw it open."""

    time: datetime
    incident: str
    event: str
    title: str
    systems: tuple[str, ...]
    status: str
    url: str | None = None
    since: datetime | None = None
    updated_at: datetime | None = None
    opened_at: datetime | None = None
    provider: str = "heroku"


def incident_key(inc: ProviderIncident) -> str:
    """The stable key of an incident across polls: the provider's id, else its URL, else its title."""
    return inc.incident_id or inc.url or inc.title


def transitions(recorded_open: list[ProviderEvent], status: ProviderStatus, now: datetime) -> list[ProviderEvent]:
    """What changed since the recorded history: `recorded_open` holds the newest recorded event of each incident
    the history still has open; `status` is a successful poll at `now`. Returns an OPENED event for each
    incident not open before, an UPDATED one for each whose title, systems, colour or newest update changed,
    and a RESOLVED one for each open incident the poll no longer reports; nothing when nothing changed (so a
    poll that sees the same incident again records nothing)."""
    known = {e.incident: e for e in recorded_open}
    out: list[ProviderEvent] = []
    current: set[str] = set()
    for inc in status.incidents:
        key = incident_key(inc)
        if key in current:
            continue  # the same incident listed twice: said once
        current.add(key)
        before = known.get(key)
        event = ProviderEvent(now, key, OPENED, inc.title, inc.systems, inc.status, inc.url, inc.since,
                              inc.updated_at, now)
        if before is None:
            out.append(event)
        elif _said(before) != _said(event):
            out.append(replace(event, event=UPDATED, opened_at=before.opened_at))
    out += [replace(e, time=now, event=RESOLVED) for key, e in known.items() if key not in current]
    return out


def _said(e: ProviderEvent) -> tuple[object, ...]:
    return e.title, e.systems, e.status, e.updated_at


def event_text(e: ProviderEvent) -> str:
    """One line for an incident's transition, in the wording the findings use ("Heroku reports an incident on
    Data: <title>"; "... updated ..."; "... resolved ...")."""
    on = ", ".join(e.systems) or "its systems"
    name = e.provider.capitalize()
    if e.event == OPENED:
        return f"{name} reports an incident on {on}: {e.title}"
    verb = "resolved" if e.event == RESOLVED else "updated"
    return f"{name} {verb} the incident on {on}: {e.title}"
