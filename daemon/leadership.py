"""Replicas: leadership among those sharing a state store (the leader acts and drills, the others collect and
export), and shards (replica groups that each watch their share of a large fleet).

Leadership is a lease in the state store (`StateStore.try_leadership`), renewed by the runtime's `leader` job.
A change is logged once; a follower that becomes the leader takes over the shared finding states first, so it
does not tell again what the previous leader already told.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from loguru import logger

from daemon.adapters.statestore import StateStore
from daemon.config import DatabaseConfig


class Leadership:
    """This replica's lease: unknown until the first try, then renewed (or lost) on every `elect()`."""

    def __init__(self, state: StateStore, shard_index: int, shard_count: int,
                 on_takeover: Callable[[], None] = lambda: None,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.state = state
        self.key = f"pg-backup-guardian:leader:{shard_index}/{shard_count}"
        self.held: bool | None = None  # unknown until the first try
        self._on_takeover = on_takeover
        self._on_change = on_change

    def is_leader(self) -> bool:
        """Whether this replica acts and drills (tried once on first use, then by the `leader` job)."""
        if self.held is None:
            self.elect()
        return bool(self.held)

    def elect(self) -> bool:
        """Try for (or confirm) leadership; log every change. The store never raises here."""
        now = self.state.try_leadership(self.key)
        if now != self.held:
            if now:
                logger.info("this replica is the leader ({}): it acts and drills", self.state.describe())
                if self.held is False:  # a follower until now: take over the shared finding states
                    self._on_takeover()
            elif self.held is not None:
                logger.warning("this replica lost the leadership: it keeps collecting, another one acts")
            else:
                logger.info("another replica is the leader; this one collects and exports")
        self.held = now
        self._on_change()
        return now

    def release(self) -> None:
        self.state.release_leadership()


def shard_of(name: str, count: int) -> int:
    """The replica group of a database: a stable hash of its name (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def in_shard(db: DatabaseConfig, count: int, index: int) -> bool:
    return count <= 1 or shard_of(db.name, count) == index
