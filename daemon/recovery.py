"""The recovery plan served to people and tools: `backup-guardian recovery-plan` and /api/recovery-plan.

The plan itself is pure (`daemon.core.runbook.plan_recovery`); this module gives it what only the configuration
knows (the Heroku app and attachment, where the archive keeps its dumps, the critical tables, the server's
host and port; never a password) and looks the database up in a snapshot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from daemon.config import DatabaseConfig, GuardianConfig
from daemon.core.errors import GuardianError
from daemon.core.recovery import SCENARIOS, PlanTarget, RecoveryPlan
from daemon.core.redact import REDACTOR, shorten
from daemon.core.runbook import plan_recovery
from daemon.core.snapshot import Snapshot


def parse_time(text: str, name: str) -> datetime:
    """A moment given by a person (ISO 8601; UTC unless it says otherwise) as an aware time; raises
    GuardianError naming the parameter and the value."""
    try:
        when = datetime.fromisoformat(text.strip().replace(" UTC", "+00:00"))
    except ValueError:
        raise GuardianError(f"{name} {shorten(text)!r} is not a time: use ISO 8601, e.g. 2026-11-30T14:05:00Z") \
            from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def plan_target(config: GuardianConfig, db: DatabaseConfig) -> PlanTarget:
    """Where `db` and its archived copies are, from the configuration (no secret)."""
    archive = config.archive
    if archive.kind == "s3" and archive.s3 is not None:
        base = f"s3://{archive.s3.bucket}/{archive.s3.prefix.strip('/')}"
        endpoint = archive.s3.endpoint_url
    else:
        base, endpoint = str(config.archive_dir), None
    server = None
    if db.url is not None:
        parts = urlsplit(db.url.get_secret_value())
        server = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    return PlanTarget(heroku_app=db.heroku.app if db.heroku else None,
                      heroku_attachment=db.heroku.attachment if db.heroku else "DATABASE",
                      archive_kind=archive.kind, archive_base=base, s3_endpoint=endpoint,
                      tables=tuple(db.drill.tables), server=server)


def targets(config: GuardianConfig) -> dict[str, PlanTarget]:
    """Every watched database's target, by name."""
    return {db.name: plan_target(config, db) for db in config.all_databases}


def recovery_plan(snap: Snapshot, known: dict[str, PlanTarget], database: str, scenario: str, now: datetime,
                  before: datetime | None = None) -> RecoveryPlan:
    """The plan for `database` in `scenario` from the snapshot at `now`. Raises GuardianError naming an unknown
    database or scenario."""
    if scenario not in SCENARIOS:
        raise GuardianError(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}")
    db = snap.databases.get(database)
    if db is None or database not in known:
        raise GuardianError(f"unknown database {database!r}; known: {', '.join(sorted(snap.databases)) or 'none'}")
    unread = tuple(f"the {c.collector} facts ({REDACTOR(c.last_error) if c.last_error else 'late'})"
                   for (_, name), c in sorted(snap.collectors.items()) if name == database and
                   (not c.up or c.stale(now)))
    return plan_recovery(db, known[database], scenario, now, before, unread)
