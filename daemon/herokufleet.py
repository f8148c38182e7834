"""Polling a fleet of Heroku databases within a share of the account's rate budget.

Heroku gives an account 4,500 request tokens, refilled at about 75 a minute (reference 3.3). The fleet keeps a
bucket of its own that refills at `share * 75/min` (from the clock, so a late pass is not penalised) and holds at
most one minute of that refill; a pass spends from it and nothing more. When `RateLimit-Remaining` shows other
clients of the account eating into the shared bucket, spending stops above the reserve they are due.
Each database has a desired poll interval (fast near its scheduled backup hour and
while a capture runs, slow otherwise, backing off after failures); the databases most overdue are polled first,
and when the budget cannot keep up, polls are deferred and the stretch is reported in a metric and a log line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from loguru import logger

from collectors.heroku import HerokuWatcher
from daemon.config import HerokuPolling
from daemon.heroku import REFILL_PER_MINUTE
from daemon.schedules import last_due, next_due
from daemon.state import SourceState

BUCKET = 4500


def desired_interval(src: SourceState | None, polling: HerokuPolling, failures: int, now: datetime) -> timedelta:
    """How soon this database should be polled again (pure)."""
    if failures:
        backoff = polling.fast * (2 ** min(failures, 10))
        return min(max(backoff, polling.fast), polling.slow)
    if src is None:
        return polling.fast
    if src.in_progress:
        return polling.fast
    for sched in src.schedules:
        due = last_due(sched, now)
        near_next = next_due(sched, now) - now <= polling.window
        waiting = now - due <= polling.window * 4 and not any(b.started_at >= due for b in src.backups)
        if near_next or waiting:
            return polling.fast
    return polling.slow


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
        """Databases whose poll is due, most overdue first."""
        far_past = datetime.min.replace(tzinfo=UTC)
        names = [n for n in self.watchers if self.next_poll.get(n, far_past) <= now]
        return sorted(names, key=lambda n: self.next_poll.get(n, far_past))

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
        """Schedule the next poll of `name` after a poll (ok or failed)."""
        self.failures[name] = 0 if ok else self.failures.get(name, 0) + 1
        interval = desired_interval(src, self.polling, self.failures[name], now)
        self.next_poll[name] = now + interval

    def finish(self, report: PassReport, pass_seconds: float, sources: dict[str, SourceState | None],
               now: datetime) -> PassReport:
        """Charge what the pass really spent, compute the stretch (needed rate vs allowed rate), and say it
        once when it starts or ends."""
        self.credit -= report.requests  # overspend (retries, 429s) is a debt paid by the next passes
        needed_per_min = 0.0
        for name, watcher in self.watchers.items():
            interval = desired_interval(sources.get(name), self.polling, self.failures.get(name, 0), now)
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
