"""One collection pass: every database's collectors behind the error boundary, then one evaluation.

The archive and the live database of each database are read on a small pool; the Heroku fleet is polled by
its pacing (`collectors.fleet`), within the account's rate budget. The results go to the `Evaluator`, which
merges them into the snapshot and evaluates the policy; passes never interleave (the publish lock), so an
evaluation never sees half of one pass and half of another.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Protocol

from loguru import logger

from collectors.archive import ArchiveReader
from collectors.boundary import CollectorBoundary
from collectors.database import collect_live
from collectors.fleet import HerokuSide
from collectors.heroku import HerokuWatcher
from daemon.config import DatabaseConfig
from daemon.core.errors import GuardianError
from daemon.core.snapshot import (
    SOURCE_ARCHIVE,
    SOURCE_HEROKU,
    ArchiveFacts,
    CollectorStatus,
    LiveFacts,
    ProviderFacts,
    Snapshot,
    SourceState,
)

COLLECT_WORKERS = 4


@dataclass
class Collected:
    """What one database's collectors returned in one pass (absent where a collector failed)."""

    name: str
    sources: dict[str, SourceState]
    live: LiveFacts | None
    statuses: list[CollectorStatus]
    provider: ProviderFacts | None = None
    archive: ArchiveFacts | None = None


class Publisher(Protocol):
    """What a pass hands its results to (the `Evaluator`): merge, evaluate, publish one snapshot."""

    def publish(self, results: list[Collected], first_pass_done: bool = False) -> Snapshot: ...


class Collection:
    """Collection passes over the databases this guardian watches."""

    def __init__(self, databases: dict[str, DatabaseConfig], archive: ArchiveReader, heroku: HerokuSide,
                 boundary: CollectorBoundary, publisher: Publisher, pass_seconds: float,
                 clock: Callable[[], datetime], stopping: Callable[[], bool]) -> None:
        self.databases = databases
        self.archive = archive
        self.heroku = heroku
        self.boundary = boundary
        self.publisher = publisher
        self.pass_seconds = pass_seconds
        self.clock = clock
        self.stopping = stopping
        self.lock = threading.Lock()  # one pass or re-evaluation at a time
        self._pool = concurrent.futures.ThreadPoolExecutor(COLLECT_WORKERS, thread_name_prefix="collect")

    def collect(self, one_shot: bool = False) -> Snapshot:
        """One pass over every database, then one evaluation; publishes once. `one_shot` (the `check` command)
        polls every Heroku database once, outside the daemon's pacing."""
        with self.lock:
            direct = [db for db in self.databases.values() if db.url is not None or self.archive.covers(db)]
            results = list(self._pool.map(self._collect_one, direct))
            if self.heroku.fleet is not None:
                results += self._collect_heroku(one_shot)
            return self.publisher.publish(results, first_pass_done=True)

    def republish(self) -> Snapshot:
        """Evaluate again on the facts as they are (after a drill, a sweep or a read-through)."""
        with self.lock:
            return self.publisher.publish([])

    def refresh_heroku(self, name: str) -> None:
        """Poll one Heroku database now (after an action changed it) and re-evaluate."""
        fleet = self.heroku.fleet
        if fleet is None or name not in fleet.watchers or self.stopping():
            return
        watcher = fleet.watchers[name]
        src, status = self.boundary.run("heroku", name, partial(_poll, watcher, self.clock))
        fleet.record(name, src, src is not None, self.clock())
        with self.lock:
            self.publisher.publish([Collected(name, {SOURCE_HEROKU: src} if src is not None else {}, watcher.live,
                                              [status], watcher.provider)])

    def collect_archive_of(self, name: str) -> Snapshot:
        """Re-read one database's archive (after a capture) and re-evaluate; not while shutting down (nothing
        reads the state any more, and an evaluation of a large fleet would hold the exit up)."""
        if self.stopping():
            return self.boundary.holder.current()
        db = self.databases[name]
        with self.lock:  # never interleave with a pass that read the archive before this capture
            return self.publisher.publish([self._collect_archive(db, Collected(db.name, {}, None, []))])

    def _collect_heroku(self, one_shot: bool = False) -> list[Collected]:
        """One fleet pass: poll the due Heroku databases that fit this pass's share of the rate budget."""
        fleet, api = self.heroku.fleet, self.heroku.api
        assert fleet is not None and api is not None
        now = self.clock()
        pass_seconds = 0.0 if one_shot else self.pass_seconds
        if fleet.stalled(now):
            try:
                api.refresh_ratelimit()
            except GuardianError as exc:
                logger.debug("heroku: rate limit status unavailable: {}", exc)
        chosen, report = fleet.plan(now, pass_seconds, api.ratelimit_remaining)
        before = api.requests_total
        results, sources = [], {}
        for name in chosen:
            watcher = fleet.watchers[name]
            src, status = self.boundary.run("heroku", name, partial(_poll, watcher, self.clock))
            fleet.record(name, src, src is not None, self.clock())
            sources[name] = src
            results.append(Collected(name, {SOURCE_HEROKU: src} if src is not None else {}, watcher.live,
                                     [status], watcher.provider))
            if src is None and api.ratelimit_remaining == 0:
                report.deferred += len(chosen) - len(results)  # rate limited: the rest wait for the bucket
                break
        report.polled = len(results)
        report.requests = api.requests_total - before
        current = self.boundary.holder.current().databases
        known = {n: (current[n].sources.get(SOURCE_HEROKU) if n in current else None) for n in fleet.watchers}
        known.update({n: s for n, s in sources.items() if s is not None})
        fleet.finish(report, pass_seconds, known, self.clock())
        return results

    def _collect_archive(self, db: DatabaseConfig, into: Collected) -> Collected:
        found, status = self.boundary.run("archive", db.name, partial(self.archive.collect, db.name))
        into.statuses.append(status)
        if found is not None:
            into.sources[SOURCE_ARCHIVE], into.archive = found
        return into

    def _collect_one(self, db: DatabaseConfig) -> Collected:
        """Archive and live facts of one database (its Heroku side, if any, is the fleet's)."""
        out = Collected(db.name, {}, None, [])
        if self.archive.covers(db):
            self._collect_archive(db, out)
        if db.url is not None:
            url = db.url.get_secret_value()
            out.live, status = self.boundary.run(
                "database", db.name, lambda: collect_live(url, db.connect_timeout.total_seconds()))
            out.statuses.append(status)
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _poll(watcher: HerokuWatcher, clock: Callable[[], datetime]) -> SourceState:
    return watcher.poll(clock())
