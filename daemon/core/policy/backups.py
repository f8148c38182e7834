"""The checks of the backups themselves and of the facts behind them: last_attempt_failed, size_anomaly,
unreadable_backup, and collector_down (a collector failed or its facts are stale).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from datetime import datetime

from daemon.config import Objectives
from daemon.core.policy.findings import finding, newest_good_backup
from daemon.core.snapshot import CollectorStatus, DatabaseState, Finding

#: How many previous good backups the size median looks at.
SIZE_HISTORY = 7


def last_attempt_check(db: DatabaseState, now: datetime) -> Finding:
    attempts = [s.last_attempt for s in db.sources.values() if s.last_attempt is not None]
    if not attempts:
        return finding(db, "last_attempt_failed", False, "no backup attempt seen yet", now)
    last = max(attempts, key=lambda b: b.started_at)
    if last.succeeded:
        return finding(db, "last_attempt_failed", False, f"last attempt {last.backup_id} succeeded", now)
    why = f": {last.error}" if last.error else ""
    return finding(db, "last_attempt_failed", True, f"last attempt {last.backup_id} ({last.source}) failed{why}", now)


def size_anomaly_check(db: DatabaseState, objectives: Objectives, now: datetime) -> Finding:
    newest = newest_good_backup(db)
    if newest is None:
        return finding(db, "size_anomaly", False, "no good backup to compare", now)
    source = db.sources[newest.source]
    previous = [b.size_bytes for b in sorted(source.good, key=lambda b: b.started_at) if b is not newest]
    previous = previous[-max(SIZE_HISTORY, objectives.size_anomaly_min_history):]
    if len(previous) < objectives.size_anomaly_min_history:
        return finding(db, "size_anomaly", False,
                        f"only {len(previous)} previous good backups; sizes compared from "
                        f"{objectives.size_anomaly_min_history}", now, value=newest.size_bytes)
    median = statistics.median(previous)
    limit = median * objectives.size_anomaly_ratio
    active = newest.size_bytes < limit
    hint = (f"newest good backup {newest.backup_id} is {newest.size_bytes} bytes, "
            f"{(newest.size_bytes / median) if median else 0:.0%} of the median {median:.0f} of the previous "
            f"{len(previous)}")
    return finding(db, "size_anomaly", active, hint, now, value=newest.size_bytes, threshold=limit)


def unreadable_check(db: DatabaseState, now: datetime) -> Finding:
    bad = []
    for s in db.sources.values():
        done = [b for b in s.backups if b.succeeded]
        newest = max(done, key=lambda b: b.started_at) if done else None
        if newest is not None and newest.readable is False:
            bad.append(f"{s.source} {newest.backup_id}: {newest.readable_error or 'unreadable'}")
    if bad:
        return finding(db, "unreadable_backup", True, "; ".join(bad), now)
    return finding(db, "unreadable_backup", False, "the newest backups read through cleanly", now)


def collectors_check(db: DatabaseState, collectors: Iterable[CollectorStatus], now: datetime) -> Finding:
    """Active when a collector failed its last run or has not succeeded within its expected interval: the
    facts it provides are not fresh, so no check may pass for OK on them unflagged."""
    mine = sorted((c for c in collectors if c.database == db.name), key=lambda c: c.collector)
    down = [c.collector for c in mine if not c.up]
    stale = [stale_since(c) for c in mine if c.stale(now)]
    parts = ([f"collector down: {', '.join(down)}"] if down else []) + ([f"stale: {', '.join(stale)}"] if stale else [])
    if parts:
        return finding(db, "collector_down", True, "; ".join(parts), now)
    return finding(db, "collector_down", False, "all collectors up", now)


def stale_since(c: CollectorStatus) -> str:
    """"<collector> since <last success>" (or "never succeeded"), for hints and the check command."""
    since = c.last_success_at.isoformat(timespec="seconds") if c.last_success_at else "never succeeded"
    return f"{c.collector} since {since}" if c.last_success_at else f"{c.collector} ({since})"
