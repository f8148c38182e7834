"""Compliance exports as the archive stores them and the deletion plan sees them.

An export is a folder of documents beside a database's backups, `reports/compliance/<stamp>/` (files, and
`manifest.json` written last), `<stamp>` being the export's time as `%Y%m%dT%H%M%SZ`. The stores list each export
as one `ArchivedObject` of tier `EXPORT_TIER` whose backup id is `compliance/<stamp>` and whose recovery point
is the export's own time, so the prune's plan (`daemon.core.retention.plan_exports`) can age it by keep_years.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from daemon.core.errors import GuardianError
from daemon.core.retention import EXPORT_TIER, ArchivedObject

#: The exports' folder under a database's `reports/` (`actions.compliance` writes there).
FOLDER = "compliance"
MANIFEST = "manifest.json"
STAMP = "%Y%m%dT%H%M%SZ"
_STAMP = re.compile(r"^\d{8}T\d{6}Z$")


def export_time(stamp: str, manifest: bytes | None) -> datetime | None:
    """When the export was taken: the later of its folder's stamp and its manifest's `exported_at` (the later,
    so a disagreement can only keep an export longer, never delete it early); None when neither can be read."""
    times = []
    if _STAMP.match(stamp):
        times.append(datetime.strptime(stamp, STAMP).replace(tzinfo=UTC))
    if manifest is not None:
        try:
            at = datetime.fromisoformat(str(json.loads(manifest)["exported_at"]))
            if at.tzinfo is not None:
                times.append(at.astimezone(UTC))
        except (ValueError, KeyError, TypeError):
            pass  # an unreadable manifest: the stamp alone says when
    return max(times) if times else None


def export_object(database: str, stamp: str, key: str, size: int, manifest: bytes | None,
                  lock_until: datetime | None = None, legal_hold: bool = False) -> ArchivedObject | None:
    """One export as the deletion plan sees it; None for a folder not named by a stamp (not the guardian's) or
    whose time cannot be known: it is never planned on, so never deleted."""
    at = export_time(stamp, manifest)
    if at is None or not _STAMP.match(stamp):
        return None
    return ArchivedObject(database=database, backup_id=f"{FOLDER}/{stamp}", key=key, recovery_point=at,
                          size_bytes=size, tier=EXPORT_TIER, lock_until=lock_until, legal_hold=legal_hold)


def stamp_of(export_id: str) -> str:
    """The stamp of an export id (`compliance/<stamp>`); GuardianError for anything else, so a deletion can never
    reach outside one export's folder."""
    folder, _, stamp = export_id.partition("/")
    if folder != FOLDER or not _STAMP.match(stamp):
        raise GuardianError(f"{export_id!r} is not a compliance export")
    return stamp
