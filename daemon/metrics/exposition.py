"""Serving /metrics: `Exposition` renders the families of `daemon.metrics.families` once per snapshot version
and content type off the request path, so a scrape of a large fleet returns the last complete rendering and
never waits for the next one; content negotiation (text 0.0.4, OpenMetrics) and gzip are prometheus-client's own.
With `isolated` (the daemon's choice), the rendering itself runs in a forked child (`daemon.metrics.forked`), so
it does not compete with scrapes and collection for the daemon's interpreter lock.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from loguru import logger
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest, gzip_accepted
from prometheus_client.registry import Collector

from daemon.core.redact import REDACTOR
from daemon.core.snapshot import Snapshot, StateHolder
from daemon.metrics.families import RenderCancelled, SnapshotCollector
from daemon.metrics.forked import ForkedRunner, Stopped, fork_available

#: Variants (content type, gzip) kept rendered; content negotiation yields only a few, this bounds a hostile mix.
MAX_VARIANTS = 8
#: Snapshot versions the served rendering may lag behind the current one while the renderer works. A healthy
#: renderer lags by the publishes made during one rendering (a collection pass publishes about once); beyond
#: this the renderer is taken for stuck and scrapes render inline again, so no old body is served forever.
MAX_LAG_VERSIONS = 10
RENDER_THREAD = "metrics-render"

Encoder = Callable[[Collector], bytes]
Variant = tuple[str, bool]  # (content type, gzip)


@dataclass(frozen=True)
class _Rendering:
    """Every rendered variant of one snapshot."""

    snapshot: Snapshot
    bodies: dict[Variant, bytes]

    @property
    def version(self) -> int:
        return self.snapshot.version


class Exposition:
    """Rendered /metrics bodies: a scrape serves the last complete rendering; the next is built off the request.

    Once `start()`ed, a background thread (`metrics-render`) wakes on every new snapshot version and renders
    every variant scrapers asked for (text 0.0.4, OpenMetrics, each plain or gzip) from that one snapshot, then
    swaps the result in under one lock. With `isolated` (where the platform can fork) the thread only waits while
    a forked child renders: at 1,000 databases a rendering is about 0.3 s of CPU that otherwise holds the
    interpreter lock against every scrape and collection thread (the composition root turns it on). `render()`
    only reads that cache, so a scrape never waits for a rendering; the body it serves is at most one rendering
    behind the snapshot. A scrape renders inline only: before any rendering exists, for a variant never asked
    for before (once, from the cached snapshot), and when
    the renderer cannot be trusted (not started, stopped, died, its last rendering failed, or it lags more than
    `MAX_LAG_VERSIONS` versions); the last three are logged when they begin and when they end.
    """

    def __init__(self, holder: StateHolder, *, isolated: bool = False) -> None:
        self.holder = holder
        self.isolated = isolated and fork_available()
        self._forked: ForkedRunner[dict[Variant, bytes]] = ForkedRunner()
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = SnapshotCollector(holder)
        self.registry.register(self._collector)
        self._lock = threading.Lock()  # guards _rendering and _wanted; never held while rendering
        self._rendering: _Rendering | None = None
        self._wanted: dict[Variant, Encoder] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: str | None = None  # the renderer's last error, until one of its renderings succeeds
        self._fallback: str | None = None  # why scrapes render inline now, as last logged
        holder.on_update(self._wake.set)

    # -- the renderer thread ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the renderer; it renders the current snapshot at once."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=RENDER_THREAD, daemon=True)
        self._wake.set()
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the renderer, interrupting a rendering in progress between metric families; returns once the
        thread ended (or after `timeout`). Scrapes after this render inline."""
        self._stopping.set()
        self._wake.set()
        self._forked.stop()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def renderer_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            snap = self.holder.current()
            with self._lock:
                cached, wanted = self._rendering, dict(self._wanted) or {_DEFAULT: generate_latest}
            if (self._failure is None and cached is not None and cached.version == snap.version
                    and wanted.keys() <= cached.bodies.keys()):
                continue  # nothing new, every variant there (after a failure it renders again, to recover)
            try:
                if self.isolated:
                    bodies = self._forked.run(partial(self._render_all, snap, wanted))
                else:
                    bodies = self._render_all(snap, wanted)
            except (RenderCancelled, Stopped):
                return
            except Exception as exc:
                self._failure = REDACTOR(f"{type(exc).__name__}: {exc}")  # an error may quote a URL
                logger.opt(exception=exc).error("rendering /metrics for snapshot version {} failed: {}",
                                                snap.version, self._failure)
                continue
            self._failure = None
            self._store(snap, bodies)

    def _render_all(self, snap: Snapshot, wanted: dict[Variant, Encoder]) -> dict[Variant, bytes]:
        """Every wanted variant of `snap`; each content type is encoded once, gzip compresses that."""
        encoded: dict[str, bytes] = {}
        bodies: dict[Variant, bytes] = {}
        for (content_type, use_gzip), encoder in sorted(wanted.items(), key=lambda kv: kv[0]):
            if content_type not in encoded:
                encoded[content_type] = self._encode(snap, encoder, self._stopping.is_set)
            body = encoded[content_type]
            bodies[(content_type, use_gzip)] = gzip.compress(body, compresslevel=5) if use_gzip else body
        return bodies

    def _encode(self, snap: Snapshot, encoder: Encoder, cancelled: Callable[[], bool] = lambda: False) -> bytes:
        with self._collector.pinned(snap, cancelled):
            return encoder(self.registry)

    def _store(self, snap: Snapshot, bodies: dict[Variant, bytes]) -> None:
        """Swap in a rendering of `snap`: a newer version replaces the cache, the same version adds to it."""
        with self._lock:
            cached = self._rendering
            if cached is None or snap.version > cached.version:
                self._rendering = _Rendering(snap, bodies)
            elif snap.version == cached.version:
                self._rendering = _Rendering(cached.snapshot, {**cached.bodies, **bodies})

    # -- the scrape path --------------------------------------------------------------------------------
    def render(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, dict[str, str]]:
        """The body and headers for one scrape: the cached rendering whenever the renderer can be trusted."""
        encoder, content_type = choose_encoder(accept)
        use_gzip = gzip_accepted(accept_encoding)
        variant = (content_type, use_gzip)
        with self._lock:
            if variant not in self._wanted and len(self._wanted) < MAX_VARIANTS:
                self._wanted[variant] = encoder
            cached = self._rendering
        current = self.holder.current()
        reason = self._inline_reason(cached, current)
        self._note_fallback(reason)
        snap = current if reason is not None or cached is None else cached.snapshot
        body = cached.bodies.get(variant) if cached is not None and cached.version == snap.version else None
        if body is None:  # no rendering yet, a variant asked for the first time, or the renderer is not trusted
            body = self._encode(snap, encoder)
            if use_gzip:
                body = gzip.compress(body, compresslevel=5)
            self._store(snap, {variant: body})
        headers = {"Content-Type": content_type}
        if use_gzip:
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def _inline_reason(self, cached: _Rendering | None, current: Snapshot) -> str | None:
        """Why this scrape may not serve the cached rendering as it stands, or None when it may."""
        if self._thread is None:
            return "no renderer"  # one-shot and in-process use: render on demand, as ever
        if self._stopping.is_set():
            return "renderer stopped"
        if not self._thread.is_alive():
            return "the /metrics renderer thread died"
        if self._failure is not None:
            return f"the /metrics renderer failed ({self._failure})"
        if cached is not None and current.version - cached.version > MAX_LAG_VERSIONS:
            return (f"the /metrics renderer lags {current.version - cached.version} snapshot versions behind "
                    f"(more than {MAX_LAG_VERSIONS})")
        if cached is not None and cached.version != current.version:
            self._wake.set()  # normally set by the publish already; cheap insurance
        return None

    def _note_fallback(self, reason: str | None) -> None:
        """Log when scrapes start rendering inline because of the renderer, and when they stop."""
        if reason in ("no renderer", "renderer stopped"):
            return  # by design, not a fault
        if reason != self._fallback:
            if reason is not None:
                logger.warning("{}: scrapes render /metrics inline until it recovers", reason)
            else:
                logger.info("the /metrics renderer caught up: scrapes serve its renderings again")
            self._fallback = reason


_DEFAULT: Variant = (CONTENT_TYPE_PLAIN_0_0_4, False)
