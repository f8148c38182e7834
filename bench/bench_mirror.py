"""Benchmark of the Heroku -> S3 mirror: throughput against plain boto3, and peak memory against dump size.

Run as ``python bench/bench_mirror.py [SIZE_MB] [--reps N] [--large-mb N] [--quick] [--profile]`` from the
repository root (defaults: 200 MiB, 5 repetitions, 2048 MiB for the large memory run; ``--quick`` uses 50 MiB
and 500 MiB). It prints its figures and exits 0 (a measurement, not a test: missed targets are reported, not
raised). Sizes are MiB (2**20 bytes) and rates MiB/s.

Setup. moto's standalone S3 server runs in its own process (``tests.doubles.s3.MotoServer``), so the objects it keeps
(a 2 GiB dump, and moto concatenates the parts of a multipart upload in memory when completing it) are never counted
against the guardian; it is started with ``MOTO_S3_DEFAULT_KEY_BUFFER_SIZE`` = max(256 MiB, SIZE_MB + 1 MiB) so the
throughput runs' parts and objects stay in its memory instead of temp files on disk (disk writeback would add noise;
the large dump spools to disk as usual). The Heroku double (``tests.doubles.heroku.HerokuDouble``) runs in this
process; each mirrored backup is a finished transfer added with ``add_transfer(processed_bytes=N)``. The double
would serve ``b"PGDMP"`` followed by zero bytes for such a transfer (and build the whole body in memory); the
benchmark instead points the transfer's ``dump_path`` at a file of N random bytes (``os.urandom``) written under
/tmp, which the double then streams in 64 KiB writes (the double itself is not edited; if that attribute is gone,
the zero filler is used and the output says so). Random bytes change nothing for throughput (nothing on the path
compresses) but let the mirror's SHA-256 be checked against the file's and keep the double's memory flat. The
double's sockets get TCP_NODELAY (as in bench_heroku_fleet.py) so its split header/body writes do not wait for
delayed ACKs.

Every guardian-side run happens in a separate child process (``--child``): a real `Mirror` over a real
`HerokuClient` and a real `S3ArchiveStore` (its own boto3 client, ``part_size_mb`` 8 as by default, ``sse``
AES256; the S3 timeout is raised to 300 s because moto is slow to complete a 2 GiB upload). The child times
``Mirror.mirror()`` alone (imports, client construction and one warm-up HEAD of the bucket are outside the
timing) and reports it as JSON.

1. **Throughput.** For SIZE_MB, REPS repetitions each, alternating which goes first: (a) ours, the child's
   ``Mirror.mirror()`` (public-URL call, HTTP download from the double
   through ``daemon.adapters.archive.download``, read with
   ``readinto`` into one 8 MiB buffer, SHA-256 of the dump, 8 MiB multipart parts, 6 in flight, with S3 SHA-256 part
   checksums, complete, HEAD verify, tag, record); (b) plain boto3 ``upload_file`` of the same random file to the
   same moto server (default ``TransferConfig``: 8 MiB parts, 10 threads), in this process with a warmed-up client.
   moto is reset (every bucket dropped) before each run. Reported: MiB/s per run, medians, and ratio ours/boto3 of
   the medians (target >= 0.8). Ours does more work than boto3 (download over HTTP, whole-dump SHA-256, SHA-256 part
   checksums that moto computes again when completing, verification calls), which is the point of the comparison: the
   extra work should not cost much. Each run also reports CPU seconds (less sensitive to other load than wall time):
   the child's own in the timed window, this process's meanwhile (the double serving the download; for (b) boto3 and
   its threads) and moto's (from /proc/<pid>/stat).

   Two things differ from boto3's defaults and are said so here. Our S3 client turns SigV4 payload signing off
   (``daemon/adapters/archive/s3/``: every part carries a signed SHA-256 checksum header that S3 verifies; on HTTPS
   botocore does not hash streamed bodies for the signature either), while boto3's ``upload_file`` on this
   plain-http endpoint hashes every part once for the signature; 1b therefore also times boto3 with payload
   signing off, the like-for-like figure. And the readability check that reads along (two ``pg_restore``
   processes,
   ``daemon/adapters/postgres/toc/readability.py``) stops at the first bytes of random data (no PGDMP header), so
   its cost is not in these figures: section 1d measures it on a real custom-format dump.

   A breakdown follows (one run each, same size): the download + SHA-256 alone, the S3 writer alone (fed from the
   local file in 8 MiB blocks), SHA-256 alone in memory, boto3 ``upload_file`` with 6 threads (ours sends 6
   parts at once), with payload signing off, and
   with SHA-256 part checksums (``ExtraArgs={"ChecksumAlgorithm": "SHA256"}``: the checksum ours must send,
   which boto3 by default replaces with CRC32, and which moto computes again for every part when completing).
   ``--profile`` adds one cProfile'd mirror (the child's main thread) and prints its top functions.
1d. **A real dump** (``--real-rows N``, default 1,000,000 rows, about 145 MiB; 0 skips it): a throwaway
   PostgreSQL cluster
   (``daemon.adapters.postgres.cluster.LocalCluster``) gets a table of random md5 text, ``pg_dump -Fc`` dumps it
   (compressed, as Heroku's are), and the double serves that file. REPS/2 (at least 2) interleaved runs of ours
   (the readability check now reads every block and must say the dump is readable) and boto3 ``upload_file`` of
   the same file, plus ``pg_restore -f /dev/null`` alone reading the dump through a pipe (its pace bounds the
   check's).
2. **Peak RSS.** The child mirrors a SIZE_MB dump and then a --large-mb dump; its peak RSS is read with
   ``os.wait4(pid, 0)`` (``ru_maxrss``, KiB on Linux). Linux carries the RSS high-water mark of the process
   that forks/vforks a child into the child's ``ru_maxrss`` (``exec`` keeps the larger of the old and new
   mm's peak), so a child spawned from this process would report at least this process's own peak (the
   boto3 transfer threads, the double). Each child is therefore started by a tiny spawner process
   (``--spawn``, standard library only) that calls ``os.wait4``; its own small peak (printed) is the floor
   of the reading. The child's ``VmHWM`` from /proc (which exec resets) and its peak after the imports are
   printed as a cross-check. Before the large run moto is reset and MemAvailable must be at least 8 GiB (else
   the run is skipped with a message). Reported: both peaks and the ratio large/small (target <= 1.2).
3. A summary block with PASS/MISS, each computed from the ratio printed beside it, as printed (`judged`).

The machine matters: on 2 CPUs, the mirror (child), the double (this process) and moto compete for cores,
while boto3's run has only itself and moto.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verdict import judged

# Run as a script from the repository root: make `daemon`, `actions` and `tests` importable. Heavy imports
# (boto3, httpx, the product) happen inside functions so the `--spawn` process stays small.
ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MIB = 1024 * 1024
CHUNK_FILE = 8 * MIB
PART_SIZE_MB = 8  # S3Config.part_size_mb's default
IN_FLIGHT = 6  # S3Writer at 8 MiB parts
SSE = "AES256"
S3_TIMEOUT = "300s"
TOKEN = "bench-mirror-token-0123456789"
APP = "bench-app"
DEFAULT_MB = 200
DEFAULT_LARGE_MB = 2048
QUICK_MB, QUICK_LARGE_MB = 50, 500
DEFAULT_REPS = 5
DEFAULT_REAL_ROWS = 1_000_000
TARGET_THROUGHPUT_RATIO = 0.8
TARGET_RSS_RATIO = 1.2
MIN_FREE_FOR_LARGE = 8 * 1024 * MIB
CHILD_TIMEOUT = 1800.0
MOTO_MIN_BUFFER = 256 * MIB  # moto keeps objects up to this size in memory (beyond it: a temp file on disk)


# -- /proc helpers (used by every process) --------------------------------------------------------------------
def proc_status_kb(field: str, pid: str = "self") -> int:
    """A `kB` field of /proc/<pid>/status (VmHWM, VmRSS), in KiB; 0 when absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_self() -> float:
    """CPU seconds (user + system, every thread) this process has used."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> float:
    """The 1-minute load average (other work on the machine makes every figure here noisy)."""
    return os.getloadavg()[0]


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# -- the spawner: a small process that starts the child and reads its rusage -------------------------------------
def spawn_main(params_json: str) -> int:
    """Run `--child params_json`, wait for it with os.wait4 and print one JSON line with its ru_maxrss."""
    params = json.loads(params_json)
    with open(params["stderr"], "wb") as err:
        proc = subprocess.Popen([sys.executable, str(THIS), "--child", params_json], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, cwd=ROOT)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting again
    child: dict[str, Any] | None = None
    if proc.returncode == 0:
        lines = out.decode().strip().splitlines()
        child = json.loads(lines[-1]) if lines else None
    print(json.dumps({"exit": proc.returncode, "ru_maxrss_kb": usage.ru_maxrss,
                      "spawner_hwm_kb": proc_status_kb("VmHWM"), "child": child}))
    return 0


# -- the child: one guardian-side run -----------------------------------------------------------------------------
def child_main(params_json: str) -> int:
    """One run in a fresh process; mode "mirror" (the real Mirror), "download" (download + SHA-256 only) or
    "upload" (the S3 writer alone, fed from the local file). Prints one JSON line."""
    from datetime import UTC, datetime

    from loguru import logger

    from actions.mirror import Mirror
    from daemon.adapters.archive.download import BLOCK, Download
    from daemon.adapters.archive.records import BackupRecord
    from daemon.adapters.archive.s3 import S3ArchiveStore
    from daemon.adapters.heroku import HerokuClient
    from daemon.config import S3Config
    from daemon.core.snapshot import Backup

    p = json.loads(params_json)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    cfg = S3Config.model_validate({
        "bucket": p["bucket"], "prefix": "bench", "endpoint_url": p["endpoint"], "access_key_id": "testing",
        "secret_access_key": "testing", "part_size_mb": p["part_size_mb"], "sse": SSE, "timeout": S3_TIMEOUT,
    })
    store = S3ArchiveStore(cfg)
    store.client.head_bucket(Bucket=cfg.bucket)  # warm-up: endpoint resolution, connection pool
    api = HerokuClient(p["token"], platform_url=p["platform_url"], data_url=p["data_url"])
    now = datetime.now(UTC)
    backup_id = f"b{p['num']:03d}"
    database = p["database"]
    mode = p["mode"]
    hwm_before = proc_status_kb("VmHWM")
    profiler = None
    if p.get("profile"):
        import cProfile

        profiler = cProfile.Profile()

    sha, size = "", 0
    toc_ok = None
    cpu0 = cpu_self()
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    if mode == "mirror":
        mirror = Mirror(store, api, timeout=300.0)
        backup = Backup(backup_id=backup_id, database=database, source="heroku", kind="scheduled",
                        started_at=now, finished_at=now, succeeded=True, size_bytes=p["size"])
        record = mirror.mirror(database, p["app"], backup)
        sha, size = record.sha256 or "", record.size_bytes
        toc_ok = bool(record.toc and record.toc.get("ok"))
        mirror.close()
    elif mode == "download":
        url = str(api.public_url(p["app"], p["num"])["url"])
        h = hashlib.sha256()
        view = memoryview(bytearray(BLOCK))
        with Download(url, timeout=300.0) as body:
            if body.status != 200:
                raise SystemExit(f"download: HTTP {body.status}")
            while n := body.fill(view):
                h.update(view[:n])
                size += n
        sha = h.hexdigest()
    elif mode == "upload":
        writer = store.begin(database, backup_id, recovery_point=now, origin="heroku")
        with open(p["file"], "rb") as fh:
            while chunk := fh.read(BLOCK):
                size += len(chunk)
                writer.write(chunk)
        sha = p["sha256"]  # the file's, known in advance: this mode measures the writer without hashing
        writer.commit(BackupRecord(database=database, backup_id=backup_id, kind="scheduled", started_at=now,
                                   finished_at=now, outcome="succeeded", size_bytes=size, sha256=sha,
                                   origin="heroku"))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    if profiler is not None:
        profiler.disable()
    seconds = time.perf_counter() - t0
    cpu = cpu_self() - cpu0
    if profiler is not None:
        profiler.dump_stats(p["profile"])
    print(json.dumps({"seconds": seconds, "cpu": cpu, "size": size, "sha256": sha, "toc_ok": toc_ok,
                      "hwm_before_kb": hwm_before,
                      "hwm_kb": proc_status_kb("VmHWM"),
                      "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    return 0


# -- the parent ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFile:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class ChildRun:
    seconds: float
    size: int
    sha256: str
    ru_maxrss_kb: int  # from os.wait4 in the spawner
    spawner_hwm_kb: int
    hwm_kb: int  # the child's own VmHWM
    hwm_before_kb: int  # VmHWM after imports and client construction, before the timed run
    cpu: float  # the child's CPU seconds in the timed run
    cpu_here: float  # this process's CPU seconds meanwhile (the double serving the download)
    cpu_moto: float  # moto's CPU seconds meanwhile
    toc_ok: bool | None = None  # mirror mode: the readability check's verdict

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


@dataclass(frozen=True)
class PlainRun:
    seconds: float
    size: int
    cpu_here: float  # this process's CPU seconds (boto3 and its transfer threads)
    cpu_moto: float

    @property
    def mib_s(self) -> float:
        return self.size / MIB / self.seconds


def make_file(directory: Path, size: int) -> DataFile:
    """`size` random bytes in a file under `directory`, with their SHA-256."""
    path = directory / f"dump-{size // MIB}MiB.bin"
    h = hashlib.sha256()
    with path.open("wb") as fh:
        left = size
        while left:
            block = os.urandom(min(CHUNK_FILE, left))
            h.update(block)
            fh.write(block)
            left -= len(block)
    return DataFile(path, size, h.hexdigest())


def mib(n_bytes: float) -> float:
    return n_bytes / MIB


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


class Bench:
    """The servers, the scratch directory and the helpers every section uses."""

    def __init__(self, moto: Any, double: Any, workdir: Path) -> None:
        self.moto = moto
        self.double = double
        self.workdir = workdir
        self.app = double.add_app(APP)
        self.random_download = True
        self.runs = 0
        from tests.doubles.s3 import s3_client

        self.client = s3_client(moto.endpoint_url)

    def fresh_bucket(self) -> str:
        """Drop everything moto holds (frees its memory) and create a new bucket."""
        self.moto.reset()
        self.runs += 1
        bucket = f"bench-mirror-{self.runs}"
        self.client.create_bucket(Bucket=bucket)
        return bucket

    def add_backup(self, data: DataFile) -> tuple[int, str]:
        """A finished transfer whose signed URL serves `data`'s bytes; (num, expected sha256)."""
        t = self.double.add_transfer(APP, processed_bytes=data.size, source_bytes=data.size)
        for transfer in getattr(self.double, "_transfers", []):
            if getattr(transfer, "uuid", None) == t["uuid"] and hasattr(transfer, "dump_path"):
                transfer.dump_path = data.path
                return int(t["num"]), data.sha256
        self.random_download = False  # the double's filler: b"PGDMP" + zero bytes
        filler = hashlib.sha256(b"PGDMP")
        zeros = bytes(MIB)
        left = data.size - 5
        while left:
            filler.update(zeros[: min(MIB, left)])
            left -= min(MIB, left)
        return int(t["num"]), filler.hexdigest()

    def child(self, mode: str, data: DataFile, profile: Path | None = None) -> ChildRun:
        bucket = self.fresh_bucket()
        num, expected = self.add_backup(data)
        err = self.workdir / f"child-{self.runs}.err"
        params = {
            "mode": mode, "endpoint": self.moto.endpoint_url, "bucket": bucket, "part_size_mb": PART_SIZE_MB,
            "platform_url": self.double.platform_url, "data_url": self.double.data_url, "token": self.double.token,
            "app": self.app.billing_app, "num": num, "database": f"bench_db_{self.runs}", "size": data.size,
            "file": str(data.path), "sha256": data.sha256, "stderr": str(err),
            "profile": str(profile) if profile else None,
        }
        here0, moto0 = cpu_self(), cpu_of(self.moto.pid)
        proc = subprocess.run([sys.executable, str(THIS), "--spawn", json.dumps(params)], cwd=ROOT,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
        here, moto_cpu = cpu_self() - here0, cpu_of(self.moto.pid) - moto0
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"spawner failed ({proc.returncode}): {proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res["exit"] != 0 or res["child"] is None:
            text = err.read_text(errors="replace") if err.exists() else ""
            raise RuntimeError(f"child ({mode}) exited {res['exit']}:\n{text[-4000:]}")
        c = res["child"]
        if c["size"] != data.size:
            raise RuntimeError(f"child ({mode}) moved {c['size']} bytes, expected {data.size}")
        if mode != "upload" and c["sha256"] != expected:
            raise RuntimeError(f"child ({mode}) sha256 {c['sha256']} != expected {expected}")
        if mode != "download":
            head = self.client.head_object(Bucket=bucket, Key=f"bench/bench_db_{self.runs}/b{num:03d}.dump")
            if int(head["ContentLength"]) != data.size or head.get("ServerSideEncryption") != SSE:
                raise RuntimeError(f"object in moto is wrong: {head.get('ContentLength')} bytes, "
                                   f"sse {head.get('ServerSideEncryption')}")
        return ChildRun(c["seconds"], c["size"], c["sha256"], res["ru_maxrss_kb"], res["spawner_hwm_kb"],
                        c["hwm_kb"], c["hwm_before_kb"], c["cpu"], here, moto_cpu, c.get("toc_ok"))

    def boto3_upload(self, data: DataFile, config: Any = None, client: Any = None,
                     extra: dict[str, str] | None = None) -> PlainRun:
        """Plain boto3 upload_file of `data` (default TransferConfig unless `config`; this bench's default
        client unless `client`; `extra` as ExtraArgs)."""
        client = client or self.client
        bucket = self.fresh_bucket()
        client.head_bucket(Bucket=bucket)
        key = f"plain/{self.runs}.dump"
        here0, moto0 = cpu_self(), cpu_of(self.moto.pid)
        t0 = time.perf_counter()
        client.upload_file(str(data.path), bucket, key, Config=config, ExtraArgs=extra)
        seconds = time.perf_counter() - t0
        run = PlainRun(seconds, data.size, cpu_self() - here0, cpu_of(self.moto.pid) - moto0)
        if int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]) != data.size:
            raise RuntimeError("boto3 upload has the wrong size in moto")
        return run


def make_real_dump(workdir: Path, rows: int) -> tuple[DataFile | None, str]:
    """A compressed custom-format dump of `rows` rows of random md5 text from a throwaway cluster; (file, how)."""
    import secrets

    import psycopg

    from daemon.adapters.postgres.cluster import LocalCluster
    from daemon.adapters.postgres.tools import find_tool
    from daemon.core.errors import GuardianError

    base = Path(tempfile.mkdtemp(prefix="bench-mirror-pg-", dir="/tmp"))
    base.chmod(0o755)
    cluster = LocalCluster(base / "data", base / "run", tcp=True, superuser_password="pw-" + secrets.token_hex(12))
    try:
        t0 = time.perf_counter()
        cluster.init()
        cluster.start()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE TABLE blob AS SELECT g, (SELECT string_agg(md5(random()::text || s.s || g.g), '') "
                         "FROM generate_series(1, 8) s(s)) AS payload FROM generate_series(1, %s) g(g)", (rows,))
        out = workdir / "real.dump"
        subprocess.run([find_tool("pg_dump"), "-Fc", "-f", str(out), cluster.url("postgres")], check=True,
                       capture_output=True)
        how = f"{rows:,} rows of md5 text, pg_dump -Fc (default compression), made in {time.perf_counter() - t0:.0f} s"
    except (GuardianError, OSError, subprocess.CalledProcessError, psycopg.Error) as exc:
        return None, f"SKIPPED: no throwaway PostgreSQL here ({type(exc).__name__}: {str(exc)[:200]})"
    finally:
        with contextlib.suppress(Exception):
            cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)
    h = hashlib.sha256()
    with out.open("rb") as fh:
        while block := fh.read(CHUNK_FILE):
            h.update(block)
    return DataFile(out, out.stat().st_size, h.hexdigest()), how


def pg_restore_through_pipe(data: DataFile) -> tuple[float, float]:
    """(seconds, CPU seconds) of `pg_restore -f /dev/null` reading `data` from a pipe in 8 MiB writes."""
    from daemon.adapters.postgres.tools import find_tool

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen([find_tool("pg_restore"), "--file=/dev/null"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    with data.path.open("rb") as fh:
        while block := fh.read(CHUNK_FILE):
            proc.stdin.write(block)
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("pg_restore could not read the real dump")
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def sha256_rate(data: DataFile) -> float:
    """MiB/s of hashlib.sha256 over the file's bytes in 1 MiB chunks, read into memory first."""
    blocks = []
    with data.path.open("rb") as fh:
        while block := fh.read(MIB):
            blocks.append(block)
    h = hashlib.sha256()
    t0 = time.perf_counter()
    for block in blocks:
        h.update(block)
    seconds = time.perf_counter() - t0
    assert h.hexdigest() == data.sha256
    return mib(data.size) / seconds


def print_profile(path: Path, top: int = 18) -> None:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    total = next((line.strip() for line in lines if "function calls" in line), "")
    print(f"  {total}")
    for line in lines[start:]:
        if line.strip():
            print(f"  {line.rstrip()[:150]}")


def rss_line(size_mb: int, run: ChildRun) -> str:
    return (f"  {size_mb:5d} MiB dump: peak RSS {run.ru_maxrss_kb / 1024:6.1f} MiB (wait4)  | child VmHWM "
            f"{run.hwm_kb / 1024:.1f}, after imports {run.hwm_before_kb / 1024:.1f}, spawner floor "
            f"{run.spawner_hwm_kb / 1024:.1f} | {run.mib_s:.1f} MiB/s")


def throughput(bench: Bench, data: DataFile, reps: int) -> tuple[list[ChildRun], list[PlainRun]]:
    ours: list[ChildRun] = []
    theirs: list[PlainRun] = []

    def run_ours() -> None:
        ours.append(bench.child("mirror", data))

    def run_theirs() -> None:
        theirs.append(bench.boto3_upload(data))

    for i in range(reps):
        order: Sequence[Callable[[], None]] = (run_ours, run_theirs) if i % 2 == 0 else (run_theirs, run_ours)
        for fn in order:
            fn()
        o, t = ours[-1], theirs[-1]
        print(f"  rep {i + 1}: ours {o.mib_s:6.1f} MiB/s ({o.seconds:5.2f} s; CPU s: mirror {o.cpu:4.2f} + double "
              f"{o.cpu_here:4.2f} + moto {o.cpu_moto:4.2f})   boto3 {t.mib_s:6.1f} MiB/s ({t.seconds:5.2f} s; CPU s: "
              f"boto3 {t.cpu_here:4.2f} + moto {t.cpu_moto:4.2f})   {'ours first' if i % 2 == 0 else 'boto3 first'}"
              f"   load {load_average():.2f}", flush=True)
    return ours, theirs


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Mirror throughput vs boto3 and peak RSS vs dump size.")
    parser.add_argument("size_mb", nargs="?", type=int, default=None,
                        help=f"dump size in MiB for throughput and the small RSS run (default {DEFAULT_MB})")
    parser.add_argument("--reps", type=int, default=DEFAULT_REPS, help="repetitions of each throughput run")
    parser.add_argument("--large-mb", type=int, default=None,
                        help=f"dump size in MiB of the large RSS run (default {DEFAULT_LARGE_MB})")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_MB} MiB and {QUICK_LARGE_MB} MiB")
    parser.add_argument("--profile", action="store_true", help="add one cProfile'd mirror run")
    parser.add_argument("--real-rows", type=int, default=DEFAULT_REAL_ROWS,
                        help=f"rows of the real dump in 1d (default {DEFAULT_REAL_ROWS:,}, about 145 MiB; 0 skips)")
    args = parser.parse_args(argv)
    if args.size_mb is None:
        args.size_mb = QUICK_MB if args.quick else DEFAULT_MB
    if args.large_mb is None:
        args.large_mb = QUICK_LARGE_MB if args.quick else DEFAULT_LARGE_MB
    if args.size_mb < 1 or args.large_mb < 1 or args.reps < 1:
        parser.error("sizes and --reps must be positive")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config
    from loguru import logger

    from tests.doubles import heroku as heroku_double
    from tests.doubles.heroku import HerokuDouble
    from tests.doubles.s3 import MotoServer, s3_client

    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    heroku_double._Handler.disable_nagle_algorithm = True  # see the module docstring
    size, large = args.size_mb * MIB, args.large_mb * MIB
    workdir = Path(tempfile.mkdtemp(prefix="bench-mirror-", dir="/tmp"))
    load_start = load_average()
    print(f"machine: {os.cpu_count()} CPUs, load average {load_start:.2f}, MemAvailable "
          f"{mib(mem_available()) / 1024:.1f} GiB; python {sys.version.split()[0]}; scratch {workdir}")
    if load_start > 0.5:
        print("  NOTE: other processes are busy on this machine; throughput figures will be noisy")
    try:
        # moto spools objects above MOTO_S3_DEFAULT_KEY_BUFFER_SIZE (default ~5 MiB, so every part) to temp files;
        # keep the throughput runs' parts and objects in its memory so disk writeback does not add noise.
        moto_env = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(max(MOTO_MIN_BUFFER, size + MIB))}
        with MotoServer(env=moto_env) as moto, HerokuDouble(token=TOKEN) as double:
            bench = Bench(moto, double, workdir)
            t0 = time.perf_counter()
            data = make_file(workdir, size)
            print(f"data: {args.size_mb} MiB of os.urandom bytes written in {time.perf_counter() - t0:.1f} s "
                  f"(sha256 {data.sha256[:12]}); moto pid {moto.pid} at {moto.endpoint_url}")

            # 1. throughput ---------------------------------------------------------------------------------
            print(f"\n1. throughput, {args.size_mb} MiB, {args.reps} interleaved reps each "
                  f"(moto reset before every run)")
            ours, theirs = throughput(bench, data, args.reps)
            if not bench.random_download:
                print("  NOTE: the double's dump_path could not be set; it served its own filler (b'PGDMP' + zero "
                      "bytes). Nothing on the path compresses, so throughput is unaffected.")
            else:
                print("  download bytes: random (the transfer's dump_path points at the os.urandom file; the "
                      "double's own filler would be b'PGDMP' + zero bytes)")
            ours_med = statistics.median(r.mib_s for r in ours)
            theirs_med = statistics.median(r.mib_s for r in theirs)
            ratio = ours_med / theirs_med
            print(f"  ours  (Mirror: HTTP download + SHA-256 + {PART_SIZE_MB} MiB parts w/ SHA-256 checksums, "
                  f"{IN_FLIGHT} in flight)  median {ours_med:7.1f} MiB/s")
            print(f"  boto3 (upload_file of the local file, default TransferConfig: 8 MiB parts, 10 threads)"
                  f"  median {theirs_med:7.1f} MiB/s")
            print(f"  ratio ours/boto3 of medians {ratio:.2f} (target >= {TARGET_THROUGHPUT_RATIO}); ours does "
                  "more work: it also downloads over HTTP and hashes the whole dump")
            ours_cpu = [r.cpu + r.cpu_here + r.cpu_moto for r in ours]
            theirs_cpu = [r.cpu_here + r.cpu_moto for r in theirs]
            print(f"  CPU seconds per run, medians: ours {med(ours_cpu):.2f} (mirror child "
                  f"{med([r.cpu for r in ours]):.2f}, double {med([r.cpu_here for r in ours]):.2f}, moto "
                  f"{med([r.cpu_moto for r in ours]):.2f}) | "
                  f"boto3 {med(theirs_cpu):.2f} (boto3 {med([r.cpu_here for r in theirs]):.2f}, moto "
                  f"{med([r.cpu_moto for r in theirs]):.2f})")
            print(f"  child peak RSS during these mirrors: {', '.join(f'{r.ru_maxrss_kb / 1024:.0f}' for r in ours)}"
                  " MiB")

            print(f"\n1b. where the time goes ({args.size_mb} MiB, one run each)")
            down = bench.child("download", data)
            up = bench.child("upload", data)
            same = bench.boto3_upload(data, TransferConfig(max_concurrency=IN_FLIGHT,
                                                           multipart_chunksize=PART_SIZE_MB * MIB))
            unsigned_client = s3_client(moto.endpoint_url, config=Config(
                s3={"addressing_style": "path", "payload_signing_enabled": False}))
            unsigned = [bench.boto3_upload(data, client=unsigned_client) for _ in range(3)]
            unsigned_med = med([r.mib_s for r in unsigned])
            sha_checksums = [bench.boto3_upload(data, extra={"ChecksumAlgorithm": "SHA256"}) for _ in range(3)]
            sha_med = med([r.mib_s for r in sha_checksums])
            sha_rate = sha256_rate(data)
            print("  download from the double + SHA-256 (daemon.adapters.archive.download, 8 MiB), no upload"
                  f" {down.mib_s:7.1f} MiB/s  "
                  f"(CPU s: child {down.cpu:.2f}, double {down.cpu_here:.2f})")
            print(f"  S3ArchiveStore writer alone (local file, 8 MiB writes, commit)        {up.mib_s:7.1f} MiB/s  "
                  f"(CPU s: child {up.cpu:.2f}, moto {up.cpu_moto:.2f})")
            print(f"  boto3 upload_file, {PART_SIZE_MB} MiB parts, {IN_FLIGHT} threads (as ours)                     "
                  f"{same.mib_s:7.1f} MiB/s  (CPU s: boto3 {same.cpu_here:.2f}, moto {same.cpu_moto:.2f})")
            print(f"  boto3 upload_file, default TransferConfig, payload signing off (3 runs, median)  "
                  f"{unsigned_med:7.1f} MiB/s  -> ratio ours/this {ours_med / unsigned_med:.2f}")
            print(f"  boto3 upload_file, default TransferConfig, SHA-256 part checksums as ours (3 runs)  "
                  f"{sha_med:7.1f} MiB/s  -> ratio ours/this {ours_med / sha_med:.2f}")
            print(f"  hashlib.sha256 in memory, 1 MiB updates                               {sha_rate:7.1f} MiB/s")
            serial = 1 / (1 / down.mib_s + 1 / up.mib_s)
            print(f"  download and writer back to back (no overlap) would give               {serial:7.1f} MiB/s")

            if args.profile:
                prof = workdir / "mirror.prof"
                run = bench.child("mirror", data, profile=prof)
                print(f"\n1c. cProfile of one mirror ({run.mib_s:.1f} MiB/s under the profiler), top by tottime")
                print_profile(prof)

            # 1d. a real dump ---------------------------------------------------------------------------------
            real_ratio: float | None = None
            if args.real_rows > 0:
                real, how = make_real_dump(workdir, args.real_rows)
                print(f"\n1d. a real custom-format dump: {how}")
                if real is not None:
                    n = max(2, args.reps // 2)
                    print(f"  {mib(real.size):.1f} MiB; {n} interleaved reps each")
                    ours_real, theirs_real = throughput(bench, real, n)
                    if not all(r.toc_ok for r in ours_real):
                        raise RuntimeError("the readability check did not find the real dump readable")
                    real_ratio = med([r.mib_s for r in ours_real]) / med([r.mib_s for r in theirs_real])
                    pr_s, pr_cpu = pg_restore_through_pipe(real)
                    print("  readability check verdict: readable in every run (pg_restore read every block)")
                    print(f"  pg_restore -f /dev/null alone, through a pipe: {mib(real.size) / pr_s:.1f} MiB/s "
                          f"({pr_s:.2f} s, {pr_cpu:.2f} CPU s)")
                    print(f"  ours median {med([r.mib_s for r in ours_real]):.1f} MiB/s | boto3 median "
                          f"{med([r.mib_s for r in theirs_real]):.1f} MiB/s | ratio {real_ratio:.2f} (no target: "
                          "on these 2 CPUs pg_restore's decompression competes with moto and the mirror)")
                    real.path.unlink()

            # 2. peak RSS -----------------------------------------------------------------------------------
            print("\n2. peak RSS of the guardian-side child (os.wait4 ru_maxrss via a small spawner)")
            small_run = bench.child("mirror", data)
            small_kb = small_run.ru_maxrss_kb
            print(rss_line(args.size_mb, small_run))
            data.path.unlink()
            bench.fresh_bucket()
            large_kb: int | None = None
            free = mem_available()
            disk = shutil.disk_usage(workdir).free
            if free < MIN_FREE_FOR_LARGE:
                print(f"  {args.large_mb:5d} MiB: SKIPPED, MemAvailable is {mib(free) / 1024:.1f} GiB "
                      f"(needs {mib(MIN_FREE_FOR_LARGE) / 1024:.0f} GiB: moto holds the object, twice while "
                      "completing it)")
            elif disk < 3 * large:
                print(f"  {args.large_mb:5d} MiB: SKIPPED, only {mib(disk) / 1024:.1f} GiB free on {workdir} "
                      "(the dump file plus moto's spooled copy)")
            else:
                t0 = time.perf_counter()
                big = make_file(workdir, large)
                print(f"  (MemAvailable {mib(free) / 1024:.1f} GiB; {args.large_mb} MiB random file written in "
                      f"{time.perf_counter() - t0:.1f} s)", flush=True)
                large_run = bench.child("mirror", big)
                large_kb = large_run.ru_maxrss_kb
                print(rss_line(args.large_mb, large_run) + f"; moto RSS now {mib(moto.rss_bytes()):.0f} MiB")
                big.path.unlink()
                bench.fresh_bucket()
            rss_ratio = large_kb / small_kb if large_kb is not None else None
            if rss_ratio is not None:
                print(f"  ratio large/small {rss_ratio:.2f} (target <= {TARGET_RSS_RATIO})")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\nsummary")
    print(f"  load average at start {load_start:.2f}, at end {load_average():.2f} ({os.cpu_count()} CPUs; the mirror "
          "child, the double and moto share them)")
    print(f"  throughput {args.size_mb} MiB: ours median {ours_med:.1f} MiB/s | boto3 upload_file median "
          f"{theirs_med:.1f} MiB/s | ratio {judged(ratio, '.2f', '>=', TARGET_THROUGHPUT_RATIO)}")
    if real_ratio is not None:
        print(f"  real compressed dump (readability check reading every block): ratio {real_ratio:.2f} (no target)")
    if rss_ratio is None or large_kb is None:
        print(f"  peak RSS: {args.size_mb} MiB {small_kb / 1024:.1f} MiB | {args.large_mb} MiB skipped | ratio n/a")
    else:
        print(f"  peak RSS: {args.size_mb} MiB dump {small_kb / 1024:.1f} MiB | {args.large_mb} MiB dump "
              f"{large_kb / 1024:.1f} MiB | ratio {judged(rss_ratio, '.2f', '<=', TARGET_RSS_RATIO)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--spawn":
        raise SystemExit(spawn_main(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        raise SystemExit(child_main(sys.argv[2]))
    raise SystemExit(main(sys.argv[1:]))
