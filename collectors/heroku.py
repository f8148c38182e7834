"""The `heroku` source: Heroku Postgres backups seen the way the Heroku CLI sees them.

Pure parsing (transfers -> backups, schedules, database info) follows ../shared/reference/heroku-api.md
sections 1.2, 1.3, 1.5 and 2, leniently: unknown or missing optional values are tolerated, never fatal.
`HerokuWatcher` does one poll of one database through a `HerokuAPI`, caching what changes rarely.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger

from daemon.adapters.archive.download import DownloadError, ObjectGone
from daemon.adapters.heroku import HerokuAPI, HerokuGone, HerokuNotFound, ResolvedDatabase, deleted_meanwhile
from daemon.core.errors import CaptureError
from daemon.core.plans import ADVANCED, offers_pg_backups, plan_family
from daemon.core.schedules import next_due
from daemon.core.snapshot import SOURCE_HEROKU, Backup, LiveFacts, ProviderFacts, Schedule, SourceState

STUCK_AFTER = timedelta(hours=24)
MAX_FAILURE_LOGS = 50
_HEROKU_TS = "%Y-%m-%d %H:%M:%S %z"


def parse_timestamp(value: Any) -> datetime | None:
    """Both formats the API uses: "2016-10-01 00:42:54 +0000" and ISO "2025-01-01T00:00:00Z"; None otherwise."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    for parse in (lambda t: datetime.strptime(t, _HEROKU_TS),  # noqa: DTZ007 - the format has %z
                  lambda t: datetime.fromisoformat(t.replace(" UTC", "+00:00"))):
        try:
            dt = parse(text)
        except ValueError:
            continue
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)
    return None


def is_backup(t: dict[str, Any]) -> bool:
    """Reference 1.3: a backup is pg_dump -> gof3r."""
    return t.get("from_type") == "pg_dump" and t.get("to_type") == "gof3r"


def transfer_num(backup_id: str) -> int | None:
    """The transfer number behind a backup name as the CLI shows it (a012: scheduled, b003: on request), the one
    home of that parsing; None for a name that carries none (a legacy `o` name, a restore, an archive id)."""
    if len(backup_id) < 2 or backup_id[0] not in ("a", "b") or not backup_id[1:].isascii() \
            or not backup_id[1:].isdigit():
        return None
    return int(backup_id[1:])


def require_transfer_num(backup_id: str) -> int:
    """`transfer_num`, for a backup that must have one: CaptureError naming the backup otherwise."""
    num = transfer_num(backup_id)
    if num is None:
        raise CaptureError(f"{backup_id} is not a Heroku backup name with a transfer number (a012, b003)")
    return num


def deleted_while_read(exc: Exception, api: HerokuAPI | None, app: str | None, num: int | None) -> bool:
    """Whether a failed read of a Heroku backup means Heroku deleted it (neither the guardian's failure nor the
    backup's): Heroku answered 410 for it, its signed URL's object was gone, or the stream broke off and Heroku
    now answers 410 for transfer `num` of `app` (its retention expired it mid-read; asked only then, and only
    when `api`, `app` and `num` are known)."""
    if isinstance(exc, HerokuGone | ObjectGone):
        return True
    return (isinstance(exc, DownloadError) and api is not None and app is not None and num is not None
            and deleted_meanwhile(api, app, num))


def transfer_name(t: dict[str, Any]) -> str:
    """The CLI's display name: a/b/c/r + num padded to 3 digits, or o + options.pgbackups_name."""
    legacy = (t.get("options") or {}).get("pgbackups_name") if isinstance(t.get("options"), dict) else None
    if legacy:
        return f"o{legacy}"
    from_type, to_type = t.get("from_type"), t.get("to_type")
    if from_type == "pg_dump" and to_type != "pg_restore":
        prefix = "a" if t.get("schedule") is not None else "b"  # the CLI tests presence (JS truthiness)
    elif from_type == "pg_dump" and to_type == "pg_restore":
        prefix = "c"
    elif to_type == "pg_restore":
        prefix = "r"
    else:
        prefix = "b"
    num = t.get("num")
    return f"{prefix}{int(str(num)):03d}" if str(num).isdigit() else f"{prefix}{num}"


def transfer_status(t: dict[str, Any]) -> str:
    """Reference 1.3 status strings, short form: completed, failed, canceled, running, pending."""
    if t.get("finished_at") and t.get("succeeded"):
        return "completed"
    if t.get("canceled_at"):
        return "canceled"
    if t.get("finished_at"):
        return "failed"
    if t.get("started_at"):
        return "running"
    return "pending"


def to_backups(database: str, transfers: list[dict[str, Any]],
               from_names: set[str] | None = None) -> tuple[tuple[Backup, ...], tuple[datetime, ...]]:
    """Backups (finished ones, deleted/purged excluded) oldest first, and the start times of those in progress.

    The transfers list is app-wide: with `from_names`, only transfers of this database (its attachment names
    on the billing app) count, so a second database on the same app never borrows the first one's backups."""
    out: list[Backup] = []
    running: list[datetime] = []
    for t in transfers:
        if not is_backup(t) or t.get("deleted_at") or t.get("purged_at"):
            continue
        if from_names and t.get("from_name") not in from_names:
            continue
        status = transfer_status(t)
        if status in ("running", "pending"):
            begun = parse_timestamp(t.get("started_at")) or parse_timestamp(t.get("created_at"))
            if begun is not None:
                running.append(begun)
            continue
        started = parse_timestamp(t.get("started_at")) or parse_timestamp(t.get("created_at"))
        if started is None:
            logger.warning("heroku: transfer {} of {} has no usable start time; ignored", t.get("num"), database)
            continue
        size = t.get("processed_bytes")
        warnings = t.get("warnings") if isinstance(t.get("warnings"), int) else 0
        error = {"canceled": "canceled", "failed": "failed"}.get(status)
        if status == "completed" and warnings:
            error = f"finished with {warnings} warnings"
        out.append(Backup(
            backup_id=transfer_name(t), database=database, source=SOURCE_HEROKU,
            kind="scheduled" if t.get("schedule") is not None else "manual", started_at=started,
            finished_at=parse_timestamp(t.get("finished_at")), succeeded=status == "completed",
            size_bytes=int(size) if isinstance(size, int | float) else 0, error=error,
        ))
    out.sort(key=lambda b: b.started_at)
    return tuple(out), tuple(sorted(running))


def parse_schedules(raw: list[dict[str, Any]]) -> tuple[Schedule, ...]:
    """Schedule objects `{uuid, name, hour, timezone}`; hour may be int or a string like "06"."""
    out = []
    for s in raw:
        hour = s.get("hour")
        try:
            h = int(str(hour).split(":")[0])
        except (TypeError, ValueError):
            logger.warning("heroku: schedule {} has an unreadable hour {!r}; ignored", s.get("name"), hour)
            continue
        if not 0 <= h <= 23:
            continue
        out.append(Schedule(hour=h, timezone=str(s.get("timezone") or "UTC"), name=str(s.get("name") or ""),
                            created_at=parse_timestamp(s.get("created_at"))))
    return tuple(out)


_ROLLBACK = re.compile(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2})?)\s*(UTC|Z|[+-]\d{2}:?\d{2})?")
_PITR_TIERS = ("standard", "premium", "private", "shield")


def _info_value(info: list[Any], name: str) -> str | None:
    for entry in info:
        if isinstance(entry, dict) and entry.get("name") == name:
            values = entry.get("values") or []
            return str(values[0]) if values else None
    return None


def parse_database_info(doc: dict[str, Any], plan_hint: str = "",
                        now: datetime | None = None) -> tuple[ProviderFacts, LiveFacts | None]:
    """Plan, size, tables, version, continuous protection and rollback window from `GET /databases/{id}`."""
    raw_info = doc.get("info")
    info: list[Any] = raw_info if isinstance(raw_info, list) else []
    now = now or datetime.now(UTC)
    plan = str(doc.get("plan") or _info_value(info, "Plan") or plan_hint or "unknown")
    cp_text = _info_value(info, "Continuous Protection")
    continuous = None if cp_text is None else bool(re.search(r"\bOn\b", cp_text))
    rollback_text = _info_value(info, "Rollback")
    earliest = None
    if rollback_text:
        m = _ROLLBACK.search(rollback_text)
        if m:
            tz = m.group(3) or "UTC"
            earliest = parse_timestamp(f"{m.group(1)}T{m.group(2)}{'+00:00' if tz in ('UTC', 'Z') else tz}")
    tier_text = f"{plan} {plan_hint}".lower()
    offers_pitr = any(t in tier_text for t in _PITR_TIERS)
    family = plan_family(plan_hint) if plan_hint else plan_family(plan)
    provider = ProviderFacts(plan=plan, continuous_protection=continuous, rollback_earliest=earliest,
                             offers_pitr=offers_pitr, observed_at=now, family=family)
    size = doc.get("num_bytes")
    tables = doc.get("num_tables")
    if not isinstance(tables, int):
        text = _info_value(info, "Tables")
        tables = int(text) if text and text.strip().isdigit() else None
    version = doc.get("postgres_version") or _info_value(info, "PG Version") or ""
    live = None
    if isinstance(size, int | float) or isinstance(tables, int):  # unknown stays None, never a misleading 0
        live = LiveFacts(size_bytes=int(size) if isinstance(size, int | float) else None,
                         table_count=tables if isinstance(tables, int) else None,
                         server_version=str(version), observed_at=now)
    return provider, live


def _feature(features: dict[str, Any], name: str) -> dict[str, Any]:
    value = features.get(name)
    return value if isinstance(value, dict) else {}


def parse_advanced_info(doc: dict[str, Any], plan: str,
                        now: datetime | None = None) -> tuple[ProviderFacts, LiveFacts | None]:
    """An Advanced database's `GET /data/postgres/v1/{addon}/info` (heroku/cli `InfoResponse`): continuous
    protection from `features.continuous_protection.enabled`, the rollback window from `features.rollback`
    (`earliest_time`, `latest_time`; both None while rollback is disabled or unavailable). Missing or odd
    values stay unknown (None), never a guess."""
    now = now or datetime.now(UTC)
    raw = doc.get("features")
    features: dict[str, Any] = raw if isinstance(raw, dict) else {}
    cp = _feature(features, "continuous_protection").get("enabled")
    rollback = _feature(features, "rollback")
    enabled = rollback.get("enabled")
    earliest = parse_timestamp(rollback.get("earliest_time")) if enabled is not False else None
    latest = parse_timestamp(rollback.get("latest_time")) if enabled is not False else None
    provider = ProviderFacts(plan=plan or str(doc.get("tier") or "advanced"),
                             continuous_protection=cp if isinstance(cp, bool) else None,
                             rollback_earliest=earliest, offers_pitr=True, observed_at=now, family=ADVANCED,
                             rollback_latest=latest)
    tables = next((lim.get("current") for lim in doc.get("plan_limits") or []
                   if isinstance(lim, dict) and lim.get("name") == "table-limit"), None)
    version = doc.get("version")
    live = None
    if isinstance(tables, int) and not isinstance(tables, bool):
        # storage-limit-in-gb's `current` is rendered by the CLI without a stated unit: size stays unknown
        live = LiveFacts(size_bytes=None, table_count=tables, server_version=str(version or ""), observed_at=now)
    return provider, live


@dataclass
class HerokuWatcher:
    """Polls one Heroku database. Resolution, schedules and info are cached and refreshed on their own
    cadence; transfers are read on every poll. Each call costs the requests counted in `last_cost`."""

    database: str
    app: str
    attachment: str
    api: HerokuAPI
    resolve_every: timedelta = timedelta(hours=24)
    # Schedules and pg:info change rarely; refreshing them every few hours keeps a large fleet's polls at about
    # one request each (transfers), which is what the rate budget is for.
    schedules_every: timedelta = timedelta(hours=6)
    info_every: timedelta = timedelta(hours=6)
    resolved: ResolvedDatabase | None = None
    resolved_at: datetime | None = None
    from_names: set[str] = field(default_factory=set)
    schedules: tuple[Schedule, ...] | None = None
    schedules_at: datetime | None = None
    provider: ProviderFacts | None = None
    live: LiveFacts | None = None
    info_at: datetime | None = None
    failure_logs: dict[str, str] = field(default_factory=dict)
    last_cost: int = 0

    def expected_cost(self, now: datetime) -> int:
        """Requests the next poll will make (so the fleet planner can stay within the rate budget)."""
        cost = 1
        if self.resolved is None or _due(self.resolved_at, self.resolve_every, now):
            cost += 2
        reads_schedules = self.resolved is None or offers_pg_backups(plan_family(self.resolved.plan))
        if reads_schedules and _due(self.schedules_at, self.schedules_every, now):
            cost += 1
        if _due(self.info_at, self.info_every, now):
            cost += 1
        return cost

    def poll(self, now: datetime) -> SourceState:
        """One poll. Raises HerokuError (the caller marks the collector down and keeps the last state)."""
        before = self.api.requests_total
        try:
            return self._poll(now)
        finally:
            self.last_cost = self.api.requests_total - before

    def _poll(self, now: datetime) -> SourceState:
        if self.resolved is None or _due(self.resolved_at, self.resolve_every, now):
            self.resolved = self.api.resolve_database(self.app, self.attachment)
            self.from_names = self.api.attachment_names(self.resolved.billing_app, self.resolved.addon_id)
            self.resolved_at = now
        db = self.resolved
        family = plan_family(db.plan)
        try:
            transfers = self.api.list_transfers(db.billing_app)
            # pg:backups schedules are not established for Advanced databases (the CLI's pg:backups:schedules
            # only looks at non-Advanced ones): not read, so no schedule is claimed, missed or absent.
            if offers_pg_backups(family) and _due(self.schedules_at, self.schedules_every, now):
                self.schedules = parse_schedules(self.api.list_schedules(db.addon_id))
                self.schedules_at = now
            if _due(self.info_at, self.info_every, now):
                if family == ADVANCED:
                    self.provider, self.live = parse_advanced_info(self.api.advanced_info(db.addon_id), db.plan, now)
                else:
                    self.provider, self.live = parse_database_info(self.api.database_info(db.addon_id), db.plan,
                                                                   now)
                self.info_at = now
        except HerokuNotFound:
            self.resolved = None  # the add-on may have been replaced: resolve again next time
            raise
        backups, running = to_backups(self.database, transfers, self.from_names)
        backups = self._with_failure_logs(db, transfers, backups)
        # A transfer "running" for a day is stuck, not running: it neither counts as a capture nor speeds polling.
        running = tuple(r for r in running if now - r < STUCK_AFTER)
        schedules = self.schedules or ()
        next_at = min((next_due(s, now) for s in schedules), default=None)
        return SourceState(source=SOURCE_HEROKU, backups=backups, in_progress=len(running),
                           running_started=running, schedules=schedules,
                           schedules_known=self.schedules is not None, schedule_next_at=next_at, observed_at=now)

    def _with_failure_logs(self, db: ResolvedDatabase, transfers: list[dict[str, Any]],
                           backups: tuple[Backup, ...]) -> tuple[Backup, ...]:
        """For the newest attempt, when it failed, fetch its last log lines once (the CLI shows 5)."""
        if not backups or backups[-1].succeeded:
            return backups
        newest = backups[-1]
        if newest.backup_id not in self.failure_logs:
            raw = next((t for t in transfers if transfer_name(t) == newest.backup_id), None)
            text = newest.error or "failed"
            if raw is not None and raw.get("num") is not None:
                try:
                    info = self.api.transfer_info(db.billing_app, raw["num"], verbose=True)
                    logs = [str(x.get("message", "")) for x in (info.get("logs") or []) if isinstance(x, dict)]
                    if logs:
                        text = f"{text}: " + " | ".join(logs[-5:])
                except Exception as exc:  # the logs are a nicety; the failure itself is already known
                    logger.debug("heroku: logs of {} unavailable: {}", newest.backup_id, exc)
            if len(self.failure_logs) >= MAX_FAILURE_LOGS:
                self.failure_logs.pop(next(iter(self.failure_logs)))
            self.failure_logs[newest.backup_id] = text[:1000]
        return (*backups[:-1], replace(newest, error=self.failure_logs[newest.backup_id]))


def _due(at: datetime | None, every: timedelta, now: datetime) -> bool:
    return at is None or now - at >= every
