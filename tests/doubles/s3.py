"""S3 test infrastructure: moto's standalone S3-compatible server in its own process, a boto3 client for it, and a
fault-injecting reverse proxy to put in front of it.

- `MotoServer` runs `python -m moto.server -H 127.0.0.1 -p PORT` (moto 5.x; `moto.server:main`) as a child
  process on a free loopback port. Everything moto stores lives in that process (see `rss_bytes()`).
- `s3_client(endpoint_url)` builds a boto3 S3 client with explicit dummy credentials, region us-east-1,
  path-style addressing and no proxies taken from the environment.
- `FaultProxy` is a threaded HTTP/1.1 reverse proxy on 127.0.0.1. It forwards requests byte-for-byte (the
  Host header is kept exactly as the client sent it, so SigV4 signatures still verify upstream) and can answer
  chosen requests with S3 errors, delays, a connection held without answer, or a connection reset mid-response.

Fixtures for test modules (there is no conftest entry for them; import them explicitly):

    # ruff: noqa: F811  (at the top of the module: each test parameter named like a fixture "redefines" it)
    from tests.doubles.s3 import fault_proxy, moto_server, s3_bucket  # noqa: F401

- `moto_server` (session): the running `MotoServer`.
- `s3_bucket` (function): `(client, bucket_name)`, a fresh uniquely named bucket, versioning never enabled.
- `fault_proxy` (function): a `FaultProxy` in front of `moto_server`; build clients with
  `s3_client(fault_proxy.endpoint_url, ...)`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from xml.sax.saxutils import escape

import boto3
import pytest
from botocore.config import Config

from daemon.adapters.postgres.cluster import free_port

LOOPBACK = "127.0.0.1"
DUMMY_ACCESS_KEY_ID = "testing"
DUMMY_SECRET_ACCESS_KEY = "testing"  # moto accepts any credentials unless auth checking is on
REGION = "us-east-1"


# ---------------------------------------------------------------------------------------------------------------
# moto's standalone server
# ---------------------------------------------------------------------------------------------------------------
class MotoServer:
    """moto's S3-compatible server in a child process on 127.0.0.1 and a free port.

    Use as a context manager, or call `start()` / `stop()`. `env` adds environment variables for the server
    process (e.g. `{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}`); AWS_* variables of the test process are not passed.
    """

    def __init__(self, *, start_timeout: float = 30.0, env: dict[str, str] | None = None) -> None:
        self.start_timeout = start_timeout
        self._extra_env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None
        self.port: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> MotoServer:
        if self._proc is not None:
            raise RuntimeError("moto server already started")
        last_error = ""
        for _attempt in range(3):  # free_port() can lose a race with another process; try a new port then
            port = free_port(LOOPBACK)
            fd, log_name = tempfile.mkstemp(prefix="moto-server-", suffix=".log", dir="/tmp")
            os.close(fd)
            self._log_path = Path(log_name)
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            env.update(self._extra_env)
            with self._log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,
                )
            self._proc, self.port = proc, port
            if self._wait_until_answering():
                return self
            last_error = self.log_text()[-4000:]
            self._terminate()
        raise RuntimeError(f"moto server did not start within {self.start_timeout}s; its output:\n{last_error}")

    def _wait_until_answering(self) -> bool:
        """Poll until moto answers an HTTP request (True), its process exits or the deadline passes (False)."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._answers():
                return True
            try:
                self._proc.wait(timeout=0.05)  # doubles as the poll interval and the early-exit check
            except subprocess.TimeoutExpired:
                continue
            return False
        return False

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
        try:
            conn.request("GET", "/moto-api/")
            status = conn.getresponse().status
        except OSError:
            return False
        finally:
            conn.close()
        return 200 <= status < 500

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # moto.server installs a SIGTERM handler that exits cleanly
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        self._terminate()
        if self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- information -------------------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("moto server not started")
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("moto server not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the moto process (VmRSS from /proc/<pid>/status), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                assert unit == "kB", line
                return int(value) * 1024
        raise RuntimeError(f"no VmRSS in /proc/{self.pid}/status")

    def log_text(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    # -- moto's control API ------------------------------------------------------------------------------------
    def _post(self, path: str, body: bytes = b"") -> bytes:
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
        try:
            conn.request("POST", path, body=body)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise RuntimeError(f"POST {path} -> {resp.status}: {data[:500]!r}")
        return data

    def reset(self) -> None:
        """Forget every bucket and object (moto's `POST /moto-api/reset`)."""
        self._post("/moto-api/reset")

    def set_auth_after(self, unauthenticated_requests: float) -> None:
        """moto's `POST /moto-api/reset-auth`: the next `unauthenticated_requests` requests are served without
        checking credentials; after that every request must carry a valid SigV4 signature from an IAM access key
        that exists in moto and whose policies allow the action. `float("inf")` turns checking off again."""
        self._post("/moto-api/reset-auth", str(float(unauthenticated_requests)).encode())


# ---------------------------------------------------------------------------------------------------------------
# boto3 client
# ---------------------------------------------------------------------------------------------------------------
def s3_client(endpoint_url: str, *, access_key_id: str = DUMMY_ACCESS_KEY_ID,
              secret_access_key: str = DUMMY_SECRET_ACCESS_KEY, config: Config | None = None) -> Any:
    """A boto3 S3 client for `endpoint_url` with explicit credentials (the environment is never consulted for
    them), region us-east-1, path-style addressing, no proxies from the environment and botocore's standard
    retry mode with 3 attempts in all. `config` is merged on top (e.g. `Config(read_timeout=1)`); its `retries`
    entries are merged into the default ones. Beware botocore's naming: `retries={"total_max_attempts": 1}` means
    no retry, while `retries={"max_attempts": 1}` means one retry (two attempts)."""
    retries: dict[str, Any] = {"mode": "standard", "total_max_attempts": 3}
    if config is not None and config.retries:
        if {"max_attempts", "total_max_attempts"} & set(config.retries):
            retries = {"mode": "standard"}
        retries.update(config.retries)
    base = Config(
        region_name=REGION,
        s3={"addressing_style": "path"},
        retries=retries,
        proxies={},
        connect_timeout=5,
        read_timeout=30,
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
    )
    if config is not None:
        base = base.merge(config).merge(Config(retries=retries))
    session = boto3.session.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                    aws_session_token=None, region_name=REGION)
    return session.client("s3", endpoint_url=endpoint_url, config=base)


# ---------------------------------------------------------------------------------------------------------------
# fault-injecting reverse proxy
# ---------------------------------------------------------------------------------------------------------------
FAULT_KINDS = ("500", "503", "403", "slow", "timeout", "reset")
_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "403": (403, "Forbidden", "AccessDenied", "Access Denied"),
}
_BLOCK = 64 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    kind: str
    remaining: int | None
    delay: float


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of `upstream_url` (an http:// S3 endpoint).

    Every request is forwarded with its method, target (path and query), headers (Host included, unchanged)
    and body; the answer is relayed with its status, headers and body. `inject()` makes matching requests fail.
    `requests` lists `(method, target, status)` for every request seen, where target is the path with its query
    string and status is None when no complete answer was given (kinds "timeout" and "reset").
    """

    def __init__(self, upstream_url: str, *, upstream_timeout: float = 60.0) -> None:
        m = re.fullmatch(r"http://([^/:]+):(\d+)/?", upstream_url)
        if m is None:
            raise ValueError(f"upstream must look like http://host:port, got {upstream_url!r}")
        self.upstream_host, self.upstream_port = m.group(1), int(m.group(2))
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._requests: list[tuple[str, str, int | None]] = []
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server = _ProxyServer((LOOPBACK, 0), _ProxyHandler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fault-proxy", daemon=True)
        self._thread.start()

    # -- public interface --------------------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[tuple[str, str, int | None]]:
        with self._lock:
            return list(self._requests)

    def inject(self, pattern: str, kind: str, times: int | None = None, delay: float = 0.0) -> None:
        """Make requests whose "METHOD /path?query" matches regex `pattern` (re.search) fail with `kind`:
        "500" InternalError, "503" SlowDown, "403" AccessDenied (S3 XML error bodies, not forwarded upstream),
        "slow" (wait `delay` seconds, then forward), "timeout" (hold the connection without answering for `delay`
        seconds, 30 when 0, then close it), "reset" (forward, relay half of the answer, then reset the TCP
        connection). `times` limits how many requests the rule hits (None: all). Earlier rules win."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if kind == "timeout" and not delay:
            delay = 30.0
        with self._lock:
            self._rules.append(_Rule(re.compile(pattern), kind, times, delay))

    def clear(self) -> None:
        """Drop every injected fault (the request log is kept)."""
        with self._lock:
            self._rules.clear()

    def stop(self) -> None:
        """Stop serving; held ("timeout"/"slow") and idle keep-alive connections are closed, not waited for."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            open_sockets = list(self._sockets)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- used by the handler -----------------------------------------------------------------------------------
    def _take_rule(self, subject: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if (rule.remaining is None or rule.remaining > 0) and rule.pattern.search(subject):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    return rule
        return None

    def _record(self, method: str, target: str, status: int | None) -> None:
        with self._lock:
            self._requests.append((method, target, status))

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(address, handler)


class _ConnectionReset(Exception):
    """The handler reset the client connection on purpose."""


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self) -> None:
        self.server.proxy._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _ConnectionReset:
            self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    # every method goes through the same path
    def do_GET(self) -> None:
        self._proxy()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    # -- request body ------------------------------------------------------------------------------------------
    def _body_blocks(self) -> Iterator[bytes]:
        """The request body in blocks, de-chunked when the client sent Transfer-Encoding: chunked (the chunked
        trailer lines are then kept in `self._trailers`). Never holds the whole body in memory."""
        self._trailers: list[bytes] = []
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    raise ConnectionError("client closed the connection inside a chunked body")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (line := self.rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                        self._trailers.append(line)
                    return
                yield from self._exactly(size)
                self.rfile.readline(3)
        yield from self._exactly(int(self.headers.get("Content-Length") or 0))

    def _exactly(self, remaining: int) -> Iterator[bytes]:
        while remaining > 0:
            block = self.rfile.read(min(remaining, _BLOCK))
            if not block:
                raise ConnectionError("client closed the connection inside the request body")
            remaining -= len(block)
            yield block

    def _drain_body(self) -> None:
        for _block in self._body_blocks():
            pass

    # -- the proxy ---------------------------------------------------------------------------------------------
    def _proxy(self) -> None:
        proxy = self.server.proxy
        method, target = self.command, self.path
        rule = proxy._take_rule(f"{method} {target}")
        kind = rule.kind if rule else None

        if rule is not None and kind in _ERRORS:
            self._drain_body()  # consumed, so the connection stays usable after the injected answer
            proxy._record(method, target, _ERRORS[rule.kind][0])
            self._send_s3_error(rule.kind, target)
            return
        if rule is not None and kind == "timeout":
            self._drain_body()
            proxy._record(method, target, None)
            proxy._stopping.wait(rule.delay)  # held without an answer; stop() ends the wait
            raise _ConnectionReset
        if rule is not None and kind == "slow" and proxy._stopping.wait(rule.delay):
            raise _ConnectionReset  # stopping

        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                              timeout=proxy.upstream_timeout)
        try:
            # the request line and headers exactly as received: Host (signed by SigV4) is not rewritten
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            for block in self._body_blocks():
                upstream.send(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            if chunked:
                upstream.send(b"0\r\n" + b"".join(self._trailers) + b"\r\n")
            resp = upstream.getresponse()
            if kind == "reset":
                proxy._record(method, target, None)
                self._relay_half_then_reset(resp, method)
            proxy._record(method, target, resp.status)
            self._relay(resp, method)
        finally:
            upstream.close()

    def _send_s3_error(self, kind: str, target: str) -> None:
        status, reason, code, message = _ERRORS[kind]
        resource = escape(target.split("?", 1)[0])
        request_id = uuid.uuid4().hex[:16].upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message><Resource>{resource}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self.send_response_only(status, reason)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-amz-request-id", request_id)
        self.send_header("Date", self.date_time_string())
        if self.command == "HEAD":  # HEAD answers carry no body; botocore then only sees the status
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        self.wfile.flush()

    @staticmethod
    def _has_no_body(method: str, status: int) -> bool:
        return method == "HEAD" or status in (204, 304) or 100 <= status < 200

    def _relay(self, resp: http.client.HTTPResponse, method: str) -> None:
        """Status, headers and body of the upstream answer, streamed; Content-Length kept, chunked re-chunked,
        close-delimited answers relayed the same way."""
        self.send_response_only(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        chunked = "chunked" in (resp.getheader("Transfer-Encoding") or "").lower()
        for name, value in resp.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        no_body = self._has_no_body(method, resp.status)
        if not no_body and length is None:
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.close_connection = True
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body:
            while block := (resp.read(_BLOCK) if length is not None else resp.read1(_BLOCK)):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if length is None and chunked else block)
            if length is None and chunked:
                self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _relay_half_then_reset(self, resp: http.client.HTTPResponse, method: str) -> None:
        """Send the first half of the answer's bytes (status line, headers, body), then reset the connection."""
        no_body = self._has_no_body(method, resp.status)
        length = resp.getheader("Content-Length")
        head = [f"HTTP/1.1 {resp.status} {resp.reason}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in resp.getheaders()
                 if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length"]
        if no_body or length is not None:
            body_length = 0 if no_body else int(length or 0)
            blocks: Iterator[bytes] = iter(lambda: resp.read(_BLOCK), b"")
        else:
            body = resp.read()
            body_length, blocks = len(body), iter([body])
        if length is not None or not no_body:
            head.append(f"Content-Length: {length if no_body else body_length}\r\n")
        raw_head = ("".join(head) + "\r\n").encode("latin-1")
        cut = max(1, (len(raw_head) + body_length) // 2)
        self.wfile.write(raw_head[:cut])
        remaining = cut - len(raw_head)
        for block in blocks:
            if remaining <= 0:
                break
            self.wfile.write(block[:remaining])
            remaining -= len(block)
        self.wfile.flush()
        # SO_LINGER on with a zero timeout: close() sends a TCP RST instead of a FIN
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        raise _ConnectionReset


# ---------------------------------------------------------------------------------------------------------------
# pytest fixtures (import them into a test module; see the module docstring)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the whole session (separate process, 127.0.0.1, free port)."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def s3_bucket(moto_server: MotoServer) -> Iterator[tuple[Any, str]]:
    """(client, bucket name): a freshly created, uniquely named bucket on the session moto server; versioning is
    left off. Its objects are not cleaned up (names are unique; moto's memory is in moto's process)."""
    client = s3_client(moto_server.endpoint_url)
    name = f"test-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=name)
    yield client, name


@pytest.fixture
def fault_proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    """A FaultProxy in front of the session moto server, stopped after the test."""
    with FaultProxy(moto_server.endpoint_url) as proxy:
        yield proxy
