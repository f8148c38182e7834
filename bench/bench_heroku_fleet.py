"""Benchmark of the guardian polling a fleet of Heroku databases (1,000 apps) within its rate budget.

Run as ``python bench/bench_heroku_fleet.py [APPS] [SHARE] [--hours=H] [--memory-hours=H] [--no-tracemalloc]
[--keep-nagle]`` from the repository root (defaults: 1000 apps, ``rate_budget_share`` 0.5, 8 simulated hours
after the first cycle in the time run, 1 in the memory run); it prints its figures and exits 0 (it is a
measurement, not a test: missed targets are reported, not raised). With the defaults it takes about 20 minutes
of wall clock (the time run ~1,200 passes at ~0.4 s, the memory run ~400 at ~1.7 s; more on busy CPUs).

Two runs, one after the other, each on a fresh double and fake clock (the same simulated fleet): a **time
run** with tracemalloc off, which gives every figure below but memory, and a **memory run** with tracemalloc
on (tracing every allocation makes a pass about 4x slower, so its timings are not reported), which gives the
tracemalloc figures of section 3; ``--no-tracemalloc`` skips the memory run.

Setup. The in-process Heroku double (``tests/doubles/heroku.py``: real HTTP on loopback, the 4,500-token bucket
refilled at 75/min) holds APPS apps, each with one Postgres add-on, a daily backup schedule (hour ``i % 24`` in
one of four timezones) and three finished scheduled backups taken at the schedule's last three occurrences;
while the benchmark runs, the script plays Heroku's scheduler (the double has none), so each app gets its
next daily backup when its hour comes (a finished backup appears once it has finished; captures in progress
are not shown). About one scheduled backup in twenty is injected as failed and as many are missed (no
transfer at all), chosen by app and day. The notifier's log lines (findings opened, no Sentry DSN) are
counted, not printed.
A real `Guardian` (``collect_interval`` 30 s, ``heroku.apps`` = every app, ``rate_budget_share`` SHARE) talks
to it through a real `HerokuClient`. Time is simulated: one `FakeClock` drives the double's bucket refill, the
guardian's clock and the client's sleep (sleeping advances the fake clock, never the wall clock); it is
advanced 30 s after each pass. Passes run until every database has been polled at least once (the first
full cycle: a first poll also resolves the attachment and reads schedules and info) and then H simulated hours
more (at least 30 passes).

What it reports:

1. **Requests per pass** (counted by the double, checked against `PassReport.requests`): median, p95 and max,
   for all passes and for the passes after the first cycle; the median allowance (`PassReport.allowance`);
   the requests, passes and simulated time the first full cycle took; after it, requests per poll by kind
   and how often each database is then polled.
2. **Wall-clock pass duration** (time run), measured with ``perf_counter`` around ``Guardian.collect_all()``
   (the HTTP round trips to the double, the policy evaluation of every database and the /metrics prewarm):
   median, p95, max. The CPU time of the collecting thread (``thread_time``: the
   guardian's work and the client side of its HTTP calls, not the double's server threads) is printed too,
   as it is far less sensitive than wall clock to other processes competing for the CPUs; so is the load
   average. The double's HTTP handler writes headers and body separately, so with Nagle's algorithm each
   keep-alive response waits ~40 ms for the client's delayed ACK; the benchmark turns on TCP_NODELAY for the
   double's sockets (``disable_nagle_algorithm``, set at run time) so that artefact of the double is not
   billed to the guardian; ``--keep-nagle`` measures it as it is.
3. **Memory**: from the memory run, the tracemalloc peak (traced from just before the Guardian is built, so
   the double's population is excluded, but the double's request log and server threads are in), the memory
   still traced at the end and per database, the largest holders by file, tracemalloc's own bookkeeping; from
   the time run (tracemalloc never on in the process by then, so no bookkeeping in it), the process's max RSS
   (``resource.getrusage``) before the Guardian was built and at the end (their difference is the run's share).
   The memory run is shorter (``--memory-hours``): its request log, and so its peak, is smaller than a run as
   long as the time run would hold.
4. **Detection delay**: for every scheduled backup whose window ended after the first cycle (window end = due
   + the app's start delay + duration: when a finished or failed backup appears on the double, or when a
   missed one would have), the delay from the window end to the first poll of that app's transfers at or
   after it (that poll sees the outcome); median and max, by outcome, beside the requests per hour, with a
   verdict of the max against the 5-minute target. A window no poll reached by the end of the run counts with
   the delay it had then (so it fails the target only once it is older than it), and is reported.
5. **Rate budget**: the most requests in any sliding 60 simulated minutes (requests are attributed to the
   simulated time their pass started) against ``SHARE * 4,500`` per hour (PASS/MISS), and against that plus
   the one minute of refill the fleet's bucket may hold (the burst ``collectors/fleet.py`` allows by
   design); the number of 429s the double answered (must be 0); the final ``snap.heroku.stretch`` and
   ``pass_deferred``.

Every PASS/MISS is computed from the figure printed beside it, as printed, against a target in the same unit
(`judged`).
"""

from __future__ import annotations

import bisect
import gc
import os
import re
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

# Run as a script from the repository root: make `daemon`, `collectors` and `tests` importable.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from loguru import logger  # noqa: E402
from verdict import judged  # noqa: E402  (bench/ is the script's own folder on sys.path)

from collectors.fleet import BUCKET, REFILL_PER_MINUTE  # noqa: E402
from daemon.adapters.heroku import HerokuClient  # noqa: E402
from daemon.app import Guardian  # noqa: E402
from daemon.config import GuardianConfig  # noqa: E402
from daemon.core.schedules import last_due, next_due  # noqa: E402
from daemon.core.snapshot import Schedule, Snapshot  # noqa: E402
from tests.doubles import heroku as heroku_double  # noqa: E402
from tests.doubles.heroku import HerokuDouble  # noqa: E402
from tests.support import FakeClock  # noqa: E402

if TYPE_CHECKING:
    from loguru import Message

DEFAULT_APPS = 1_000
DEFAULT_SHARE = 0.5
COLLECT_INTERVAL = timedelta(seconds=30)
EXTRA_PASSES = 30
DEFAULT_HOURS = 8.0  # the time run: about a third of the schedules
DEFAULT_MEMORY_HOURS = 1.0  # the memory run (tracemalloc on, ~4x slower per pass): after the first cycle
DETECTION_TARGET = timedelta(minutes=5)
INJECT_EVERY = 20  # one scheduled backup in INJECT_EVERY fails, as many are missed
TRANSFERS_PER_APP = 3
TIMEZONES = ("UTC", "America/New_York", "Europe/Berlin", "Asia/Tokyo")
WINDOW = timedelta(minutes=60)
TOKEN = "hrku-bench-token-0123456789abcdef"
MB = 1024 * 1024
TRANSFERS_OF = re.compile(r"/apps/([^/]+)/transfers$")
ROUTE_KINDS = (  # what each request of a poll is for (`HerokuWatcher._poll`)
    ("resolve", re.compile(r"/actions/addon-attachments/resolve$")),
    ("attachments", re.compile(r"/apps/[^/]+/addon-attachments$")),
    ("transfers", re.compile(r"/apps/[^/]+/transfers$")),
    ("transfer info", re.compile(r"/apps/[^/]+/transfers/[^/]+$")),
    ("schedules", re.compile(r"/databases/[^/]+/transfer-schedules$")),
    ("database info", re.compile(r"/databases/[^/]+$")),
    ("rate-limits", re.compile(r"/account/rate-limits$")),
)


@dataclass(frozen=True)
class PassSample:
    """One collection pass: when (simulated), what it spent, what it was allowed, how long it took."""

    at: datetime
    requests: int
    allowance: float
    polled: int
    deferred: int
    seconds: float
    cpu_seconds: float  # CPU time of the thread running collect_all (the guardian and its HTTP client side)


# -- helpers ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Args:
    apps: int
    share: float
    trace: bool
    nodelay: bool
    hours: float = DEFAULT_HOURS
    memory_hours: float = DEFAULT_MEMORY_HOURS


FLAGS = ("--no-tracemalloc", "--keep-nagle")
OPTIONS = ("--hours=", "--memory-hours=")
USAGE = f"usage: {Path(__file__).name} [APPS] [SHARE] [--hours=H] [--memory-hours=H] [{'] ['.join(FLAGS)}]"


def hours_option(argv: Sequence[str], option: str, default: float) -> float:
    """The value of ``--<name>=H`` in `argv` (a number of hours), or `default`; SystemExit naming it if bad."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith(option)]
    if len(given) > 1:
        raise SystemExit(USAGE)
    try:
        return float(given[0]) if given else default
    except ValueError:
        raise SystemExit(f"{option.rstrip('=')} must be a number of hours, not {given[0]!r}") from None


def parse_args(argv: Sequence[str]) -> Args:
    """``[APPS] [SHARE] [--hours=H] [--memory-hours=H] [--no-tracemalloc] [--keep-nagle]``."""
    flags = [a for a in argv if a.startswith("--") and not a.startswith(OPTIONS)]
    positional = [a for a in argv if not a.startswith("--")]
    if any(f not in FLAGS for f in flags) or len(positional) > 2:
        raise SystemExit(USAGE)
    apps = int(positional[0]) if positional else DEFAULT_APPS
    share = float(positional[1]) if len(positional) > 1 else DEFAULT_SHARE
    hours = hours_option(argv, "--hours=", DEFAULT_HOURS)
    memory_hours = hours_option(argv, "--memory-hours=", DEFAULT_MEMORY_HOURS)
    if apps < 1 or not 0 < share <= 1 or hours < 0 or memory_hours < 0:
        raise SystemExit("APPS must be >= 1, SHARE in (0, 1], --hours and --memory-hours >= 0")
    return Args(apps, share, trace="--no-tracemalloc" not in flags, nodelay="--keep-nagle" not in flags,
                hours=hours, memory_hours=memory_hours)


def quantile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method); the single value for a one-element list."""
    if len(values) < 2:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def max_rss_mb() -> float:
    """The process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float | None:
    """The current resident set size from /proc (None where there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def max_in_window(samples: Sequence[PassSample], window: timedelta) -> tuple[int, datetime | None]:
    """The most requests spent by passes starting within any sliding `window`, and where that window starts."""
    best, best_at = 0, None
    lo, running = 0, 0
    for s in samples:
        running += s.requests
        while samples[lo].at <= s.at - window:
            running -= samples[lo].requests
            lo += 1
        if running > best:
            best, best_at = running, samples[lo].at
    return best, best_at


def route_kind(path: str) -> str:
    return next((kind for kind, pattern in ROUTE_KINDS if pattern.search(path)), "other")


def line(label: str, values: Sequence[float], unit: str = "", fmt: str = ".1f") -> str:
    return (f"  {label:<34} median {statistics.median(values):{fmt}}{unit}  p95 {quantile(values, 95):{fmt}}{unit}  "
            f"max {max(values):{fmt}}{unit}")


# -- the fleet ----------------------------------------------------------------------------------------------
@dataclass
class ScheduledApp:
    """One app's daily backup as Heroku's scheduler runs it (the double has no scheduler of its own)."""

    name: str
    schedule: Schedule
    index: int
    next_at: datetime  # the next scheduled instant whose backup is not on the double yet

    @property
    def start_delay(self) -> timedelta:
        return timedelta(seconds=30 + self.index % 90)

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=2 + self.index % 7)

    def window_end(self, due: datetime) -> datetime:
        """When the backup due at `due` has finished (and its outcome is on the double), or would have."""
        return due + self.start_delay + self.duration

    def outcome(self, due: datetime) -> str:
        """What Heroku's scheduler does at `due`: "ok" mostly, "failed" or "missed" once in INJECT_EVERY each
        (by app and day, so the injected ones spread over the fleet and the day)."""
        slot = (self.index * 7 + due.toordinal()) % INJECT_EVERY
        return {0: "failed", 1: "missed"}.get(slot, "ok") if INJECT_EVERY > 1 else "ok"

    def add_backup(self, heroku: HerokuDouble, due: datetime, outcome: str = "ok") -> None:
        if outcome == "missed":
            return
        started = due + self.start_delay
        heroku.add_transfer(self.name, created_at=started - timedelta(seconds=5), started_at=started,
                            finished_at=started + self.duration, processed_bytes=10_000_000 + self.index * 1_000,
                            source_bytes=50_000_000 + self.index * 5_000,
                            state="failed" if outcome == "failed" else "finished")


@dataclass(frozen=True)
class Outcome:
    """A scheduled backup's outcome as the scheduler produced it: which app, when its window ended, what."""

    app: str
    window_end: datetime
    kind: str  # ok | failed | missed


def populate(heroku: HerokuDouble, apps: list[str], now: datetime) -> list[ScheduledApp]:
    """Each app: one add-on, a schedule at hour i % 24 in one of four zones, three finished scheduled backups
    at the schedule's last three occurrences (so no database starts out waiting for today's backup)."""
    out = []
    for i, name in enumerate(apps):
        heroku.add_app(name)
        hour, tz = i % 24, TIMEZONES[(i // 24) % len(TIMEZONES)]
        heroku.add_schedule(name, hour=hour, timezone=tz)
        schedule = Schedule(hour=hour, timezone=tz)
        app = ScheduledApp(name, schedule, i, now)
        due = last_due(schedule, now)
        if due + app.start_delay + app.duration > now:  # today's has not finished yet: the scheduler adds it
            due = last_due(schedule, due - timedelta(seconds=1))
        for days in range(TRANSFERS_PER_APP, 0, -1):
            app.add_backup(heroku, due - timedelta(days=days - 1))
        app.next_at = next_due(schedule, due)
        out.append(app)
    return out


def run_scheduler(heroku: HerokuDouble, apps: list[ScheduledApp], now: datetime) -> list[Outcome]:
    """Play Heroku's scheduler up to `now`: every scheduled backup that has finished by now appears on the
    double as a finished (or failed) transfer (it is not shown while it runs); a missed one never appears.
    Returns the outcomes whose window ended by now."""
    added = []
    for app in apps:
        while app.window_end(app.next_at) <= now:
            kind = app.outcome(app.next_at)
            app.add_backup(heroku, app.next_at, kind)
            added.append(Outcome(app.name, app.window_end(app.next_at), kind))
            app.next_at = next_due(app.schedule, app.next_at)
    return added


def detection_delays(outcomes: Sequence[Outcome], polls: dict[str, list[datetime]], since: datetime,
                     end: datetime) -> tuple[dict[str, list[float]], int]:
    """Minutes from each outcome's window end (at or after `since`) to the first poll of its app at or after
    it, by outcome kind; a window no poll reached by `end` counts with `end - window_end`. Returns the delays
    and how many windows no poll reached."""
    delays: dict[str, list[float]] = {}
    unseen = 0
    for o in outcomes:
        if o.window_end < since:
            continue
        times = polls.get(o.app, [])
        i = bisect.bisect_left(times, o.window_end)
        if i < len(times):
            seen = times[i]
        else:
            seen, unseen = end, unseen + 1
        delays.setdefault(o.kind, []).append((seen - o.window_end).total_seconds() / 60)
    return delays, unseen


def build_guardian(heroku: HerokuDouble, clock: FakeClock, apps: list[str], share: float, state_dir: str) -> Guardian:
    """As ``tests/collectors/test_heroku_fleet.py::guardian`` builds it (the client as the daemon builds it: a 429 ends
    the poll, the planner waits), with a throwaway state directory."""
    config = GuardianConfig.model_validate({
        "collect_interval": f"{int(COLLECT_INTERVAL.total_seconds())}s",
        "state_dir": state_dir,
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "rate_budget_share": share, "apps": apps},
    })
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                       sleep=clock.sleep, timeout=5, max_rate_wait=0)
    return Guardian(config, heroku_api=api, clock=clock)


# -- one run ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Memory:
    """What tracemalloc saw in a memory run (bytes), from just before the Guardian was built."""

    at_start: int
    now: int
    peak: int
    bookkeeping: int  # tracemalloc's own memory
    top_files: list[tuple[str, int]]


@dataclass
class FleetRun:
    """What one run of the fleet left behind: its passes, the double's requests, what the notifier said, and
    (for a memory run) what tracemalloc saw."""

    samples: list[PassSample]
    start: datetime
    end: datetime  # the fake clock after the last pass
    first_cycle_passes: int | None
    first_cycle_at: datetime | None
    kinds_after: Counter[str]  # requests after the first cycle, by what they were for
    outcomes: list[Outcome]
    poll_times: dict[str, list[datetime]]  # each app's transfers reads, by simulated pass time
    backups_added: int
    mismatches: int
    statuses: list[int | None]
    polled: int  # databases polled at least once, of `watched`
    watched: int
    slept: list[float]
    down: int
    snap: Snapshot
    notices: Counter[str]
    run_seconds: float
    load_before: float
    load_after: float
    rss_before_max: float
    rss_before_now: float | None
    rss_after_max: float
    rss_after_now: float | None
    memory: Memory | None  # None in a time run (tracemalloc off)


def run_fleet(args: Args, hours: float, trace: bool, notices: Counter[str]) -> FleetRun:
    """One run on a fresh double and a fresh fake clock: passes until the first full cycle, then `hours`
    simulated hours more (at least EXTRA_PASSES). With `trace`, tracemalloc runs from just before the Guardian
    is built to the end (every allocation traced: this run's timings are not comparable with a time run's).
    `notices` is cleared first, then counts the notifier's lines of this run."""
    notices.clear()
    clock = FakeClock()
    start = clock.now
    apps = [f"app-{i:04d}" for i in range(args.apps)]
    samples: list[PassSample] = []
    mismatches = 0
    memory: Memory | None = None
    with HerokuDouble(clock=clock, token=TOKEN) as heroku, tempfile.TemporaryDirectory() as state_dir:
        scheduled = populate(heroku, apps, clock.now)
        gc.collect()
        rss_before_max, rss_before_now = max_rss_mb(), current_rss_mb()
        if trace:
            tracemalloc.start()
        traced_at_start = tracemalloc.get_traced_memory()[0] if trace else 0

        g = build_guardian(heroku, clock, apps, args.share, state_dir)
        fleet = g.heroku.fleet
        assert fleet is not None
        first_cycle_passes: int | None = None
        first_cycle_at: datetime | None = None
        first_cycle_requests = 0  # index into the double's request log where the first cycle ends
        backups_added = 0
        outcomes: list[Outcome] = []
        poll_times: dict[str, list[datetime]] = {}
        passes_after = max(EXTRA_PASSES, int(hours * 3600 / COLLECT_INTERVAL.total_seconds()))
        max_passes = 20 * (4 * args.apps / max(args.share * REFILL_PER_MINUTE / 2, 1e-9)) + 100  # far beyond
        snap: Snapshot | None = None
        extra = 0
        t_run, load_before = time.perf_counter(), os.getloadavg()[0]
        while extra < passes_after and len(samples) < max_passes + passes_after:
            at = clock.now
            added = run_scheduler(heroku, scheduled, at)
            backups_added += sum(1 for o in added if o.kind != "missed")
            outcomes += added
            before = heroku.request_count()
            c1, t1 = time.thread_time(), time.perf_counter()
            snap = g.collect_all()
            seconds, cpu = time.perf_counter() - t1, time.thread_time() - c1
            spent = heroku.request_count() - before
            for r in heroku.requests[before:]:
                m = TRANSFERS_OF.search(r.path)
                if m:
                    poll_times.setdefault(m.group(1), []).append(at)
            report = fleet.last_report
            if spent != report.requests:
                mismatches += 1
            samples.append(PassSample(at, spent, report.allowance, report.polled, report.deferred, seconds, cpu))
            if first_cycle_passes is None:
                if len(fleet.next_poll) == len(fleet.watchers):
                    first_cycle_passes, first_cycle_at = len(samples), at
                    first_cycle_requests = heroku.request_count()
            else:
                extra += 1
            clock.now += COLLECT_INTERVAL
        run_seconds, load_after = time.perf_counter() - t_run, os.getloadavg()[0]

        if trace:
            traced_now, traced_peak = tracemalloc.get_traced_memory()
            stats = tracemalloc.take_snapshot().statistics("filename")
            memory = Memory(traced_at_start, traced_now, traced_peak, tracemalloc.get_tracemalloc_memory(),
                            [(str(s.traceback[0].filename), s.size) for s in stats[:6]])
            tracemalloc.stop()
        rss_after_max, rss_after_now = max_rss_mb(), current_rss_mb()

        assert snap is not None
        down = sum(1 for (kind, _), c in snap.collectors.items() if kind == "heroku" and not c.up)
        result = FleetRun(
            samples, start, clock.now, first_cycle_passes, first_cycle_at,
            Counter(route_kind(r.path) for r in heroku.requests[first_cycle_requests:]), outcomes, poll_times,
            backups_added, mismatches, [r.status for r in heroku.requests], len(fleet.next_poll),
            len(fleet.watchers), list(clock.slept), down, snap, Counter(notices), run_seconds, load_before,
            load_after, rss_before_max, rss_before_now, rss_after_max, rss_after_now, memory)
        g.stop()
    return result


# -- the report ---------------------------------------------------------------------------------------------
def cycle_split(run: FleetRun) -> tuple[list[PassSample], list[PassSample]]:
    """The passes of the first full cycle and those after it (all passes are the cycle if it never completed)."""
    n = run.first_cycle_passes if run.first_cycle_passes is not None else len(run.samples)
    return run.samples[:n], run.samples[n:]


def report_requests(run: FleetRun, args: Args) -> None:
    samples, start = run.samples, run.start
    cycle, after = cycle_split(run)
    per_pass = [float(s.requests) for s in samples]
    print("\nrequests per pass")
    print(line("all passes", per_pass, fmt=".0f"))
    print(line("first full cycle", [float(s.requests) for s in cycle], fmt=".0f"))
    if after:
        print(line(f"the {len(after)} passes after it", [float(s.requests) for s in after], fmt=".0f"))
    print(f"  allowance per pass                 median {statistics.median(s.allowance for s in samples):.2f}  "
          f"(share {args.share:.0%} of {REFILL_PER_MINUTE:.0f}/min = {args.share * REFILL_PER_MINUTE / 2:.2f} "
          "per 30 s, plus the credit a pass left)")
    if run.first_cycle_at is not None and run.first_cycle_passes is not None:
        cycle_min = (run.first_cycle_at - start + COLLECT_INTERVAL).total_seconds() / 60
        print(f"  first full cycle: {sum(s.requests for s in cycle)} requests "
              f"({sum(s.requests for s in cycle) / args.apps:.2f} per database, re-polls included) "
              f"in {run.first_cycle_passes} passes, "
              f"{cycle_min:.1f} simulated min (every database polled once by the pass at "
              f"+{(run.first_cycle_at - start).total_seconds() / 60:.1f} min)")
    print(f"  polled per pass median {statistics.median(s.polled for s in samples):.0f}, "
          f"deferred per pass median {statistics.median(s.deferred for s in samples):.0f}")
    if after:
        polls = sum(s.polled for s in after)
        minutes = len(after) * COLLECT_INTERVAL.total_seconds() / 60
        spent_after = sum(s.requests for s in after)
        breakdown = ", ".join(f"{kind} {count}" for kind, count in run.kinds_after.most_common())
        print(f"  after the first cycle: {polls} polls in {minutes:.0f} simulated min, "
              f"{spent_after / max(polls, 1):.2f} requests per poll ({breakdown})")
        if polls:
            print(f"  at that rate each database is polled every {args.apps / (polls / minutes):.0f} simulated min "
                  f"(on average: right after each schedule's window, then at the baseline cadence)")


def report_durations(run: FleetRun) -> None:
    samples, start = run.samples, run.start
    cycle, after = cycle_split(run)
    print("\nwall-clock pass duration (collect_all; time run, tracemalloc off)")
    print(line("all passes", [s.seconds * 1_000 for s in samples], " ms"))
    print(line("first full cycle", [s.seconds * 1_000 for s in cycle], " ms"))
    if after:
        print(line(f"the {len(after)} passes after it", [s.seconds * 1_000 for s in after], " ms"))
    print(line("CPU of the collecting thread", [s.cpu_seconds * 1_000 for s in samples], " ms"))
    if after:
        print(line(f"CPU, the {len(after)} passes after it", [s.cpu_seconds * 1_000 for s in after], " ms"))
    print(f"  load average (1 min) {run.load_before:.2f} at the start, {run.load_after:.2f} at the end, "
          f"{os.cpu_count()} CPUs: wall-clock figures include waiting for a CPU when others run too")
    slowest = max(range(len(samples)), key=lambda i: samples[i].seconds)
    print(f"  slowest: pass {slowest} at +{(samples[slowest].at - start).total_seconds() / 60:.1f} min, "
          f"{samples[slowest].requests} requests, {samples[slowest].polled} polled")


def report_memory(timed: FleetRun, traced: FleetRun | None, args: Args) -> None:
    print("\nmemory")
    if traced is not None and traced.memory is not None:
        mem = traced.memory
        cycle, after = cycle_split(traced)
        print(f"  memory run (tracemalloc on, --memory-hours={args.memory_hours:g}): {len(cycle)} passes of the "
              f"first cycle and {len(after)} after it; it took {traced.run_seconds:.1f} s of wall clock, not "
              "comparable with the time run (tracemalloc slows every allocation): no timings from it")
        retained = mem.now - mem.at_start
        print(f"  tracemalloc peak {mem.peak / MB:.1f} MB | traced at the end {mem.now / MB:.1f} MB "
              f"({retained / args.apps / 1024:.1f} KiB per database, double's request log included) | "
              f"tracemalloc's own bookkeeping {mem.bookkeeping / MB:.1f} MB")
        for filename, size in mem.top_files:
            short = filename.replace(str(ROOT) + "/", "")
            print(f"    {size / MB:7.2f} MB  {short}")
    else:
        print("  no memory run (--no-tracemalloc)")
    now_before = f"{timed.rss_before_now:.1f} MB" if timed.rss_before_now is not None else "n/a"
    now_after = f"{timed.rss_after_now:.1f} MB" if timed.rss_after_now is not None else "n/a"
    print(f"  time run (tracemalloc off, so no bookkeeping in it): max RSS before the Guardian "
          f"{timed.rss_before_max:.1f} MB (current {now_before}) | max RSS at the end {timed.rss_after_max:.1f} MB "
          f"(current {now_after}) | run's share {timed.rss_after_max - timed.rss_before_max:.1f} MB")


def report_summary(run: FleetRun, traced: FleetRun | None, args: Args) -> None:
    samples, start = run.samples, run.start
    cycle, after = cycle_split(run)
    per_pass = [float(s.requests) for s in samples]
    durations_ms = [s.seconds * 1_000 for s in samples]
    hour_budget = args.share * BUCKET
    end = samples[-1].at
    delays, unseen = detection_delays(run.outcomes, run.poll_times, run.first_cycle_at or end, end)
    all_delays = [d for ds in delays.values() for d in ds]
    after_hours = len(after) * COLLECT_INTERVAL.total_seconds() / 3600
    per_hour = sum(s.requests for s in after) / after_hours if after_hours else 0.0
    target_min = DETECTION_TARGET.total_seconds() / 60
    print(f"\ndetection delay (window end -> first poll that saw the outcome), {after_hours:.1f} simulated h after "
          f"the first cycle, {len(all_delays)} scheduled windows, {unseen} not yet polled at the end")
    for kind in ("ok", "failed", "missed"):
        if delays.get(kind):
            ds = delays[kind]
            print(f"  {kind:<7} {len(ds):5d}  median {statistics.median(ds):.1f} min  "
                  f"p95 {quantile(ds, 95):.1f} min  max {max(ds):.1f} min")
    burst = args.share * REFILL_PER_MINUTE
    worst, worst_at = max_in_window(samples, WINDOW)
    span = samples[-1].at - samples[0].at + COLLECT_INTERVAL
    heroku_status = run.snap.heroku
    print("\nsummary")
    if all_delays:
        bad = delays.get("failed", []) + delays.get("missed", [])
        # The verdict is on the printed max alone: a window no poll reached counts in it with its age at the end,
        # so one past the target already fails it, and one younger than the target is no miss (yet).
        print(f"  after the first cycle: {per_hour:.0f} requests/h (share {hour_budget:.0f}/h) | detection delay "
              f"median {statistics.median(all_delays):.1f} min "
              f"(failed/missed: median {statistics.median(bad) if bad else float('nan'):.1f} "
              f"max {max(bad) if bad else float('nan'):.1f} min; {unseen} not yet polled, counted at their age) | "
              f"max {judged(max(all_delays), '.1f', '<=', target_min, ' min')}")
    else:
        print(f"  after the first cycle: {per_hour:.0f} requests/h | no scheduled window ended after the first "
              f"cycle (run longer with --hours): detection delay NOT MEASURED")
    print(f"  requests/pass median {statistics.median(per_pass):.0f} p95 {quantile(per_pass, 95):.0f} "
          f"max {max(per_pass):.0f} | allowance median {statistics.median(s.allowance for s in samples):.2f} | "
          f"first cycle {sum(s.requests for s in cycle)} requests, {len(cycle)} passes, "
          f"{len(cycle) * COLLECT_INTERVAL.total_seconds() / 60:.1f} simulated min")
    cpu_ms = [s.cpu_seconds * 1_000 for s in samples]
    print(f"  pass wall clock median {statistics.median(durations_ms):.1f} ms p95 {quantile(durations_ms, 95):.1f} ms "
          f"max {max(durations_ms):.1f} ms | CPU median {statistics.median(cpu_ms):.1f} ms "
          f"p95 {quantile(cpu_ms, 95):.1f} ms | load {run.load_before:.1f}->{run.load_after:.1f} "
          "(time run, tracemalloc off)")
    rss = f"max RSS {run.rss_after_max:.1f} MB (before the Guardian {run.rss_before_max:.1f} MB; time run)"
    if traced is not None and traced.memory is not None:
        print(f"  tracemalloc peak {traced.memory.peak / MB:.1f} MB (memory run, {len(cycle_split(traced)[1])} "
              f"passes after the first cycle) | {rss}")
    else:
        print(f"  {rss}")
    at_text = f" (window from +{(worst_at - start).total_seconds() / 60:.1f} min)" if worst_at else ""
    note = "" if span >= WINDOW else f" (run spans only {span.total_seconds() / 60:.0f} min)"
    print(f"  max requests in any 60 simulated min{at_text}{note}: vs share per hour "
          f"{judged(worst, '.0f', '<=', hour_budget)}; vs share + one minute of burst "
          f"{judged(worst, '.0f', '<=', hour_budget + burst)}")
    too_many = sum(1 for s in run.statuses if s == 429)
    print(f"  429s from the double {judged(too_many, 'd', '<=', 0)} | heroku collectors down at the end {run.down}")
    if heroku_status is not None:
        print(f"  final stretch x{heroku_status.stretch:.2f} | pass_deferred {heroku_status.pass_deferred} | "
              f"ratelimit_remaining {heroku_status.ratelimit_remaining}")
    else:
        print("  WARNING: the snapshot has no heroku status")


# -- the benchmark ------------------------------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    # The double's handler sends the status line + headers and the body in two writes; with Nagle on, the
    # body waits for the client's delayed ACK (~40 ms on Linux loopback) on every keep-alive request. That
    # is the double's cost, not the guardian's: set TCP_NODELAY on its sockets (a socketserver switch, the
    # file is not touched) unless --keep-nagle asks to measure the double as it is.
    heroku_double._Handler.disable_nagle_algorithm = args.nodelay
    # Warnings only (the fleet's "polls are stretched" line, collectors going down), not per-poll chatter.
    # The notifier's lines (a finding opened, without a Sentry DSN) are counted, not printed.
    notices: Counter[str] = Counter()

    def count_notice(message: Message) -> None:
        record = message.record
        notices[f"{record['level'].name.lower()} {record['message'].split(' on ', 1)[0]}"] += 1

    logger.remove()
    logger.add(count_notice, level="WARNING", filter="daemon.adapters.sentry")
    logger.add(sys.stderr, level="WARNING",
               filter=lambda r: not r["name"] or not r["name"].startswith("daemon.adapters.sentry"))

    print(f"fleet: {args.apps} apps on the double ({args.apps * TRANSFERS_PER_APP} transfers, schedules in "
          f"{len(TIMEZONES)} zones); share {args.share:.0%}, collect interval "
          f"{COLLECT_INTERVAL.total_seconds():.0f} s, double's TCP_NODELAY "
          f"{'on' if args.nodelay else 'off (--keep-nagle)'}; a time run (tracemalloc off, {args.hours:g} h after "
          "the first cycle), then "
          + (f"a memory run (tracemalloc on, {args.memory_hours:g} h)" if args.trace
             else "no memory run (--no-tracemalloc)"), flush=True)
    # Time first, in a process where tracemalloc has never run (its RSS figures carry no bookkeeping); memory
    # after, on a fresh double and clock (the same simulated fleet), its timings not reported.
    timed = run_fleet(args, args.hours, trace=False, notices=notices)
    traced = run_fleet(args, args.memory_hours, trace=True, notices=notices) if args.trace else None

    samples = timed.samples
    print(f"\ntime run: {len(samples)} passes ({(timed.end - timed.start).total_seconds() / 60:.1f} simulated min) "
          f"in {timed.run_seconds:.1f} s wall clock; {len(timed.statuses)} requests to the double "
          f"({sum(1 for s in timed.statuses if s is not None and s >= 400)} answered >= 400); fake sleeps "
          f"{len(timed.slept)} ({sum(timed.slept):.0f} s); {timed.backups_added} scheduled backups taken meanwhile")
    told = ", ".join(f"{count} {what}" for what, count in sorted(timed.notices.items())) or "none"
    print(f"findings the notifier logged (opened or reminded): {told}")
    if timed.mismatches:
        print(f"WARNING: in {timed.mismatches} passes the double counted other than PassReport.requests")
    if timed.first_cycle_passes is None:
        print(f"WARNING: the first full cycle did not complete within {len(samples)} passes "
              f"({timed.polled}/{timed.watched} databases polled)")
    report_requests(timed, args)
    report_durations(timed)
    report_memory(timed, traced, args)
    report_summary(timed, traced, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
