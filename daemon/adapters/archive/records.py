"""The archive's metadata record: what the guardian stores beside every dump (and alone, for a failed attempt),
its JSON form (`record_version` 1), and how it becomes the snapshot's `Backup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon import __version__
from daemon.adapters.postgres.toc.messages import NEWER_DUMP, unjudged
from daemon.core.snapshot import SOURCE_ARCHIVE, Backup

RECORD_VERSION = 1


@dataclass(frozen=True)
class BackupRecord:
    """The metadata record stored beside every dump (and alone, for a failed attempt), versioned on disk and in
    S3; `to_backup()` gives the policy's view of it (docs/ARCHITECTURE.md, three types)."""

    database: str
    backup_id: str
    kind: str
    started_at: datetime
    finished_at: datetime
    outcome: str  # "succeeded" | "failed"
    size_bytes: int = 0
    sha256: str | None = None
    error: str | None = None
    pg_dump_version: str | None = None
    server_version: str | None = None
    host: str | None = None
    tier: str | None = None  # daily | weekly | monthly | milestone (daemon.core.retention)
    origin: str = "self"  # "self" (a guardian capture) or the provider it was mirrored from ("heroku")
    label: str | None = None  # a milestone's label
    toc: dict[str, Any] | None = None  # the readability check (daemon.adapters.postgres.toc.Toc.to_json)

    def to_json(self) -> dict[str, Any]:
        return {
            "record_version": RECORD_VERSION,
            "database": self.database,
            "backup_id": self.backup_id,
            "kind": self.kind,
            "recovery_point": self.started_at.isoformat(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_seconds": round((self.finished_at - self.started_at).total_seconds(), 3),
            "outcome": self.outcome,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "error": self.error,
            "tools": {"pg_dump": self.pg_dump_version, "server": self.server_version,
                      "guardian": __version__},
            "host": self.host,
            "tier": self.tier,
            "origin": self.origin,
            "label": self.label,
            "toc": self.toc,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> BackupRecord:
        """Parse a stored record; raises ValueError (naming the field) when it is malformed."""
        try:
            started = datetime.fromisoformat(doc["started_at"])
            finished = datetime.fromisoformat(doc["finished_at"])
            if started.tzinfo is None or finished.tzinfo is None:
                raise ValueError("timestamps must carry a timezone")
            outcome = doc["outcome"]
            if outcome not in {"succeeded", "failed"}:
                raise ValueError(f"outcome {outcome!r} is not succeeded/failed")
            tools = doc.get("tools") or {}
            return cls(
                database=str(doc["database"]), backup_id=str(doc["backup_id"]), kind=str(doc["kind"]),
                started_at=started, finished_at=finished, outcome=outcome,
                size_bytes=int(doc.get("size_bytes") or 0), sha256=doc.get("sha256"), error=doc.get("error"),
                pg_dump_version=tools.get("pg_dump"), server_version=tools.get("server"), host=doc.get("host"),
                tier=doc.get("tier"), origin=str(doc.get("origin") or "self"), label=doc.get("label"),
                toc=doc.get("toc") if isinstance(doc.get("toc"), dict) else None,
            )
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]!r}") from None
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"malformed record: {exc}") from None

    def to_backup(self, source: str = SOURCE_ARCHIVE) -> Backup:
        return Backup(
            backup_id=self.backup_id, database=self.database, source=source, kind=self.kind,
            started_at=self.started_at, finished_at=self.finished_at, succeeded=self.outcome == "succeeded",
            size_bytes=self.size_bytes, sha256=self.sha256, error=self.error, tool_version=self.pg_dump_version,
            readable=None if self.toc is None or not _judged(self.toc) else bool(self.toc.get("ok")),
            readable_error=None if self.toc is None else self.toc.get("error"),
            too_new_here=self.toc is not None and not _judged(self.toc) and NEWER_DUMP in str(self.toc.get("error")),
        )


def _judged(toc: dict[str, Any]) -> bool:
    """Whether a stored readability verdict judged the dump; a record written before verdicts said so is read
    from its error (a dump newer than that pg_restore, or a stalled check, was never the dump's fault)."""
    judged = toc.get("judged")
    if isinstance(judged, bool):
        return judged
    return bool(toc.get("ok")) or not unjudged(toc.get("error"))
