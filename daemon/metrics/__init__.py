"""Prometheus exposition over the state snapshot (DESIGN.md section 6).

`SnapshotCollector.collect()` (`families`) turns the current snapshot into metric families; it does no I/O.
`Exposition` (`exposition`) renders those families once per snapshot version and content type on a background
thread, so a scrape of a large fleet returns the last complete rendering and never waits for the next one;
content negotiation (text 0.0.4, OpenMetrics) and gzip are prometheus-client's own.
"""

from daemon.metrics.exposition import MAX_LAG_VERSIONS, MAX_VARIANTS, RENDER_THREAD, Exposition
from daemon.metrics.families import RenderCancelled, SnapshotCollector

__all__ = ["MAX_LAG_VERSIONS", "MAX_VARIANTS", "RENDER_THREAD", "Exposition", "RenderCancelled", "SnapshotCollector"]
