"""Signal-quality benchmark: a healthy Heroku fleet must get no false pages and no unneeded emergency captures,
and every injected fault must be caught, soon after it becomes knowable.

Run as ``python bench/bench_signal.py [APPS] [DAYS] [MINUTES]`` from the repository root (defaults: 200 apps,
30 days, a 5 min collect interval);
it prints its figures and a verdict and exits 0 (a measurement, not a test: missed targets are reported).

Setup. The Heroku double (``tests/doubles/heroku.py``) holds APPS apps, populated and scheduled by
``bench/bench_heroku_fleet.py`` (`populate`, `run_scheduler`: a daily schedule at hour ``i % 24`` in UTC,
America/New_York, Europe/Berlin or Asia/Tokyo; a backup appears once it has finished). The simulated run starts
on 2026-10-20 00:00 UTC, so Europe/Berlin (25 Oct) and America/New_York (1 Nov) both leave summer time inside
it. A real `Guardian` (collect interval 5 min, every app watched, actions enabled in dry-run) collects through
a real `HerokuClient` on one `FakeClock`, advanced by the collect interval after every pass. Only APIs that
also exist before the projected-risk change are used (``Guardian(config, heroku_api=, clock=)``,
``collect_all()``, ``holder.current()`` findings, the audit log), so the same script measures both.

Faults (each on its own app, on a chosen day; the other apps stay healthy throughout):
  missed      the scheduler skips that day's backup                  knowable at due + schedule grace (1 h)
  failed      that day's backup fails                                knowable when it finishes
  small       that day's backup is 2 % of the usual size             knowable when it finishes
  hung        that day's backup runs for 6 h (shown in progress)     knowable when data at risk passes the RPO
  unreachable the double answers 503 for the app for 1 h            knowable at once
  late_small  that day's backup starts 10 min late                    must NOT page
  late_big    that day's backup starts 3 h late                       knowable at due + schedule grace
A fault's window runs from its due time to 30 min plus one collect interval after the database is healthy
again (a finding needs a poll to clear); findings of any check on a healthy database, or outside every window
of a faulty one, are false findings; critical ones are false pages. Emergency captures are the audit log's
capture decisions with outcome dry_run; one is needed when it falls in a window of a fault other than
late_small.
"""

from __future__ import annotations

import hashlib
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import bench_heroku_fleet  # noqa: E402
import psycopg  # noqa: E402
from bench_heroku_fleet import FakeClock, ScheduledApp, populate, run_scheduler  # noqa: E402
from loguru import logger  # noqa: E402

from daemon.adapters.archive.local import LocalDirectoryStore  # noqa: E402
from daemon.adapters.archive.records import BackupRecord  # noqa: E402
from daemon.adapters.heroku import HerokuClient  # noqa: E402
from daemon.adapters.postgres.cluster import LocalCluster, cluster_in  # noqa: E402
from daemon.app import Guardian  # noqa: E402
from daemon.config import GuardianConfig  # noqa: E402
from daemon.core.schedules import last_due, next_due  # noqa: E402
from tests.doubles import heroku as heroku_double  # noqa: E402
from tests.doubles.heroku import HerokuDouble  # noqa: E402

START = datetime(2026, 10, 20, 0, 0, tzinfo=UTC)
INTERVAL = timedelta(minutes=5)
RPO = timedelta(hours=24)
GRACE = timedelta(hours=1)
#: After recovery a finding clears at the next poll of that database (every 15 min away from its schedule) and
#: the pass after it: that long (plus one collect interval) still counts as the fault's window.
SETTLE = timedelta(minutes=30)
HUNG_FOR = timedelta(hours=6)
TOKEN = "hrku-bench-token-0123456789abcdef"
#: Checks that page (critical severity in daemon/core/policy/findings.py, in both versions).
PAGING = ("rpo_breach", "missed_schedule", "last_attempt_failed", "unencrypted_object", "unreadable_backup")
#: Fault kind -> the checks expected to catch it, and the late start it carries.
EXPECTED = {
    "missed": ("missed_schedule", "rpo_at_risk", "rpo_breach"),
    "failed": ("last_attempt_failed",),
    "small": ("size_anomaly",),
    "hung": ("rpo_breach",),
    "unreachable": ("collector_down",),
    "late_small": (),
    "late_big": ("missed_schedule", "rpo_breach"),
}
KINDS = tuple(EXPECTED)
PER_KIND = 3
LATE = {"late_small": timedelta(minutes=10), "late_big": timedelta(hours=3)}
#: Self-managed databases: one in SELF_SHARE of the fleet; hourly captures (RPO 2 h) and daily ones (RPO 26 h),
#: alternately. The faults they get (a hung pg_dump is killed at capture.timeout and recorded as a failed
#: attempt, so "failed" covers it; its running state lives in the capturer, which the benchmark does not run).
SELF_SHARE = 5
SELF_KINDS = ("missed", "failed", "small", "unreachable", "late_small", "late_big")
HOURLY, DAILY = (timedelta(hours=1), timedelta(hours=2)), (timedelta(hours=24), timedelta(hours=26))
LATE_HOURLY = timedelta(minutes=50)  # an hourly capture's "far too late" (the next one is due in 10 min)
OUTAGE = timedelta(hours=1)
KEEP_SELF = 30
#: Every this many simulated days the figures so far are printed (a long run cut short still says something).
REPORT_EVERY = 5


@dataclass
class Fault:
    kind: str
    app: ScheduledApp | SelfManaged
    due: datetime  # the scheduled instant the fault hits (unreachable: its start)
    knowable: dict[str, datetime] = field(default_factory=dict)  # check -> when it could first be known
    end: datetime | None = None  # when the database is healthy again (None: not yet)
    caught: dict[str, datetime] = field(default_factory=dict)  # check -> first pass it was active at/after due

    @property
    def window_end(self) -> datetime:
        return self.end + SETTLE + INTERVAL if self.end is not None else datetime.max.replace(tzinfo=UTC)

    def in_window(self, at: datetime) -> bool:
        return self.due <= at <= self.window_end


@dataclass
class SelfManaged:
    """A self-managed database: the guardian's own capture job, every `interval`, played by the benchmark.

    The job's captures land in the local archive as the capturer leaves them (a dump file and its record, or
    a failed attempt's record) once they have finished; the newest KEEP_SELF daily copies are kept, as the
    archive's keeps would (weekly and monthly copies stay). Its live database is a real one on the benchmark's
    PostgreSQL cluster."""

    name: str
    index: int
    interval: timedelta
    rpo: timedelta
    next_at: datetime  # the next capture due whose outcome is not in the archive yet
    fault: Fault | None = None
    failed_in_outage: bool = False

    @property
    def dbname(self) -> str:
        return self.name.replace("-", "_")

    def start_delay(self, due: datetime) -> timedelta:
        base = timedelta(seconds=1 + self.index % 5)  # the scheduler fires, pg_dump connects
        f = self.fault
        if f is not None and due == f.due and f.kind in ("late_small", "late_big"):
            return base + (LATE_HOURLY if f.kind == "late_big" and self.hourly else LATE[f.kind])
        return base

    @property
    def hourly(self) -> bool:
        return self.interval <= timedelta(hours=1)

    @property
    def duration(self) -> timedelta:
        return timedelta(seconds=20 + self.index % 40)

    def size(self, due: datetime) -> int:
        usual = 40_000 + self.index * 10
        f = self.fault
        return usual // 50 if f is not None and f.kind == "small" and due == f.due else usual

    def outcome(self, due: datetime) -> str:
        """ok, failed or missed."""
        f = self.fault
        if f is not None and f.kind == "unreachable" and f.due <= due + self.start_delay(due) < f.due + OUTAGE:
            return "failed"  # pg_dump cannot connect either
        if f is not None and due == f.due:
            return {"missed": "missed", "failed": "failed"}.get(f.kind, "ok")
        return "ok"

    def run(self, store: LocalDirectoryStore, now: datetime) -> None:
        """Write every capture whose window ended by `now` (a missed one writes nothing)."""
        while self.next_at + self.start_delay(self.next_at) + self.duration <= now:
            due = self.next_at
            self.write(store, due, self.outcome(due))
            self.next_at = due + self.interval

    def write(self, store: LocalDirectoryStore, due: datetime, outcome: str) -> None:
        started = due + self.start_delay(due)
        finished = started + self.duration
        f = self.fault
        if outcome == "missed":
            return
        backup_id = f"{started.strftime('%Y%m%dT%H%M%S')}000Z-scheduled"
        if outcome == "failed":
            error = ("pg_dump: error: connection to server failed: FATAL: database does not allow connections"
                     if f is not None and f.kind == "unreachable" else "pg_dump: error: query failed")
            store.record_failure(BackupRecord(self.name, backup_id, "scheduled", started, finished, "failed",
                                              error=error))
            if f is not None and f.kind == "unreachable":
                self.failed_in_outage = True
            return
        data = bytes(self.size(due))
        writer = store.begin(self.name, backup_id, recovery_point=started)
        writer.write(data)
        writer.commit(BackupRecord(self.name, backup_id, "scheduled", started, finished, "succeeded",
                                   size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()))
        daily = [r for r in store.list_records(self.name) if r.tier == "daily"]
        for old in daily[:-KEEP_SELF]:  # the weekly and monthly copies stay, as the retention tiers keep them
            store.delete(self.name, old.backup_id)
        ended = f.kind in ("missed", "failed", "small") or (f.kind == "unreachable" and self.failed_in_outage) \
            if f is not None else False
        if f is not None and f.end is None and due > f.due and ended:
            f.end = finished
        if f is not None and f.end is None and due == f.due and f.kind in ("late_small", "late_big"):
            f.end = finished


class FaultyApp(ScheduledApp):
    """A scheduled app whose backup due at `fault.due` is skipped, failed, small, late or hung."""

    fault: Fault

    @property
    def start_delay(self) -> timedelta:
        base = timedelta(seconds=30 + self.index % 90)
        return base + LATE.get(self.fault.kind, timedelta()) if self.next_at == self.fault.due else base

    @property
    def duration(self) -> timedelta:
        base = timedelta(minutes=2 + self.index % 7)
        return HUNG_FOR if self.next_at == self.fault.due and self.fault.kind == "hung" else base

    def add_backup(self, heroku: HerokuDouble, due: datetime, outcome: str = "ok") -> None:
        kind, started = self.fault.kind, due + self.start_delay
        if due != self.fault.due or kind in ("unreachable",):
            super().add_backup(heroku, due, outcome)
            self._recovered(due, started)
            return
        if kind == "missed":
            return
        if kind == "hung":
            return  # added running by `hang`, finished by `unhang`
        size = 10_000_000 + self.index * 1_000
        heroku.add_transfer(self.name, created_at=started - timedelta(seconds=5), started_at=started,
                            finished_at=started + self.duration, state="failed" if kind == "failed" else "finished",
                            processed_bytes=size // 50 if kind == "small" else size,
                            source_bytes=50_000_000 + self.index * 5_000)
        if kind in ("late_small", "late_big"):
            self.fault.end = started + self.duration

    def _recovered(self, due: datetime, started: datetime) -> None:
        """The first good backup after the fault ends it (missed, failed, small)."""
        f = self.fault
        if f.end is None and f.kind in ("missed", "failed", "small") and due > f.due:
            f.end = started + self.duration


def choose_faults(apps: list[ScheduledApp], days: int) -> list[Fault]:
    """PER_KIND faults of each kind, each on its own app (zones and hours vary), on days spread over the run."""
    faults, used = [], set()
    span = max(days - 6, 1)
    for k, kind in enumerate(KINDS):
        for j in range(PER_KIND):
            i = (7 + k * 29 + j * 61) % len(apps)
            while i in used:
                i = (i + 1) % len(apps)
            used.add(i)
            app = apps[i]
            day = START + timedelta(days=3 + (k * PER_KIND + j) * span // (len(KINDS) * PER_KIND))
            due = next_due(app.schedule, day)
            if kind == "unreachable":
                due = day + timedelta(hours=(i * 7) % 24, minutes=7)
            fault = Fault(kind, app, due)
            faulty = FaultyApp(app.name, app.schedule, app.index, app.next_at)
            faulty.fault = fault
            apps[i] = faulty
            fault.app = faulty
            faults.append(fault)
    return faults


def self_managed(n: int, now: datetime) -> list[SelfManaged]:
    """n self-managed databases, hourly and daily alternately, their captures spread over the interval; the
    archive already holds the last three of each (written by the first `run`)."""
    out = []
    for i in range(n):
        interval, rpo = HOURLY if i % 2 == 0 else DAILY
        offset = timedelta(seconds=(i * 1237) % int(interval.total_seconds()))
        out.append(SelfManaged(f"sm-{i:03d}", i, interval, rpo, now - 3 * interval + offset))
    return out


def choose_self_faults(sms: list[SelfManaged], days: int) -> list[Fault]:
    """Each kind of SELF_KINDS once on an hourly and once on a daily database, days spread over the run."""
    faults = []
    span = max(days - 6, 1)
    hourly = [sm for sm in sms if sm.hourly]
    daily = [sm for sm in sms if not sm.hourly]
    for k, kind in enumerate(SELF_KINDS):
        for j, pool in enumerate((hourly, daily)):
            sm = pool[(3 + k * 5) % len(pool)]
            while sm.fault is not None:
                sm = pool[(pool.index(sm) + 1) % len(pool)]
            day = START + timedelta(days=3 + (k * 2 + j) * span // (len(SELF_KINDS) * 2), hours=5 + 3 * k)
            due = sm.next_at + sm.interval * -(-(day - sm.next_at) // sm.interval)  # first capture due at or after
            if kind == "unreachable":  # hourly: one capture falls into the hour; daily: none does
                due = day + timedelta(minutes=7) if sm.hourly else due + timedelta(hours=6)
            sm.fault = Fault(kind, sm, due)
            faults.append(sm.fault)
    return faults


def set_knowable(f: Fault) -> None:
    """When each expected check could first know of the fault (see the module docstring)."""
    if isinstance(f.app, SelfManaged):
        set_knowable_self(f, f.app)
        return
    base = timedelta(seconds=30 + f.app.index % 90)  # the app's usual start delay and capture time
    duration = timedelta(minutes=2 + f.app.index % 7)
    previous_start = last_due(f.app.schedule, f.due - timedelta(seconds=1)) + base
    if f.kind in ("missed", "late_big"):
        f.knowable["missed_schedule"] = f.due + GRACE
        f.knowable["rpo_at_risk"] = f.due + GRACE
    if f.kind in ("missed", "late_big", "hung"):
        f.knowable["rpo_breach"] = previous_start + RPO
        if f.knowable.get("rpo_at_risk", f.knowable["rpo_breach"]) >= f.knowable["rpo_breach"]:
            f.knowable.pop("rpo_at_risk", None)  # a breach first: "at risk" gives way to it
    if f.kind in ("failed", "small"):
        f.knowable[EXPECTED[f.kind][0]] = f.due + base + duration
    if f.kind == "unreachable":
        f.knowable["collector_down"] = f.due


def set_knowable_self(f: Fault, sm: SelfManaged) -> None:
    """The same for a self-managed database: an interval schedule is missed half an interval (at most the
    grace) after the capture was due; with an hourly capture and a 2 h RPO a single miss or a 50 min late start
    never reaches the RPO (the next capture comes first)."""
    previous_start = f.due - sm.interval + sm.start_delay(f.due - sm.interval)
    finish = f.due + sm.start_delay(f.due) + sm.duration
    if f.kind in ("missed", "late_big"):
        f.knowable["missed_schedule"] = previous_start + sm.interval + min(GRACE, sm.interval / 2)
        if not sm.hourly:
            f.knowable["rpo_at_risk"] = f.knowable["missed_schedule"]
            f.knowable["rpo_breach"] = previous_start + sm.rpo
    if f.kind in ("failed", "small"):
        f.knowable[EXPECTED[f.kind][0]] = finish
    if f.kind == "unreachable":
        f.knowable["collector_down"] = f.due


def build_guardian(heroku: HerokuDouble, clock: FakeClock, apps: list[str], state_dir: str,
                   sms: list[SelfManaged], cluster: LocalCluster, archive: Path) -> Guardian:
    databases = [{"name": sm.name, "url": cluster.url(sm.dbname),
                  "capture": {"interval": f"{int(sm.interval.total_seconds())}s"},
                  "objectives": {"rpo": f"{int(sm.rpo.total_seconds())}s"}} for sm in sms]
    config = GuardianConfig.model_validate({
        "collect_interval": f"{int(INTERVAL.total_seconds())}s",
        "state_dir": state_dir,
        "databases": databases,
        "archive": {"kind": "local", "path": str(archive)},
        "heroku": {"api_key": heroku.token, "platform_url": heroku.platform_url, "data_url": heroku.data_url,
                   "apps": apps},
        "actions": {"enabled": True, "dry_run": True},
    })
    api = HerokuClient(heroku.token, platform_url=heroku.platform_url, data_url=heroku.data_url,
                       sleep=clock.sleep, timeout=5, max_rate_wait=0)
    return Guardian(config, heroku_api=api, clock=clock)


@dataclass
class Tally:
    """Per check: false openings (inactive -> active outside every fault window), databases they hit."""

    false_open: Counter[str] = field(default_factory=Counter)
    false_dbs: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    false_pass_count: Counter[str] = field(default_factory=Counter)


def main(argv: Sequence[str]) -> int:
    global INTERVAL
    n_total = int(argv[0]) if argv else 200
    days = int(argv[1]) if len(argv) > 1 else 30
    if len(argv) > 2:
        INTERVAL = timedelta(minutes=int(argv[2]))
    n_self = n_total // SELF_SHARE
    n_apps = n_total - n_self
    if n_self < 4 * len(SELF_KINDS) or days < 1 or INTERVAL.total_seconds() <= 0:
        raise SystemExit(f"DATABASES must be >= {4 * len(SELF_KINDS) * SELF_SHARE} (each fault on its own "
                         "database, and healthy ones beside them), DAYS >= 1, MINUTES >= 1")
    # The double writes headers and body apart: without TCP_NODELAY each request waits ~40 ms for a delayed
    # ACK, the double's cost, not the guardian's (as in bench_heroku_fleet.py).
    heroku_double._Handler.disable_nagle_algorithm = True
    # The fleet benchmark's scheduler fails and misses some backups on its own; here every fault is injected.
    bench_heroku_fleet.INJECT_EVERY = 1
    logger.remove()
    # The notifier logs every finding it opens (no Sentry DSN here): the benchmark counts them instead.
    logger.add(sys.stderr, level="ERROR", filter=lambda r: not (r["name"] or "").startswith("daemon.adapters.sentry"))
    clock = FakeClock()
    clock.now = START
    names = [f"app-{i:04d}" for i in range(n_apps)]
    tally = Tally()
    active_before: dict[tuple[str, str], bool] = {}
    passes = 0
    with HerokuDouble(clock=clock, token=TOKEN) as heroku, tempfile.TemporaryDirectory() as state_dir:
        apps = populate(heroku, names, clock.now)
        sms = self_managed(n_self, clock.now)
        faults = choose_faults(apps, days) + choose_self_faults(sms, days)
        for f in faults:
            set_knowable(f)
        by_app = {f.app.name: f for f in faults}
        cluster = cluster_in(Path(state_dir), "bench-pg")
        cluster.init()
        cluster.start()
        admin_conn = psycopg.connect(cluster.url(), autocommit=True)

        def admin(sql: str) -> None:
            admin_conn.execute(sql)

        for sm in sms:
            admin_conn.execute(f"CREATE DATABASE {sm.dbname}")
        store = LocalDirectoryStore(Path(state_dir) / "archive")
        store.root.mkdir()
        for sm in sms:
            sm.run(store, clock.now)
        g = build_guardian(heroku, clock, names, state_dir, sms, cluster, store.root)
        db_app = {name: name.split("/", 1)[0] for name in g.databases}
        end = START + timedelta(days=days)
        hung_state: dict[str, str] = {}
        t0 = time.perf_counter()
        while clock.now < end:
            now = clock.now
            for f in faults:
                drive_fault(heroku, f, now, hung_state, admin)
            run_scheduler(heroku, apps, now)
            for sm in sms:
                sm.run(store, now)
            snap = g.collect_all()
            passes += 1
            for db_name, db in snap.databases.items():
                app = db_app.get(db_name, db_name)
                fault = by_app.get(app)
                for finding in db.findings:
                    key = (db_name, finding.check)
                    was = active_before.get(key, False)
                    active_before[key] = finding.active
                    if not finding.active:
                        continue
                    if fault is not None and fault.in_window(now):
                        if finding.check in fault.knowable and finding.check not in fault.caught:
                            fault.caught[finding.check] = now
                        if fault.kind != "late_small" or finding.check not in PAGING:
                            continue
                    tally.false_pass_count[finding.check] += 1
                    tally.false_dbs[finding.check].add(db_name)
                    if not was:
                        tally.false_open[finding.check] += 1
            clock.now += INTERVAL
            if (clock.now - START) % timedelta(days=1) < INTERVAL:
                done = (clock.now - START).days
                print(f"day {done} of {days} done after {time.perf_counter() - t0:.0f} s", file=sys.stderr,
                      flush=True)
                if done % REPORT_EVERY == 0 and done < days:  # a run cut short still leaves its figures
                    print(f"===== interim report after {done} of {days} simulated days =====", flush=True)
                    report(n_apps, n_self, done, passes, time.perf_counter() - t0,
                           [f for f in faults if f.due < clock.now], tally,  # the faults injected so far
                           [r for r in g.audit.read() if r.get("action") == "capture"], db_app, by_app)
                    print(flush=True)
        wall = time.perf_counter() - t0
        captures = [r for r in g.audit.read() if r.get("action") == "capture"]
        g.stop()
        admin_conn.close()
        cluster.destroy()
    report(n_apps, n_self, days, passes, wall, faults, tally, captures, db_app, by_app)
    return 0


def drive_fault(heroku: HerokuDouble, f: Fault, now: datetime, hung_state: dict[str, str],
                admin: Callable[[str], None]) -> None:
    """Do what the fault needs at `now` beyond the scheduler: 503s on and off, a database refusing connections
    for an hour, a hung capture shown and ended."""
    if f.kind == "unreachable" and isinstance(f.app, SelfManaged):
        sm = f.app
        if now >= f.due and sm.name not in hung_state:
            admin(f"ALTER DATABASE {sm.dbname} ALLOW_CONNECTIONS false")
            hung_state[sm.name] = "on"
        elif now >= f.due + OUTAGE and hung_state.get(sm.name) == "on":
            admin(f"ALTER DATABASE {sm.dbname} ALLOW_CONNECTIONS true")
            hung_state[sm.name] = "done"
            if not sm.hourly:  # no capture fell into the hour; an hourly one ends with the next good capture
                f.end = now
        return
    if f.kind == "unreachable":
        if now >= f.due and "on" not in hung_state.get(f.app.name, ""):
            heroku.inject(rf"/apps/{f.app.name}/", "503")
            hung_state[f.app.name] = "on"
        elif now >= f.due + timedelta(hours=1) and hung_state.get(f.app.name) == "on":
            heroku.clear_faults()
            hung_state[f.app.name] = "on-done"
            f.end = now
    if f.kind == "hung":
        started = f.due + timedelta(seconds=30 + f.app.index % 90)
        if now >= started and f.app.name not in hung_state:
            heroku.add_transfer(f.app.name, state="started", created_at=started - timedelta(seconds=5),
                                started_at=started, processed_bytes=5_000_000)
            hung_state[f.app.name] = "running"
        elif now >= started + HUNG_FOR and hung_state.get(f.app.name) == "running":
            # it ends at the app's usual size: a hung dump that finishes is whole, not half its size
            heroku.finish_running(f.app.name, processed_bytes=10_000_000 + f.app.index * 1_000)
            hung_state[f.app.name] = "done"
            f.end = now


def where(f: Fault) -> str:
    return f"self {'hourly' if f.app.hourly else 'daily'}" if isinstance(f.app, SelfManaged) else "heroku"


def report(n_apps: int, n_self: int, days: int, passes: int, wall: float, faults: list[Fault], tally: Tally,
           captures: list[dict[str, object]], db_app: dict[str, str], by_app: dict[str, Fault]) -> None:
    print(f"fleet: {n_apps + n_self} databases: {n_apps} Heroku apps, daily schedules in UTC, America/New_York, "
          f"Europe/Berlin, Asia/Tokyo; {n_self} self-managed, captured hourly (RPO 2 h) or daily (RPO 26 h)")
    print(f"{days} simulated days from {START:%Y-%m-%d} (Berlin leaves DST 2026-10-25, New York 2026-11-01); "
          f"collect interval {INTERVAL.total_seconds() / 60:.0f} min; {passes} passes in {wall:.0f} s wall clock")
    print(f"faults: {len(faults)} on {len(by_app)} databases; {n_apps + n_self - len(by_app)} healthy throughout")
    checks = ("rpo_breach", "rpo_at_risk", "missed_schedule", "last_attempt_failed", "size_anomaly",
              "collector_down", "rpo_unachievable", "no_schedule")
    extra = sorted(set(tally.false_open) - set(checks))
    print("\nper check (delay = first pass with the finding active - when the fault became knowable)")
    print(f"  {'check':<22}{'injected':>9}{'caught':>8}{'delay med':>11}{'delay max':>11}"
          f"{'false open':>12}{'false dbs':>10}{'false pages':>12}")
    for check in (*checks, *extra):
        mine = [f for f in faults if check in f.knowable]
        caught = [f for f in mine if check in f.caught]
        delays = [(f.caught[check] - f.knowable[check]).total_seconds() / 60 for f in caught]
        med = f"{statistics.median(delays):+.0f} min" if delays else "-"
        mx = f"{max(delays):+.0f} min" if delays else "-"
        pages = tally.false_open[check] if check in PAGING else 0
        print(f"  {check:<22}{len(mine):>9}{len(caught):>8}{med:>11}{mx:>11}{tally.false_open[check]:>12}"
              f"{len(tally.false_dbs[check]):>10}{pages:>12}")
    print("\nper fault (caught = any expected check active inside the window; first = its first detection)")
    groups: dict[tuple[str, str], list[Fault]] = defaultdict(list)
    for f in faults:
        groups[(f.kind, where(f))].append(f)
    for (kind, place), mine in sorted(groups.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1])):
        expect = "/".join(sorted(mine[0].knowable)) or "no page"
        got = [f for f in mine if f.caught]
        firsts = [min((t - f.knowable[c]).total_seconds() / 60 for c, t in f.caught.items()) for f in got]
        delay = f", first {statistics.median(firsts):+.0f} min median, {max(firsts):+.0f} max" if firsts else ""
        told = f"{len(got)} caught" if mine[0].knowable else "must not page"
        print(f"  {kind:<12}{place:<13}{len(mine)} injected, {told} ({expect}){delay}")
    late_pages = sum(tally.false_open[c] for c in PAGING)
    needed = unneeded = 0
    unneeded_dbs: set[str] = set()
    unneeded_lines: list[str] = []
    why: Counter[str] = Counter()
    for rec in captures:
        if rec.get("outcome") != "dry_run":
            continue
        at = datetime.fromisoformat(str(rec["time"]))
        target = str(rec["target"])
        fault = by_app.get(db_app.get(target, target))
        if fault is not None and fault.kind != "late_small" and fault.in_window(at):
            needed += 1
        else:
            unneeded += 1
            unneeded_dbs.add(target)
            span = f"fault {fault.kind} window {fault.due:%m-%d %H:%M}..{fault.window_end:%m-%d %H:%M}" \
                if fault is not None else "healthy"
            unneeded_lines.append(f"{target} at {at:%m-%d %H:%M} ({span}): {rec.get('reason')}")
            triggers = rec.get("triggers")
            for t in triggers if isinstance(triggers, list) else []:
                why[str(t)] += 1
    for line in unneeded_lines[:10]:
        print(f"  unneeded: {line}")
    outcomes = Counter(str(r.get("outcome")) for r in captures)
    print(f"\nemergency captures (audit, action capture): {dict(outcomes)}")
    print(f"  planned in dry run: {needed + unneeded}; needed (inside a fault window) {needed}; unneeded "
          f"{unneeded} on {len(unneeded_dbs)} databases (triggers: {dict(why) or 'none'})")
    faulty_needing = [f for f in faults if f.knowable]
    missed_faults = [f"{f.kind}@{f.app.name}" for f in faulty_needing if not f.caught]
    firsts_all = [min((t - f.knowable[c]).total_seconds() for c, t in f.caught.items())
                  for f in faulty_needing if f.caught]
    med_first = statistics.median(firsts_all) if firsts_all else float("inf")
    ok_pages, ok_caps = late_pages == 0, unneeded == 0
    ok_caught, ok_delay = not missed_faults, med_first <= INTERVAL.total_seconds()
    print("\nverdict")
    print(f"  false pages on healthy databases / outside fault windows: {late_pages} "
          f"{'PASS' if ok_pages else 'MISS'} (target 0)")
    print(f"  unneeded emergency captures: {unneeded} {'PASS' if ok_caps else 'MISS'} (target 0)")
    not_caught = f" (not caught: {', '.join(missed_faults)})" if missed_faults else ""
    print(f"  injected faults caught: {len(faulty_needing) - len(missed_faults)}/{len(faulty_needing)} "
          f"{'PASS' if ok_caught else 'MISS'}{not_caught}")
    print(f"  median first detection after knowable: {med_first / 60:+.1f} min "
          f"{'PASS' if ok_delay else 'MISS'} (target <= {INTERVAL.total_seconds() / 60:.0f} min)")
    print(f"  overall: {'PASS' if ok_pages and ok_caps and ok_caught and ok_delay else 'MISS'}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
