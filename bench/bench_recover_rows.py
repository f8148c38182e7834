"""Benchmark of `backup-guardian recover-rows`: peak memory and time for a 10,000-row and a 1,000,000-row table,
and whether memory stays flat as the table grows a hundredfold.

Run as ``python bench/bench_recover_rows.py [--reps N] [--sizes 10000,1000000] [--deleted-pct P]`` from the
repository root (defaults: 3 repetitions per size, 10 % of the rows deleted and 1 % updated after the backup).
It prints its figures and exits 0 (a measurement, not a test: a missed target is reported, not raised). Sizes
are MB (10**6 bytes) unless said otherwise. With the defaults it takes a few minutes on 2 CPUs.

Setup. Two throwaway clusters (`LocalCluster`, initdb + pg_ctl, TCP with a password, as bench_drill.py starts
them): "production" and "scratch". For each size N, production gets a database holding one table
``bench_rows (id bigint PRIMARY KEY, account int, note text, amount numeric(12,2), created_at timestamptz)``
with N rows (a note of about 60 characters each), captured by the guardian's own `Capturer` (``pg_dump -Fc``)
into a local archive directory; then P % of the rows are deleted and 1 % updated, so the run has deleted rows
to write (0.1 N for the default) and changed rows to find.

What it measures. Each repetition runs the real command in a child process, as a person would:
``python -m daemon recover-rows --config FILE --database rowsN --table bench_rows --changed --out DIR``: a
collection pass, the download and sha256 check of the dump, the proven scratch database, ``pg_restore`` of the
table, production's keys and digests streamed by COPY into the scratch database, the comparison in SQL, the CSVs
and the SQL file written, the scratch database dropped. Reported per run: the wall time of the child
process; the peak RSS of the command's own process (``VmHWM`` from /proc, the kernel's high-water mark, read
every 20 ms while it runs: growth in its last 20 ms would be missed); the peak RSS of its children (pg_restore:
their ``VmHWM``, read the same way); and ``ru_maxrss`` from ``wait4`` (exact: the largest of the process and the
descendants it waited for). A child is counted once it runs its own program (between fork and exec it
shares the command's pages, which its VmHWM would count again). PostgreSQL's own server processes are not
counted (they are the servers', bounded by ``work_mem`` and ``shared_buffers``). The deleted and changed counts
the summary gives are checked against what was deleted and updated; the SQL file's size is printed.

Verdict: memory is flat when the median peak RSS (``wait4``) at the largest size is at most 1.25 times the
median at the smallest (a hundredfold more rows). The time is reported, with rows per second; it has no target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from clusters import Clusters, sigterm
from loguru import logger
from verdict import judged

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster

FLAT_RATIO = 1.25
POLL = 0.02
REPO = Path(__file__).resolve().parents[1]


def populate(cluster: LocalCluster, rows: int, store: LocalDirectoryStore, deleted_pct: float) -> tuple[str, str]:
    """A database of `rows` rows, captured, then rows deleted and updated; (its name in the config, its url)."""
    name = f"rows{rows}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = cluster.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_rows (id bigint PRIMARY KEY, account int NOT NULL, note text, "
                     "amount numeric(12,2), created_at timestamptz NOT NULL)")
        conn.execute("INSERT INTO bench_rows SELECT g, g %% 977, 'invoice note ' || md5(g::text) || ' ''q'' \\ x', "
                     "(g %% 100000) / 100.0, '2026-01-01'::timestamptz + g * interval '1 second' "
                     "FROM generate_series(1, %s) g", (rows,))
        conn.execute("VACUUM ANALYZE bench_rows")
    Capturer(store).capture(CaptureRequest(database=name, url=url))
    every = max(1, round(100 / deleted_pct))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM bench_rows WHERE id %% %s = 0", (every,))
        conn.execute("UPDATE bench_rows SET note = 'changed' WHERE id % 100 = 1")
    return name, url


def expected(rows: int, deleted_pct: float) -> tuple[int, int]:
    every = max(1, round(100 / deleted_pct))
    return rows // every, len(range(1, rows + 1, 100))


def hwm_kb(pid: int) -> int:
    """The kernel's RSS high-water mark of `pid` (VmHWM, kB), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "python"


def descendants(pid: int) -> list[int]:
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for k in kids:
            out.append(int(k))
            frontier.append(int(k))
    return out


@dataclass
class Run:
    size: int
    seconds: float
    own_mb: float
    children_mb: float
    wait4_mb: float
    deleted: int
    changed: int
    sql_mb: float
    code: int


def run_once(config: Path, name: str, size: int, out: Path) -> Run:
    """One `recover-rows` child, watched for memory; its figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "PG", "DATABASE_URL"))}
    args = [sys.executable, "-m", "daemon", "recover-rows", "--config", str(config), "--database", name,
            "--table", "bench_rows", "--changed", "--out", str(out)]
    peaks = {"own": 0, "children": 0}
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peaks["own"] = max(peaks["own"], hwm_kb(proc.pid))
            for kid in descendants(proc.pid):
                if program(kid).startswith("python"):  # forked, not yet exec'd: the parent's pages
                    continue
                peaks["children"] = max(peaks["children"], hwm_kb(kid))
            time.sleep(POLL)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stderr = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    watcher.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        print(f"  run failed (exit {proc.returncode}): {stderr.decode(errors='replace')[-800:]}")
        return Run(size, seconds, 0, 0, 0, 0, 0, 0, proc.returncode)
    [table] = json.loads((out / "summary.json").read_text())["tables"]
    return Run(size, seconds, peaks["own"] / 1024, peaks["children"] / 1024, usage.ru_maxrss / 1024,
               table["deleted"], table["changed"], (out / "recovered.sql").stat().st_size / 1e6, 0)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--sizes", default="10000,1000000")
    p.add_argument("--deleted-pct", type=float, default=10.0)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    signal.signal(signal.SIGTERM, sigterm)
    work = Path(tempfile.mkdtemp(prefix="guardian-bench-rows-", dir="/tmp"))
    work.chmod(0o755)
    clusters = Clusters(work)
    try:
        production, scratch = clusters.new("prod"), clusters.new("scratch")
        print(f"clusters: production on port {production.port}, scratch on port {scratch.port}; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        store = LocalDirectoryStore(work / "archive")
        dbs = []
        for size in sizes:
            t0 = time.perf_counter()
            name, url = populate(production, size, store, args.deleted_pct)
            dbs.append({"name": name, "url": url, "drill": {"scratch_url": scratch.url("postgres")}})
            print(f"{size:>9,} rows: generated, captured, {args.deleted_pct:g} % deleted and 1 % updated in "
                  f"{time.perf_counter() - t0:.1f} s")
        config = work / "guardian.json"
        config.write_text(json.dumps({"state_dir": str(work / "state"), "archive": {"path": str(work / "archive")},
                                      "databases": dbs}))
        runs: list[Run] = []
        for rep in range(args.reps):
            for size in sizes if rep % 2 == 0 else list(reversed(sizes)):  # alternate which size goes first
                out = work / f"out-{size}-{rep}"
                r = run_once(config, f"rows{size}", size, out)
                runs.append(r)
                want = expected(size, args.deleted_pct)
                ok = "ok" if (r.deleted, r.changed) == want else f"EXPECTED deleted/changed {want}"
                print(f"  rep {rep} {size:>9,} rows: {r.seconds:6.2f} s | peak RSS: command {r.own_mb:6.1f} MB, "
                      f"children {r.children_mb:6.1f} MB, wait4 {r.wait4_mb:6.1f} MB | deleted {r.deleted:,} "
                      f"changed {r.changed:,} ({ok}); SQL file {r.sql_mb:.1f} MB | load {os.getloadavg()[0]:.2f}")
                shutil.rmtree(out, ignore_errors=True)
        print("\nmedians:")
        med: dict[int, dict[str, float]] = {}
        for size in sizes:
            mine = [r for r in runs if r.size == size and r.code == 0]
            med[size] = {k: median([getattr(r, k) for r in mine]) for k in ("seconds", "own_mb", "children_mb",
                                                                            "wait4_mb")}
            m = med[size]
            print(f"  {size:>9,} rows ({len(mine)} runs): {m['seconds']:6.2f} s ({size / m['seconds']:,.0f} rows/s) | "
                  f"peak RSS command {m['own_mb']:.1f} MB, children {m['children_mb']:.1f} MB, "
                  f"wait4 {m['wait4_mb']:.1f} MB")
        small, large = min(sizes), max(sizes)
        if small != large and med[small]["wait4_mb"] > 0:
            ratio = med[large]["wait4_mb"] / med[small]["wait4_mb"]
            print(f"\nmemory flat: peak RSS at {large:,} rows / at {small:,} rows = "
                  f"{judged(ratio, '.2f', '<=', FLAT_RATIO)}")
            print(f"  ({large // small}x the rows; the command's own process: "
                  f"{med[large]['own_mb']:.1f} MB against {med[small]['own_mb']:.1f} MB)")
        return 0
    finally:
        clusters.destroy()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
