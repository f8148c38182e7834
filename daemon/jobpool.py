"""The scheduler's thread pools: APScheduler's, except that shutting one down also cancels the jobs queued
behind the running ones.

APScheduler 3's pool executor shuts its `concurrent.futures` pool down without `cancel_futures`, so every job
already handed to the pool (hundreds of captures due at start, two at a time) would still start after the
scheduler stopped. A cancelled job never ran: the scheduler is told it ended with no events, nothing else.
"""

from __future__ import annotations

import concurrent.futures
from datetime import datetime
from typing import Any

from apscheduler.executors.base import run_job
from apscheduler.executors.pool import ThreadPoolExecutor


class CancellingThreadPool(ThreadPoolExecutor):
    """`ThreadPoolExecutor(max_workers)` for APScheduler whose `shutdown` cancels queued jobs."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def done(f: concurrent.futures.Future[Any]) -> None:
            if f.cancelled():  # cancelled at shutdown: it never ran, so there is nothing to report
                self._run_job_success(job.id, [])
                return
            exc = f.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, f.result())

        future = self._pool.submit(run_job, job, job._jobstore_alias, run_times, self._logger.name)
        future.add_done_callback(done)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait, cancel_futures=True)
