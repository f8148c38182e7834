"""The run-time shell: the start, the scheduler with every periodic job behind one error boundary, what follows
each collection pass, and the ordered stop.

Each job is declared as data (`JobSpec`, `daemon.jobs.periodic_jobs`); here it is wrapped: a job queued before the
shutdown never starts, a failure is logged and the daemon goes on, and a leader-only job is skipped quietly on
a follower. Captures, the archive's jobs, drills, the heartbeat and the leadership renewal each have their own
workers, so a long mirror never delays a backup and a stuck store never starves the heartbeat.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from loguru import logger

from collectors.freshness import save_successes
from daemon.core.errors import StoppedByShutdown
from daemon.core.redact import REDACTOR
from daemon.jobpool import CancellingThreadPool
from daemon.jobs import GuardianParts, JobSpec, periodic_jobs

if TYPE_CHECKING:
    from daemon.adapters.postgres.tools import ProcessRegistry
    from daemon.core.snapshot import Snapshot
    from daemon.web.server import GuardianHTTP

#: Thread names of `concurrent.futures` pool workers (ours and APScheduler's): the interpreter's exit joins them.
POOL_THREADS = ("ThreadPoolExecutor-", "collect", "action", "s3-part", "toc-result")
SHUTDOWN_BUDGET = 10.0
EXECUTORS = {"default": 2, "captures": 2, "archive": 1, "drills": 1, "heartbeat": 1, "leader": 1}


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


@dataclass
class StopSteps:
    """How the built parts end, in the order the stop takes them: `cancel` before running children are
    stopped (queued work), `close` after (pools, clients), `last` after every thread ended (the store)."""

    cancel: list[Callable[[], None]] = field(default_factory=list)
    close: list[Callable[[], None]] = field(default_factory=list)
    last: list[Callable[[], None]] = field(default_factory=list)


class Runtime:
    """Runs the jobs of one guardian."""

    def __init__(self, stopping: Callable[[], bool], is_leader: Callable[[], bool]) -> None:
        self.stopping = stopping
        self.is_leader = is_leader
        self.scheduler: BackgroundScheduler | None = None

    def guarded(self, job: str, fn: Callable[..., Any]) -> Callable[..., None]:
        def run(*args: Any) -> None:
            if self.stopping():
                return  # queued before the shutdown: it never starts, so it records nothing
            try:
                fn(*args)
            except StoppedByShutdown as exc:
                logger.info("job {} stopped: {}", job, exc)
            except Exception as exc:
                if self.stopping():  # torn down under it (pools, store): the shutdown's doing, not a failure
                    logger.info("job {} ended by the shutdown: {}", job, REDACTOR(str(exc)))
                    return
                logger.opt(exception=exc).error("job {} failed; the guardian goes on", job)

        return run

    def leader_only(self, job: str, fn: Callable[..., Any]) -> Callable[..., None]:
        """A job only the leader runs (actions, drills, copies); followers skip it quietly."""
        def run(*args: Any) -> Any:
            if not self.is_leader():
                logger.debug("job {} skipped: this replica is not the leader", job)
                return None
            return fn(*args)

        return self.guarded(job, run)

    def start(self, jobs: list[JobSpec]) -> None:
        sched = _Scheduler(
            timezone=UTC, executors={name: CancellingThreadPool(n) for name, n in EXECUTORS.items()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
        )
        for job in jobs:
            wrap = self.leader_only if job.leader_only else self.guarded
            sched.add_job(wrap(job.id, job.fn), job.trigger, args=list(job.args), id=job.id,
                          executor=job.executor, **job.when)
        self.scheduler = sched
        sched.start()

    def next_run(self, job_id: str) -> datetime | None:
        if self.scheduler is None:
            return None
        job = self.scheduler.get_job(job_id)
        return job.next_run_time if job is not None else None

    def add_job(self, job_id: str, fn: Callable[[], None], every: timedelta) -> None:
        """Schedule an extra periodic job (used by the demo's sample activity)."""
        assert self.scheduler is not None
        self.scheduler.add_job(self.guarded(job_id, fn), "interval", seconds=every.total_seconds(), id=job_id)

    def shutdown(self) -> None:
        """Queued jobs are cancelled; running ones end as the shutdown stops their children."""
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)

    def launch(self, g: GuardianParts, serve_http: bool = True) -> None:
        """Start HTTP first (so /healthz answers at once), then the scheduler with every job."""
        from daemon.recovery import targets
        from daemon.web.server import GuardianHTTP  # the web server's imports only when it is started

        g.control.publish()  # the switches are right from the first scrape, before the first election
        try:
            g.config.archive_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.error("cannot create the archive directory {}: {}", g.config.archive_dir, exc.strerror)
        g.captures.clean_partials()
        g.runner.close_interrupted()  # what a process that died left "running" (never a live one's)
        if serve_http:
            host, port = g.config.listen_host_port
            g.http = GuardianHTTP(host, port, g.holder, g.exposition, g.clock, g.config.web, targets(g.config))
            g.http.start()
            logger.info("serving /metrics, /healthz, /readyz, /api/status on {}", g.http.url)
        g.heartbeat()
        g.leadership.elect()
        g.remedies.announce()
        self.start(periodic_jobs(g, g.clock()))

    def stop_all(self, processes: ProcessRegistry, http: GuardianHTTP | None, steps: StopSteps) -> None:
        """Ordered shutdown: the stopping flag (no queued job or child starts from here on), the scheduler and
        the action pools (queued work cancelled), running children, HTTP, then every part that was built closes,
        threads get the rest of the budget, and last the leadership and the store (after the actions ended, so
        a successor never overlaps them). The steps are read as they are reached: a part built meanwhile ends
        too."""
        deadline = time.monotonic() + SHUTDOWN_BUDGET
        processes.closing.set()
        self.shutdown()
        for step in list(steps.cancel):
            step()
        processes.terminate_all()
        if http is not None:
            http.stop()
        for step in list(steps.close):
            step()
        for thread in self.unfinished_threads():
            thread.join(timeout=max(0.0, deadline - time.monotonic() - 2))
        for step in list(steps.last):
            step()

    @staticmethod
    def unfinished_threads() -> list[threading.Thread]:
        """Threads still working: non-daemon ones, and every pool worker (a scheduler job's thread inherits
        the daemon flag of the scheduler's thread, yet the interpreter's exit waits for pool workers)."""
        main, me = threading.main_thread(), threading.current_thread()
        return [t for t in threading.enumerate() if t is not main and t is not me and t.is_alive()
                and (not t.daemon or t.name.startswith(POOL_THREADS))]


def collect_pass(g: GuardianParts, one_shot: bool = False) -> Snapshot:
    """One collection pass and evaluation; the collectors' last successes kept; in the daemon (not one-shot)
    the remedies planned from the new findings and the exposition pushed."""
    snap = g.collection.collect(one_shot)
    save_successes(g.state, g.config.state.shard_index, g.config.state.shard_count, snap.collectors.values())
    if not one_shot:
        try:
            g.remedies.after_evaluation(snap)
        except Exception as exc:  # planning must never stop collection
            logger.opt(exception=exc).error("planning remedial actions failed")
    g.control.publish()
    if not one_shot:
        g.pusher.push()
    return snap
