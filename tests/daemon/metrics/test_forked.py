"""Rendering in a forked child: the work runs in another process, its result or its error comes back, a child
that hangs is killed at its deadline or by stop(), and the child never returns into the caller's code."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon.core.snapshot import Snapshot, StateHolder
from daemon.metrics import Exposition
from daemon.metrics.forked import ChildFailed, ForkedRunner, Stopped

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def test_the_work_runs_in_another_process_and_its_result_comes_back() -> None:
    runner: ForkedRunner[tuple[int, bytes]] = ForkedRunner()
    big = os.urandom(3 << 20)  # more than a pipe holds: the parent must read while the child writes

    pid, body = runner.run(lambda: (os.getpid(), big[::-1]))

    assert pid != os.getpid()
    assert body == big[::-1]


def test_the_child_keeps_no_copy_of_the_parents_sockets() -> None:
    """A copy of a scrape's socket in the child would keep that connection open until the child ends."""
    import socket

    runner: ForkedRunner[list[int]] = ForkedRunner()
    with socket.socket() as held:
        open_in_child = runner.run(lambda: sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
        assert held.fileno() not in open_in_child
    assert all(fd <= 2 for fd in open_in_child[:3]) and len(open_in_child) <= 5, open_in_child


def test_an_error_in_the_child_comes_back_as_child_failed_naming_it() -> None:
    runner: ForkedRunner[None] = ForkedRunner()

    def broken() -> None:
        raise ValueError("family pgbackup_x has no samples")

    with pytest.raises(ChildFailed, match="ValueError: family pgbackup_x has no samples"):
        runner.run(broken)
    assert runner.run(lambda: None) is None  # the runner works again afterwards


def test_the_child_never_returns_into_the_callers_code() -> None:
    """SystemExit and KeyboardInterrupt in the work end the child with a failure, not a second copy of the
    caller running on after `run()`."""
    runner: ForkedRunner[None] = ForkedRunner()
    me = os.getpid()
    for exc in (SystemExit(0), KeyboardInterrupt()):
        def work(e: BaseException = exc) -> None:
            raise e
        with pytest.raises(ChildFailed):
            runner.run(work)
        assert os.getpid() == me


def test_a_child_past_its_deadline_is_killed() -> None:
    runner: ForkedRunner[None] = ForkedRunner(deadline_seconds=0.5)
    t0 = time.monotonic()
    with pytest.raises(ChildFailed, match=r"did not finish within 0\.5 s"):
        runner.run(lambda: time.sleep(60))
    assert time.monotonic() - t0 < 30


def test_stop_kills_a_running_child_and_later_runs_refuse() -> None:
    import threading

    runner: ForkedRunner[None] = ForkedRunner()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            runner.run(lambda: time.sleep(60))
        except BaseException as exc:  # recorded for the assertion
            outcome.append(exc)

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 30
    while runner._pid is None:  # the child has been forked
        assert time.monotonic() < deadline
        time.sleep(0.01)  # poll interval, not a wait for a race
    runner.stop()
    t.join(30)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Stopped)
    with pytest.raises(Stopped):
        runner.run(lambda: None)


class RenderedBy(Collector):
    """A family whose value is the pid of the process that rendered it."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("test_rendered_by_pid", "Process that rendered this body.", value=os.getpid())


def test_an_isolated_exposition_renders_in_a_child_and_serves_what_it_rendered() -> None:
    holder = StateHolder(Snapshot(databases={}, collectors={}, first_collection_done=True,
                                  started_at=NOW - timedelta(minutes=1)))
    exposition = Exposition(holder, isolated=True)
    exposition.registry.register(RenderedBy())
    exposition.start()
    try:
        exposition.render()  # the first scrape of a variant may render it inline, in this process
        holder.update(lambda s: s)  # the next version is the renderer's
        deadline = time.monotonic() + 60
        while True:
            body, _ = exposition.render()
            line = next(x for x in body.decode().splitlines() if x.startswith("test_rendered_by_pid "))
            if float(line.split()[1]) != os.getpid():
                break  # served from the renderer's rendering, made by its child
            assert time.monotonic() < deadline, "no scrape served a rendering made in the child"
            time.sleep(0.02)  # poll interval, not a wait for a race
    finally:
        exposition.stop()
    assert not exposition.renderer_alive
