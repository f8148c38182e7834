"""Requests one archive collection pass makes against S3, at a fixed number of archived copies.

Run as ``python bench/bench_s3_requests.py [COPIES] [--hours H]`` from the repository root (defaults: 400 copies,
2 simulated hours). It prints its figures and exits 0 (a measurement, not a test).

Setup: moto's standalone S3 server in its own process (``tests.doubles.s3.MotoServer``) behind the recording
``FaultProxy``; COPIES good copies of one database (a dump and its record each) written straight to moto; a real
``S3ArchiveStore`` whose boto3 client goes through the proxy; a pass is ``collectors.archive.collect_archive_facts``,
what the guardian's archive collector runs every ``collect_interval`` (30 s by default; the bucket posture it also
reads is hourly and not counted here). Reported: requests by kind (LIST, GET of a record, HEAD of a dump) and wall
time of the first pass, and of the second and third (nothing changed). Where the store takes a ``ListingCache``
(its clock injectable), H hours of passes 30 s apart follow on a simulated clock, which shows the periodic re-read
of HEAD facts (``daemon.adapters.archive.s3.listing.REFRESH_EVERY``) and gives requests per day.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

# Run as a script from the repository root: make `daemon`, `collectors` and `tests` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daemon.adapters.archive.s3 import S3ArchiveStore
from tests.doubles.s3 import FaultProxy, MotoServer, s3_client
from tests.support import one_pass, put_copy, store_via

PASS_EVERY = 30.0  # seconds: the default collect_interval


def fmt(kinds: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("copies", nargs="?", type=int, default=400)
    ap.add_argument("--hours", type=float, default=2.0)
    args = ap.parse_args()
    takes_cache = "cache" in inspect.signature(S3ArchiveStore.__init__).parameters
    with MotoServer() as moto, FaultProxy(moto.endpoint_url) as proxy:
        client = s3_client(moto.endpoint_url)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        clock = [0.0]
        cache = None
        if takes_cache:
            from daemon.adapters.archive.s3.listing import ListingCache

            cache = ListingCache(clock=lambda: clock[0])
        store = store_via(proxy, bucket, cache)
        for i in range(args.copies):
            put_copy(client, store, f"c{i:04d}", timedelta(minutes=args.copies - i))
        print(f"{args.copies} copies, one database; store {'with' if takes_cache else 'without'} a listing cache")
        for n in (1, 2, 3):
            t0 = time.monotonic()
            kinds, src, _ = one_pass(store, proxy)
            assert len(src.good) == args.copies
            print(f"pass {n}: {sum(kinds.values())} requests ({fmt(kinds)}), {time.monotonic() - t0:.2f} s")
        if not takes_cache:
            per_pass = sum(one_pass(store, proxy)[0].values())
            print(f"steady state: {per_pass} requests a pass, {per_pass * 86400 / PASS_EVERY:,.0f} a day "
                  f"at one pass every {PASS_EVERY:.0f} s")
            return
        passes = int(args.hours * 3600 / PASS_EVERY)
        total: Counter[str] = Counter()
        t0 = time.monotonic()
        for _ in range(passes):
            clock[0] += PASS_EVERY
            total += one_pass(store, proxy)[0]
        per_day = 86400 / PASS_EVERY / passes
        print(f"{args.hours:g} h of passes every {PASS_EVERY:.0f} s on a simulated clock ({passes} passes, "
              f"{(time.monotonic() - t0) / passes:.3f} s a pass): {fmt(total)}; "
              f"{sum(total.values()) / passes:.1f} requests a pass, "
              f"{sum(total.values()) * per_day:,.0f} a day ({total['HEAD'] * per_day:,.0f} HEADs)")


if __name__ == "__main__":
    main()
