"""The HTTP endpoint: /metrics, /healthz, /readyz, /api/status and a small status page at /.

Handlers only read the snapshot and the cached exposition; they never touch databases or archives.
"""

from __future__ import annotations

import html
import json
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from loguru import logger

from daemon.errors import GuardianError
from daemon.metrics import Exposition
from daemon.state import StateHolder
from daemon.status import status_document

#: /healthz fails when the scheduler heartbeat is older than this.
HEARTBEAT_STALE = timedelta(seconds=30)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class GuardianHTTP:
    """Serves the guardian's endpoints on `host:port` in a background thread."""

    def __init__(self, host: str, port: int, holder: StateHolder, exposition: Exposition,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.holder, self.exposition, self.clock = holder, exposition, clock
        handler = self._handler_class()
        cls = _Server6 if ":" in host else _Server
        try:
            self.server = cls((host, port), handler)
        except OSError as exc:
            raise GuardianError(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                                "(another guardian running? set GUARDIAN_LISTEN or listen: in the config)") from None
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

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
        return status_document(self.holder.current(), self.clock())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "pg-backup-guardian"
            sys_version = ""

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                try:
                    if path == "/metrics":
                        body, headers = app.exposition.render(self.headers.get("Accept", ""),
                                                              self.headers.get("Accept-Encoding", ""))
                        self._send(200, body, headers)
                    elif path == "/healthz":
                        self._json(*app.healthz())
                    elif path == "/readyz":
                        self._json(*app.readyz())
                    elif path == "/api/status":
                        self._json(200, app.status())
                    elif path == "/":
                        self._send(200, _page(app.status()).encode(), {"Content-Type": "text/html; charset=utf-8"})
                    else:
                        self._json(404, {"error": f"no such endpoint: {path}",
                                         "endpoints": ["/metrics", "/healthz", "/readyz", "/api/status", "/"]})
                except Exception:
                    logger.exception("HTTP handler failed for {}", path)
                    self._json(500, {"error": "internal error; see the guardian's log"})

            def do_HEAD(self) -> None:
                self.do_GET()

            def _json(self, status: int, doc: dict[str, Any]) -> None:
                self._send(status, (json.dumps(doc, indent=2) + "\n").encode(),
                           {"Content-Type": "application/json"})

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every 15 s would drown the log

        return Handler


def _page(doc: dict[str, Any]) -> str:
    rows = []
    for db in doc["databases"]:
        newest = db["newest_good_backup"]
        active = "<br>".join(html.escape(f"{f['severity']}: {f['check']}: {f['hint']}")
                             for f in db["findings"] if f["active"]) or "none"
        rows.append(
            f"<tr><td>{html.escape(db['name'])}</td><td class='{db['status']}'>{db['status']}</td>"
            f"<td>{html.escape(newest['id'] if newest else 'none')}</td>"
            f"<td>{html.escape(newest['recovery_point'] if newest else '-')}</td>"
            f"<td>{html.escape(db['data_at_risk'] or '-')}</td><td>{active}</td></tr>"
        )
    demo = "<p><b>Demo mode</b>: watching a throwaway local database. Set DATABASE_URL to watch yours.</p>" \
        if doc["demo"] else ""
    actions = doc.get("actions") or {}
    if actions.get("mode", "live") != "live":
        demo += f"<p class='warning'><b>Remedial actions: {html.escape(actions['mode'])}</b>" \
            f"{' (this replica is the leader)' if actions.get('leader') else ' (this replica is a follower)'}</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>pg-backup-guardian</title>"
        "<meta http-equiv='refresh' content='15'><style>body{font-family:sans-serif}td,th{padding:4px 10px}"
        ".critical{color:#b00}.warning{color:#b60}.ok{color:#070}</style></head><body>"
        f"<h1>pg-backup-guardian {html.escape(doc['version'])}</h1>{demo}"
        "<table><tr><th>database</th><th>status</th><th>newest good backup</th><th>recovery point</th>"
        f"<th>data at risk</th><th>findings</th></tr>{''.join(rows)}</table>"
        "<p><a href='/metrics'>/metrics</a> · <a href='/api/status'>/api/status</a></p></body></html>"
    )
