"""Composition root: builds each part of the guardian from the configuration, with what that part uses, and
wires them; the run-time shell (`daemon.runtime`) runs the jobs.

Every part is built on first use, so a CLI command builds only what it uses (`archive list` reads the store and
never starts a thread pool, Sentry or the Heroku client); `start()` builds the rest. docs/ARCHITECTURE.md says
where each part lives and how facts flow from the collectors to the actions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property, partial
from typing import TYPE_CHECKING

from actions.audit import AuditLog
from actions.capture import Capturer, CaptureService
from actions.compliance import ComplianceRunner, ComplianceService
from actions.deletions import Deletions
from actions.drill.run import DrillRunner
from actions.drill.service import DrillService, drill_policy
from actions.mirror import Mirror, Mirrors
from actions.pipeline import Gate, Pipeline, Switches, dry_run_of, pause_reason
from actions.remedy import OwnCaptures, Remedies
from actions.rollback import Rollbacks
from actions.runner import ActionRunner
from actions.scale import Scaling
from collectors.archive import ArchiveReader
from collectors.boundary import CollectorBoundary
from collectors.collection import Collection
from collectors.fleet import HerokuSide
from collectors.freshness import load_successes, stale_after
from collectors.heroku_status import HerokuStatusPoller, IncidentHistory
from collectors.heroku_token import TokenWatch
from collectors.readability import ReadThrough
from daemon.adapters.archive import open_store
from daemon.adapters.archive.s3.objects import ObjectSource
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.heroku import HerokuAPI, HerokuClient, client_for
from daemon.adapters.heroku_status import HerokuStatusClient
from daemon.adapters.postgres.tools import ProcessRegistry, client_tools
from daemon.adapters.sentry import LogNotifier, make_notifier
from daemon.adapters.statestore import StateStore, open_state_store
from daemon.config import GuardianConfig
from daemon.control import DECISIONS_KEPT, RECENT_DECISIONS, ControlPanel
from daemon.core.errors import GuardianError
from daemon.core.retention import PruneDecision
from daemon.core.snapshot import Snapshot, StateHolder
from daemon.evaluation import Completion, Evaluator, initial_state
from daemon.leadership import Leadership, in_shard
from daemon.metrics import Exposition
from daemon.push import Pusher
from daemon.runtime import Runtime, StopSteps, collect_pass

if TYPE_CHECKING:
    from daemon.web.server import GuardianHTTP


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        self.processes = ProcessRegistry()  # per guardian, never shared; `closing` is set once `stop()` begins
        self.http: GuardianHTTP | None = None
        self.on_stop = StopSteps()  # each part that holds threads, sockets or the store says how it ends
        if isinstance(heroku_api, HerokuClient):
            self.on_stop.close.append(heroku_api.close)

    # -- adapters -----------------------------------------------------------------------------------------
    @cached_property
    def heroku_api(self) -> HerokuAPI | None:
        if self._heroku_api is None and (self.config.heroku_databases or self.config.actions.scale):
            self._heroku_api = client = client_for(self.config.heroku)  # scaling speaks the Platform API too
            self.on_stop.close.append(client.close)
        return self._heroku_api

    @cached_property
    def provider_status(self) -> HerokuStatusPoller | None:
        """Heroku's status API poller, when some Heroku source or scale target is configured and it is on."""
        cfg = self.config.heroku.status
        if not cfg.enabled or not (self.config.heroku_databases or self.config.actions.scale):
            return None
        client = HerokuStatusClient(cfg.url, cfg.timeout)
        self.on_stop.close.append(client.close)
        boundary = CollectorBoundary(self.holder, {}, lambda _c: cfg.interval * 3, self.clock)
        # the incident history is written as the finding history is: by the leader (followers stay quiet)
        history = IncidentHistory(self.state, self.config.state.history_keep,
                                  recording=lambda: self.leadership.held is not False)
        return HerokuStatusPoller(client.current_status, boundary, self.holder, self.clock,
                                  trust_for=(cfg.interval * 3).total_seconds(),
                                  on_change=lambda: self.collection.republish(), record=history)

    def provider_incident(self) -> str | None:
        """Heroku's current incident on Data or Apps as readable text ("Heroku reports an incident on Data:
        <title>"), or None. Read-only; what the composition root hands to actions that act against Heroku."""
        poller = self.provider_status
        return poller.current_incident() if poller is not None else None

    @cached_property
    def token_watch(self) -> TokenWatch | None:
        """The Heroku API token's lifetime, read daily, when Heroku databases are watched."""
        api = self.heroku_api
        return TokenWatch(api, self.clock) if api is not None and self.config.heroku_databases else None

    @cached_property
    def heroku(self) -> HerokuSide:
        return HerokuSide.configured(self.config, set(self.databases), self.heroku_api)

    @cached_property
    def store(self) -> ArchiveStore:
        return open_store(self.config)

    @cached_property
    def state(self) -> StateStore:
        url = self.config.state.url
        state = open_state_store(url.get_secret_value() if url is not None else None, self.config.state_dir)
        self.on_stop.last.append(state.close)  # after the actions ended, so a successor never overlaps them
        return state

    @cached_property
    def notifier(self) -> LogNotifier:
        notifier = make_notifier(self.config.sentry, self.config.state_dir, self.clock, self.quiet, self.state,
                                 scope=set(self.databases), notifications=self.config.notifications,
                                 history_keep=self.config.state.history_keep)
        self.on_stop.close.append(notifier.close)
        return notifier

    # -- the core of the running guardian -----------------------------------------------------------------
    @cached_property
    def leadership(self) -> Leadership:
        leadership = Leadership(self.state, self.config.state.shard_index, self.config.state.shard_count,
                                on_takeover=lambda: self.notifier.tracker.reload(),
                                on_change=lambda: self.control.publish())
        self.on_stop.last.insert(0, leadership.release)  # before the store closes
        return leadership

    @cached_property
    def control(self) -> ControlPanel:
        return ControlPanel(self.holder, self.config.actions, self.paused, lambda: self.leadership.held,
                            lambda: self.runner.last_taken, self.databases)

    @cached_property
    def audit(self) -> AuditLog:
        audit = AuditLog(self.state, self.clock, on_record=self.control.noted)
        with contextlib.suppress(GuardianError):  # an unreadable store is reported where it is used
            for name in self.databases:  # the page shows them again after a restart, however old
                self.control.noted(audit.read(limit=DECISIONS_KEPT, target=name))
            self.control.noted(audit.read(limit=RECENT_DECISIONS))  # and those about single copies
        return audit

    @cached_property
    def runner(self) -> ActionRunner:
        return ActionRunner(self.state, self.audit, self.control.count, self.clock,
                            on_interrupted=lambda record: self.captures.record_interrupted(record))

    @cached_property
    def gate(self) -> Gate:
        """Every change to the world is decided by the guards its kind declares (actions.pipeline)."""
        return Gate(Switches(enabled=lambda: self.config.actions.enabled, paused=self.paused,
                             leader=lambda: self.leadership.is_leader(),
                             dry_run=partial(dry_run_of, self.config),
                             provider_incident=self.provider_incident), self.clock)

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
        watch = self.token_watch
        evaluator = Evaluator(self.holder, self.databases, completion, self.archive.policy, drill_policy,
                              self.heroku, self._notify, self.clock, client_tools(),
                              provider_incident=self.provider_incident,
                              token=(lambda: watch.lifetime) if watch is not None else None,
                              token_warn_before=self.config.heroku.token_warn_before,
                              compliance_policy=lambda cfg, since: self.compliance.policy(cfg, since))
        self.drills  # noqa: B018 - built first: its history is in the snapshot before the first evaluation
        self.compliance  # noqa: B018 - likewise the last compliance exports
        self.audit  # noqa: B018 - likewise the recent decisions the status page lists
        collection = Collection(self.databases, self.archive, self.heroku, boundary, evaluator,
                                self.config.collect_interval.total_seconds(), self.clock, self.processes.closing.is_set)
        self.on_stop.close.append(collection.close)
        return collection

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
                              self.notifier, self._reread, self.deletions.keep_last, self.processes.closing.is_set)

    @cached_property
    def deletions(self) -> Deletions:
        return Deletions(self.store, dict(self.config.archive.keeps), self.pipeline, self.audit, self.control.count,
                         self.clock, {n: db.compliance.keep_years for n, db in self.databases.items() if db.compliance})

    @cached_property
    def mirrors(self) -> Mirrors:
        api = self.heroku_api
        mirror = Mirror(self.store, api, clock=self.clock, stopping=self.processes.closing.is_set) if api else None
        return Mirrors(mirror, self.pipeline, self.databases, self.heroku.billing_app, self.config.archive.mirrors,
                       self.processes.closing.is_set, self._reread, self.holder.current)

    @cached_property
    def drills(self) -> DrillService:
        runner = DrillRunner(self.store, self.heroku_api, self.config.state_dir, self.processes, self.state,
                             self.config.all_databases, self.clock)
        drills = DrillService(self.databases, runner, self.pipeline, self.holder, self.state, self.store, self.notifier,
                         self.audit, self.config.state_dir, self.config.archive.kind == "s3", self.heroku.billing_app,
                              lambda: self.collection.republish(), self.control.count, self.clock)
        drills.load_history()  # the newest drills are in the snapshot before anything evaluates or serves it
        self.on_stop.close.append(runner.close)
        return drills

    @cached_property
    def compliance(self) -> ComplianceService:
        """Compliance exports: the drill's restore course, exporting instead of checking (actions.compliance)."""
        runner = ComplianceRunner(self.store, self.heroku_api, self.config.state_dir, self.processes, self.state,
                                  self.config.all_databases, self.clock)
        s3 = self.config.archive.s3  # the application objects are read with the archive's S3 connection
        sources = {n: ObjectSource(s3, db.compliance.objects.bucket) for n, db in self.databases.items()
                   if s3 is not None and db.compliance is not None and db.compliance.objects is not None}
        return ComplianceService(self.databases, runner, self.pipeline, self.holder, self.store, self.state,
                                 self.clock, sources, self.heroku.billing_app)

    @cached_property
    def remedies(self) -> Remedies:
        own = OwnCaptures(self.captures.capture, self.capturer.running,
                          lambda name: self.collection.refresh_heroku(name), self._reread)
        remedies = Remedies(self.config.actions, self.databases, self.runner, self.gate, self.paused, self.holder,
                            self.leadership, self.heroku, self.archive, self.mirrors.mirror, own, self.clock,
                            self.processes.closing)
        self.on_stop.cancel.append(remedies.cancel_queued)
        return remedies

    @cached_property
    def rollbacks(self) -> Rollbacks:
        return Rollbacks(self.config.actions, self.runner, self.gate, self.state, self.leadership, self.heroku_api,
                         self.provider_incident, self.clock)

    @cached_property
    def scaling(self) -> Scaling:
        scaling = Scaling(self.config.actions, self.runner, self.gate, self.state, self.leadership, self.heroku_api,
                          self.config.state.shard_index, self.control.publish_probes, self.clock,
                          on_probe=self.rollbacks.observe)
        self.on_stop.close.append(scaling.close)
        return scaling

    @cached_property
    def exposition(self) -> Exposition:
        return Exposition(self.holder, isolated=True)  # rendering never holds the interpreter lock against scrapes

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(self.processes.closing.is_set, lambda: self.leadership.is_leader())

    # -- wiring helpers -----------------------------------------------------------------------------------
    def paused(self) -> str | None:
        """Why actions are paused (`backup-guardian actions pause`), or None."""
        return pause_reason(self.state)

    def _reread(self, name: str) -> Snapshot:
        """Read one database's archive again (after a capture, a copy or a deletion) and re-evaluate."""
        if self.processes.closing.is_set():  # stopping: nothing reads the state, and no part is built now
            return self.holder.current()
        return self.collection.collect_archive_of(name)

    def _notify(self, snap: Snapshot, now: datetime) -> None:
        if self.leadership.held is not False:  # followers stay quiet: the leader tells (one event, not one each)
            self.notifier.on_evaluation(snap.databases, now)

    # -- operations (the CLI commands and the jobs call these) -------------------------------------------
    def collect_all(self, one_shot: bool = False) -> Snapshot:
        """One collection pass and evaluation; in the daemon, followed by the remedies and the Pushgateway."""
        return collect_pass(self, one_shot)

    @cached_property
    def pusher(self) -> Pusher:
        return Pusher(self.config.push, self.exposition.registry)

    def prune(self, apply: bool | None = None) -> list[PruneDecision]:
        names = [n for n, db in self.databases.items() if self.archive.covers(db)]
        return self.deletions.prune(names, self.config.archive.prune_apply if apply is None else apply)

    def heartbeat(self) -> None:
        self.holder.heartbeat_at = self.clock()
        self.notifier.heartbeat(self.holder.heartbeat_at)

    # -- running ------------------------------------------------------------------------------------------
    def start(self, serve_http: bool = True) -> None:
        """Build every part the jobs and requests use, here in one thread, then let the run time start them."""
        for _part in (self.collection, self.readthrough, self.pusher, self.captures, self.deletions, self.mirrors,
                      self.drills, self.remedies, self.scaling):
            pass
        self.runtime.launch(self, serve_http)

    def stop(self) -> None:
        self.runtime.stop_all(self.processes, self.http, self.on_stop)

