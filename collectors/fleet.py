"""Polling a fleet of Heroku databases within a share of the account's rate budget.

Heroku gives an account 4,500 request tokens, refilled at about 75 a minute (reference 3.3). The fleet keeps a
bucket of its own that refills at `share * 75/min` (from the clock, so a late pass is not penalised) and holds at
most one minute of that refill; a pass spends from it and nothing more. When `RateLimit-Remaining` shows other
clients of the account eating into the shared bucket, spending stops above the reserve they are due.
A scheduled backup's outcome is news only once its window has closed: the schedule's due time plus the time
that database's scheduled backups usually take to start and finish (learned from its own recent ones, bounded;
30 minutes before any history). So each pass polls, first, the databases whose window closed since their last
poll (oldest window first), then those whose outcome is overdue or whose capture runs (at an interval that
grows with the overrun), then the rest at the even baseline cadence with what the budget leaves, most overdue
first; failures back off. When the budget cannot keep up, polls are deferred and the stretch is reported in a
metric and a log line.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from loguru import logger

from collectors.heroku import HerokuWatcher
from daemon.adapters.heroku import REFILL_PER_MINUTE, HerokuAPI
from daemon.config import GuardianConfig, HerokuPolling
from daemon.core.schedules import last_due, next_due
from daemon.core.snapshot import Schedule, SourceState

BUCKET = 4500
#: A schedule's window before its database has any scheduled backup to learn from (`polling.window` in the
#: daemon, whose default this is).
DEFAULT_WINDOW = timedelta(minutes=30)
#: Bounds of a learned window: a backup is never expected before a minute, and one that usually takes hours
#: still gets a look within three.
MIN_WINDOW, MAX_WINDOW = timedelta(minutes=1), timedelta(hours=3)
#: How many recent scheduled backups the window is learned from.
WINDOW_SAMPLES = 7
#: How long after its window an unseen outcome is followed up faster than the baseline cadence.
FOLLOW_UP = timedelta(hours=2)


def usual_window(src: SourceState | None, default: timedelta = DEFAULT_WINDOW) -> timedelta:
    """How long after its due time a scheduled backup of this database has usually finished (pure): the median
    of `finished_at - due` over its last `WINDOW_SAMPLES` scheduled backups, within [MIN_WINDOW, MAX_WINDOW];
    `default` without schedule or history. A backup is matched to the latest due at or before its start."""
    if src is None or not src.schedules:
        return default
    spans: list[timedelta] = []
    for b in reversed(src.backups):  # newest first (the list is oldest first)
        if b.kind != "scheduled" or b.finished_at is None:
            continue
        due = max(last_due(s, b.started_at) for s in src.schedules)
        span = b.finished_at - due
        if timedelta(0) <= span <= 2 * MAX_WINDOW:  # an outlier (a retried or hand-run one) says nothing
            spans.append(span)
            if len(spans) == WINDOW_SAMPLES:
                break
    if not spans:
        return default
    return min(max(statistics.median_low(spans), MIN_WINDOW), MAX_WINDOW)


def window_close_after(schedules: tuple[Schedule, ...], window: timedelta, at: datetime) -> datetime | None:
    """The first moment after `at` at which one of the schedules' windows closes (due + window); None without
    schedules (pure)."""
    return min((next_due(s, at - window) + window for s in schedules), default=None)


def _outcome_overdue(src: SourceState, window: timedelta, now: datetime) -> datetime | None:
    """When the outcome of a scheduled backup became overdue (its window closed, no backup started since its
    due time), if that was within `FOLLOW_UP`; None otherwise."""
    for sched in src.schedules:
        due = last_due(sched, now - window)
        closed = due + window
        if now - closed <= FOLLOW_UP and not any(b.started_at >= due for b in src.backups):
            return closed
    return None


def desired_interval(src: SourceState | None, polling: HerokuPolling, failures: int, now: datetime,
                     window: timedelta | None = None) -> timedelta:
    """How soon this database should be polled again (pure). Failures back off from `fast` to `slow`. An
    outcome overdue after its window (`window`: learned by `usual_window` unless given), or a capture running
    outside its schedule's window, is followed up at a quarter of how long it has been overdue or running,
    between `fast` and `slow`: a few minutes' lateness is seen within a minute, an hours-long run costs a few
    polls. Otherwise `slow`: the planner polls right after each window closes, whatever this says."""
    if failures:
        backoff = polling.fast * (2 ** min(failures, 10))
        return min(max(backoff, polling.fast), polling.slow)
    if src is None:
        return polling.fast
    window = usual_window(src, polling.window) if window is None else window
    since = _outcome_overdue(src, window, now)
    if since is None and src.in_progress:
        in_window = any(now < last_due(s, now) + window and r >= last_due(s, now)
                        for s in src.schedules for r in src.running_started)
        if in_window:  # a scheduled backup running inside its window: news only when the window closes
            return polling.slow
        since = max(src.running_started, default=now)
    if since is None:
        return polling.slow
    return min(max((now - since) / 4, polling.fast), polling.slow)


@dataclass
class PassReport:
    """What one fleet pass did (exported as metrics and logged when stretched)."""

    requests: int = 0
    allowance: float = 0.0
    polled: int = 0
    due: int = 0
    deferred: int = 0
    stretch: float = 1.0


@dataclass
class HerokuFleet:
    """Decides which Heroku databases to poll in each pass and polls them."""

    watchers: dict[str, HerokuWatcher]
    polling: HerokuPolling
    share: float
    next_poll: dict[str, datetime] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    last_report: PassReport = field(default_factory=PassReport)
    credit: float = 0.0
    credit_at: datetime | None = None
    remaining_seen: tuple[int, datetime] | None = None  # last RateLimit-Remaining value and when it appeared
    windows: dict[str, timedelta] = field(default_factory=dict)  # each database's learned `usual_window`
    window_close: dict[str, datetime] = field(default_factory=dict)  # next window to close after its last poll
    following: set[str] = field(default_factory=set)  # outcome overdue or capture running: polled before the rest
    _stretched_logged: bool = False

    @property
    def rate_per_second(self) -> float:
        return self.share * REFILL_PER_MINUTE / 60.0

    def allowance(self, now: datetime, pass_seconds: float, remaining: int | None) -> float:
        """Requests this pass may spend: the fleet's own bucket refilled up to `now`, capped at one minute of
        refill (at least one pass's worth), and never more than what the account has above the reserve."""
        most = max((w.expected_cost(now) for w in self.watchers.values()), default=1)
        cap = max(self.rate_per_second * 60.0, self.rate_per_second * pass_seconds, float(most))
        if self.credit_at is None:
            # start empty: credit accrues from the first pass on, so no 60-minute window ever holds more than
            # the share (a banked start would let the first hour overshoot it)
            self.credit = 0.0
        else:
            elapsed = max(0.0, (now - self.credit_at).total_seconds())
            self.credit = min(cap, self.credit + elapsed * self.rate_per_second)
        self.credit_at = now
        budget = self.credit
        if remaining is not None:
            # The header only changes when a response arrives: a value that stopped changing (after a 429, or
            # while nothing was polled) is refilled from when it was seen, or polling would stall for good.
            if self.remaining_seen is None or self.remaining_seen[0] != remaining:
                self.remaining_seen = (remaining, now)
            seen_at = self.remaining_seen[1]
            estimate = min(BUCKET, remaining + REFILL_PER_MINUTE / 60.0 * (now - seen_at).total_seconds())
            reserve = BUCKET * (1 - self.share)
            budget = min(budget, max(0.0, estimate - reserve))
        return budget

    def stalled(self, now: datetime) -> bool:
        """True when the last RateLimit-Remaining seen is a minute old and leaves no budget: worth a free
        `GET /account/rate-limits` to learn the real value."""
        if self.remaining_seen is None:
            return False
        value, seen_at = self.remaining_seen
        return now - seen_at >= timedelta(minutes=1) and value < BUCKET * (1 - self.share) + 10

    def due(self, now: datetime) -> list[str]:
        """Databases to poll now, in order: those whose schedule window closed since their last successful poll
        (the window closed first), then those being followed up (outcome overdue, capture running), then the
        rest whose baseline poll is due, most overdue first. A database backing off after failures waits for
        its backoff whatever its window says."""
        far_past = datetime.min.replace(tzinfo=UTC)
        keyed: list[tuple[int, datetime, str]] = []
        for name in self.watchers:
            next_at = self.next_poll.get(name, far_past)
            closed = self.window_close.get(name)
            if closed is not None and closed <= now and (not self.failures.get(name) or next_at <= now):
                keyed.append((0, closed, name))
            elif next_at <= now:
                keyed.append((1 if name in self.following else 2, next_at, name))
        keyed.sort()
        return [name for _, _, name in keyed]

    def plan(self, now: datetime, pass_seconds: float, remaining: int | None) -> tuple[list[str], PassReport]:
        """Pick the most overdue databases whose expected cost fits this pass's allowance; the credit left
        over carries to the next pass. `pass_seconds` 0 means a one-shot pass over every database."""
        one_shot = pass_seconds <= 0  # `check`: every database, once, outside the pacing
        allowance = float("inf") if one_shot else self.allowance(now, pass_seconds, remaining)
        due = list(self.watchers) if one_shot else self.due(now)
        chosen: list[str] = []
        spent = 0
        for name in due:
            cost = self.watchers[name].expected_cost(now)
            if spent + cost > allowance:
                break
            chosen.append(name)
            spent += cost
        report = PassReport(allowance=allowance, due=len(due), deferred=len(due) - len(chosen))
        return chosen, report

    def record(self, name: str, src: SourceState | None, ok: bool, now: datetime) -> None:
        """Schedule the next poll of `name` after a poll (ok or failed). A successful poll also learns the
        database's window and when its next one closes (a failed one leaves the closed window pending)."""
        self.failures[name] = 0 if ok else self.failures.get(name, 0) + 1
        if ok and src is not None:
            self.windows[name] = window = usual_window(src, self.polling.window)
            closes = window_close_after(src.schedules, window, now)
            if closes is None:
                self.window_close.pop(name, None)
            else:
                self.window_close[name] = closes
        interval = desired_interval(src, self.polling, self.failures[name], now, self.windows.get(name))
        if ok and src is not None and interval < self.polling.slow:
            self.following.add(name)
        else:
            self.following.discard(name)
        self.next_poll[name] = now + interval

    def finish(self, report: PassReport, pass_seconds: float, sources: dict[str, SourceState | None],
               now: datetime) -> PassReport:
        """Charge what the pass really spent, compute the stretch (needed rate vs allowed rate), and say it
        once when it starts or ends."""
        self.credit -= report.requests  # overspend (retries, 429s) is a debt paid by the next passes
        needed_per_min = 0.0
        for name, watcher in self.watchers.items():
            interval = desired_interval(sources.get(name), self.polling, self.failures.get(name, 0), now,
                                        self.windows.get(name))
            needed_per_min += watcher.expected_cost(now + interval) / max(interval.total_seconds() / 60, 1e-9)
        allowed_per_min = self.share * REFILL_PER_MINUTE
        report.stretch = max(1.0, needed_per_min / allowed_per_min) if allowed_per_min else 1.0
        stretched = report.stretch > 1.0 or report.deferred > 0
        if stretched and not self._stretched_logged:
            logger.warning(
                "heroku: polling {} database(s) at their desired intervals needs {:.0f} requests/min, the rate "
                "budget ({:.0%} of {:.0f}/min) allows {:.1f}; polls are stretched x{:.1f} ({} deferred this pass)",
                len(self.watchers), needed_per_min, self.share, REFILL_PER_MINUTE, allowed_per_min,
                report.stretch, report.deferred)
        elif not stretched and self._stretched_logged:
            logger.info("heroku: polling is within the rate budget again")
        self._stretched_logged = stretched
        self.last_report = report
        return report


@dataclass
class HerokuSide:
    """The Heroku fleet and the client it polls with (both absent when no database is on Heroku)."""

    fleet: HerokuFleet | None
    api: HerokuAPI | None

    def billing_app(self, name: str) -> str | None:
        watcher = self.fleet.watchers.get(name) if self.fleet is not None else None
        return watcher.resolved.billing_app if watcher is not None and watcher.resolved is not None else None

    @classmethod
    def configured(cls, config: GuardianConfig, watched: set[str], api: HerokuAPI | None) -> HerokuSide:
        """The side for the configured Heroku databases among `watched` (this replica group's share)."""
        if not config.heroku_databases or api is None:
            return cls(None, api)
        watchers = {db.name: HerokuWatcher(db.name, db.heroku.app, db.heroku.attachment, api)
                    for db in config.heroku_databases if db.heroku is not None and db.name in watched}
        return cls(HerokuFleet(watchers, polling=config.heroku.polling, share=config.heroku.rate_budget_share), api)
