"""A scrape never waits for a render: /metrics serves the last complete rendering while the next one is built
on the exposition's renderer thread, falls back to rendering inline (and says so) when the renderer fails,
and the renderer ends with the daemon. Real server on loopback, real HTTP, real snapshots."""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loguru import logger
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.adapters.postgres.cluster import LocalCluster, free_port
from daemon.app import Guardian
from daemon.config import GuardianConfig
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
from daemon.metrics import RENDER_THREAD, Exposition
from daemon.web.server import GuardianHTTP
from tests.support import create_database, shop_config

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)  # the snapshots' own time; nothing here reads the clock


# -- helpers ----------------------------------------------------------------------------------------------

def fleet(prefix: str, n: int) -> Snapshot:
    """`n` databases named `{prefix}_{i}`, each with a few backups, live facts and two collector statuses."""
    databases: dict[str, DatabaseState] = {}
    collectors: dict[tuple[str, str], CollectorStatus] = {}
    for i in range(n):
        name = f"{prefix}_{i:05d}"
        backups = tuple(Backup(backup_id=f"{name}-{k}", database=name, source=SOURCE_ARCHIVE, kind="scheduled",
                               started_at=NOW - timedelta(hours=k), finished_at=NOW - timedelta(hours=k, minutes=-5),
                               succeeded=True, size_bytes=1_000_000 + i) for k in (3, 2, 1))
        databases[name] = DatabaseState(
            name=name, rpo_seconds=86_400, rto_seconds={"database_corruption": 3_600}, rpo_warning_ratio=0.8,
            sources={SOURCE_ARCHIVE: SourceState(SOURCE_ARCHIVE, backups=backups, schedule_interval_seconds=3_600,
                                                 schedule_next_at=NOW + timedelta(minutes=30))},
            live=LiveFacts(size_bytes=5_000_000 + i, table_count=12, server_version="16.3", observed_at=NOW),
            evaluated_at=NOW)
        for collector in ("archive", "database"):
            collectors[(collector, name)] = CollectorStatus(collector=collector, database=name, up=True,
                                                            last_success_at=NOW, last_duration_seconds=0.01)
    return Snapshot(databases=databases, collectors=collectors, first_collection_done=True, started_at=NOW)


@dataclass(frozen=True)
class Scrape:
    seconds: float
    status: int
    body: str


def scrape(port: int) -> Scrape:
    """GET /metrics on a fresh connection, timed from connect to the last body byte."""
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
        return Scrape(time.perf_counter() - t0, resp.status, body.decode())
    finally:
        conn.close()


def scrape_until(port: int, ok: Callable[[Scrape], bool], deadline: float = 60.0) -> Scrape:
    """Scrape until `ok(scrape)` holds; fails with the last answer at the deadline."""
    end = time.monotonic() + deadline
    while True:
        s = scrape(port)
        if ok(s):
            return s
        assert time.monotonic() < end, f"no such scrape within {deadline} s; last: {s.status} {s.body[:200]!r}"
        time.sleep(0.05)  # poll interval, not a wait for a race


def wait_for(condition: Callable[[], bool], deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met within the deadline"
        time.sleep(0.02)  # poll interval


@contextlib.contextmanager
def serving(holder: StateHolder, exposition: Exposition) -> Iterator[GuardianHTTP]:
    server = GuardianHTTP("127.0.0.1", 0, holder, exposition)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{level} {message}")
    try:
        yield lines
    finally:
        logger.remove(sink)


class FailsWhenArmed(Collector):
    """A registered collector that raises on its next collection once armed (then works again). The flag lives
    in shared memory: the renderer's forked child disarms it for the parent too."""

    def __init__(self) -> None:
        self._armed = multiprocessing.Value("b", 0)

    def arm(self) -> None:
        self._armed.value = 1

    def collect(self) -> Iterator[Metric]:
        with self._armed.get_lock():
            armed, self._armed.value = self._armed.value, 0
        if armed:
            raise RuntimeError("a collector broke while rendering")
        yield GaugeMetricFamily("test_extra_collector_ok", "1 when this extra collector rendered.", value=1)


# -- tests ------------------------------------------------------------------------------------------------

def test_a_scrape_right_after_a_publish_serves_the_previous_body_while_the_slow_rendering_runs() -> None:
    holder = StateHolder(fleet("before", 1))
    exposition = Exposition(holder)
    big = fleet("after", 4_000)
    t0 = time.perf_counter()
    expected_new = generate_latest(Exposition(StateHolder(big)).registry).decode()
    render_seconds = time.perf_counter() - t0  # what rendering the new snapshot costs on this machine now
    with serving(holder, exposition) as server:
        scrape_until(server.port, lambda s: "before_00000" in s.body)

        holder.update(lambda _: big)
        during = scrape(server.port)

        assert during.status == 200
        assert 'database="before_00000"' in during.body and "after_00000" not in during.body, \
            "the scrape right after the publish did not serve the previous complete rendering"
        assert during.seconds < render_seconds / 4, \
            f"scrape took {during.seconds:.3f} s while one rendering takes {render_seconds:.3f} s"
        later = scrape_until(server.port, lambda s: "after_00000" in s.body)
        assert "before_00000" not in later.body
        assert later.body == expected_new  # the complete new rendering, not a part of it


def test_a_failing_renderer_falls_back_to_rendering_inline_and_says_so() -> None:
    holder = StateHolder(fleet("first", 3))
    exposition = Exposition(holder)
    extra = FailsWhenArmed()
    exposition.registry.register(extra)
    with log_lines() as lines, serving(holder, exposition) as server:
        scrape_until(server.port, lambda s: "first_00000" in s.body)
        assert exposition.renderer_alive

        extra.arm()
        holder.update(lambda _: fleet("second", 3))
        wait_for(lambda: any("rendering /metrics for snapshot version" in line and "failed" in line
                             for line in lines))  # the renderer hit the broken collector
        after = scrape(server.port)

        assert after.status == 200
        assert "second_00000" in after.body and "first_00000" not in after.body, \
            "after the renderer failed, a scrape served the old body instead of rendering the new one"
        assert "test_extra_collector_ok 1.0" in after.body
        assert any(line.startswith("WARNING") and "renderer failed" in line and "render /metrics inline" in line
                   for line in lines), lines
        assert exposition.renderer_alive  # one failed rendering does not end the renderer

        holder.update(lambda _: fleet("third", 3))  # the next rendering works: the renderer serves again
        scrape_until(server.port, lambda s: "third_00000" in s.body
                     and any("renderer caught up" in line for line in lines))


def test_stopping_the_daemon_ends_the_renderer_thread(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    config = GuardianConfig.model_validate(shop_config(tmp_path, url, listen=f"127.0.0.1:{free_port()}",
                                                       collect_interval="1h"))
    g = Guardian(config)
    try:
        g.start()
        assert g.http is not None
        renderers = [t for t in threading.enumerate() if t.name == RENDER_THREAD]
        assert len(renderers) == 1 and renderers[0].is_alive()
        assert g.exposition.isolated  # the daemon renders in a forked child, off its interpreter lock
        scrape_until(g.http.port, lambda s: s.status == 200 and "pgbackup_build_info" in s.body)
    finally:
        g.stop()
    assert not renderers[0].is_alive(), "the /metrics renderer outlived the daemon's stop()"


def test_stop_interrupts_a_rendering_in_progress() -> None:
    holder = StateHolder(fleet("small", 1))
    exposition = Exposition(holder)
    big = fleet("big", 4_000)
    t0 = time.perf_counter()
    generate_latest(Exposition(StateHolder(big)).registry)
    render_seconds = time.perf_counter() - t0
    server = GuardianHTTP("127.0.0.1", 0, holder, exposition)
    server.start()
    try:
        scrape_until(server.port, lambda s: "small_00000" in s.body)
        holder.update(lambda _: big)  # the renderer starts on it at once
    finally:
        t0 = time.perf_counter()
        server.stop()
        stopped_in = time.perf_counter() - t0
    assert not exposition.renderer_alive
    assert stopped_in < render_seconds / 2, f"stop took {stopped_in:.3f} s; a rendering takes {render_seconds:.3f} s"

