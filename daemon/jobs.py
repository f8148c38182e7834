"""The guardian's periodic jobs, as data for the run-time shell: what runs, when, on which workers, and whether
only the leader runs it. Captures, the archive's jobs (mirror, read-through, prune, scratch sweep), drills, the
heartbeat and the leadership renewal each have workers of their own (`daemon.runtime.EXECUTORS`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from actions.capture import CaptureService
from actions.drill.service import DrillService, scenarios
from actions.remedy import Remedies
from actions.scale import Scaling
from collectors.archive import ArchiveReader
from collectors.heroku_token import READ_EVERY as TOKEN_READ_EVERY
from daemon.config import DatabaseConfig, GuardianConfig
from daemon.config.compliance import CRONS
from daemon.control import RECENT_DECISIONS
from daemon.core.durations import format_duration

if TYPE_CHECKING:
    from collections.abc import Callable

    from actions.audit import AuditLog
    from actions.compliance import ComplianceService
    from actions.mirror import Mirrors
    from actions.runner import ActionRunner
    from collectors.collection import Collection
    from collectors.heroku_status import HerokuStatusPoller
    from collectors.heroku_token import TokenWatch
    from collectors.readability import ReadThrough
    from daemon.adapters.heroku import HerokuAPI
    from daemon.adapters.postgres.tools import ProcessRegistry
    from daemon.adapters.sentry import LogNotifier
    from daemon.adapters.statestore import StateStore
    from daemon.control import ControlPanel
    from daemon.core.snapshot import StateHolder
    from daemon.leadership import Leadership
    from daemon.metrics import Exposition
    from daemon.push import Pusher
    from daemon.web.server import GuardianHTTP

HEARTBEAT_SECONDS = 5


@dataclass(frozen=True)
class JobSpec:
    """One job: its id, what it runs, when (APScheduler trigger and its arguments), on which workers, and
    whether only the leader runs it."""

    id: str
    fn: Callable[..., Any]
    trigger: Any
    when: dict[str, Any] = field(default_factory=dict)
    executor: str = "default"
    leader_only: bool = False
    args: tuple[Any, ...] = ()


class GuardianParts(Protocol):
    """What the run-time shell uses of a guardian: its parts, and the operations its jobs run."""

    http: GuardianHTTP | None

    @property
    def config(self) -> GuardianConfig: ...
    @property
    def databases(self) -> dict[str, DatabaseConfig]: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def holder(self) -> StateHolder: ...
    @property
    def processes(self) -> ProcessRegistry: ...
    @property
    def state(self) -> StateStore: ...
    @property
    def heroku_api(self) -> HerokuAPI | None: ...
    @property
    def token_watch(self) -> TokenWatch | None: ...
    @property
    def notifier(self) -> LogNotifier: ...
    @property
    def archive(self) -> ArchiveReader: ...
    @property
    def collection(self) -> Collection: ...
    @property
    def control(self) -> ControlPanel: ...
    @property
    def audit(self) -> AuditLog: ...
    @property
    def pusher(self) -> Pusher: ...
    @property
    def exposition(self) -> Exposition: ...
    @property
    def runner(self) -> ActionRunner: ...
    @property
    def captures(self) -> CaptureService: ...
    @property
    def mirrors(self) -> Mirrors: ...
    @property
    def drills(self) -> DrillService: ...
    @property
    def compliance(self) -> ComplianceService: ...
    @property
    def remedies(self) -> Remedies: ...
    @property
    def scaling(self) -> Scaling: ...
    @property
    def leadership(self) -> Leadership: ...
    @property
    def readthrough(self) -> ReadThrough: ...
    @property
    def provider_status(self) -> HerokuStatusPoller | None: ...
    def heartbeat(self) -> None: ...
    def collect_all(self, one_shot: bool = False) -> Any: ...
    def prune(self) -> Any: ...


def periodic_jobs(g: GuardianParts, now: datetime) -> list[JobSpec]:
    """Every periodic job of a guardian, starting from `now`."""
    cfg, dbs, every = g.config, list(g.databases.values()), g.config.collect_interval
    archive_every = {"seconds": max(60.0, every.total_seconds()), "next_run_time": now + every}
    jobs = [JobSpec("heartbeat", g.heartbeat, "interval", {"seconds": HEARTBEAT_SECONDS}, "heartbeat"),
            JobSpec("decisions", lambda: g.control.noted(g.audit.read(limit=RECENT_DECISIONS)), "interval",
                    {"seconds": every.total_seconds()}),
            JobSpec("collect", g.collect_all, "interval", {"seconds": every.total_seconds(), "next_run_time": now}),
            JobSpec("leader", g.leadership.elect, "interval", {"seconds": cfg.state.leader_interval.total_seconds()},
                    "leader")]
    if g.provider_status is not None:  # its own pace: a public host outside the Platform API's rate budget
        jobs.append(JobSpec("heroku-status", g.provider_status.poll, "interval", {
            "seconds": cfg.heroku.status.interval.total_seconds(), "next_run_time": now}))
    watch = g.token_watch
    if watch is not None:  # the API token's lifetime, once at start and then daily (it changes slowly)
        jobs.append(JobSpec("heroku-token", watch.read, "interval",
                            {"seconds": TOKEN_READ_EVERY.total_seconds(), "next_run_time": now}))
    if cfg.actions.scale:
        jobs.append(JobSpec("probe", g.scaling.probe_all, "interval", {
            "seconds": min(t.interval for t in cfg.actions.scale).total_seconds(), "next_run_time": now}))
    if any(g.archive.covers(db) and db.heroku is not None for db in dbs):
        jobs.append(JobSpec("mirror", g.mirrors.pending, "interval", archive_every, "archive", leader_only=True))
    if any(db.heroku is not None and not g.archive.covers(db) for db in dbs):
        jobs.append(JobSpec("readability", g.readthrough.check, "interval", archive_every, "archive",
                            leader_only=True))
    if any(g.archive.covers(db) for db in dbs):
        jobs.append(JobSpec("prune", g.prune, "interval", {"hours": 24, "next_run_time": now + timedelta(minutes=10)},
                            "archive", leader_only=True))
    jobs.append(JobSpec("sweep-scratch", g.drills.sweep_scratch, "date", {"run_date": now}, "archive",
                        leader_only=True))
    for db in dbs:
        for scenario, cron in scenarios(db).items():
            jobs.append(JobSpec(f"drill:{scenario}:{db.name}", g.drills.drill, CronTrigger.from_crontab(
                cron, timezone=UTC), {"misfire_grace_time": None}, "drills", True, (db.name, scenario)))
        if db.compliance is not None:  # a late export runs late, never not
            jobs.append(JobSpec(f"compliance:{db.name}", g.compliance.export, CronTrigger.from_crontab(
                CRONS[db.compliance.every], timezone=UTC), {"misfire_grace_time": None}, "drills", True,
                (db.name,)))
        if db.self_managed:
            first = g.captures.first_capture_at(db, now)
            # a late capture runs late, never not
            jobs.append(JobSpec(f"capture:{db.name}", g.captures.capture, "interval", {
                "seconds": db.capture_interval.total_seconds(), "next_run_time": first, "misfire_grace_time": None},
                "captures", True, (db.name,)))
            logger.info("capture of {} every {}; next at {}", db.name, format_duration(db.capture_interval),
                        first.isoformat(timespec="seconds"))
    return jobs
