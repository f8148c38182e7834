"""Benchmark of the /metrics exposition for a large fleet (1,000 watched databases).

Run as ``python bench/bench_metrics.py`` from the repository root; it prints its figures and exits 0
(it is a measurement, not a test: missed targets are reported, not raised).

What it measures, in one run:

1. **Render cost.** A `StateHolder` is filled with 1,000 realistic databases (an ``archive`` source with
   ~10 backups each, some failed; live facts; one finding per `policy.CHECKS` entry, produced by the real
   `policy.evaluate`; four RTO scenarios; ``archive`` and ``database`` collector statuses). The uncached
   render path, ``generate_latest(Exposition(holder).registry)`` (build families from the snapshot, then
   encode), is timed against prometheus-client's own ``generate_latest`` over a plain `CollectorRegistry`
   holding the same samples as ordinary labelled `Gauge`/`Counter` objects. Both outputs are checked to
   contain the same sample lines. The two are measured interleaved (alternating which goes first) and the
   ratio of the medians ours/theirs is reported (target < 1.5).
2. **Scrape latency.** The real `GuardianHTTP` server is started on 127.0.0.1 (ephemeral port) and
   ``/metrics`` is fetched over real HTTP with `http.client`, a fresh TCP connection per scrape (the server
   speaks HTTP/1.0 and closes after each response, so keep-alive is not available). Latency is measured from
   connect to the last body byte. With the snapshot unchanged (cached body) it reports median and p99 over
   300 scrapes (target: p99 < 20 ms), plus medians for OpenMetrics and gzip scrapes and for the first scrape
   after a snapshot change (served from the last complete rendering while the next one is built).
3. **Scrapes during collection.** A fresh server over its own holder; a publisher thread stands in for the
   collection passes: every ``PASS_INTERVAL`` it publishes a new snapshot version with a realistic change to
   all 1,000 databases (every collector status and evaluation time moves on, the databases whose schedule
   came due gain a new backup), so the exposition is re-rendered continuously (a pass every second is 30
   times the daemon's default rate; the publisher's own CPU, about 12 ms a pass, is close to what a real
   pass over 1,000 Heroku apps costs per second of its 30 s interval). Meanwhile ``DURING_SCRAPES`` scrapes
   are made the way Prometheus makes them (OpenMetrics, gzip, from another process) at random intervals of
   0.1-0.5 s. This runs ``DURING_ROUNDS`` times with the renderer in a forked child (the daemon's default)
   and as many with it on a thread in the daemon's process, alternating, so the two are compared in one
   run. Each round freezes the heap after every publish and collects it whole at its end, as the daemon does
   (`daemon.heap`). Median, p99 and max are reported per mode (target: p99 < 20 ms; the verdict is given for both, the
   daemon's default, the forked child, first), with how many
   snapshot versions were published and how far behind the served bodies were.

Every verdict is computed from the figure printed beside it, rounded as printed, in the unit printed.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import http.client
import json
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import Metric

from daemon.config import Objectives
from daemon.core import policy
from daemon.core.snapshot import (
    SOURCE_ARCHIVE,
    Backup,
    CollectorStatus,
    DatabaseState,
    LiveFacts,
    Snapshot,
    SourceState,
    StateHolder,
)
from daemon.heap import collect_frozen, freeze_after_publish
from daemon.metrics import Exposition
from daemon.web.server import GuardianHTTP

N_DATABASES = 1_000
BACKUPS_PER_DATABASE = 10
RENDER_REPS = 15
SCRAPES = 300
VARIANT_SCRAPES = 50
CHANGE_REPS = 10
PASS_INTERVAL = 1.0
DURING_SCRAPES = 120
DURING_GAP = (0.1, 0.5)
DURING_ROUNDS = 2
TARGET_RATIO = 1.5
TARGET_SCRAPE_MS = 20.0
SEED = 20240601

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"
ERRORS = (
    "pg_dump: error: connection to server failed: timeout expired",
    "pg_dump exited with status 1: permission denied for table audit_log",
    "archive write failed: [Errno 28] No space left on device",
)


# -- the fleet ----------------------------------------------------------------------------------------------
def _backups(rng: random.Random, name: str, now: datetime, interval: timedelta) -> tuple[Backup, ...]:
    """~10 backups of one database, oldest first: mostly scheduled, some manual/emergency, ~15 % failed."""
    base_size = rng.randint(50_000_000, 40_000_000_000)
    count = BACKUPS_PER_DATABASE + rng.randint(-2, 2)
    out = []
    for i in range(count, 0, -1):
        started = now - interval * i - timedelta(seconds=rng.randint(0, 600))
        kind = rng.choices(("scheduled", "manual", "emergency"), weights=(85, 12, 3))[0]
        failed = rng.random() < 0.15
        duration = timedelta(seconds=rng.uniform(20, 3_600))
        out.append(Backup(
            backup_id=f"{name}-{started:%Y%m%dT%H%M%SZ}",
            database=name,
            source=SOURCE_ARCHIVE,
            kind=kind,
            started_at=started,
            finished_at=None if failed and rng.random() < 0.3 else started + duration,
            succeeded=not failed,
            size_bytes=0 if failed else int(base_size * rng.uniform(0.95, 1.08)),
            sha256=None if failed else hashlib.sha256(f"{name}{i}".encode()).hexdigest(),
            error=rng.choice(ERRORS) if failed else None,
            tool_version="pg_dump (PostgreSQL) 16.3",
        ))
    return tuple(out)


def build_snapshot(n: int, now: datetime, seed: int = SEED) -> Snapshot:
    """A snapshot of `n` watched databases as a collection pass plus evaluation would publish it."""
    rng = random.Random(seed)
    objectives = Objectives()
    rto = {k: v.total_seconds() for k, v in objectives.rto}
    databases: dict[str, DatabaseState] = {}
    collectors: dict[tuple[str, str], CollectorStatus] = {}
    for i in range(n):
        name = f"{rng.choice(('orders', 'billing', 'users', 'inventory', 'analytics'))}_{i:04d}"
        interval = timedelta(hours=rng.choice((1, 6, 24)))
        scheduled = rng.random() < 0.9
        source = SourceState(
            source=SOURCE_ARCHIVE,
            backups=_backups(rng, name, now, interval),
            in_progress=1 if rng.random() < 0.05 else 0,
            schedule_interval_seconds=interval.total_seconds() if scheduled else None,
            schedule_next_at=now + timedelta(seconds=rng.randint(1, int(interval.total_seconds())))
            if scheduled else None,
        )
        statuses = []
        for collector in ("archive", "database"):
            up = rng.random() < 0.97
            st = CollectorStatus(
                collector=collector, database=name, up=up,
                last_success_at=now - timedelta(seconds=rng.randint(5, 900)),
                last_duration_seconds=rng.uniform(0.002, 2.5),
                errors_total=rng.randint(0, 40),
                last_error=None if up else "connection refused",
            )
            statuses.append(st)
            collectors[(collector, name)] = st
        db = DatabaseState(
            name=name,
            rpo_seconds=objectives.rpo.total_seconds(),
            rto_seconds=dict(rto),
            rpo_warning_ratio=objectives.rpo_at_risk_ratio,
            sources={SOURCE_ARCHIVE: source},
            live=LiveFacts(size_bytes=rng.randint(10_000_000, 200_000_000_000), table_count=rng.randint(3, 800),
                           server_version="16.3", observed_at=now),
        )
        findings = policy.evaluate(db, objectives, statuses, now)
        databases[name] = replace(db, findings=findings, evaluated_at=now)
    return Snapshot(databases=databases, collectors=collectors, first_collection_done=True, started_at=now)


# -- the reference registry ---------------------------------------------------------------------------------
def reference_registry(families: Iterable[Metric]) -> CollectorRegistry:
    """The same samples as ordinary labelled prometheus_client Gauges/Counters in a fresh registry.

    Families without samples are skipped (a labelled metric with no children renders no sample lines either).
    """
    registry = CollectorRegistry(auto_describe=False)
    for fam in families:
        if not fam.samples:
            continue
        labelnames = list(fam.samples[0].labels)
        if fam.type == "counter":
            counter = Counter(fam.name, fam.documentation, labelnames, registry=registry)
            for s in fam.samples:
                (counter.labels(**s.labels) if labelnames else counter).inc(s.value)
        elif fam.type == "gauge":
            gauge = Gauge(fam.name, fam.documentation, labelnames, registry=registry)
            for s in fam.samples:
                (gauge.labels(**s.labels) if labelnames else gauge).set(s.value)
        else:
            raise TypeError(f"unexpected family type {fam.type} for {fam.name}")
    return registry


def sample_lines(body: bytes) -> list[str]:
    """The sorted sample lines of a text exposition (HELP/TYPE comments dropped)."""
    return sorted(line for line in body.decode().splitlines() if line and not line.startswith("#"))


# -- timing helpers -----------------------------------------------------------------------------------------
def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of `fn` takes (after a collection so earlier garbage is not billed to it)."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ms(seconds: float) -> float:
    return seconds * 1_000.0


def p99(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


@dataclass(frozen=True)
class Scrape:
    seconds: float
    status: int
    body: bytes
    headers: dict[str, str]


def scrape(port: int, headers: dict[str, str] | None = None) -> Scrape:
    """GET /metrics on a fresh connection; time from connect to the last body byte."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - t0
        return Scrape(elapsed, resp.status, body, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def scrape_series(port: int, count: int, headers: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(count):
        s = scrape(port, headers)
        if s.status != 200:
            raise RuntimeError(f"/metrics answered {s.status}")
        out.append(s.seconds)
    return out


def verdict(printed: str, target: float) -> str:
    """PASS when the figure as printed (same rounding, same unit as its target) is under the target."""
    return "PASS" if float(printed) < target else "MISS"


# -- scrapes during collection ----------------------------------------------------------------------------
def next_pass(snap: Snapshot, now: datetime, rng: random.Random) -> Snapshot:
    """What one collection pass changes: every collector status and evaluation time moves on to `now`, and a
    database whose next scheduled backup came due gains that backup (its newest, good)."""
    collectors = {key: replace(st, last_success_at=now if st.up else st.last_success_at,
                               last_duration_seconds=rng.uniform(0.002, 2.5),
                               errors_total=st.errors_total + (0 if st.up else 1))
                  for key, st in snap.collectors.items()}
    databases = {}
    for name, db in snap.databases.items():
        src = db.sources[SOURCE_ARCHIVE]
        if src.schedule_next_at is not None and src.schedule_next_at <= now and src.newest_good is not None:
            newest = src.newest_good
            new = replace(newest, backup_id=f"{name}-{now:%Y%m%dT%H%M%S%fZ}", started_at=now,
                          finished_at=now + timedelta(seconds=30))
            step = timedelta(seconds=src.schedule_interval_seconds or 3_600)
            src = replace(src, backups=(*src.backups[1:], new), schedule_next_at=src.schedule_next_at + step)
        databases[name] = replace(db, sources={SOURCE_ARCHIVE: src}, evaluated_at=now)
    return replace(snap, databases=databases, collectors=collectors)


@dataclass(frozen=True)
class During:
    seconds: list[float]
    published: int
    behind: list[int]  # per scrape: snapshot versions between the body served and the newest published


def scrapes_during_collection(snapshot: Snapshot, now: datetime, *, isolated: bool) -> During:
    """Prometheus-style scrapes from another process, at random gaps, while a publisher thread publishes a pass
    every PASS_INTERVAL; the exposition renders in a forked child (`isolated`) or on its thread."""
    holder = StateHolder(snapshot)
    freeze_after_publish(holder)  # as the daemon's run does: full garbage collections only when it chooses
    server = GuardianHTTP("127.0.0.1", 0, holder, Exposition(holder, isolated=isolated))
    headers = {"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"}
    stop = threading.Event()
    rng = random.Random(SEED + 1)
    clock = [now]
    published: list[float] = []  # time.monotonic() of each publish (system-wide, as the client's)

    def publish() -> None:
        while not stop.wait(PASS_INTERVAL):
            clock[0] += timedelta(minutes=10)  # each pass moves the fleet's clock on, so schedules come due
            holder.update(lambda s: next_pass(s, clock[0], rng))
            published.append(time.monotonic())

    server.start()
    publisher = threading.Thread(target=publish, name="bench-publisher", daemon=True)
    try:
        scrape(server.port, headers)  # the first scrape of a variant may render once
        first_version = holder.current().version
        publisher.start()
        client = subprocess.run([sys.executable, __file__, "--scrape-client", str(server.port),
                                 str(DURING_SCRAPES), str(SEED + 2)],
                                capture_output=True, text=True, check=True)
    finally:
        stop.set()
        publisher.join()
        server.stop()
        collect_frozen()  # each round starts from a collected heap, whichever mode ran before
    seconds: list[float] = []
    behind: list[int] = []
    for line in client.stdout.splitlines():
        row = json.loads(line)
        seconds.append(row["seconds"])
        newest = sum(1 for t in published if t <= row["start"])
        behind.append(max(0, newest - passes_shown(row["newest_success"], now)))  # < 0: published mid-scrape
    return During(seconds, holder.current().version - first_version, behind)


def child_private_mb(exposition: Exposition) -> float:
    """Render every variant once in a forked child, as the daemon does, and return the child's private dirty
    memory (from /proc/self/smaps_rollup, read in the child after rendering): what the fork really cost."""
    from prometheus_client.openmetrics.exposition import generate_latest as om_latest

    from daemon.metrics.forked import ForkedRunner

    def work() -> float:
        snap = exposition.holder.current()
        with exposition._collector.pinned(snap, lambda: False):
            generate_latest(exposition.registry)
            gzip.compress(om_latest(exposition.registry), compresslevel=5)
        with open("/proc/self/smaps_rollup", encoding="ascii") as f:
            kb = sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))
        return kb / 1024

    return ForkedRunner[float]().run(work)


def scrape_client(port: int, count: int, seed: int) -> int:
    """The scraper's side, in its own process as Prometheus is: `count` OpenMetrics + gzip scrapes at random
    gaps; one JSON line per scrape (start, seconds, the newest collector success time in the body)."""
    rng = random.Random(seed)
    headers = {"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"}
    marker = b"pgbackup_collector_last_success_timestamp_seconds{"
    for _ in range(count):
        time.sleep(rng.uniform(*DURING_GAP))  # the scrape interval itself, not a wait for a condition
        start = time.monotonic()
        s = scrape(port, headers)
        if s.status != 200:
            raise RuntimeError(f"/metrics answered {s.status}")
        body = gzip.decompress(s.body)
        newest = max(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines() if line.startswith(marker))
        print(json.dumps({"start": start, "seconds": s.seconds, "newest_success": newest}), flush=True)
    return 0


def passes_shown(newest_success: float, start: datetime) -> int:
    """How many passes a body shows, read from its newest collector success time (each pass moves it 10 min
    on from `start`; before the first pass it is a few seconds to minutes before `start`)."""
    return max(0, round((newest_success - start.timestamp()) / 600))


# -- the benchmark ------------------------------------------------------------------------------------------
def main() -> int:
    # prometheus_client Counters would add *_created samples that CounterMetricFamily without a created
    # timestamp does not have; turn them off so both registries hold the same samples.
    disable_created_metrics()

    now = datetime.now(UTC)
    t0 = time.perf_counter()
    holder = StateHolder(build_snapshot(N_DATABASES, now))
    holder.update(lambda s: s)  # publish like a collection pass does (bumps the version)
    print(f"fleet: {N_DATABASES} databases built in {time.perf_counter() - t0:.2f} s")

    exposition = Exposition(holder)
    ours_body = generate_latest(exposition.registry)
    theirs_registry = reference_registry(exposition.registry.collect())
    theirs_body = generate_latest(theirs_registry)

    ours_lines, theirs_lines = sample_lines(ours_body), sample_lines(theirs_body)
    if ours_lines != theirs_lines:
        only_ours = sorted(set(ours_lines) - set(theirs_lines))
        only_theirs = sorted(set(theirs_lines) - set(ours_lines))
        print(f"WARNING: sample lines differ: {len(only_ours)} only in ours, {len(only_theirs)} only in theirs")
        for line in only_ours[:5]:
            print(f"  ours only:   {line}")
        for line in only_theirs[:5]:
            print(f"  theirs only: {line}")
    else:
        print(f"sample lines identical: {len(ours_lines)} samples in both outputs")

    # 1. render: interleaved, alternating which of the two goes first in each repetition.
    def render_ours() -> bytes:
        return generate_latest(exposition.registry)

    def render_theirs() -> bytes:
        return generate_latest(theirs_registry)

    ours_t: list[float] = []
    theirs_t: list[float] = []
    for i in range(RENDER_REPS):
        if i % 2 == 0:
            ours_t.append(timed(render_ours))
            theirs_t.append(timed(render_theirs))
        else:
            theirs_t.append(timed(render_theirs))
            ours_t.append(timed(render_ours))
    ours_med, theirs_med = statistics.median(ours_t), statistics.median(theirs_t)
    # How much of ours is building the families from the snapshot (the rest is prometheus-client encoding).
    build_med = statistics.median(timed(lambda: list(exposition.registry.collect())) for _ in range(RENDER_REPS))
    ratio = ours_med / theirs_med
    print(f"\nrender ({RENDER_REPS} interleaved reps each)")
    print(f"  ours   (Exposition registry)  median {ms(ours_med):7.1f} ms  "
          f"min {ms(min(ours_t)):7.1f}  max {ms(max(ours_t)):7.1f}")
    print(f"  theirs (Gauge/Counter reg.)   median {ms(theirs_med):7.1f} ms  "
          f"min {ms(min(theirs_t)):7.1f}  max {ms(max(theirs_t)):7.1f}")
    print(f"  of ours: building families    median {ms(build_med):7.1f} ms (the rest is encoding)")
    print(f"  ratio ours/theirs of medians  {ratio:.2f}")

    # 2. HTTP scrapes against the real server.
    server = GuardianHTTP("127.0.0.1", 0, holder, exposition)
    server.start()
    try:
        warm = scrape(server.port)  # renders and caches the text body for this version
        if warm.body != ours_body:
            print("WARNING: the /metrics body differs from generate_latest(exposition.registry)")
        plain = scrape_series(server.port, SCRAPES)

        om_headers = {"Accept": OPENMETRICS_ACCEPT}
        gz_headers = {"Accept-Encoding": "gzip"}
        om_first, gz_first = scrape(server.port, om_headers), scrape(server.port, gz_headers)
        if not om_first.headers.get("content-type", "").startswith("application/openmetrics-text"):
            print(f"WARNING: OpenMetrics scrape answered {om_first.headers.get('content-type')}")
        if om_first.headers.get("content-type", "").startswith("application/openmetrics-text") \
                and not om_first.body.rstrip().endswith(b"# EOF"):
            print("WARNING: OpenMetrics body does not end with # EOF")
        if gz_first.headers.get("content-encoding") != "gzip" or gzip.decompress(gz_first.body) != ours_body:
            print("WARNING: gzip scrape is not the gzip of the text body")
        om = scrape_series(server.port, VARIANT_SCRAPES, om_headers)
        gz = scrape_series(server.port, VARIANT_SCRAPES, gz_headers)

        changed: list[float] = []
        for _ in range(CHANGE_REPS):
            holder.update(lambda s: s)
            gc.collect()
            changed.append(scrape(server.port).seconds)
    finally:
        server.stop()

    scrape_med, scrape_p99 = statistics.median(plain), p99(plain)
    print("\nscrape /metrics over HTTP (fresh connection per scrape; server is HTTP/1.0, no keep-alive)")
    print(f"  text 0.0.4, cached      median {ms(scrape_med):6.2f} ms  p99 {ms(scrape_p99):6.2f} ms  "
          f"max {ms(max(plain)):6.2f} ms  ({SCRAPES} scrapes, after 1 warm-up)")
    print(f"  OpenMetrics, cached     median {ms(statistics.median(om)):6.2f} ms  "
          f"p99 {ms(p99(om)):6.2f} ms  ({VARIANT_SCRAPES} scrapes, after 1 warm-up)  "
          f"first (render) {ms(om_first.seconds):6.1f} ms")
    print(f"  gzip, cached            median {ms(statistics.median(gz)):6.2f} ms  "
          f"p99 {ms(p99(gz)):6.2f} ms  ({VARIANT_SCRAPES} scrapes, after 1 warm-up)  "
          f"first (render+gzip) {ms(gz_first.seconds):6.1f} ms")
    print(f"  first after a snapshot change             median {ms(statistics.median(changed)):6.1f} ms  "
          f"max {ms(max(changed)):6.1f} ms  ({CHANGE_REPS} runs)")

    # The forked child's own memory: the pages it copied (private dirty) while rendering this snapshot.
    copied_mb = child_private_mb(exposition)
    print(f"\nforked render child: {copied_mb:.1f} MB of the daemon's memory copied while rendering "
          f"({N_DATABASES} databases; the rest is shared with the daemon, copy on write)")

    # 3. during collection: the renderer in a forked child and on its thread, alternating, side by side.
    runs: dict[bool, list[During]] = {True: [], False: []}
    for i in range(DURING_ROUNDS * 2):
        isolated = i % 2 == 0
        runs[isolated].append(scrapes_during_collection(holder.current(), now, isolated=isolated))
    print(f"\nscrape /metrics during collection (a pass every {PASS_INTERVAL:g} s, OpenMetrics + gzip, "
          f"{DURING_SCRAPES} scrapes {DURING_GAP[0]:g}-{DURING_GAP[1]:g} s apart from another process; "
          f"{DURING_ROUNDS} rounds per mode, alternating)")
    during: dict[bool, tuple[str, str, str]] = {}
    for isolated, label in ((True, "rendered in a forked child"), (False, "rendered on a thread       ")):
        secs = [x for d in runs[isolated] for x in d.seconds]
        behind = [x for d in runs[isolated] for x in d.behind]
        during[isolated] = (f"{ms(statistics.median(secs)):.2f}", f"{ms(p99(secs)):.2f}", f"{ms(max(secs)):.2f}")
        med, p, mx = during[isolated]
        print(f"  {label}  median {med} ms  p99 {p} ms  max {mx} ms  | "
              f"{sum(d.published for d in runs[isolated])} versions published, served body behind the newest: "
              f"median {statistics.median(behind):g}, max {max(behind)} versions")
    d_med, d_p99, d_max = during[False]  # on the thread, for comparison
    c_med, c_p99, c_max = during[True]  # the daemon's default: in a forked child
    print(f"  p99 on a thread / p99 in a child: {float(d_p99) / float(c_p99):.1f}x")

    print("\nsummary")
    print(f"  samples {len(ours_lines)} | text body {len(ours_body) / 1e6:.2f} MB | "
          f"OpenMetrics body {len(om_first.body) / 1e6:.2f} MB | gzip body {len(gz_first.body) / 1e6:.2f} MB")
    ratio_s, cached_p99 = f"{ratio:.2f}", f"{ms(scrape_p99):.2f}"
    print(f"  render ours median {ms(ours_med):.1f} ms | generate_latest median {ms(theirs_med):.1f} ms | "
          f"ratio {ratio_s} (target < {TARGET_RATIO}) {verdict(ratio_s, TARGET_RATIO)}")
    print(f"  scrape, cached: median {ms(scrape_med):.2f} ms p99 {cached_p99} ms "
          f"(target p99 < {TARGET_SCRAPE_MS:.0f} ms) {verdict(cached_p99, TARGET_SCRAPE_MS)}")
    print(f"  scrape during collection ({N_DATABASES} databases, forked child, the default): median {c_med} ms "
          f"p99 {c_p99} ms max {c_max} ms (target p99 < {TARGET_SCRAPE_MS:.0f} ms) {verdict(c_p99, TARGET_SCRAPE_MS)}")
    print(f"  scrape during collection ({N_DATABASES} databases, rendered on the thread): median {d_med} ms "
          f"p99 {d_p99} ms max {d_max} ms "
          f"(target p99 < {TARGET_SCRAPE_MS:.0f} ms) {verdict(d_p99, TARGET_SCRAPE_MS)}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--scrape-client"]:
        raise SystemExit(scrape_client(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    raise SystemExit(main())
