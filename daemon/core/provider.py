"""What the hosting provider says about itself: Heroku's public status (status.heroku.com), as plain data.

Global, not per database: one value in the snapshot (`Snapshot.provider`). The guardian only reads it; the
incident is Heroku's. While Heroku reports an incident on the systems a Heroku-backed database depends on
(Data for the database, Apps for the dynos the scale action changes), findings say so and the actions that
would act against Heroku wait instead of failing into their cooldowns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
