"""The daemon's heap and Python's cyclic garbage collector: full collections at a moment the daemon chooses.

A full collection walks every tracked object. At 1,000 databases the snapshot alone is a few million objects, and
each collection pass replaces most of it, so the collector's own thresholds start a full collection every few
passes, 50-80 ms that hold the interpreter lock against every scrape (measured with `gc.callbacks` under
bench/bench_metrics.py). The snapshot is immutable and acyclic, so the cyclic collector has nothing to find in
it: reference counting frees an old snapshot the moment the new one replaces it.

So after every publish the heap as it stands is frozen (`gc.freeze`, constant time): the collector then walks
only what was allocated since, and its full collections stay short. Frozen objects are still freed by reference
counting; only a reference cycle that became garbage while frozen waits, until `collect_frozen` (once an hour by
default) unfreezes, collects everything once and freezes again. Memory held by such cycles is bounded by an
hour of them.
"""

from __future__ import annotations

import gc
import time
from datetime import timedelta

from loguru import logger

from daemon.core.snapshot import StateHolder

#: How often the whole heap is collected (the cycles frozen since the last time are freed).
FULL_COLLECTION_EVERY = timedelta(hours=1)


def freeze_after_publish(holder: StateHolder) -> None:
    """Freeze the heap after every snapshot `holder` publishes (the daemon's run only: a test process or a
    one-shot command keeps the collector's own rhythm)."""
    holder.on_update(gc.freeze)


def collect_frozen() -> None:
    """Collect the whole heap once, frozen objects included, then freeze what survives."""
    t0 = time.perf_counter()
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    logger.debug("full garbage collection: {} unreachable objects in {:.0f} ms", found,
                 (time.perf_counter() - t0) * 1000)
