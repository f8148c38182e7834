"""The in-memory state snapshot: what the collectors last saw, and what the policy concluded.

Jobs build new immutable values and publish them through `StateHolder.update`; readers (the /metrics
collector, /api/status, the one-shot check) take `StateHolder.current()` and never block writers for long.
Every publish bumps `version`, which the exposition cache keys on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from daemon.core.provider import ProviderStatus

#: The sources of backups, named once: what a database's `sources` are keyed by, and an archived copy's origin.
SOURCE_ARCHIVE = "archive"
SOURCE_HEROKU = "heroku"


@dataclass(frozen=True)
class Backup:
    """One backup attempt as a source reports it (Heroku or the archive), what the policy reasons about; the
    archive's stored record and the deletion plan's copy are other types on purpose (docs/ARCHITECTURE.md).

    `started_at` is the recovery point: a pg_dump snapshot is taken when it starts, so data written after
    that moment is not in the backup, however late the dump finishes.
    """

    backup_id: str
    database: str
    source: str
    kind: str  # scheduled | manual | emergency
    started_at: datetime
    finished_at: datetime | None
    succeeded: bool
    size_bytes: int = 0
    sha256: str | None = None
    error: str | None = None
    tool_version: str | None = None
    readable: bool | None = None  # the readability check's verdict, when it ran (daemon.adapters.postgres.toc)
    readable_error: str | None = None
    too_new_here: bool = False  # the check could not judge it: a newer pg_dump wrote it than the local pg_restore

    @property
    def recovery_point(self) -> datetime:
        return self.started_at

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Schedule:
    """A provider's daily backup schedule: at `hour`:00 in `timezone` (an IANA name)."""

    hour: int
    timezone: str
    name: str = ""
    created_at: datetime | None = None


@dataclass(frozen=True)
class SourceState:
    """Backups of one database in one source, oldest first, plus what is running now.

    A source has either daily schedules (Heroku: hour + timezone) or an interval schedule (self-managed
    captures). `schedules_known` is False until the provider's schedules were read at least once.
    `observed_at` is when the source was last read successfully.
    """

    source: str
    backups: tuple[Backup, ...] = ()
    in_progress: int = 0
    schedule_interval_seconds: float | None = None
    schedule_next_at: datetime | None = None
    schedules: tuple[Schedule, ...] = ()
    schedules_known: bool = False
    observed_at: datetime | None = None
    running_started: tuple[datetime, ...] = ()  # start times of captures in progress, when the source knows
    # False while the source's backups were never listed (the guardian knows only its own captures running or
    # unrecorded): "no good backup" is then unknown, not a breach
    listed: bool = True

    @property
    def has_schedule(self) -> bool:
        return bool(self.schedules) or bool(self.schedule_interval_seconds)

    @property
    def good(self) -> tuple[Backup, ...]:
        """Succeeded and not known to be unreadable: a dump that fails the read-through would not restore."""
        return tuple(b for b in self.backups if b.succeeded and b.readable is not False)

    @property
    def newest_good(self) -> Backup | None:
        good = self.good
        return max(good, key=lambda b: b.started_at) if good else None

    @property
    def last_attempt(self) -> Backup | None:
        return max(self.backups, key=lambda b: b.started_at) if self.backups else None


def share_unreadable(sources: dict[str, SourceState]) -> dict[str, SourceState]:
    """A backup found unreadable in one source (its archived copy failed the read-through) is the same dump in
    every source that lists it under that id: mark it there too, so it counts as good nowhere."""
    bad = {b.backup_id: b for s in sources.values() for b in s.backups if b.readable is False}
    if not bad:
        return sources
    out = {}
    for name, src in sources.items():
        if any(b.backup_id in bad and b.readable is None for b in src.backups):
            backups = tuple(replace(b, readable=False, readable_error=bad[b.backup_id].readable_error)
                            if b.backup_id in bad and b.readable is None else b for b in src.backups)
            src = replace(src, backups=backups)
        out[name] = src
    return out


@dataclass(frozen=True)
class LiveFacts:
    """Read-only facts from the live database."""

    size_bytes: int | None  # None when the provider did not say
    table_count: int | None
    server_version: str
    observed_at: datetime


@dataclass(frozen=True)
class ProviderFacts:
    """What a managed provider says about the database (Heroku `pg:info`, or an Advanced database's info).

    `family` is the plan's family (daemon.core.plans: essential, classic, advanced, unknown). `rollback_latest`
    is the newest moment a rollback can reach, which only Advanced databases report: a recovery point."""

    plan: str
    continuous_protection: bool | None
    rollback_earliest: datetime | None
    offers_pitr: bool
    observed_at: datetime
    family: str = "unknown"
    rollback_latest: datetime | None = None


@dataclass(frozen=True)
class TierStats:
    """One retention tier of one database in the archive."""

    newest: datetime | None = None
    count: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class ArchiveFacts:
    """What the archive collector saw: per-tier statistics, encryption, monthly coverage, bucket posture."""

    kind: str
    tiers: dict[str, TierStats]
    unencrypted: int
    monthly_covered: int
    monthly_expected: int
    monthly_missing: tuple[str, ...]
    oldest: datetime | None
    posture_problems: tuple[str, ...]
    observed_at: datetime


@dataclass(frozen=True)
class CollectorStatus:
    """Self-metrics of one collector for one database."""

    collector: str
    database: str
    up: bool = False
    last_success_at: datetime | None = None
    last_duration_seconds: float = 0.0
    errors_total: int = 0
    last_error: str | None = None
    stale_after_seconds: float | None = None  # how long its facts stay fresh (its pacing); None: unknown

    def stale(self, now: datetime) -> bool:
        """True when the collector has not succeeded within its expected interval (or never did): the facts it
        provides are the last known ones, not fresh. Unknown pacing is never called stale."""
        if self.stale_after_seconds is None:
            return False
        return self.last_success_at is None or (now - self.last_success_at).total_seconds() > self.stale_after_seconds


@dataclass(frozen=True)
class Finding:
    """One check result about one database (`active` True means the problem is present)."""

    database: str
    check: str
    severity: str  # critical | warning | info
    active: bool
    hint: str
    observed_at: datetime
    value: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DrillResult:
    """The outcome of one restore drill (the full record is its report)."""

    scenario: str  # database_corruption (full) | accidental_deletion (table)
    started_at: datetime
    succeeded: bool
    reason: str
    recovery_seconds: float  # download + restore + checks, wall clock
    rto_seconds: float | None
    phases: dict[str, float]
    checks_failed: int
    backup_id: str | None = None
    report: str | None = None  # path of the report


@dataclass(frozen=True)
class ComplianceExport:
    """The last compliance export of a database (for its metrics): when, whether it succeeded, the last good
    one, and that one's (table, rows, bytes) per exported table."""

    at: datetime | None = None
    ok: bool | None = None
    good_at: datetime | None = None
    tables: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class DatabaseState:
    """Everything known about one watched database."""

    name: str
    rpo_seconds: float
    rto_seconds: dict[str, float]
    rpo_warning_ratio: float = 0.8
    sources: dict[str, SourceState] = field(default_factory=dict)
    live: LiveFacts | None = None
    provider: ProviderFacts | None = None
    archive: ArchiveFacts | None = None
    drills: tuple[DrillResult, ...] = ()  # the latest per scenario, newest last
    scratch_leftovers: tuple[str, ...] = ()  # scratch databases of its drills not dropped yet, and why
    compliance: ComplianceExport | None = None  # the last compliance export, with a compliance section
    findings: tuple[Finding, ...] = ()
    evaluated_at: datetime | None = None
    rpo_tolerance_seconds: float = 0.0  # how far past the RPO data at risk may go before a breach (daemon.core.risk)
    next_expected: dict[str, datetime] = field(default_factory=dict)  # source -> next good backup's expected start


@dataclass(frozen=True)
class HerokuStatus:
    """The Heroku client's and fleet planner's own numbers."""

    ratelimit_remaining: int | None = None
    requests_total: int = 0
    pass_requests: int = 0
    pass_allowance: float = 0.0
    pass_deferred: int = 0
    stretch: float = 1.0
    token_readable: bool = False  # the API token's lifetime is known (its authorization could be read)
    token_expires_at: datetime | None = None  # None while unknown or for a token that never expires


@dataclass(frozen=True)
class ProbeStatus:
    """The latest result of one app health probe."""

    name: str
    up: bool
    consecutive_failures: int
    latency_seconds: float
    observed_at: datetime
    error: str | None = None
    scale_refused: str | None = None  # Heroku's message when it refused the last formation change


@dataclass(frozen=True)
class Decision:
    """One audited decision of an action (taken, declined, started, ended), as the status page lists them."""

    time: datetime
    action: str
    target: str  # a database's name, or "<database>/<backup id>" for one copy
    outcome: str
    reason: str


@dataclass(frozen=True)
class ActionsStatus:
    """The action switches and leadership, for metrics and the status page."""

    enabled: bool = True  # the kill switch (config)
    dry_run: bool = True
    paused: str | None = None  # the run-time pause reason
    leader: bool = False
    last_taken: dict[str, datetime] = field(default_factory=dict)  # action -> end of its newest execution
    probes: tuple[ProbeStatus, ...] = ()
    # per database, its newest audited decisions, oldest first (daemon.control.DECISIONS_KEPT at most)
    decisions: dict[str, tuple[Decision, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """The whole state at one version."""

    version: int = 0
    databases: dict[str, DatabaseState] = field(default_factory=dict)
    collectors: dict[tuple[str, str], CollectorStatus] = field(default_factory=dict)
    first_collection_done: bool = False
    demo: bool = False
    started_at: datetime | None = None
    heroku: HerokuStatus | None = None
    actions: dict[tuple[str, str], int] = field(default_factory=dict)  # (action, outcome) -> count since start
    control: ActionsStatus = field(default_factory=ActionsStatus)
    provider: ProviderStatus | None = None  # Heroku's own status (collectors.heroku_status), when polled


class StateHolder:
    """Thread-safe owner of the current snapshot.

    `update(fn)` runs `fn(old) -> new` under a lock and publishes the result with a bumped version; readers
    call `current()` without locking (reading one attribute is atomic in CPython). Listeners registered with
    `on_update` are called after every publish, outside the lock, on the publishing thread: they must be quick
    and must not raise (the exposition's renderer only sets an event).
    """

    def __init__(self, initial: Snapshot | None = None) -> None:
        self._lock = threading.Lock()
        self._snapshot = initial or Snapshot()
        self._listeners: list[Callable[[], None]] = []
        self.heartbeat_at: datetime | None = None

    def on_update(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every new snapshot version is published."""
        self._listeners.append(listener)

    def current(self) -> Snapshot:
        return self._snapshot

    def update(self, fn: Callable[[Snapshot], Snapshot]) -> Snapshot:
        with self._lock:
            new = fn(self._snapshot)
            new = replace(new, version=self._snapshot.version + 1)
            self._snapshot = new
        for listener in self._listeners:
            listener()
        return new

    def update_outside(self, fn: Callable[[Snapshot], Snapshot], tries: int = 3) -> Snapshot:
        """`update(fn)` for an expensive, pure `fn` (the policy evaluation of the whole fleet): `fn` runs on the
        current snapshot without the lock, and its result is published only if no other update came meanwhile;
        otherwise it runs again on the newer snapshot (after `tries` attempts, under the lock). Other writers
        (a capture's progress, a drill's result, leadership) never wait for an evaluation."""
        for _ in range(tries):
            base = self._snapshot
            new = fn(base)
            with self._lock:
                if self._snapshot is base:
                    new = replace(new, version=base.version + 1)
                    self._snapshot = new
                    break
        else:
            return self.update(fn)
        for listener in self._listeners:
            listener()
        return new

    def update_database(self, name: str, fn: Callable[[DatabaseState], DatabaseState]) -> Snapshot:
        """Replace one database's state; unknown names are ignored (the database was removed)."""

        def apply(snap: Snapshot) -> Snapshot:
            if name not in snap.databases:
                return snap
            dbs = dict(snap.databases)
            dbs[name] = fn(dbs[name])
            return replace(snap, databases=dbs)

        return self.update(apply)
