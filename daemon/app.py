"""Composition root: builds every adapter, collector and action from the config, and runs them.

All periodic work is an APScheduler job wrapped by `_guarded` (the one error boundary): a failure is logged
and recorded as data, and the daemon goes on. Collectors publish into the `StateHolder`; the HTTP server
only reads it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from actions.audit import AuditLog
from actions.capture import Capturer, CaptureRequest
from actions.drill.report import load_latest, write_report
from actions.drill.run import FULL, TABLE, DrillBusy, DrillRun, DrillRunner, Progress, drill_lock, to_result
from actions.guards import Decision, Intent
from actions.pipeline import DRILL, SCHEDULED_CAPTURE, SCRATCH_SWEEP, ActionKind, Gate, Pipeline, Switches
from actions.planner import capture_source
from actions.remedy import Remedies, in_shard, pause_reason, person
from actions.runner import ActionRunner, Outcome
from actions.scale import ProbeState
from collectors.archive import with_unrecorded
from collectors.database import collect_live
from collectors.fleet import HerokuFleet
from collectors.freshness import load_successes, save_successes, stale_after
from collectors.heroku import SOURCE_HEROKU, HerokuWatcher, require_transfer_num, transfer_num
from daemon.adapters.heroku import HerokuAPI, HerokuClient
from daemon.adapters.postgres.toc import Toc, read_stream
from daemon.adapters.postgres.tools import ProcessRegistry
from daemon.adapters.sentry import make_notifier
from daemon.adapters.statestore import ActionRecord, StateStore, open_state_store
from daemon.archiving import ArchiveService, make_store
from daemon.config import DatabaseConfig, GuardianConfig, HerokuConfig
from daemon.core import policy, risk
from daemon.core.durations import format_duration
from daemon.core.errors import GuardianError, StoppedByShutdown
from daemon.core.redact import REDACTOR
from daemon.core.retention import PruneDecision
from daemon.core.snapshot import (
    SOURCE_ARCHIVE,
    ActionsStatus,
    ArchiveFacts,
    CollectorStatus,
    DatabaseState,
    DrillResult,
    HerokuStatus,
    LiveFacts,
    ProbeStatus,
    ProviderFacts,
    Snapshot,
    SourceState,
    StateHolder,
    share_unreadable,
)
from daemon.jobpool import CancellingThreadPool
from daemon.metrics import Exposition
from daemon.web.server import GuardianHTTP

HEARTBEAT_SECONDS = 5
COLLECT_WORKERS = 4
SHUTDOWN_BUDGET = 10.0
#: Thread names of `concurrent.futures` pool workers (ours and APScheduler's): the interpreter's exit joins them.
POOL_THREADS = ("ThreadPoolExecutor-", "collect", "action", "s3-part", "toc-result")


def _heroku_client(cfg: HerokuConfig) -> HerokuClient:
    token = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
    # max_rate_wait=0: a 429 ends the poll at once and the fleet planner does the waiting, so a pass never
    # sits in sleeps holding the collection lock.
    return HerokuClient(token, platform_url=cfg.platform_url, data_url=cfg.data_url,
                        timeout=cfg.timeout.total_seconds(), retries=cfg.retries, max_rate_wait=0)


def _poll(watcher: HerokuWatcher, clock: Callable[[], datetime]) -> SourceState:
    return watcher.poll(clock())


class _Scheduler(BackgroundScheduler):
    """APScheduler's background scheduler, quiet about a one-shot job it finds gone during the shutdown: its
    thread may still be processing a just-run job (the start-up sweep) when `shutdown(wait=False)` has emptied
    the job store, and its JobLookupError would end the thread with a traceback at every such SIGTERM."""

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        try:
            super().remove_job(job_id, jobstore)
        except JobLookupError:
            if self.state != STATE_STOPPED:
                raise


@functools.lru_cache(maxsize=64)
def cron_interval(expr: str) -> timedelta:
    """The longest gap between the next few firings of a cron expression (its drill's interval)."""
    trigger = CronTrigger.from_crontab(expr, timezone=UTC)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    fires: list[datetime] = []
    for _ in range(5):
        nxt = trigger.get_next_fire_time(None, t)
        if nxt is None:
            break
        fires.append(nxt)
        t = nxt + timedelta(seconds=1)
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    return max(gaps) if gaps else timedelta(days=31)


def _with_drills(db: DatabaseState, drills: tuple[DrillResult, ...]) -> DatabaseState:
    return replace(db, drills=drills)


def _with_leftovers(db: DatabaseState, leftovers: tuple[str, ...]) -> DatabaseState:
    return replace(db, scratch_leftovers=leftovers)


def result_from_report(doc: dict[str, Any]) -> DrillResult:
    return DrillResult(
        scenario=str(doc["scenario"]), started_at=datetime.fromisoformat(doc["started_at"]),
        succeeded=bool(doc["succeeded"]), reason=str(doc.get("reason", "")),
        recovery_seconds=float(doc.get("recovery_seconds") or 0), rto_seconds=doc.get("rto_seconds"),
        phases={k: float(v) for k, v in (doc.get("phases_seconds") or {}).items()},
        checks_failed=sum(1 for c in doc.get("checks", []) if not c.get("ok")),
        backup_id=(doc.get("backup") or {}).get("id"), report=doc.get("_path"),
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


def _initial_state(db: DatabaseConfig) -> DatabaseState:
    obj = db.objectives
    return DatabaseState(
        name=db.name,
        rpo_seconds=obj.rpo.total_seconds(),
        rpo_warning_ratio=obj.rpo_at_risk_ratio,
        rto_seconds={k: v.total_seconds() for k, v in obj.rto},
    )


@dataclass
class _Collected:
    """What one database's collectors returned in one pass (absent where a collector failed)."""

    name: str
    sources: dict[str, SourceState]
    live: LiveFacts | None
    statuses: list[CollectorStatus]
    provider: ProviderFacts | None = None
    archive: ArchiveFacts | None = None


class Guardian:
    """The running guardian: state, collectors, captures, scheduler and HTTP."""

    def __init__(self, config: GuardianConfig, *, demo: bool = False, clock: Callable[[], datetime] = utcnow,
                 heroku_api: HerokuAPI | None = None, quiet: bool = False) -> None:
        self.config = config
        self.clock = clock
        shards = config.state
        # with sharding, this replica group watches only its share of the fleet (a stable hash of each name)
        self.databases = {db.name: db for db in config.all_databases
                          if in_shard(db, shards.shard_count, shards.shard_index)}
        self.holder = StateHolder(Snapshot(
            databases={name: _initial_state(db) for name, db in self.databases.items()},
            demo=demo, started_at=clock(),
        ))
        self.heroku_api = heroku_api
        self.fleet: HerokuFleet | None = None
        if config.heroku_databases or config.actions.scale:  # scaling speaks the Platform API too
            self.heroku_api = heroku_api or _heroku_client(config.heroku)
        if config.heroku_databases:
            assert self.heroku_api is not None
            self.fleet = HerokuFleet(
                watchers={db.name: HerokuWatcher(db.name, db.heroku.app, db.heroku.attachment, self.heroku_api)
                          for db in config.heroku_databases if db.heroku is not None and db.name in self.databases},
                polling=config.heroku.polling, share=config.heroku.rate_budget_share,
            )
        self.store = make_store(config)
        self.state: StateStore = open_state_store(
            config.state.url.get_secret_value() if config.state.url is not None else None, config.state_dir)
        self.leader_key = f"pg-backup-guardian:leader:{shards.shard_index}/{shards.shard_count}"
        self._successes = load_successes(self.state, shards.shard_index, shards.shard_count)  # across restarts
        self._leader: bool | None = None  # unknown until the first try
        self.audit = AuditLog(self.state, clock)
        self.processes = ProcessRegistry()  # per guardian: stopping one never poisons another in the process
        # every change to the world is decided by the guards its kind declares (actions.pipeline)
        self.gate = Gate(Switches(enabled=lambda: config.actions.enabled, paused=partial(pause_reason, self.state),
                                  leader=self.is_leader, dry_run=self._dry_run), clock)
        self.pipeline: Pipeline | None = None  # with the runner, below
        self.archive = ArchiveService(config, self.store, self.audit, self.heroku_api, clock, self.count_action,
                                      stopping=self.processes.closing.is_set, gate=self.gate,
                                      pipeline=lambda: self.pipeline)
        self.capturer = Capturer(self.store, self.processes, clock)
        self.drills = DrillRunner(self.store, self.heroku_api, config.state_dir, self.processes, self.state,
                                  config.all_databases, clock)
        self._load_drill_history()
        sentry = config.sentry
        self.notifier = make_notifier(sentry.dsn.get_secret_value() if sentry.dsn else None, config.state_dir,
                                      sentry.reminder, sentry.environment, clock, quiet, store=self.state,
                                      flap_window=sentry.flap_window)
        self.notifier.tracker.scope = set(self.databases)
        self._push_ok: bool | None = None
        self._readability: dict[tuple[str, str], Toc] = {}  # (database, Heroku backup id) -> its read-through
        self.exposition = Exposition(self.holder)
        self.scheduler: BackgroundScheduler | None = None
        self.http: GuardianHTTP | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(COLLECT_WORKERS, thread_name_prefix="collect")
        self._collect_lock = threading.Lock()
        self.runner = ActionRunner(self.state, self.audit, self.count_action, clock,
                                   on_interrupted=self._record_interrupted)
        self.pipeline = Pipeline(self.runner, self.gate)
        self.remedies = Remedies(self, self.runner)
        self.publish_control()

    # -- leadership and switches --------------------------------------------------------------------------
    def _dry_run(self, kind: ActionKind) -> bool:
        """The dry-run switch a kind declares: actions.dry_run for remedies, archive.prune_apply for the prune."""
        if kind.dry_run_switch == "archive.prune_apply":
            return not self.config.archive.prune_apply
        return self.config.actions.dry_run

    def is_leader(self) -> bool:
        """Whether this replica acts and drills (tried once on first use, then by the `leader` job)."""
        if self._leader is None:
            self.elect()
        return bool(self._leader)

    def elect(self) -> bool:
        """Try for (or confirm) leadership; log every change. The store never raises here."""
        now = self.state.try_leadership(self.leader_key)
        if now != self._leader:
            if now:
                logger.info("this replica is the leader ({}): it acts and drills", self.state.describe())
                if self._leader is False:  # a follower until now: take over the shared finding states
                    self.notifier.tracker.reload()
            elif self._leader is not None:
                logger.warning("this replica lost the leadership: it keeps collecting, another one acts")
            else:
                logger.info("another replica is the leader; this one collects and exports")
        self._leader = now
        self.publish_control()
        return now

    def publish_control(self) -> None:
        """The switches, leadership and last actions, for metrics and status."""
        c = self.holder.current().control
        new = ActionsStatus(enabled=self.config.actions.enabled, dry_run=self.config.actions.dry_run,
                            paused=self.remedies.paused(), leader=bool(self._leader),
                            last_taken={**c.last_taken, **self.runner.last_taken}, probes=c.probes)
        if new == c:
            return  # unchanged: no new snapshot version, so the cached exposition stays valid

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(new, probes=snap.control.probes))

        self.holder.update(apply)

    def publish_probes(self, probes: dict[str, ProbeState]) -> None:
        out = tuple(ProbeStatus(name, p.last.ok, p.consecutive_failures, p.last.latency_seconds, p.last.at,
                                p.last.error) for name, p in sorted(probes.items()) if p.last is not None)

        def apply(snap: Snapshot) -> Snapshot:
            return replace(snap, control=replace(snap.control, probes=out))

        self.holder.update(apply)

    # -- collection ---------------------------------------------------------------------------------------
    def collect_all(self, one_shot: bool = False) -> Snapshot:
        """One collection pass over every database, then one evaluation; publishes once. `one_shot` (the
        `check` command) polls every Heroku database once, outside the daemon's pacing."""
        with self._collect_lock:
            direct = [db for db in self.databases.values() if db.url is not None or self.archive.covers(db)]
            results = list(self._pool.map(self._collect_one, direct))
            if self.fleet is not None:
                results += self._collect_heroku(one_shot)
            snap = self._publish(results, first_pass_done=True)
            save_successes(self.state, self.config.state.shard_index, self.config.state.shard_count,
                           snap.collectors.values())
        if not one_shot:
            try:
                self.remedies.after_evaluation(snap)
            except Exception as exc:  # planning must never stop collection
                logger.opt(exception=exc).error("planning remedial actions failed")
        self.publish_control()
        if not one_shot:
            self.push()
        return snap

    def refresh_heroku(self, name: str) -> None:
        """Poll one Heroku database now (after an action changed it) and re-evaluate."""
        if self.fleet is None or name not in self.fleet.watchers or self.processes.closing.is_set():
            return
        watcher = self.fleet.watchers[name]
        src, status = self._run_collector("heroku", name, partial(_poll, watcher, self.clock))
        self.fleet.record(name, src, src is not None, self.clock())
        with self._collect_lock:
            self._publish([_Collected(name, {SOURCE_HEROKU: src} if src is not None else {}, watcher.live,
                                      [status], watcher.provider)])

    def push(self) -> None:
        """Push mode: the whole exposition to the Pushgateway (a failure is logged, never raised)."""
        cfg = self.config.push
        if cfg.url is None:
            return
        from prometheus_client.exposition import basic_auth_handler, push_to_gateway

        def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                    data: bytes) -> Callable[[], None]:
            if cfg.username is None:
                from prometheus_client.exposition import default_handler

                return default_handler(url, method, timeout, headers, data)
            password = cfg.password.get_secret_value() if cfg.password is not None else ""
            return basic_auth_handler(url, method, timeout, headers, data, cfg.username, password)

        # $DYNO (worker.1) is stable across Heroku restarts; the host name there is a fresh UUID each time,
        # which would leave a dead group per restart in the Pushgateway
        instance = cfg.instance or os.environ.get("DYNO") or socket.gethostname()
        try:
            push_to_gateway(cfg.url, job=cfg.job, registry=self.exposition.registry, timeout=10,
                            grouping_key={"instance": instance}, handler=handler)
            if self._push_ok is not True:
                logger.info("pushing metrics to {} (job {}, instance {})", cfg.url, cfg.job, instance)
            self._push_ok = True
        except Exception as exc:
            if self._push_ok is not False:  # the first failure and every change, not every pass
                logger.warning("push to the Pushgateway {} failed: {}", cfg.url, REDACTOR(str(exc)))
            self._push_ok = False

    def _collect_heroku(self, one_shot: bool = False) -> list[_Collected]:
        """One fleet pass: poll the due Heroku databases that fit this pass's share of the rate budget."""
        assert self.fleet is not None and self.heroku_api is not None
        now = self.clock()
        pass_seconds = 0.0 if one_shot else self.config.collect_interval.total_seconds()
        if self.fleet.stalled(now):
            try:
                self.heroku_api.refresh_ratelimit()
            except GuardianError as exc:
                logger.debug("heroku: rate limit status unavailable: {}", exc)
        chosen, report = self.fleet.plan(now, pass_seconds, self.heroku_api.ratelimit_remaining)
        before = self.heroku_api.requests_total
        results, sources = [], {}
        for name in chosen:
            watcher = self.fleet.watchers[name]
            src, status = self._run_collector("heroku", name, partial(_poll, watcher, self.clock))
            self.fleet.record(name, src, src is not None, self.clock())
            sources[name] = src
            results.append(_Collected(name, {SOURCE_HEROKU: src} if src is not None else {}, watcher.live,
                                      [status], watcher.provider))
            if src is None and self.heroku_api.ratelimit_remaining == 0:
                report.deferred += len(chosen) - len(results)  # rate limited: the rest wait for the bucket
                break
        report.polled = len(results)
        report.requests = self.heroku_api.requests_total - before
        current = self.holder.current().databases
        known = {n: (current[n].sources.get(SOURCE_HEROKU) if n in current else None) for n in self.fleet.watchers}
        known.update({n: s for n, s in sources.items() if s is not None})
        self.fleet.finish(report, pass_seconds, known, self.clock())
        return results

    def collect_archive_of(self, name: str) -> Snapshot:
        """Re-read one database's archive (after a capture) and re-evaluate; not while shutting down (nothing
        reads the state any more, and an evaluation of a large fleet would hold the exit up)."""
        if self.stopping:
            return self.holder.current()
        db = self.databases[name]
        with self._collect_lock:  # never interleave with a pass that read the archive before this capture
            return self._publish([self._collect_archive(db, _Collected(db.name, {}, None, []))])

    def _collect_archive(self, db: DatabaseConfig, into: _Collected) -> _Collected:
        found, status = self._run_collector("archive", db.name, partial(self.archive.collect, db.name))
        into.statuses.append(status)
        if found is not None:
            into.sources[SOURCE_ARCHIVE], into.archive = found
        return into

    def _collect_one(self, db: DatabaseConfig) -> _Collected:
        """Archive and live facts of one database (its Heroku side, if any, is the fleet's)."""
        out = _Collected(db.name, {}, None, [])
        if self.archive.covers(db):
            self._collect_archive(db, out)
        if db.url is not None:
            url = db.url.get_secret_value()
            out.live, status = self._run_collector(
                "database", db.name, lambda: collect_live(url, db.connect_timeout.total_seconds()))
            out.statuses.append(status)
        return out

    def _run_collector(self, collector: str, database: str, fn: Callable[[], Any]) -> tuple[Any, CollectorStatus]:
        """Run one collector behind the error boundary; the failure becomes data, never an exception."""
        prev = self.holder.current().collectors.get((collector, database)) or CollectorStatus(
            collector, database, last_success_at=self._successes.get((collector, database)))
        prev = replace(prev, stale_after_seconds=stale_after(self.config, collector).total_seconds())
        t0 = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            expected = isinstance(exc, GuardianError)
            reason = REDACTOR(str(exc) if expected else f"{type(exc).__name__}: {exc}")
            if prev.up or prev.last_error != reason:
                if expected:
                    logger.warning("collector {} for {} is down: {}", collector, database, reason)
                else:
                    logger.opt(exception=exc).error("collector {} for {} crashed", collector, database)
            return None, replace(prev, up=False, last_duration_seconds=time.monotonic() - t0,
                                 errors_total=prev.errors_total + 1, last_error=reason)
        if not prev.up and prev.errors_total:
            logger.info("collector {} for {} is up again", collector, database)
        return result, replace(prev, up=True, last_success_at=self.clock(),
                               last_duration_seconds=time.monotonic() - t0, last_error=None)

    def _publish(self, results: list[_Collected], first_pass_done: bool = False) -> Snapshot:
        now = self.clock()

        def apply(snap: Snapshot) -> Snapshot:
            dbs = dict(snap.databases)
            cols = dict(snap.collectors)
            for r in results:
                for st in r.statuses:
                    cols[(st.collector, st.database)] = st
                db = dbs.get(r.name)
                if db is None:
                    continue
                sources = {**db.sources, **r.sources}
                cfg = self.databases[r.name]
                if cfg.self_managed:
                    archive = sources.get(SOURCE_ARCHIVE) or SourceState(SOURCE_ARCHIVE, listed=False)
                    archive = with_unrecorded(archive, self.capturer.unrecorded(r.name))
                    sources[SOURCE_ARCHIVE] = self._with_schedule(r.name, archive)
                dbs[r.name] = replace(db, sources=sources, live=r.live if r.live is not None else db.live,
                                      provider=r.provider if r.provider is not None else db.provider,
                                      archive=r.archive if r.archive is not None else db.archive)
            for name, db in dbs.items():
                cfg = self.databases[name]
                db = replace(db, sources=share_unreadable(self._with_readability(name, db.sources)))
                findings = policy.evaluate(db, cfg.objectives, cols.values(), now, self.archive.policy(cfg),
                                           self._drill_policy(cfg, snap.started_at))
                dbs[name] = replace(db, findings=findings, evaluated_at=now,
                                    rpo_tolerance_seconds=risk.tolerance_seconds(db, cfg.objectives, now),
                                    next_expected=risk.next_expected(db, cfg.objectives, now))
            heroku = snap.heroku
            if self.fleet is not None and self.heroku_api is not None:
                rep = self.fleet.last_report
                heroku = HerokuStatus(ratelimit_remaining=self.heroku_api.ratelimit_remaining,
                                      requests_total=self.heroku_api.requests_total, pass_requests=rep.requests,
                                      pass_allowance=rep.allowance, pass_deferred=rep.deferred,
                                      stretch=rep.stretch)
            return replace(snap, databases=dbs, collectors=cols, heroku=heroku,
                           first_collection_done=snap.first_collection_done or first_pass_done)

        # evaluated without the snapshot lock (other writers never wait for it); wakes the /metrics renderer
        snap = self.holder.update_outside(apply)
        if self._leader is not False:  # followers stay quiet: the leader tells (one event, not one per replica)
            self.notifier.on_evaluation(snap.databases, now)
        return snap

    def _with_readability(self, name: str, sources: dict[str, SourceState]) -> dict[str, SourceState]:
        """Heroku backups carry the verdict of their read-through, when one ran."""
        src = sources.get(SOURCE_HEROKU)
        if src is None or not self._readability:
            return sources
        seen = self._readability
        backups = tuple(
            replace(b, readable=seen[(name, b.backup_id)].ok, readable_error=seen[(name, b.backup_id)].error)
            if (name, b.backup_id) in seen and b.readable is None else b for b in src.backups)
        return {**sources, SOURCE_HEROKU: replace(src, backups=backups)}

    def _with_schedule(self, name: str, src: SourceState) -> SourceState:
        cfg = self.databases[name]
        next_at = None
        if self.scheduler is not None and self.databases[name].self_managed:
            job = self.scheduler.get_job(f"capture:{name}")
            next_at = job.next_run_time if job is not None else None
        # observed_at stays the archive's last successful read: a failed read must not make old facts look fresh
        return replace(src, in_progress=1 if self.capturer.running(name) else 0,
                       schedule_interval_seconds=cfg.capture_interval.total_seconds()
                       if self.databases[name].self_managed else None,
                       schedule_next_at=next_at)

    # -- archive: mirror and prune -------------------------------------------------------------------------
    def count_action(self, action: str, outcome: str) -> None:
        """Count an action's outcome for pgbackup_actions_total."""

        def apply(snap: Snapshot) -> Snapshot:
            counts = dict(snap.actions)
            counts[(action, outcome)] = counts.get((action, outcome), 0) + 1
            return replace(snap, actions=counts)

        self.holder.update(apply)

    def _billing_app(self, name: str) -> str | None:
        watcher = self.fleet.watchers.get(name) if self.fleet is not None else None
        return watcher.resolved.billing_app if watcher is not None and watcher.resolved is not None else None

    def mirror_pending(self, only: str | None = None,
                       progress: Callable[[str, int, int | None], None] | None = None) -> int:
        """Copy every Heroku backup the archive lacks (one at a time); returns how many were copied.
        `progress(what, bytes done, total)` follows each copy (else the log does, once a minute)."""
        done = 0
        for job in self.archive.mirror_jobs(self.holder.current(), self.databases, self._billing_app):
            if only is not None and job.database != only:
                continue
            if self.processes.closing.is_set():
                break
            each = functools.partial(progress, f"{job.database} {job.backup.backup_id}") if progress else None
            if self.archive.run_mirror(job, each):
                done += 1
            self.collect_archive_of(job.database)
        return done

    def check_readability(self) -> int:
        """Read through each new Heroku backup the archive does not copy (a mirror reads its copies on the way):
        streamed from its signed URL into the readability check, nothing stored. Returns how many were read."""
        if self.heroku_api is None:
            return 0
        done = 0
        for name, db in self.holder.current().databases.items():
            cfg = self.databases.get(name)
            src = db.sources.get(SOURCE_HEROKU)
            newest = src.newest_good if src is not None else None
            app = self._billing_app(name)
            if (cfg is None or newest is None or app is None or self.archive.covers(cfg)
                    or (name, newest.backup_id) in self._readability or transfer_num(newest.backup_id) is None):
                continue
            if self.processes.closing.is_set():
                break
            try:
                url = str(self.heroku_api.public_url(app, require_transfer_num(newest.backup_id))["url"])
                toc = read_stream(self.drills.stream(url))
            except GuardianError as exc:
                logger.warning("readability check of {} {} not done: {}", name, newest.backup_id, exc)
                continue
            # bounded: only verdicts of backups the source still lists stay; replaced whole, never mutated, since
            # the collection thread reads it while this job writes
            listed = {b.backup_id for b in src.backups} if src is not None else set()
            kept = {k: v for k, v in self._readability.items() if k[0] != name or k[1] in listed}
            self._readability = {**kept, (name, newest.backup_id): toc}
            if not toc.ok:
                logger.error("{} {} from Heroku is not a readable dump: {}", name, newest.backup_id, toc.error)
            done += 1
        if done:
            with self._collect_lock:
                self._publish([])
        return done

    def prune(self, apply: bool | None = None) -> list[PruneDecision]:
        names = [n for n, db in self.databases.items() if self.archive.covers(db)]
        return self.archive.prune(names, self.config.archive.prune_apply if apply is None else apply)

    # -- drills -------------------------------------------------------------------------------------------
    def _drill_scenarios(self, db: DatabaseConfig) -> dict[str, str]:
        """Scenario -> cron of the drills this database gets."""
        if not db.drill.enabled:
            return {}
        out = {FULL: db.drill.full_schedule}
        if db.drill.tables:
            out[TABLE] = db.drill.table_schedule
        return out

    def _drill_policy(self, db: DatabaseConfig, since: datetime | None) -> policy.DrillPolicy | None:
        scenarios = self._drill_scenarios(db)
        if not scenarios:
            return None
        return policy.DrillPolicy(intervals={s: cron_interval(c) for s, c in scenarios.items()},
                                  grace=db.drill.overdue_grace, since=since)

    def _load_drill_history(self) -> None:
        """The newest drill per scenario (and the newest good one) from the state store, or from the report
        files of an older version that kept them only in the state directory."""
        for name in self.databases:
            results = []
            try:
                docs = self.state.drills(name) or load_latest(self.config.state_dir, name)
            except GuardianError as exc:
                logger.warning("drill history of {} unavailable: {}", name, exc)
                docs = load_latest(self.config.state_dir, name)
            for doc in docs:
                try:
                    results.append(result_from_report(doc))
                except (KeyError, TypeError, ValueError):
                    continue
            if results:
                self.holder.update_database(name, partial(_with_drills, drills=tuple(results)))

    def drill(self, name: str, scenario: str = FULL, progress: Progress | None = None,
              manual: bool = False) -> DrillRun:
        """Run one drill now (scheduled or requested), report it, and publish its result. It runs as a
        recorded execution (`drill:<name>` held, history and audit), so a drill whose process dies leaves a
        record that the next start closes as interrupted."""
        runs: list[DrillRun] = []

        def work(_id: int) -> Outcome:
            run, report = self._drill(name, scenario, progress)
            runs.append(run)
            details = {} if run.skipped else {"scenario": scenario, "report": report,
                                              "recovery_seconds": round(run.recovery_seconds, 1)}
            return Outcome(run.succeeded, run.reason, details, skipped=run.skipped, interrupted=run.stopped)

        intent = Intent("drill", name, f"{scenario} drill", params={"scenario": scenario}, manual=manual,
                        requested_by=person() if manual else None)
        assert self.pipeline is not None
        outcome = self.pipeline.run_held(DRILL, intent, work, unlocked_ok=False)
        if isinstance(outcome, Decision):  # paused, or not the leader: audited by the pipeline
            return DrillRun(database=name, scenario=scenario, started_at=self.clock(), skipped=True,
                            reason=outcome.reason)
        if outcome is None or not runs:  # another process drills this database now, or its lock is unavailable
            self.count_action("drill", "skipped")
            return DrillRun(database=name, scenario=scenario, started_at=self.clock(), skipped=True,
                            reason=outcome.detail if outcome is not None else
                            f"a drill of {name} is running in another process")
        return runs[0]

    def _drill(self, name: str, scenario: str, progress: Progress | None) -> tuple[DrillRun, str | None]:
        """The drill itself: run, report, publish. Returns the run and where its report went."""
        db = self.databases[name]
        state = self.holder.current().databases[name]
        cron = self._drill_scenarios(db).get(scenario)
        schedule = None if cron is None else {
            "schedule": {"type": "crontab", "value": cron}, "checkin_margin": 60,
            "max_runtime": int(db.drill.timeout.total_seconds() // 60), "timezone": "UTC"}
        token = self.notifier.job_started(f"drill-{scenario}-{name}", schedule)
        run = self.drills.run(db, state, scenario, self._billing_app(name), progress)
        if run.skipped:  # busy or shutting down: no verdict, no report, no finding
            if not run.stopped:  # like a capture the shutdown stops: no check-in saying it went well
                self.notifier.job_finished(f"drill-{scenario}-{name}", token, True, 0.0)
            return run, None
        self.notifier.job_finished(f"drill-{scenario}-{name}", token, run.succeeded, run.recovery_seconds)
        path, doc, text = write_report(run, self.config.state_dir)
        try:
            self.state.add_drill(name, scenario, run.started_at, run.succeeded, {**doc, "_path": str(path)})
        except GuardianError as exc:
            logger.warning("drill history not stored: {}", exc)
        if self.config.archive.kind == "s3":
            stem = path.stem
            try:
                self.store.put_blob(name, f"{stem}.json", json.dumps(doc, indent=2).encode(), "application/json")
                self.store.put_blob(name, f"{stem}.md", text.encode(), "text/markdown")
            except GuardianError as exc:
                logger.warning("drill report not copied to the archive: {}", exc)
        result = to_result(run, str(path))

        def apply(s: DatabaseState) -> DatabaseState:
            others = [d for d in s.drills if d.scenario != scenario]
            # after a failure the newest good drill of the scenario stays (it says when one last succeeded)
            good = [d for d in s.drills if d.scenario == scenario and d.succeeded] if not run.succeeded else []
            return replace(s, drills=(*others, *good[-1:], result))

        self.holder.update_database(name, apply)
        try:  # a scratch database the drill could not drop stays on the ledger until a sweep drops it
            left = [(e.database, f"{e.name}: not dropped after its drill; the next start sweeps it")
                    for e in self.state.scratch_entries() if e.database == name]
            self._publish_leftovers(left, only=name)
        except GuardianError as exc:
            logger.warning("scratch ledger unreadable: {}", exc)
        with self._collect_lock:  # one evaluation at a time (the notifier tracks state changes)
            self._publish([])
        return run, str(path)

    def sweep_scratch(self, manual: bool = False) -> None:
        """Drop scratch databases and downloads a crashed drill left behind (each scratch server once); never
        while a drill runs, in this process or another, nor while actions are paused or on a follower."""
        assert self.pipeline is not None
        decision = self.pipeline.decide(SCRATCH_SWEEP, Intent(
            "scratch_sweep", "scratch servers", "drop scratch databases a crashed drill left behind", manual=manual))
        if not decision.go:
            self.pipeline.note(decision)
            return
        try:
            with drill_lock(self.config.state_dir):
                self._sweep_scratch()
        except DrillBusy:
            logger.info("a drill is running: leftover scratch databases are swept later")

    def _sweep_scratch(self) -> None:
        if self.drills.sweep_downloads():
            logger.info("removed downloads left by an interrupted drill")
        legacy = self.config.state_dir / "drills" / "scratch-ledger.json"
        if legacy.exists():
            logger.warning("{} (the scratch ledger of earlier versions) is ignored: its entries name no server and "
                           "carry no marker, so they cannot be proven to be scratch databases; drop any that still "
                           "exist by hand", legacy)
        try:
            report = self.drills.sweep_scratch()
        except GuardianError as exc:
            logger.warning("could not sweep leftover scratch databases: {}", exc)
            return
        for entry in report.killed:
            logger.warning("killed the pg_restore of {} that outlived its drill", entry.name)
        for entry in report.live:
            logger.info("scratch database {} of {} belongs to a drill running in another process: left alone",
                        entry.name, entry.database)
        for entry, how in report.dropped:
            logger.info("scratch database {} of {} left by an earlier drill: {}", entry.name, entry.database, how)
            self.audit.record("scratch_sweep", entry.database, "done", how, scratch=entry.name,
                              server=entry.server_id)
        for entry, why in report.kept:
            logger.warning("scratch database {} of {} kept: {}", entry.name, entry.database, why)
            self.audit.record("scratch_sweep", entry.database, "kept", why, scratch=entry.name,
                              server=entry.server_id)
        self._publish_leftovers([(e.database, f"{e.name}: {why}") for e, why in report.kept])
        with self._collect_lock:
            self._publish([])

    def _publish_leftovers(self, kept: list[tuple[str, str]], only: str | None = None) -> None:
        """Publish, per watched database (or only `only`), the scratch databases still on the ledger and why."""
        by_db: dict[str, tuple[str, ...]] = {}
        for database, why in kept:
            by_db[database] = (*by_db.get(database, ()), why)
        for name in self.databases if only is None else [only]:
            self.holder.update_database(name, partial(_with_leftovers, leftovers=by_db.get(name, ())))

    # -- captures -----------------------------------------------------------------------------------------
    def capture(self, name: str, kind: str = "scheduled", lock: bool = True) -> tuple[bool, str]:
        """Capture one database now (scheduled job, emergency or manual request); failures are recorded, not
        raised. Returns (succeeded, what happened). With `lock`, the capture runs as a recorded execution: it
        holds `capture:<name>` in the state store, so no other process (the `capture` command, another
        replica) dumps the same database at the same time (a busy lock skips this one quietly), and its
        history record lets the next start close it as interrupted should this process die during it.
        Raises StoppedByShutdown when the shutdown came first; a pg_dump the shutdown stops ends the history
        record as interrupted (without `lock`, the exception reaches the caller's runner): never a failed
        attempt, no check-in. After a good capture is committed and reported, keep_last applies the archive's
        deletion plan; its outcome (even a refused delete) never changes the capture's."""
        if self.stopping:
            raise StoppedByShutdown(f"capture of {name} not started: the guardian is shutting down")
        if not lock:
            return self._capture(name, kind)
        intent = Intent("capture", name, f"{kind} capture", params={"kind": kind})
        assert self.pipeline is not None
        outcome = self.pipeline.run_held(SCHEDULED_CAPTURE, intent, lambda _id: Outcome(*self._capture(name, kind)))
        if outcome is None:
            logger.info("capture of {} skipped: another process is capturing it now", name)
            return False, f"a capture of {name} is already running in another process"
        if isinstance(outcome, Decision):  # paused, or not the leader: audited by the pipeline
            return False, outcome.reason
        return outcome.ok, outcome.detail

    def _record_interrupted(self, record: ActionRecord) -> None:
        """A capture this guardian dumps itself, found interrupted: the archive gets its failed attempt."""
        cfg = next((d for d in self.config.all_databases if d.name == record.target), None)
        if record.action != "capture" or cfg is None or not cfg.self_managed or capture_source(cfg) != "archive":
            return  # a drill, a scale change, or a Heroku capture (Heroku keeps its own record of that one)
        kind = str(record.details.get("kind") or ("manual" if record.details.get("manual") else "emergency"))
        self.capturer.record_interrupted(record.target, kind, record.started_at)

    def _capture(self, name: str, kind: str) -> tuple[bool, str]:
        db = self.databases[name]
        if db.url is None:
            raise GuardianError(f"{name} has no URL: the guardian cannot pg_dump it")
        live = self.holder.current().databases[name].live
        req = CaptureRequest(
            database=name, url=db.url.get_secret_value(), kind=kind,
            timeout_seconds=db.capture.timeout.total_seconds(), extra_args=tuple(db.capture.extra_args),
            server_version=live.server_version if live else None,
        )
        self._set_in_progress(name, 1)
        minutes = max(1, int(db.capture_interval.total_seconds() // 60))
        schedule = {"schedule": {"type": "interval", "value": minutes, "unit": "minute"},
                    "checkin_margin": max(5, minutes // 10),
                    "max_runtime": int(db.capture.timeout.total_seconds() // 60)}
        scheduled = kind != "emergency"  # an emergency capture is off the monitor's schedule: no check-in
        token = self.notifier.job_started(f"capture-{name}", schedule) if scheduled else None
        t0, ok, detail, stopped = time.monotonic(), False, "", False
        try:
            record = self.capturer.capture(req)
            ok, detail = True, f"capture {record.backup_id} succeeded ({record.size_bytes} bytes)"
        except StoppedByShutdown:
            stopped = True  # logged by the capturer; not a failed attempt, so no check-in and nothing to read
            raise
        except GuardianError as exc:
            detail = str(exc)  # logged and recorded by the capturer; the archive collector shows it
        finally:
            self._set_in_progress(name, 0)
            if not stopped:
                if scheduled:
                    self.notifier.job_finished(f"capture-{name}", token, ok, time.monotonic() - t0)
                self.collect_archive_of(name)
        # audits and catches its own failures: a refused delete never turns this capture into a failed one
        if ok and db.capture.keep_last and not self.stopping and self.archive.keep_last(name, db.capture.keep_last):
            self.collect_archive_of(name)
        return ok, detail

    def _set_in_progress(self, name: str, n: int) -> None:
        def apply(db: DatabaseState) -> DatabaseState:
            src = db.sources.get(SOURCE_ARCHIVE) or SourceState(SOURCE_ARCHIVE, listed=False)
            return replace(db, sources={**db.sources, SOURCE_ARCHIVE: replace(src, in_progress=n)})

        self.holder.update_database(name, apply)

    def _first_capture_at(self, db: DatabaseConfig, now: datetime) -> datetime:
        """When the first capture after start is due: the newest good backup plus the interval, or now.

        Deriving it from the archive means a restart neither captures again at once nor skips a capture.
        """
        try:
            good = [r for r in self.store.list_records(db.name) if r.outcome == "succeeded"]
        except GuardianError:
            return now
        if not good:
            return now
        due = max(r.started_at for r in good) + db.capture_interval
        return max(due, now)

    # -- running ------------------------------------------------------------------------------------------
    @property
    def stopping(self) -> bool:
        """From the start of `stop()` on: no job starts, no child process starts."""
        return self.processes.closing.is_set()

    def _guarded(self, job: str, fn: Callable[..., Any]) -> Callable[..., None]:
        def run(*args: Any) -> None:
            if self.stopping:
                return  # queued before the shutdown: it never starts, so it records nothing
            try:
                fn(*args)
            except StoppedByShutdown as exc:
                logger.info("job {} stopped: {}", job, exc)
            except Exception as exc:
                if self.stopping:  # torn down under it (pools, store): the shutdown's doing, not a failure
                    logger.info("job {} ended by the shutdown: {}", job, REDACTOR(str(exc)))
                    return
                logger.opt(exception=exc).error("job {} failed; the guardian goes on", job)

        return run

    def _leader_only(self, job: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A job only the leader runs (actions, drills, copies); followers skip it quietly."""
        def run(*args: Any) -> Any:
            if not self.is_leader():
                logger.debug("job {} skipped: this replica is not the leader", job)
                return None
            return fn(*args)

        return self._guarded(job, run)

    def heartbeat(self) -> None:
        self.holder.heartbeat_at = self.clock()
        self.notifier.heartbeat(self.holder.heartbeat_at)

    def start(self, serve_http: bool = True) -> None:
        """Start HTTP first (so /healthz answers at once), then the scheduler with every job."""
        try:
            self.config.archive_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error("cannot create the archive directory {}: {}", self.config.archive_dir, exc.strerror)
        swept = self.store.sweep_partials()
        if swept:
            logger.info("removed {} partial dump file(s) left by an earlier crash", swept)
        self.runner.close_interrupted()  # what a process that died left "running" (never a live one's)
        if serve_http:
            host, port = self.config.listen_host_port
            self.http = GuardianHTTP(host, port, self.holder, self.exposition, self.clock, self.config.web)
            self.http.start()
            logger.info("serving /metrics, /healthz, /readyz, /api/status on {}", self.http.url)
        self.heartbeat()
        self.elect()
        self.remedies.announce()
        sched = _Scheduler(
            timezone=UTC,
            # captures have their own workers: a long mirror, read-through or prune never delays a backup
            executors={"default": CancellingThreadPool(2), "captures": CancellingThreadPool(2),
                       "archive": CancellingThreadPool(1),
                       "drills": CancellingThreadPool(1),  # drills queue behind each other, never beside captures
                       "heartbeat": CancellingThreadPool(1),
                       "leader": CancellingThreadPool(1)},  # a stuck store never starves the heartbeat
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        now = self.clock()
        sched.add_job(self._guarded("heartbeat", self.heartbeat), "interval", seconds=HEARTBEAT_SECONDS,
                      id="heartbeat", executor="heartbeat")
        sched.add_job(self._guarded("collect", self.collect_all), "interval",
                      seconds=self.config.collect_interval.total_seconds(), id="collect", next_run_time=now)
        sched.add_job(self._guarded("leader", self.elect), "interval", id="leader", executor="leader",
                      seconds=self.config.state.leader_interval.total_seconds())
        if self.config.actions.scale:
            every = min(t.interval for t in self.config.actions.scale)
            sched.add_job(self._guarded("probe", self.remedies.probe_all), "interval", id="probe",
                          seconds=every.total_seconds(), next_run_time=now)
        if any(self.archive.covers(db) and db.heroku is not None for db in self.databases.values()):
            sched.add_job(self._leader_only("mirror", self.mirror_pending), "interval", id="mirror",
                          executor="archive",
                          seconds=max(60.0, self.config.collect_interval.total_seconds()),
                          next_run_time=now + self.config.collect_interval)
        if any(db.heroku is not None and not self.archive.covers(db) for db in self.databases.values()):
            sched.add_job(self._leader_only("readability", self.check_readability), "interval", id="readability",
                          executor="archive", seconds=max(60.0, self.config.collect_interval.total_seconds()),
                          next_run_time=now + self.config.collect_interval)
        if any(self.archive.covers(db) for db in self.databases.values()):
            sched.add_job(self._leader_only("prune", self.prune), "interval", id="prune", executor="archive",
                          hours=24, next_run_time=now + timedelta(minutes=10))
        sched.add_job(self._leader_only("sweep-scratch", self.sweep_scratch), "date", id="sweep-scratch",
                      executor="archive", run_date=now)
        for db in self.databases.values():
            for scenario, cron in self._drill_scenarios(db).items():
                sched.add_job(self._leader_only(f"drill:{db.name}:{scenario}", self.drill), CronTrigger.from_crontab(
                    cron, timezone=UTC), args=[db.name, scenario], id=f"drill:{scenario}:{db.name}",
                    executor="drills", misfire_grace_time=None)
        for db in self.databases.values():
            if db.self_managed:
                first = self._first_capture_at(db, now)
                sched.add_job(self._leader_only(f"capture:{db.name}", self.capture), "interval", args=[db.name],
                              seconds=db.capture_interval.total_seconds(), id=f"capture:{db.name}",
                              executor="captures", next_run_time=first,
                              misfire_grace_time=None)  # a late capture runs late, never not at all
                logger.info("capture of {} every {}; next at {}", db.name, format_duration(db.capture_interval),
                            first.isoformat(timespec="seconds"))
        self.scheduler = sched
        sched.start()

    def stop(self) -> None:
        """Ordered shutdown: the stopping flag (no queued job or child starts from here on), scheduler and
        action pools (queued jobs cancelled), running children, HTTP, worker pools."""
        deadline = time.monotonic() + SHUTDOWN_BUDGET
        self.processes.closing.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        self.remedies.cancel_queued()
        self.processes.terminate_all()
        if self.http is not None:
            self.http.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(self.heroku_api, HerokuClient):
            self.heroku_api.close()
        self.archive.close()
        self.drills.close()
        self.remedies.close()
        self.notifier.close()
        for thread in self.unfinished_threads():
            thread.join(timeout=max(0.0, deadline - time.monotonic() - 2))
        self.state.release_leadership()  # after the actions ended, so a successor never overlaps them
        self.state.close()

    @staticmethod
    def unfinished_threads() -> list[threading.Thread]:
        """Threads still working: non-daemon ones, and every pool worker (a scheduler job's thread inherits
        the daemon flag of the scheduler's thread, yet the interpreter's exit waits for pool workers)."""
        main, me = threading.main_thread(), threading.current_thread()
        return [t for t in threading.enumerate() if t is not main and t is not me and t.is_alive()
                and (not t.daemon or t.name.startswith(POOL_THREADS))]

    def add_job(self, job_id: str, fn: Callable[[], None], every: timedelta) -> None:
        """Schedule an extra periodic job (used by the demo's sample activity)."""
        assert self.scheduler is not None
        self.scheduler.add_job(self._guarded(job_id, fn), "interval", seconds=every.total_seconds(), id=job_id)
