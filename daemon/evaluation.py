"""Evaluation: merge a pass's results into the snapshot, evaluate the policy for every database, publish once.

The merge and the evaluation run outside the snapshot lock (`StateHolder.update_outside`), so a scrape or
another writer never waits for them. Each database's facts are completed before the policy sees them: the
archive source of a self-managed database carries the attempts the store could not record, the capture in
progress and the schedule's next run; Heroku backups carry the verdict of their read-through. Then `on_evaluation`
hears about the new findings (the composition root passes them to the notifier unless this replica is a
follower: one event per finding, not one per replica).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from collectors.archive import with_unrecorded
from collectors.collection import Collected
from collectors.fleet import HerokuSide
from daemon.config import DatabaseConfig
from daemon.core import policy, risk
from daemon.core.policy.token import WARN_BEFORE, TokenLifetime, token_check
from daemon.core.snapshot import (
    SOURCE_ARCHIVE,
    Backup,
    ComplianceExport,
    DatabaseState,
    Finding,
    HerokuStatus,
    Snapshot,
    SourceState,
    StateHolder,
    share_unreadable,
)


@dataclass(frozen=True)
class Completion:
    """What the evaluation adds to the collected facts, each asked of the part that knows it."""

    unrecorded: Callable[[str], Iterable[Backup]]  # failed attempts the archive could not record
    capturing: Callable[[str], bool]  # a capture of this database runs in this process now
    next_capture_at: Callable[[str], datetime | None]  # the self-managed schedule's next run
    with_readability: Callable[[str, dict[str, SourceState]], dict[str, SourceState]]


class Evaluator:
    """Publishes each pass as one snapshot, with every database's findings evaluated at the same `now`."""

    def __init__(self, holder: StateHolder, databases: dict[str, DatabaseConfig], completion: Completion,
                 archive_policy: Callable[[DatabaseConfig], policy.ArchivePolicy | None],
                 drill_policy: Callable[[DatabaseConfig, datetime | None], policy.DrillPolicy | None],
                 heroku: HerokuSide, on_evaluation: Callable[[Snapshot, datetime], None],
                 clock: Callable[[], datetime], tools: policy.ClientTools | None = None,
                 provider_incident: Callable[[], str | None] = lambda: None,
                 token: Callable[[], TokenLifetime | None] | None = None,
                 token_warn_before: timedelta = WARN_BEFORE,
                 compliance_policy: Callable[[DatabaseConfig, datetime | None], policy.CompliancePolicy | None]
                 | None = None) -> None:
        self.holder = holder
        self.databases = databases
        self.completion = completion
        self.archive_policy = archive_policy
        self.drill_policy = drill_policy
        self.heroku = heroku
        self.on_evaluation = on_evaluation
        self.clock = clock
        self.tools = tools  # the client programs' versions, against the backups' (client_tools_too_old)
        self.provider_incident = provider_incident  # Heroku's incident on Data or Apps, as text, or None
        self.token_warn_before = token_warn_before
        self.token = token  # the Heroku API token's lifetime (heroku_token_expiring), for Heroku databases
        self.compliance_policy = compliance_policy or (lambda _cfg, _since: None)

    def publish(self, results: list[Collected], first_pass_done: bool = False) -> Snapshot:
        now = self.clock()

        def apply(snap: Snapshot) -> Snapshot:
            dbs = dict(snap.databases)
            cols = dict(snap.collectors)
            incident = self.provider_incident()
            for r in results:
                for st in r.statuses:
                    cols[(st.collector, st.database)] = st
                db = dbs.get(r.name)
                if db is not None:
                    dbs[r.name] = self._merged(db, r)
            for name, db in dbs.items():
                cfg = self.databases[name]
                db = replace(db, sources=share_unreadable(self.completion.with_readability(name, db.sources)))
                exports = self.compliance_policy(cfg, snap.started_at)
                findings = policy.evaluate(db, cfg.objectives, cols.values(), now, self.archive_policy(cfg),
                                           self.drill_policy(cfg, snap.started_at), self.tools, exports)
                if cfg.heroku is not None and self.token is not None:
                    findings = (*findings, token_check(name, self.token(), now, self.token_warn_before))
                if incident and cfg.heroku is not None:
                    findings = with_provider_incident(findings, incident)
                dbs[name] = replace(db, findings=findings, evaluated_at=now, compliance=None if exports is None else
                                    ComplianceExport(exports.last_at, exports.last_ok, exports.last_good_at,
                                                     exports.tables),
                                    rpo_tolerance_seconds=risk.tolerance_seconds(db, cfg.objectives, now),
                                    next_expected=risk.next_expected(db, cfg.objectives, now))
            return replace(snap, databases=dbs, collectors=cols, heroku=self._heroku_status(snap),
                           first_collection_done=snap.first_collection_done or first_pass_done)

        # evaluated without the snapshot lock (other writers never wait for it); wakes the /metrics renderer
        snap = self.holder.update_outside(apply)
        self.on_evaluation(snap, now)
        return snap

    def _merged(self, db: DatabaseState, r: Collected) -> DatabaseState:
        sources = {**db.sources, **r.sources}
        cfg = self.databases[r.name]
        if cfg.self_managed:
            archive = sources.get(SOURCE_ARCHIVE) or SourceState(SOURCE_ARCHIVE, listed=False)
            archive = with_unrecorded(archive, self.completion.unrecorded(r.name))
            # observed_at stays the archive's last successful read: a failed read must not make old facts fresh
            sources[SOURCE_ARCHIVE] = replace(
                archive, in_progress=1 if self.completion.capturing(r.name) else 0,
                schedule_interval_seconds=cfg.capture_interval.total_seconds(),
                schedule_next_at=self.completion.next_capture_at(r.name))
        return replace(db, sources=sources, live=r.live if r.live is not None else db.live,
                       provider=r.provider if r.provider is not None else db.provider,
                       archive=r.archive if r.archive is not None else db.archive)

    def _heroku_status(self, snap: Snapshot) -> HerokuStatus | None:
        fleet, api = self.heroku.fleet, self.heroku.api
        if fleet is None or api is None:
            return snap.heroku
        rep = fleet.last_report
        token = self.token() if self.token is not None else None
        return HerokuStatus(ratelimit_remaining=api.ratelimit_remaining, requests_total=api.requests_total,
                            pass_requests=rep.requests, pass_allowance=rep.allowance, pass_deferred=rep.deferred,
                            stretch=rep.stretch, token_readable=token is not None and token.readable,
                            token_expires_at=token.expires_at if token is not None else None)


def with_provider_incident(findings: tuple[Finding, ...], incident: str) -> tuple[Finding, ...]:
    """The active findings of a Heroku-backed database say that Heroku reports an incident (`incident`, e.g.
    "Heroku reports an incident on Data: <title>"): the cause may be Heroku's, and the notifications carry the
    hint as it is."""
    return tuple(replace(f, hint=f"{f.hint}; {incident}") if f.active else f for f in findings)


def initial_state(db: DatabaseConfig) -> DatabaseState:
    """A watched database before anything is known of it: its objectives only."""
    obj = db.objectives
    return DatabaseState(name=db.name, rpo_seconds=obj.rpo.total_seconds(), rpo_warning_ratio=obj.rpo_at_risk_ratio,
                         rto_seconds={k: v.total_seconds() for k, v in obj.rto})
