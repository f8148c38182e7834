"""Signal-quality benchmark: a healthy Heroku fleet must get no false pages and no unneeded emergency captures,
and every injected fault must be caught, soon after it becomes knowable.

Run as ``python bench/bench_signal.py [APPS] [DAYS] [MINUTES]`` from the repository root (defaults: 200 apps,
30 days, a 5 min collect interval);
it prints its figures and a verdict and exits 0 (a measurement, not a test: missed targets are reported).

Setup. The Heroku double (``tests/heroku_double.py``) holds APPS apps, populated and scheduled by
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

import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_heroku_fleet import FakeClock, ScheduledApp, populate, run_scheduler  # noqa: E402
from loguru import logger  # noqa: E402

from daemon.app import Guardian  # noqa: E402
from daemon.config import GuardianConfig  # noqa: E402
from daemon.heroku import HerokuClient  # noqa: E402
from daemon.schedules import last_due, next_due  # noqa: E402
from tests import heroku_double  # noqa: E402
from tests.heroku_double import HerokuDouble  # noqa: E402

START = datetime(2026, 10, 20, 0, 0, tzinfo=UTC)
INTERVAL = timedelta(minutes=5)
RPO = timedelta(hours=24)
GRACE = timedelta(hours=1)
#: After recovery a finding clears at the next poll of that database (every 15 min away from its schedule) and
#: the pass after it: that long (plus one collect interval) still counts as the fault's window.
SETTLE = timedelta(minutes=30)
HUNG_FOR = timedelta(hours=6)
TOKEN = "hrku-bench-token-0123456789abcdef"
#: Checks that page (critical severity in daemon/policy.py, in both versions).
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


@dataclass
class Fault:
    kind: str
    app: ScheduledApp
    due: datetime  # the scheduled instant the fault hits (unreachable: its start)
    knowable: dict[str, datetime] = field(default_factory=dict)  # check -> when it could first be known
    end: datetime | None = None  # when the database is healthy again (None: not yet)
    caught: dict[str, datetime] = field(default_factory=dict)  # check -> first pass it was active at/after due

    @property
    def window_end(self) -> datetime:
        return self.end + SETTLE + INTERVAL if self.end is not None else datetime.max.replace(tzinfo=UTC)

    def in_window(self, at: datetime) -> bool:
        return self.due <= at <= self.window_end


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

    def add_backup(self, heroku: HerokuDouble, due: datetime) -> None:
        kind, started = self.fault.kind, due + self.start_delay
        if due != self.fault.due or kind in ("unreachable",):
            super().add_backup(heroku, due)
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


def set_knowable(f: Fault) -> None:
    """When each expected check could first know of the fault (see the module docstring)."""
    base = timedelta(seconds=30 + f.app.index % 90)  # the app's usual start delay and capture time
    duration = timedelta(minutes=2 + f.app.index % 7)
    previous_start = last_due(f.app.schedule, f.due - timedelta(seconds=1)) + base
    if f.kind in ("missed", "late_big"):
        f.knowable["missed_schedule"] = f.due + GRACE
        f.knowable["rpo_at_risk"] = f.due + GRACE
    if f.kind in ("missed", "late_big", "hung"):
        f.knowable["rpo_breach"] = previous_start + RPO
    if f.kind in ("failed", "small"):
        f.knowable[EXPECTED[f.kind][0]] = f.due + base + duration
    if f.kind == "unreachable":
        f.knowable["collector_down"] = f.due


def build_guardian(heroku: HerokuDouble, clock: FakeClock, apps: list[str], state_dir: str) -> Guardian:
    config = GuardianConfig.model_validate({
        "collect_interval": f"{int(INTERVAL.total_seconds())}s",
        "state_dir": state_dir,
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
    n_apps = int(argv[0]) if argv else 200
    days = int(argv[1]) if len(argv) > 1 else 30
    if len(argv) > 2:
        INTERVAL = timedelta(minutes=int(argv[2]))
    if n_apps < 2 * len(KINDS) * PER_KIND or days < 1 or INTERVAL.total_seconds() <= 0:
        raise SystemExit(f"APPS must be >= {2 * len(KINDS) * PER_KIND} (each fault on its own app, and healthy "
                         "ones beside them), DAYS >= 1, MINUTES >= 1")
    # The double writes headers and body apart: without TCP_NODELAY each request waits ~40 ms for a delayed
    # ACK, the double's cost, not the guardian's (as in bench_heroku_fleet.py).
    heroku_double._Handler.disable_nagle_algorithm = True
    logger.remove()
    # The notifier logs every finding it opens (no Sentry DSN here): the benchmark counts them instead.
    logger.add(sys.stderr, level="ERROR", filter=lambda r: not (r["name"] or "").startswith("daemon.notify"))
    clock = FakeClock()
    clock.now = START
    names = [f"app-{i:04d}" for i in range(n_apps)]
    tally = Tally()
    active_before: dict[tuple[str, str], bool] = {}
    passes = 0
    with HerokuDouble(clock=clock, token=TOKEN) as heroku, tempfile.TemporaryDirectory() as state_dir:
        apps = populate(heroku, names, clock.now)
        faults = choose_faults(apps, days)
        by_app = {f.app.name: f for f in faults}
        g = build_guardian(heroku, clock, names, state_dir)
        db_app = {name: name.split("/", 1)[0] for name in g.databases}
        end = START + timedelta(days=days)
        hung_state: dict[str, str] = {}
        t0 = time.perf_counter()
        while clock.now < end:
            now = clock.now
            for f in faults:
                drive_fault(heroku, f, now, hung_state)
            run_scheduler(heroku, apps, now)
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
                        if finding.check in EXPECTED[fault.kind] and finding.check not in fault.caught:
                            fault.caught[finding.check] = now
                        if fault.kind != "late_small" or finding.check not in PAGING:
                            continue
                    tally.false_pass_count[finding.check] += 1
                    tally.false_dbs[finding.check].add(db_name)
                    if not was:
                        tally.false_open[finding.check] += 1
            clock.now += INTERVAL
        wall = time.perf_counter() - t0
        captures = [r for r in g.audit.read() if r.get("action") == "capture"]
        g.stop()
    report(n_apps, days, passes, wall, faults, tally, captures, db_app, by_app)
    return 0


def drive_fault(heroku: HerokuDouble, f: Fault, now: datetime, hung_state: dict[str, str]) -> None:
    """Do what the fault needs at `now` beyond the scheduler: 503s on and off, a hung capture shown and ended."""
    if not f.knowable:
        set_knowable(f)
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
            heroku.finish_running(f.app.name)
            hung_state[f.app.name] = "done"
            f.end = now


def report(n_apps: int, days: int, passes: int, wall: float, faults: list[Fault], tally: Tally,
           captures: list[dict[str, object]], db_app: dict[str, str], by_app: dict[str, Fault]) -> None:
    print(f"fleet: {n_apps} Heroku apps, daily schedules in UTC, America/New_York, Europe/Berlin, Asia/Tokyo; "
          f"{days} simulated days from {START:%Y-%m-%d} (Berlin leaves DST 2026-10-25, New York 2026-11-01); "
          f"collect interval {INTERVAL.total_seconds() / 60:.0f} min; {passes} passes in {wall:.0f} s wall clock")
    print(f"faults: {len(faults)} ({PER_KIND} of each kind) on {len(by_app)} apps; "
          f"{n_apps - len(by_app)} apps healthy throughout")
    checks = ("rpo_breach", "rpo_at_risk", "missed_schedule", "last_attempt_failed", "size_anomaly",
              "collector_down", "rpo_unachievable", "no_schedule")
    extra = sorted(set(tally.false_open) - set(checks))
    print("\nper check (delay = first pass with the finding active - when the fault became knowable)")
    print(f"  {'check':<22}{'injected':>9}{'caught':>8}{'delay med':>11}{'delay max':>11}"
          f"{'false open':>12}{'false dbs':>10}{'false pages':>12}")
    for check in (*checks, *extra):
        mine = [f for f in faults if check in EXPECTED[f.kind]]
        caught = [f for f in mine if check in f.caught]
        delays = [(f.caught[check] - f.knowable[check]).total_seconds() / 60 for f in caught if check in f.knowable]
        med = f"{statistics.median(delays):+.0f} min" if delays else "-"
        mx = f"{max(delays):+.0f} min" if delays else "-"
        pages = tally.false_open[check] if check in PAGING else 0
        print(f"  {check:<22}{len(mine):>9}{len(caught):>8}{med:>11}{mx:>11}{tally.false_open[check]:>12}"
              f"{len(tally.false_dbs[check]):>10}{pages:>12}")
    print("\nper fault kind (caught = any expected check active inside the window)")
    for kind in KINDS:
        mine = [f for f in faults if f.kind == kind]
        got = [f for f in mine if f.caught] if EXPECTED[kind] else []
        firsts = [min((t - f.knowable.get(c, f.due)).total_seconds() / 60 for c, t in f.caught.items())
                  for f in got]
        delay = f", first detection median {statistics.median(firsts):+.0f} min max {max(firsts):+.0f} min" \
            if firsts else ""
        expect = "/".join(EXPECTED[kind]) or "no page"
        print(f"  {kind:<12} {len(mine)} injected, {len(got) if EXPECTED[kind] else '-'} caught ({expect}){delay}")
    late_pages = sum(tally.false_open[c] for c in PAGING)
    needed = unneeded = 0
    unneeded_dbs: set[str] = set()
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
            triggers = rec.get("triggers")
            for t in triggers if isinstance(triggers, list) else []:
                why[str(t)] += 1
    outcomes = Counter(str(r.get("outcome")) for r in captures)
    print(f"\nemergency captures (audit, action capture): {dict(outcomes)}")
    print(f"  planned in dry run: {needed + unneeded}; needed (inside a fault window) {needed}; unneeded "
          f"{unneeded} on {len(unneeded_dbs)} databases (triggers: {dict(why) or 'none'})")
    faulty_needing = [f for f in faults if EXPECTED[f.kind]]
    missed_faults = [f"{f.kind}@{f.app.name}" for f in faulty_needing if not f.caught]
    firsts_all = [min((t - f.knowable.get(c, f.due)).total_seconds() for c, t in f.caught.items())
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
