"""The streamed readability check (TocTee) on real pg_dump output and real pg_restore processes."""

from __future__ import annotations

import os
import subprocess
import threading

import psycopg
import pytest

from actions.capture import pg_dump_command
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.postgres.toc import Toc, TocTee
from daemon.adapters.postgres.toc.readability import _Reader
from daemon.core.errors import CaptureError
from tests.support import create_database


@pytest.fixture(scope="module")
def dump(pg_cluster: LocalCluster) -> bytes:
    """A compressed custom-format dump of a few MB: the sample schema plus a table of incompressible text."""
    url = create_database(pg_cluster)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE noise AS SELECT g, md5(random()::text) || md5(random()::text) AS t "
                     "FROM generate_series(1, 60000) g")
    args, env = pg_dump_command(url)
    return subprocess.run(args, env=env, capture_output=True, check=True).stdout


def feed(tee: TocTee, data: bytes, block: int = 256 * 1024) -> None:
    """Write `data` through one reused buffer, scribbled over after every write: a tee that kept a reference
    instead of a copy would hand pg_restore garbage."""
    buf = bytearray(block)
    view = memoryview(buf)
    for i in range(0, len(data), block):
        n = len(data[i:i + block])
        view[:n] = data[i:i + block]
        tee.write(view[:n])
        view[:] = b"\xff" * block


def test_a_whole_dump_fed_through_a_reused_buffer_is_readable(dump: bytes) -> None:
    assert len(dump) > 2 * 1024 * 1024
    tee = TocTee()
    feed(tee, dump)
    toc = tee.result()
    assert toc.ok, toc.error
    assert "public.noise" in toc.tables_with_data


def test_a_dump_cut_short_is_not_readable(dump: bytes) -> None:
    tee = TocTee()
    feed(tee, dump[: len(dump) * 2 // 3])
    toc = tee.result()
    assert not toc.ok and toc.error


def test_random_bytes_stop_the_readers_at_once(dump: bytes) -> None:
    tee = TocTee()
    feed(tee, os.urandom(4 * 1024 * 1024))
    toc = tee.result()
    assert not toc.ok and "PGDMP" in (toc.error or "")


def test_result_during_overlaps_the_work_and_gives_the_verdict(dump: bytes) -> None:
    tee = TocTee()
    feed(tee, dump)
    ran = threading.Event()
    toc = tee.result_during(ran.set)
    assert ran.is_set() and toc.ok, toc.error


def test_result_during_stops_the_check_when_the_work_fails(dump: bytes) -> None:
    tee = TocTee()
    feed(tee, dump[: len(dump) // 2])  # pg_restore is still waiting for the rest when the work fails

    def fail() -> None:
        raise CaptureError("complete multipart upload failed")

    with pytest.raises(CaptureError, match="complete multipart upload failed"):
        tee.result_during(fail)
    for reader in tee.readers:
        assert reader.proc.wait(timeout=10) is not None  # killed or finished, never left running


def stuck_tee(stall: float) -> TocTee:
    """A tee whose readers are alive but never read (as a wedged pg_restore would be)."""
    tee = TocTee(stall=stall)
    for reader in tee.readers:
        reader.kill()
    tee.readers = [_Reader(["sleep", "1000"]), _Reader(["sleep", "1000"])]
    return tee


def test_a_reader_that_reads_nothing_stops_holding_the_stream_after_the_stall_time() -> None:
    tee = stuck_tee(stall=0.5)
    block = os.urandom(1024 * 1024)
    for _ in range(4):  # one in the feeder's blocked write, two queued, the fourth waits out the stall
        tee.write(block)
    assert tee.stalled and all(r.proc.poll() is not None for r in tee.readers)
    toc = tee.result(timeout=30)
    assert not toc.ok and "stalled" in (toc.error or "")


def test_result_does_not_hang_on_a_reader_that_reads_nothing() -> None:
    tee = stuck_tee(stall=600)
    tee.write(os.urandom(1024 * 1024))  # the feeder blocks writing it; the queue is empty
    verdicts: list[Toc] = []
    waiting = threading.Thread(target=lambda: verdicts.append(tee.result(timeout=1)), daemon=True)
    waiting.start()  # the feeder does not end within the timeout: the readers must be stopped
    waiting.join(30)
    assert not waiting.is_alive(), "result() hung on a reader that reads nothing"
    toc = verdicts[0]
    assert not toc.ok and "stalled" in (toc.error or "")
    assert all(r.proc.poll() is not None for r in tee.readers)
