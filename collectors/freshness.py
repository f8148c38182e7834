"""How long a collector's facts stay fresh, and when each collector last succeeded across restarts.

A collector that has not succeeded within its expected interval makes its facts stale (`CollectorStatus.stale`):
the policy's `collector_down` finding is then active, `pgbackup_collector_stale` is 1 and `backup-guardian check`
says UNKNOWN instead of OK. The interval follows each collector's own pacing: every collection pass for the
archive and the live database, the fleet's slow poll interval for Heroku (a quiet Heroku database is polled only
every `heroku.polling.slow`, failures back off up to that too).

The last success of every collector is kept in the state store, so after a restart (or in the one-shot `check`)
a collector that fails says since when its facts are old, not only that it failed now.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from loguru import logger

from daemon.adapters.statestore import StateStore
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError
from daemon.core.snapshot import CollectorStatus

#: Missed runs tolerated before the facts count as stale (one slow or skipped pass is normal).
STALE_FACTOR = 3
#: Never stale sooner than this: a short collect interval must not turn one slow archive listing into an alarm.
STALE_FLOOR = timedelta(minutes=5)


def stale_after(config: GuardianConfig, collector: str) -> timedelta:
    """The age after which `collector`'s facts are stale (STALE_FACTOR of its expected interval, at least the
    floor)."""
    every = config.collect_interval
    if collector == "heroku":
        every = max(every, config.heroku.polling.slow)
    return max(STALE_FLOOR, every * STALE_FACTOR)


def _key(shard_index: int, shard_count: int) -> str:
    return f"collector-successes:{shard_index}/{shard_count}"


def load_successes(store: StateStore, shard_index: int, shard_count: int) -> dict[tuple[str, str], datetime]:
    """(collector, database) -> last success, as saved by `save_successes`; empty when unknown or unreadable."""
    try:
        doc = store.get(_key(shard_index, shard_count))
    except GuardianError as exc:
        logger.warning("collector successes unreadable ({}); staleness counts from this start", exc)
        return {}
    out: dict[tuple[str, str], datetime] = {}
    for name, at in (doc or {}).items() if isinstance(doc, dict) else ():
        collector, _, database = str(name).partition("\x1f")
        try:
            out[(collector, database)] = datetime.fromisoformat(str(at))
        except ValueError:
            continue
    return out


def save_successes(store: StateStore, shard_index: int, shard_count: int,
                   statuses: Iterable[CollectorStatus]) -> None:
    """Keep the last success of every collector (one write per pass; a failure is logged, never raised)."""
    doc = {f"{s.collector}\x1f{s.database}": s.last_success_at.isoformat()
           for s in statuses if s.last_success_at is not None}
    try:
        store.put(_key(shard_index, shard_count), doc)
    except GuardianError as exc:
        logger.warning("cannot save collector successes: {}", exc)
