"""A Sentry ingest endpoint on loopback: the real sentry-sdk, pointed at its DSN, sends it envelopes."""

from __future__ import annotations

import gzip
import json
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class EnvelopeServer:
    """Accepts Sentry envelopes on 127.0.0.1 and keeps their items (type, headers, payload)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                enc = self.headers.get("Content-Encoding", "")
                if enc == "gzip":
                    body = gzip.decompress(body)
                elif enc == "deflate":
                    body = zlib.decompress(body)
                elif enc == "br":  # pragma: no cover - the sdk prefers gzip when brotli is missing
                    import brotli  # type: ignore[import-not-found]

                    body = brotli.decompress(body)
                outer.raw.append(body)
                lines = body.split(b"\n")
                i = 1
                while i < len(lines):
                    if not lines[i].strip():
                        i += 1
                        continue
                    header = json.loads(lines[i])
                    payload = json.loads(lines[i + 1]) if i + 1 < len(lines) and lines[i + 1].strip() else {}
                    outer.items.append((header.get("type", ""), payload))
                    i += 2
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey0123456789@127.0.0.1:{self.server.server_address[1]}/42"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        return [p for t, p in self.items if t == "event"]

    def checkins(self, monitor: str | None = None) -> list[dict[str, Any]]:
        return [p for t, p in self.items if t == "check_in" and (monitor is None or p.get("monitor_slug") == monitor)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
