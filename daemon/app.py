"""Composition root: builds each part of the guardian from the configuration, with what that part uses, and
wires them; the run-time shell (`daemon.runtime`) runs the jobs.

Every part is built on first use, so a CLI command builds only what it uses (`archive list` reads the store and
never starts a thread pool, Sentry or the Heroku client); `start()` builds the rest. docs/ARCHITECTURE.md says
where each part lives and how facts flow from the collectors to the actions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property, partial

from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from actions.audit import AuditLog
from actions.capture import Capturer, CaptureService
from actions.drill.jobs import DrillJobs, drill_policy, scenarios
from actions.drill.run import FULL, DrillRun, DrillRunner, Progress
from actions.mirror import Mirror, Mirrors
from actions.pipeline import ActionKind, Gate, Pipeline, Switches
from actions.prune import Deletions
from actions.remedy import OwnCaptures, Remedies, in_shard, pause_reason
from actions.runner import ActionRunner
from collectors.archive import ArchiveReader
from collectors.boundary import CollectorBoundary
from collectors.collection import Collection, HerokuSide
from collectors.fleet import HerokuFleet
from collectors.freshness import load_successes, save_successes, stale_after
from collectors.heroku import HerokuWatcher
from collectors.readability import ReadThrough
from daemon.adapters.archive.store import ArchiveStore, LocalDirectoryStore
from daemon.adapters.heroku import HerokuAPI, HerokuClient
from daemon.adapters.postgres.tools import ProcessRegistry
from daemon.adapters.sentry import LogNotifier, make_notifier
from daemon.adapters.statestore import StateStore, open_state_store
from daemon.config import DatabaseConfig, GuardianConfig, HerokuConfig
from daemon.control import ControlPanel
from daemon.core.durations import format_duration
from daemon.core.retention import PruneDecision
from daemon.core.snapshot import DatabaseState, Snapshot, StateHolder
from daemon.evaluation import Completion, Evaluator
from daemon.leadership import Leadership
from daemon.metrics import Exposition
from daemon.push import Pusher
from daemon.runtime import JobSpec, Runtime
from daemon.web.server import GuardianHTTP

HEARTBEAT_SECONDS = 5
SHUTDOWN_BUDGET = 10.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def open_archive_store(config: GuardianConfig) -> ArchiveStore:
    """The configured archive store (S3 imports boto3 only when used)."""
    if config.archive.kind == "s3" and config.archive.s3 is not None:
        from daemon.adapters.archive.s3 import S3ArchiveStore

        return S3ArchiveStore(config.archive.s3)
    return LocalDirectoryStore(config.archive_dir)


def heroku_client(cfg: HerokuConfig) -> HerokuClient:
    token = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
    # max_rate_wait=0: a 429 ends the poll at once and the fleet planner does the waiting, so a pass never
    # sits in sleeps holding the collection lock.
    return HerokuClient(token, platform_url=cfg.platform_url, data_url=cfg.data_url,
                        timeout=cfg.timeout.total_seconds(), retries=cfg.retries, max_rate_wait=0)


def initial_state(db: DatabaseConfig) -> DatabaseState:
    obj = db.objectives
    return DatabaseState(name=db.name, rpo_seconds=obj.rpo.total_seconds(), rpo_warning_ratio=obj.rpo_at_risk_ratio,
                         rto_seconds={k: v.total_seconds() for k, v in obj.rto})


class Guardian:
    """The guardian's parts, each built on first use, and the few operations that span several of them."""

    def __init__(self, config: GuardianConfig, *, demo: bool = False, clock: Callable[[], datetime] = utcnow,
                 heroku_api: HerokuAPI | None = None, quiet: bool = False) -> None:
        self.config, self.clock, self.quiet, self._heroku_api = config, clock, quiet, heroku_api
        shards = config.state  # with sharding, this replica group watches its share (a stable hash of each name)
        self.databases = {db.name: db for db in config.all_databases
                          if in_shard(db, shards.shard_count, shards.shard_index)}
        self.holder = StateHolder(Snapshot(databases={n: initial_state(db) for n, db in self.databases.items()},
                                           demo=demo, started_at=clock()))
        self.processes = ProcessRegistry()  # per guardian: stopping one never poisons another in the process
        self.http: GuardianHTTP | None = None

    # -- adapters -----------------------------------------------------------------------------------------
    @cached_property
    def heroku_api(self) -> HerokuAPI | None:
        if self._heroku_api is None and (self.config.heroku_databases or self.config.actions.scale):
            self._heroku_api = heroku_client(self.config.heroku)  # scaling speaks the Platform API too
        return self._heroku_api

    @cached_property
    def heroku(self) -> HerokuSide:
        fleet = None
        if self.config.heroku_databases and self.heroku_api is not None:
            fleet = HerokuFleet(
                watchers={db.name: HerokuWatcher(db.name, db.heroku.app, db.heroku.attachment, self.heroku_api)
                          for db in self.config.heroku_databases
                          if db.heroku is not None and db.name in self.databases},
                polling=self.config.heroku.polling, share=self.config.heroku.rate_budget_share)
        return HerokuSide(fleet, self.heroku_api)

    @property
    def fleet(self) -> HerokuFleet | None:
        return self.heroku.fleet

    @cached_property
    def store(self) -> ArchiveStore:
        return open_archive_store(self.config)

    @cached_property
    def state(self) -> StateStore:
        url = self.config.state.url
        return open_state_store(url.get_secret_value() if url is not None else None, self.config.state_dir)

    @cached_property
    def notifier(self) -> LogNotifier:
        s = self.config.sentry
        notifier = make_notifier(s.dsn.get_secret_value() if s.dsn else None, self.config.state_dir, s.reminder,
                                 s.environment, self.clock, self.quiet, store=self.state, flap_window=s.flap_window)
        notifier.tracker.scope = set(self.databases)
        return notifier

    # -- the core of the running guardian -----------------------------------------------------------------
    @cached_property
    def leadership(self) -> Leadership:
        return Leadership(self.state, self.config.state.shard_index, self.config.state.shard_count,
                          on_takeover=lambda: self.notifier.tracker.reload(), on_change=lambda: self.control.publish())

    @cached_property
    def control(self) -> ControlPanel:
        return ControlPanel(self.holder, self.config.actions, self.paused, lambda: self.leadership.held,
                            lambda: self.runner.last_taken)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.state, self.clock)

    @cached_property
    def runner(self) -> ActionRunner:
        return ActionRunner(self.state, self.audit, self.count_action, self.clock,
                            on_interrupted=lambda record: self.captures.record_interrupted(record))

    @cached_property
    def gate(self) -> Gate:
        """Every change to the world is decided by the guards its kind declares (actions.pipeline)."""
        return Gate(Switches(enabled=lambda: self.config.actions.enabled, paused=self.paused,
                             leader=lambda: self.leadership.is_leader(), dry_run=self._dry_run), self.clock)

    @cached_property
    def pipeline(self) -> Pipeline:
        return Pipeline(self.runner, self.gate)

    @cached_property
    def archive(self) -> ArchiveReader:
        return ArchiveReader(self.config.archive, self.store, self.clock)

    @cached_property
    def collection(self) -> Collection:
        shards = self.config.state
        boundary = CollectorBoundary(self.holder, load_successes(self.state, shards.shard_index, shards.shard_count),
                                     partial(stale_after, self.config), self.clock)
        completion = Completion(unrecorded=self.capturer.unrecorded, capturing=self.capturer.running,
                                next_capture_at=lambda name: self.runtime.next_run(f"capture:{name}"),
                                with_readability=self.readthrough.with_verdicts)
        evaluator = Evaluator(self.holder, self.databases, completion, self.archive.policy, drill_policy,
                              self.heroku, self._notify, self.clock)
        self.drills.load_history()
        return Collection(self.databases, self.archive, self.heroku, boundary, evaluator,
                          self.config.collect_interval.total_seconds(), self.clock, self.processes.closing.is_set)

    @cached_property
    def readthrough(self) -> ReadThrough:
        return ReadThrough(self.holder, self.databases, self.archive, self.heroku, self.processes.closing.is_set,
                           lambda: self.collection.republish())

    @cached_property
    def capturer(self) -> Capturer:
        return Capturer(self.store, self.processes, self.clock)

    # -- actions ------------------------------------------------------------------------------------------
    @cached_property
    def captures(self) -> CaptureService:
        return CaptureService(self.databases, self.config.all_databases, self.capturer, self.pipeline, self.holder,
                              self.notifier, self.collect_archive_of, self.deletions.keep_last, lambda: self.stopping)

    @cached_property
    def deletions(self) -> Deletions:
        return Deletions(self.store, dict(self.config.archive.keeps), self.gate, self.audit, self.count_action,
                         self.clock, self.state.exclusive)

    @cached_property
    def mirrors(self) -> Mirrors:
        api = self.heroku_api
        mirror = Mirror(self.store, api, clock=self.clock, stopping=self.processes.closing.is_set) if api else None
        return Mirrors(mirror, self.pipeline, self.databases, self.heroku.billing_app, self.config.archive.mirrors,
                       self.processes.closing.is_set, self.collect_archive_of)

    @cached_property
    def drills(self) -> DrillJobs:
        runner = DrillRunner(self.store, self.heroku_api, self.config.state_dir, self.processes, self.state,
                             self.config.all_databases, self.clock)
        return DrillJobs(self.databases, runner, self.pipeline, self.holder, self.state, self.store, self.notifier,
                         self.audit, self.config.state_dir, self.config.archive.kind == "s3", self.heroku.billing_app,
                         lambda: self.collection.republish(), self.count_action, self.clock)

    @cached_property
    def remedies(self) -> Remedies:
        own = OwnCaptures(self.captures.capture, self.capturer.running, self.refresh_heroku, self.collect_archive_of)
        return Remedies(self.config.actions, self.databases, self.runner, self.gate, self.state, self.holder,
                        self.leadership, self.heroku, self.archive, self.mirrors.mirror, own,
                        self.config.state.shard_index, self.control.publish_probes, self.clock, self.processes.closing)

    @cached_property
    def exposition(self) -> Exposition:
        return Exposition(self.holder)

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(lambda: self.stopping, lambda: self.leadership.is_leader())

    # -- wiring helpers -----------------------------------------------------------------------------------
    def _dry_run(self, kind: ActionKind) -> bool:
        """The dry-run switch a kind declares: actions.dry_run for remedies, archive.prune_apply for the prune."""
        if kind.dry_run_switch == "archive.prune_apply":
            return not self.config.archive.prune_apply
        return self.config.actions.dry_run

    def paused(self) -> str | None:
        """Why actions are paused (`backup-guardian actions pause`), or None."""
        return pause_reason(self.state)

    def _notify(self, snap: Snapshot, now: datetime) -> None:
        if self.leadership.held is not False:  # followers stay quiet: the leader tells (one event, not one each)
            self.notifier.on_evaluation(snap.databases, now)

    def count_action(self, action: str, outcome: str) -> None:
        self.control.count(action, outcome)

    def is_leader(self) -> bool:
        return self.leadership.is_leader()

    def elect(self) -> bool:
        return self.leadership.elect()

    @property
    def stopping(self) -> bool:
        """From the start of `stop()` on: no job starts, no child process starts."""
        return self.processes.closing.is_set()

    # -- operations ---------------------------------------------------------------------------------------
    def collect_all(self, one_shot: bool = False) -> Snapshot:
        """One collection pass and evaluation; then (in the daemon) the remedies and the Pushgateway."""
        snap = self.collection.collect(one_shot)
        shards = self.config.state
        save_successes(self.state, shards.shard_index, shards.shard_count, snap.collectors.values())
        if not one_shot:
            try:
                self.remedies.after_evaluation(snap)
            except Exception as exc:  # planning must never stop collection
                logger.opt(exception=exc).error("planning remedial actions failed")
        self.control.publish()
        if not one_shot:
            self.pusher.push()
        return snap

    @cached_property
    def pusher(self) -> Pusher:
        return Pusher(self.config.push, self.exposition.registry)

    def refresh_heroku(self, name: str) -> None:
        self.collection.refresh_heroku(name)

    def collect_archive_of(self, name: str) -> Snapshot:
        return self.collection.collect_archive_of(name)

    def capture(self, name: str, kind: str = "scheduled", lock: bool = True) -> tuple[bool, str]:
        return self.captures.capture(name, kind, lock)

    def mirror_pending(self, only: str | None = None,
                       progress: Callable[[str, int, int | None], None] | None = None) -> int:
        return self.mirrors.pending(self.holder.current(), only, progress)

    def check_readability(self) -> int:
        return self.readthrough.check()

    def prune(self, apply: bool | None = None) -> list[PruneDecision]:
        names = [n for n, db in self.databases.items() if self.archive.covers(db)]
        return self.deletions.prune(names, self.config.archive.prune_apply if apply is None else apply)

    def drill(self, name: str, scenario: str = FULL, progress: Progress | None = None,
              manual: bool = False) -> DrillRun:
        return self.drills.drill(name, scenario, progress, manual)

    def sweep_scratch(self, manual: bool = False) -> None:
        self.drills.sweep_scratch(manual)

    def heartbeat(self) -> None:
        self.holder.heartbeat_at = self.clock()
        self.notifier.heartbeat(self.holder.heartbeat_at)

    # -- running ------------------------------------------------------------------------------------------
    def jobs(self, now: datetime) -> list[JobSpec]:
        """Every periodic job of this guardian, with its trigger and workers."""
        cfg, dbs, every = self.config, list(self.databases.values()), self.config.collect_interval
        archive_every = {"seconds": max(60.0, every.total_seconds()), "next_run_time": now + every}
        jobs = [JobSpec("heartbeat", self.heartbeat, "interval", {"seconds": HEARTBEAT_SECONDS}, "heartbeat"),
                JobSpec("collect", self.collect_all, "interval",
                        {"seconds": every.total_seconds(), "next_run_time": now}),
                JobSpec("leader", self.elect, "interval",
                        {"seconds": cfg.state.leader_interval.total_seconds()}, "leader")]
        if cfg.actions.scale:
            jobs.append(JobSpec("probe", self.remedies.probe_all, "interval", {
                "seconds": min(t.interval for t in cfg.actions.scale).total_seconds(), "next_run_time": now}))
        if any(self.archive.covers(db) and db.heroku is not None for db in dbs):
            jobs.append(JobSpec("mirror", self.mirror_pending, "interval", archive_every, "archive", True))
        if any(db.heroku is not None and not self.archive.covers(db) for db in dbs):
            jobs.append(JobSpec("readability", self.check_readability, "interval", archive_every, "archive", True))
        if any(self.archive.covers(db) for db in dbs):
            jobs.append(JobSpec("prune", self.prune, "interval",
                                {"hours": 24, "next_run_time": now + timedelta(minutes=10)}, "archive", True))
        jobs.append(JobSpec("sweep-scratch", self.sweep_scratch, "date", {"run_date": now}, "archive", True))
        for db in dbs:
            for scenario, cron in scenarios(db).items():
                jobs.append(JobSpec(f"drill:{scenario}:{db.name}", self.drills.drill, CronTrigger.from_crontab(
                    cron, timezone=UTC), {"misfire_grace_time": None}, "drills", True, (db.name, scenario)))
            if db.self_managed:
                first = self.captures.first_capture_at(db, now)
                jobs.append(JobSpec(f"capture:{db.name}", self.capture, "interval", {  # a late capture runs late
                    "seconds": db.capture_interval.total_seconds(), "next_run_time": first, "misfire_grace_time": None},
                    "captures", True, (db.name,)))
                logger.info("capture of {} every {}; next at {}", db.name, format_duration(db.capture_interval),
                            first.isoformat(timespec="seconds"))
        return jobs

    @property
    def scheduler(self) -> object:
        return self.runtime.scheduler

    def start(self, serve_http: bool = True) -> None:
        """Start HTTP first (so /healthz answers at once), then the scheduler with every job."""
        try:
            self.config.archive_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error("cannot create the archive directory {}: {}", self.config.archive_dir, exc.strerror)
        self.captures.clean_partials()
        self.runner.close_interrupted()  # what a process that died left "running" (never a live one's)
        if serve_http:
            host, port = self.config.listen_host_port
            self.http = GuardianHTTP(host, port, self.holder, self.exposition, self.clock, self.config.web)
            self.http.start()
            logger.info("serving /metrics, /healthz, /readyz, /api/status on {}", self.http.url)
        self.heartbeat()
        self.elect()
        self.remedies.announce()
        self.runtime.start(self.jobs(self.clock()))

    def add_job(self, job_id: str, fn: Callable[[], None], every: timedelta) -> None:
        self.runtime.add_job(job_id, fn, every)

    def _built(self, name: str) -> bool:
        return name in self.__dict__

    def stop(self) -> None:
        """Ordered shutdown of what was built: the stopping flag (no queued job or child starts from here on),
        scheduler and action pools (queued jobs cancelled), running children, HTTP, worker pools."""
        deadline = time.monotonic() + SHUTDOWN_BUDGET
        self.processes.closing.set()
        if self._built("runtime"):
            self.runtime.shutdown()
        if self._built("remedies"):
            self.remedies.cancel_queued()
        self.processes.terminate_all()
        if self.http is not None:
            self.http.stop()
        if self._built("collection"):
            self.collection.close()
        if isinstance(self._heroku_api, HerokuClient):
            self._heroku_api.close()
        if self._built("mirrors") and self.mirrors.mirror is not None:
            self.mirrors.mirror.close()
        if self._built("drills"):
            self.drills.runner.close()
        if self._built("remedies"):
            self.remedies.close()
        if self._built("notifier"):
            self.notifier.close()
        for thread in Runtime.unfinished_threads():
            thread.join(timeout=max(0.0, deadline - time.monotonic() - 2))
        if self._built("state"):
            self.state.release_leadership()  # after the actions ended, so a successor never overlaps them
            self.state.close()

    unfinished_threads = staticmethod(Runtime.unfinished_threads)
