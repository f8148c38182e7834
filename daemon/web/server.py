"""The HTTP endpoint: /metrics, /healthz, /readyz, /api/status and the status page at / and /db/<name>.

Handlers only read the snapshot and the cached exposition; they never touch databases or archives.

Served by waitress: its event loop reads each request head and writes each response without a thread, so a
client that connects and trickles (or sends nothing) holds no worker; only whole requests reach the bounded
pool of `web.workers` threads. Around it this module adds what waitress lacks: a header deadline (a request
head, TLS handshake included, must arrive within `web.header_timeout` however slowly it trickles), an idle
timeout in seconds (not whole seconds only), TLS on the event loop, authentication and a quick stop.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from loguru import logger
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from daemon.config import TlsServerConfig, WebConfig
from daemon.core.errors import GuardianError
from daemon.core.recovery import SCENARIOS, PlanTarget
from daemon.core.snapshot import StateHolder
from daemon.metrics import Exposition
from daemon.recovery import parse_time, recovery_plan
from daemon.status import status_document
from daemon.web.auth import Authenticator, server_tls_context
from daemon.web.page import database_page, overview_page

#: /healthz fails when the scheduler heartbeat is older than this.
HEARTBEAT_STALE = timedelta(seconds=30)
#: Paths anyone may read: container health checks carry no credentials.
OPEN_PATHS = frozenset({"/healthz"})
ENDPOINTS = ["/metrics", "/healthz", "/readyz", "/api/status", "/", "/db/<url-quoted database name>",
             "/api/recovery-plan?database=<name>&scenario=<corruption|deletion|failure|outage>"]
HTML = {"Content-Type": "text/html; charset=utf-8"}

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Channel(HTTPChannel):
    """A waitress connection that knows when its current request head is due."""

    head_due: float | None = None  # monotonic deadline of the request head being read; None between requests

    def __init__(self, server: _Server, sock: socket.socket, addr: Any, adj: Adjustments,
                 map: dict[int, Any] | None = None) -> None:
        super().__init__(server, sock, addr, adj, map=map)
        self.head_due = time.monotonic() + server.header_timeout  # the first request (and any handshake)
        self.idle_since = time.monotonic()

    def received(self, data: bytes) -> bool:
        server: _Server = self.server
        if self.request is None and self.head_due is None:
            self.head_due = time.monotonic() + server.header_timeout
        result: bool = super().received(data)
        if self.request is None:  # every request in `data` is complete: nothing is due now
            self.head_due = None
            self.idle_since = time.monotonic()
        return result

    def _flush_some(self, do_close: bool = True) -> bool:
        sent: bool = super()._flush_some(do_close=do_close)
        self.idle_since = time.monotonic()  # a slow reader of a long answer is not idle
        return sent


class _TlsChannel(_Channel):
    """A waitress connection over TLS, driven by the same event loop (non-blocking handshake, reads, writes).

    Threads: waitress writes an answer from the worker thread that produced it (`write_soon` flushes at once,
    its `send_bytes` being 1) and from the event loop, both under the channel's `outbuf_lock`. An SSL object
    must never read and write in two threads at once, so reads take the same lock; the handshake happens
    before any request exists, on the event loop alone.
    """

    handshaken = False
    _want_write = False

    def __init__(self, server: _Server, sock: socket.socket, addr: Any, adj: Adjustments,
                 map: dict[int, Any] | None = None) -> None:
        assert server.tls is not None
        tls_sock = server.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        super().__init__(server, tls_sock, addr, adj, map=map)

    def readable(self) -> bool:
        return bool(super().readable()) if self.handshaken else not self.will_close

    def writable(self) -> bool:
        return bool(super().writable()) or self._want_write

    def handle_write(self) -> None:
        if self.handshaken:
            super().handle_write()
        elif self.will_close:
            self.handle_close()
        else:
            self._handshake()

    def handle_read(self) -> None:
        if not self.handshaken and not self._handshake():
            return
        chunks: list[bytes] = []
        try:
            with self.outbuf_lock:  # never beside a worker's write (a 100 Continue after a pipelined request)
                chunks.append(self.socket.recv(self.adj.recv_bytes))
                while chunks[-1] and self.socket.pending():  # decrypted bytes select() cannot see
                    chunks.append(self.socket.recv(self.adj.recv_bytes))
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError:  # ssl.SSLError included: a broken or refused TLS session
            self.handle_close()
            return
        data = b"".join(chunks)
        if data:
            self.last_activity = time.time()
            self.received(data)
        elif chunks:  # an orderly close (close_notify or EOF)
            self.handle_close()

    def send(self, data: bytes, do_close: bool = True) -> int:
        try:
            return int(super().send(data, do_close=do_close))
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return 0  # retried with the same bytes when the socket is writable again

    def _handshake(self) -> bool:
        self._want_write = False
        try:
            self.socket.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLWantWriteError:
            self._want_write = True
            return False
        except OSError as exc:
            logger.debug("TLS handshake with {} failed: {}", self.addr, exc)
            self.handle_close()
            return False
        self.handshaken = True
        return True


class _Server(TcpWSGIServer):
    """waitress's TCP server on a socket bound here, with the guardian's header and idle deadlines."""

    def __init__(self, app: Callable[..., Iterable[bytes]], sock: socket.socket, adj: Adjustments,
                 web: WebConfig, tls: ssl.SSLContext | None) -> None:
        self.header_timeout = web.header_timeout.total_seconds()
        self.idle_timeout = web.idle_timeout.total_seconds()
        self.tls = tls
        self.channel_class = _Channel if tls is None else _TlsChannel
        super().__init__(app, _sock=sock, bind_socket=False, adj=adj,
                         sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))

    def maintenance(self, now: float) -> None:
        """Close connections past their head deadline or idle past the idle timeout (replaces waitress's
        whole-second, activity-based channel_timeout)."""
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            if not isinstance(channel, _Channel) or channel.requests:
                continue  # a request is being answered: its writes are bounded by the client's reading
            late = channel.head_due is not None and mono > channel.head_due
            idle = channel.head_due is None and mono - channel.idle_since > self.idle_timeout
            if late or idle:
                channel.will_close = True


class GuardianHTTP:
    """Serves the guardian's endpoints on `host:port` in a background thread."""

    def __init__(self, host: str, port: int, holder: StateHolder, exposition: Exposition,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), web: WebConfig | None = None,
                 plan_targets: dict[str, PlanTarget] | None = None) -> None:
        self.holder, self.exposition, self.clock = holder, exposition, clock
        self.plan_targets = plan_targets or {}  # what the recovery plan needs from the configuration
        self.web = web or WebConfig()
        self.auth = Authenticator({u: h.get_secret_value() for u, h in self.web.basic_auth_users.items()},
                                  self.web.bearer_token.get_secret_value() if self.web.bearer_token else None)
        tls = self.web.tls_server_config
        context = None if tls is None else _tls_context(tls)
        sock = _listen(host, port)
        self.port = int(sock.getsockname()[1])
        adj = Adjustments(
            threads=self.web.workers, connection_limit=self.web.max_connections, ident="pg-backup-guardian",
            channel_timeout=86400, cleanup_interval=86400,  # both replaced by _Server.maintenance
            max_request_header_size=65536, max_request_body_size=65536,  # every endpoint is a GET
            asyncore_use_poll=True,  # select() stops at 1024 descriptors
            log_socket_errors=False, url_scheme="https" if context else "http",
        )
        self.server = _Server(self._wsgi, sock, adj, self.web, context)
        self._tick = min(0.5, self.web.header_timeout.total_seconds() / 4, self.web.idle_timeout.total_seconds() / 4)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self.security = self._security(host)

    @property
    def url(self) -> str:
        """Where the endpoint answers, for the start-up log line."""
        return f"{'https' if self.web.tls_server_config else 'http'}://{self.security['listen']}"

    def start(self) -> None:
        for warning in self.security["warnings"]:
            logger.warning("{}", warning)
        self.exposition.start()  # keeps /metrics rendered off the request path while this serves
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every connection, idle keep-alive ones included; returns in well under a
        second (workers only ever run a handler that reads memory)."""
        if self._stopping.is_set():
            return  # stopped already
        self._stopping.set()
        self.server.pull_trigger()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        wasyncore.close_all(self.server._map)
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        self.exposition.stop()

    def _serve(self) -> None:
        sockets = self.server._map
        while not self._stopping.is_set():
            try:
                wasyncore.poll2(self._tick, sockets)
                self.server.maintenance(time.time())
            except Exception:
                logger.exception("HTTP event loop error")

    # -- security ------------------------------------------------------------------------------------------
    def _security(self, host: str) -> dict[str, Any]:
        """How the endpoint is exposed, for the status document; warns when it is open beyond this machine."""
        loopback = _is_loopback(host)
        doc: dict[str, Any] = {"listen": f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}",
                               "loopback_only": loopback, "tls": self.web.tls_server_config is not None,
                               "auth": self.auth.schemes, "warnings": []}
        if not loopback and not self.auth.enabled:
            doc["warnings"].append(
                f"the HTTP endpoint listens on {doc['listen']} (reachable beyond this machine) without "
                "authentication: anyone who can reach it reads /metrics and /api/status (database names and "
                "errors); set web.basic_auth_users or GUARDIAN_WEB_TOKEN, or listen on 127.0.0.1")
        return doc

    # -- endpoints ----------------------------------------------------------------------------------------
    def healthz(self) -> tuple[int, dict[str, Any]]:
        beat = self.holder.heartbeat_at
        now = self.clock()
        healthy = beat is not None and now - beat <= HEARTBEAT_STALE
        return (200 if healthy else 503), {
            "healthy": healthy, "heartbeat_at": beat.isoformat() if beat else None,
            "heartbeat_age_seconds": (now - beat).total_seconds() if beat else None,
        }

    def readyz(self) -> tuple[int, dict[str, Any]]:
        ready = self.holder.current().first_collection_done
        return (200 if ready else 503), {"ready": ready}

    def status(self) -> dict[str, Any]:
        doc = status_document(self.holder.current(), self.clock())
        doc["security"] = self.security
        return doc

    def recovery_plan(self, query: str) -> tuple[int, dict[str, Any]]:
        """/api/recovery-plan?database=X&scenario=Y[&before=TIME]: the plan from the current snapshot; 400 for a
        missing or bad parameter, 404 for a database not watched here."""
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        missing = [k for k in ("database", "scenario") if not params.get(k)]
        if missing:
            return 400, {"error": f"missing parameter(s): {', '.join(missing)}",
                         "scenarios": list(SCENARIOS)}
        if params["database"] not in self.plan_targets:
            return 404, {"error": f"no database named {params['database']!r} is watched here"}
        if not self.holder.current().first_collection_done:  # no backup known yet is not "no backup exists"
            return 503, {"error": "the first collection has not finished yet; ask again in a moment"}
        try:
            before = parse_time(params["before"], "before") if params.get("before") else None
            plan = recovery_plan(self.holder.current(), self.plan_targets, params["database"], params["scenario"],
                                 self.clock(), before)
        except GuardianError as exc:
            return 400, {"error": str(exc), "scenarios": list(SCENARIOS)}
        return 200, plan.to_json()

    def _wsgi(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """The WSGI application: authentication, then one endpoint."""
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, 405, *_json({"error": f"method {method} not allowed"}),
                           extra=[("Allow", "GET, HEAD")])
        if path not in OPEN_PATHS and not self.auth.allows(environ.get("HTTP_AUTHORIZATION")):
            return _answer(start_response, 401, *_json({"error": "authentication required"}),
                           extra=self.auth.challenges())
        try:
            status, body, headers = self._route(path, environ)
        except Exception:
            logger.exception("HTTP handler failed for {}", path)
            status, (body, headers) = 500, _json({"error": "internal error; see the guardian's log"})
        return _answer(start_response, status, body, headers)

    def _route(self, path: str, environ: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        if path == "/metrics":
            body, headers = self.exposition.render(environ.get("HTTP_ACCEPT", ""),
                                                   environ.get("HTTP_ACCEPT_ENCODING", ""))
            return 200, body, headers
        if path == "/healthz":
            code, doc = self.healthz()
            return code, *_json(doc)
        if path == "/readyz":
            code, doc = self.readyz()
            return code, *_json(doc)
        if path == "/api/status":
            return 200, *_json(self.status())
        if path == "/api/recovery-plan":
            code, doc = self.recovery_plan(environ.get("QUERY_STRING", ""))
            return code, *_json(doc)
        if path == "/":
            return 200, overview_page(self.status()).encode(), HTML
        if path.startswith("/db/"):  # PATH_INFO arrives unquoted: the rest is the name, "/" included
            code, page = database_page(self.status(), path[len("/db/"):])
            return code, page.encode(), HTML
        return 404, *_json({"error": f"no such endpoint: {path}", "endpoints": ENDPOINTS})


def _json(doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return (json.dumps(doc, indent=2) + "\n").encode(), {"Content-Type": "application/json"}


def _answer(start_response: StartResponse, status: int, body: bytes, headers: dict[str, str],
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    """Start the response (waitress drops the body of a HEAD answer, keeping its Content-Length)."""
    head = [*headers.items(), ("Content-Length", str(len(body))), *(extra or [])]
    start_response(f"{status} {HTTPStatus(status).phrase}", head)
    return [body]


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv6 when the host has a colon; port 0 picks a free port)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise GuardianError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                            "(another guardian running? set GUARDIAN_LISTEN or listen: in the config)") from None
    return sock


def _tls_context(tls: TlsServerConfig) -> ssl.SSLContext:
    return server_tls_context(tls.cert_file, tls.key_file, tls.client_ca_file, tls.client_auth_type,
                              tls.min_version)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
