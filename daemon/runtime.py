"""The run-time shell: the scheduler, every periodic job behind one error boundary, and the ordered stop.

Each job is declared as data (`JobSpec`) by the composition root; here it is wrapped: a job queued before the
shutdown never starts, a failure is logged and the daemon goes on, and a leader-only job is skipped quietly on
a follower. Captures, the archive's jobs, drills, the heartbeat and the leadership renewal each have their own
workers, so a long mirror never delays a backup and a stuck store never starves the heartbeat.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_STOPPED
from loguru import logger

from daemon.core.errors import StoppedByShutdown
from daemon.core.redact import REDACTOR
from daemon.jobpool import CancellingThreadPool

#: Thread names of `concurrent.futures` pool workers (ours and APScheduler's): the interpreter's exit joins them.
POOL_THREADS = ("ThreadPoolExecutor-", "collect", "action", "s3-part", "toc-result")
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

    @staticmethod
    def unfinished_threads() -> list[threading.Thread]:
        """Threads still working: non-daemon ones, and every pool worker (a scheduler job's thread inherits
        the daemon flag of the scheduler's thread, yet the interpreter's exit waits for pool workers)."""
        main, me = threading.main_thread(), threading.current_thread()
        return [t for t in threading.enumerate() if t is not main and t is not me and t.is_alive()
                and (not t.daemon or t.name.startswith(POOL_THREADS))]
