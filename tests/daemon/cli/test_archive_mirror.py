"""Mirrors run by a separate guardian process (`backup-guardian archive mirror`): memory that does not grow
with the dump, and a crash in the middle of a multipart upload that the next run repairs. moto runs in its own
process, so the objects it keeps in memory are not counted against the guardian."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.s3.upload import S3Writer
from daemon.config import S3Config
from tests.doubles.heroku import HerokuDouble
from tests.doubles.s3 import MotoServer

TOKEN = "hrku-proc-SECRET-0123456789"
APP = "suoops-backend"
DB = f"{APP}/DATABASE"
MB = 1024 * 1024


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN, url_lifetime=timedelta(hours=1)) as double:
        yield double


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        fh.write(b"PGDMP")
        left = size - 5
        while left > 0:
            n = min(left, 4 * MB)
            fh.write(os.urandom(n))
            left -= n
    return path


def setup(heroku: HerokuDouble, moto: MotoServer, bucket: str, tmp_path: Path, size: int) -> Path:
    """A Heroku backup of `size` random bytes, and a config file for a guardian process mirroring it."""
    heroku.add_app(APP)
    start = datetime.now(UTC) - timedelta(hours=1)
    t = heroku.add_transfer(APP, created_at=start, started_at=start, finished_at=start + timedelta(minutes=5))
    heroku.set_dump_file(APP, t["num"], random_file(tmp_path / f"dump-{size}.bin", size))
    cfg = tmp_path / f"g-{size}.json"
    cfg.write_text(json.dumps({
        "state_dir": str(tmp_path / "state"),
        "heroku": {"platform_url": heroku.platform_url, "data_url": heroku.data_url, "apps": [APP]},
        "archive": {"kind": "s3", "s3": {"bucket": bucket, "endpoint_url": moto.endpoint_url, "part_size_mb": 8,
                                         "access_key_id": "testing", "secret_access_key": "testing"}},
    }))
    return cfg


def mirror_process(cfg: Path) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HEROKU_API_KEY": TOKEN}
    return subprocess.Popen([sys.executable, "-m", "daemon", "archive", "mirror", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_peak_memory_of_a_mirror_does_not_grow_with_the_dump(
    heroku: HerokuDouble, moto_server: MotoServer, s3_bucket: tuple[Any, str], tmp_path: Path,
) -> None:
    _, bucket = s3_bucket
    small_size, big_size = 16 * MB, 320 * MB
    cfg = setup(heroku, moto_server, bucket, tmp_path, small_size)
    peaks = {small_size: measured_mirror(cfg)}
    # then a newer backup of twenty times the size: the next run mirrors that one
    start = datetime.now(UTC) - timedelta(minutes=30)
    t = heroku.add_transfer(APP, created_at=start, started_at=start, finished_at=start + timedelta(minutes=5))
    heroku.set_dump_file(APP, t["num"], random_file(tmp_path / "big.bin", big_size))
    peaks[big_size] = measured_mirror(cfg)

    store = S3ArchiveStore(S3Config(bucket=bucket, endpoint_url=moto_server.endpoint_url,
                                    access_key_id="testing", secret_access_key="testing"))  # type: ignore[arg-type]
    assert sorted(r.size_bytes for r in store.list_records(DB)) == [small_size, big_size]
    small, big = peaks[small_size], peaks[big_size]
    print(f"peak RSS: 16 MB dump {small / MB:.1f} MB, 320 MB dump {big / MB:.1f} MB, ratio {big / small:.2f}")
    # Twenty times the data, the same memory: what may differ is the upload window, which a 16 MB dump never
    # fills (two parts) and a 320 MB one fills whenever S3 is slower than the download (a loaded machine):
    # at most IN_FLIGHT_BYTES of parts in flight, plus the part being filled, its copy and the few blocks the
    # readability check holds (a part's worth of slack). A copy that held the dump, or a window that grew with
    # it, would be far above this.
    part = 8 * MB
    assert big <= small + S3Writer.IN_FLIGHT_BYTES + 3 * part, (small, big)


def measured_mirror(cfg: Path) -> int:
    """Run one mirror process to its end; its own peak RSS (bytes) from wait4 on its pid."""
    proc = mirror_process(cfg)
    _, status, usage = os.wait4(proc.pid, 0)  # output is a few lines: the pipes cannot fill up
    assert proc.stdout is not None and proc.stderr is not None
    output = (proc.stdout.read() + proc.stderr.read()).decode()
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert "1 backup(s) mirrored, 0 failed" in output, output
    return usage.ru_maxrss * 1024


def test_a_crash_mid_upload_is_completed_by_the_next_run_and_never_listed(
    heroku: HerokuDouble, moto_server: MotoServer, s3_bucket: tuple[Any, str], tmp_path: Path,
) -> None:
    client, bucket = s3_bucket
    size = 200 * MB
    cfg = setup(heroku, moto_server, bucket, tmp_path, size)
    store = S3ArchiveStore(S3Config(bucket=bucket, endpoint_url=moto_server.endpoint_url,
                                    access_key_id="testing", secret_access_key="testing"))  # type: ignore[arg-type]
    proc = mirror_process(cfg)
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=120)
        parts = 0
        while datetime.now(UTC) < deadline and proc.poll() is None:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            if uploads:
                up = uploads[0]
                parts = len(client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", []))
                if parts >= 2:
                    break
        assert parts >= 2, "the upload never got going"
        proc.send_signal(signal.SIGKILL)  # a crash, not a shutdown
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the half upload is not a backup: no record, nothing listed
    assert store.list_records(DB) == []
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])  # the crash left it behind

    second = mirror_process(cfg)
    out, err = second.communicate(timeout=600)
    assert second.returncode == 0, (out + err).decode()
    [record] = store.list_records(DB)
    assert record.outcome == "succeeded" and record.size_bytes == size
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []  # no orphan remains
    head = client.head_object(Bucket=bucket, Key=store.key(DB, record.backup_id))
    assert head["ContentLength"] == size and head["ServerSideEncryption"] == "AES256"
