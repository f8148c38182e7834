"""The recovery plan: what a person in an incident needs for one database and one scenario of the SuoOps backup
and recovery procedures (corruption, deletion, failure, outage), filled with today's facts.

Pure: built from a `DatabaseState`, a `PlanTarget` (where the database and its copies are, from the
configuration, no secret) and `now`; no I/O, no clock. The steps, their commands and the plan in words are
`daemon.core.runbook`;
`daemon.recovery` builds the target from the configuration and serves the plan to the CLI and the web server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from daemon.core.snapshot import SOURCE_ARCHIVE, DatabaseState, DrillResult, Finding, ProviderFacts


@dataclass(frozen=True)
class Scenario:
    """One scenario of the procedures: its title, the RTO it is held to, the drill that rehearses it."""

    key: str
    title: str
    rto_key: str  # the key of DatabaseState.rto_seconds (the configuration's objectives.rto)
    drill: str  # the DrillResult.scenario that measures its recovery time
    procedure: str  # where the procedures describe it


#: The four scenarios of the procedures' RTO table. A complete failure or an outage that needs the data back is
#: a full restore, so the full drill measures them too.
SCENARIOS: dict[str, Scenario] = {s.key: s for s in (
    Scenario("corruption", "Database corruption", "database_corruption", "database_corruption", "scenario 1"),
    Scenario("deletion", "Accidental data deletion", "accidental_deletion", "accidental_deletion", "scenario 2"),
    Scenario("failure", "Complete application failure", "complete_failure", "database_corruption", "scenario 3"),
    Scenario("outage", "Provider (Heroku) outage", "provider_outage", "database_corruption", "the Heroku outage"),
)}

#: Checks whose findings do not change what to do in an incident (hygiene of the archive and of the drills).
NOT_IN_INCIDENT = frozenset({"unencrypted_object", "bucket_posture", "scratch_leftover"})
#: How many older good backups are listed as fallbacks.
FALLBACKS = 3


@dataclass(frozen=True)
class PlanTarget:
    """Where the database and its copies are, from the configuration; never a password or a URL with one."""

    heroku_app: str | None = None
    heroku_attachment: str = "DATABASE"
    archive_kind: str = "local"  # local | s3
    archive_base: str | None = None  # the archive directory, or s3://bucket/prefix
    s3_endpoint: str | None = None  # an S3-compatible endpoint other than AWS
    tables: tuple[str, ...] = ()  # the critical tables (drill.tables)
    server: str | None = None  # host:port of a self-managed database

    @property
    def config_var(self) -> str:
        """The attachment's config var as the Heroku CLI names a database (DATABASE -> DATABASE_URL)."""
        return self.heroku_attachment.rsplit("::", 1)[-1] + "_URL"


@dataclass(frozen=True)
class Candidate:
    """One good backup to restore from: its id, recovery point, where it is, and the data it would lose now."""

    backup_id: str
    recovery_point: datetime
    sources: tuple[str, ...]
    size_bytes: int
    sha256: str | None
    data_loss_seconds: float
    location: str | None  # the archived dump's path or s3:// URL, when the archive holds it


@dataclass(frozen=True)
class RollbackWindow:
    """The moments a provider rollback (point-in-time recovery) can reach, and the plan it runs on."""

    plan: str
    earliest: datetime
    latest: datetime
    family: str = "classic"  # daemon.core.plans: an Advanced database rolls back by a fork of its own kind


@dataclass(frozen=True)
class DrillVerdict:
    """The last drill that rehearses the scenario, against the scenario's RTO."""

    drill_scenario: str
    verdict: str  # within | over | failed | never_measured
    rto_seconds: float | None
    measured_seconds: float | None = None
    started_at: datetime | None = None
    backup_id: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class Step:
    """One step of the runbook: what to do, the exact commands, and why or when."""

    title: str
    commands: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class RecoveryPlan:
    """The whole plan for one database and scenario at `generated_at`."""

    database: str
    scenario: Scenario
    generated_at: datetime
    rto_seconds: float | None
    rpo_seconds: float
    target: PlanTarget
    before: datetime | None
    newest: Candidate | None
    fallbacks: tuple[Candidate, ...]
    rollback: RollbackWindow | None
    rollback_reason: str
    drill: DrillVerdict
    findings: tuple[Finding, ...]
    warnings: tuple[str, ...] = ()
    provider_plan: str | None = None  # the provider's plan (a fork or rollback is created on it)
    provider_family: str | None = None  # its family (daemon.core.plans); pg:backups is not established for Advanced
    steps: tuple[Step, ...] = field(default=())
    afterwards: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The plan as a JSON document (what /api/recovery-plan serves and `--format json` prints)."""
        return {
            "database": self.database, "scenario": self.scenario.key, "title": self.scenario.title,
            "generated_at": self.generated_at.isoformat(), "rto_seconds": self.rto_seconds,
            "rpo_seconds": self.rpo_seconds, "before": _iso(self.before),
            "heroku": {"app": self.target.heroku_app, "attachment": self.target.heroku_attachment}
            if self.target.heroku_app else None,
            "newest_good_backup": _candidate_doc(self.newest),
            "fallbacks": [_candidate_doc(c) for c in self.fallbacks],
            "rollback": None if self.rollback is None else {
                "plan": self.rollback.plan, "earliest": self.rollback.earliest.isoformat(),
                "latest": self.rollback.latest.isoformat()},
            "rollback_reason": self.rollback_reason, "provider_plan": self.provider_plan,
            "provider_family": self.provider_family,
            "drill": {"scenario": self.drill.drill_scenario, "verdict": self.drill.verdict,
                      "measured_seconds": self.drill.measured_seconds, "rto_seconds": self.drill.rto_seconds,
                      "started_at": _iso(self.drill.started_at), "backup_id": self.drill.backup_id,
                      "reason": self.drill.reason},
            "warnings": list(self.warnings),
            "steps": [{"title": s.title, "commands": list(s.commands), "note": s.note} for s in self.steps],
            "afterwards": list(self.afterwards),
            "findings": [{"check": f.check, "severity": f.severity, "hint": f.hint} for f in self.findings],
        }


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _candidate_doc(c: Candidate | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"id": c.backup_id, "recovery_point": c.recovery_point.isoformat(), "sources": list(c.sources),
            "size_bytes": c.size_bytes, "sha256": c.sha256, "data_loss_seconds": c.data_loss_seconds,
            "location": c.location}


# -- the facts ---------------------------------------------------------------------------------------------------

def archive_location(base: str, database: str, backup_id: str) -> str:
    """Where the archive keeps a backup's dump: `<base>/<database, percent-encoded>/<id>.dump`, the layout of
    both stores (daemon.adapters.archive.local and .s3; a test holds them to it)."""
    return f"{base.rstrip('/')}/{quote(database, safe='')}/{backup_id}.dump"


def good_copies(db: DatabaseState, target: PlanTarget, now: datetime, sources: frozenset[str] | None = None,
                before: datetime | None = None) -> list[Candidate]:
    """Every good backup of `db` (in `sources` when given; captured before `before` when given: a backup
    taken after the damage holds the damage), newest first, one entry per backup id with every source that
    holds it."""
    by_id: dict[str, list[Any]] = {}
    for name, src in db.sources.items():
        if sources is not None and name not in sources:
            continue
        for b in src.good:
            if before is not None and b.recovery_point >= before:
                continue
            entry = by_id.setdefault(b.backup_id, [b, []])
            entry[1].append(name)
            if b.sha256 and not entry[0].sha256:
                entry[0] = b
    out = []
    for backup_id, (b, names) in by_id.items():
        archived = SOURCE_ARCHIVE in names and target.archive_base is not None
        out.append(Candidate(backup_id=backup_id, recovery_point=b.recovery_point, sources=tuple(sorted(names)),
                             size_bytes=b.size_bytes, sha256=b.sha256,
                             data_loss_seconds=(now - b.recovery_point).total_seconds(),
                             location=archive_location(target.archive_base, db.name, backup_id)
                             if archived and target.archive_base else None))
    return sorted(out, key=lambda c: c.recovery_point, reverse=True)


def rollback_window(provider: ProviderFacts | None, now: datetime) -> tuple[RollbackWindow | None, str]:
    """The provider's rollback window and, when there is none, why. The one place that reads the provider's
    rollback facts: the latest reachable moment is the one the provider reports (Advanced databases do), else
    `now`."""
    if provider is None:
        return None, "no provider rollback: the database is self-managed (restore from the archive)"
    if not provider.offers_pitr:
        return None, f"the {provider.plan} plan offers no rollback"
    if not provider.continuous_protection:
        return None, f"continuous protection is off on the {provider.plan} plan, so there is no rollback"
    if provider.rollback_earliest is None:
        return None, "Heroku does not report a rollback window yet (pg:info shows no 'Rollback' line)"
    return RollbackWindow(plan=provider.plan, earliest=provider.rollback_earliest,
                          latest=provider.rollback_latest or now, family=provider.family), ""


def drill_verdict(db: DatabaseState, scenario: Scenario) -> DrillVerdict:
    """The newest drill of the scenario's kind against the scenario's RTO: within, over, failed (it proved
    nothing about the time) or never measured."""
    rto = db.rto_seconds.get(scenario.rto_key)
    drills: list[DrillResult] = [d for d in db.drills if d.scenario == scenario.drill]
    if not drills:
        return DrillVerdict(scenario.drill, "never_measured", rto, reason="no drill of this kind has run")
    d = max(drills, key=lambda d: d.started_at)
    if not d.succeeded:
        verdict = "failed"
    elif rto is not None and d.recovery_seconds > rto:
        verdict = "over"
    else:
        verdict = "within"
    return DrillVerdict(scenario.drill, verdict, rto, d.recovery_seconds, d.started_at, d.backup_id, d.reason)


def incident_findings(db: DatabaseState) -> tuple[Finding, ...]:
    """The active findings that bear on a recovery, critical first."""
    order = {"critical": 0, "warning": 1}
    return tuple(sorted((f for f in db.findings if f.active and f.check not in NOT_IN_INCIDENT),
                        key=lambda f: (order.get(f.severity, 2), f.check)))


def plan_facts(db: DatabaseState, target: PlanTarget, scenario: str, now: datetime,
               before: datetime | None = None, unread: tuple[str, ...] = ()) -> RecoveryPlan:
    """The facts of the plan for `db` in `scenario` at `now` (no steps yet: `daemon.core.runbook.plan_recovery`
    adds them); `before` (the moment just before the damage, when known) picks the backups and the rollback
    time; `unread` says which facts could not be read now (a collector down or late), so the plan says its
    backups may be incomplete. Raises ValueError naming an unknown scenario."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}")
    sc = SCENARIOS[scenario]
    # in a provider outage the provider's own backups may be out of reach: only copies held elsewhere count
    sources = frozenset({SOURCE_ARCHIVE}) if sc.key == "outage" and target.heroku_app else None
    copies = good_copies(db, target, now, sources, before)
    window, why = rollback_window(db.provider, now)
    warnings = [f"could not read {what} now: the backups below are the last known, maybe not all" for what in unread]
    if not copies:
        where = " outside Heroku" if sources else ""
        when = f" from before {before.isoformat(timespec='seconds')}" if before else ""
        warnings.append(f"no good backup{where}{when}: nothing to restore from" +
                        (" except the rollback" if window else ""))
    if window is not None and before is not None and not window.earliest <= before <= window.latest:
        warnings.append(f"{before.isoformat(timespec='seconds')} is outside the rollback window "
                        f"({window.earliest.isoformat(timespec='seconds')} to "
                        f"{window.latest.isoformat(timespec='seconds')})")
    return RecoveryPlan(database=db.name, scenario=sc, generated_at=now, rto_seconds=db.rto_seconds.get(sc.rto_key),
                        rpo_seconds=db.rpo_seconds, target=target, before=before,
                        newest=copies[0] if copies else None, fallbacks=tuple(copies[1:1 + FALLBACKS]),
                        rollback=window, rollback_reason=why, drill=drill_verdict(db, sc),
                        findings=incident_findings(db), warnings=tuple(warnings),
                        provider_plan=db.provider.plan if db.provider else None,
                        provider_family=db.provider.family if db.provider else None)
