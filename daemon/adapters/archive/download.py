"""Streaming GET of a signed dump URL, read from the socket straight into the caller's buffer.

The mirror and the drill download whole dumps (hundreds of MB to many GB) from Heroku's signed URLs. httpx is
the guardian's HTTP client for APIs, but for a bulk body it parses and re-buffers every 64 KiB piece in Python
(h11 events, a chunker's BytesIO, the caller's own copy), all under the GIL: profiled in `bench/bench_mirror.py`,
that work cost more CPU than hashing the dump and competed with the S3 upload threads. Here the standard
library's `http.client` reads the body with `readinto` into the caller's buffer: one copy by the kernel, with the
GIL released while it waits.

What it keeps from a full client: TLS with the same trust as httpx (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set,
else certifi's bundle), redirects (at most 5), proxies from the environment (`HTTPS_PROXY`, `HTTP_PROXY`,
`NO_PROXY`; an HTTPS URL goes through a CONNECT tunnel), a connect timeout and a read timeout per socket
operation, and a clear error when the body ends before its Content-Length. Errors never carry the URL's query
(the signature): only its scheme and host.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

from daemon.core.errors import GuardianError

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
BLOCK = 8 << 20  # 8 MiB: large reads keep the per-call Python work negligible


class DownloadError(GuardianError):
    """A download that failed; the message names the host, never the signed query."""


def where(url: str | SplitResult) -> str:
    """The part of a URL that is safe to log: scheme and host (a signed URL's query is a credential)."""
    try:
        u = urlsplit(url) if isinstance(url, str) else url
        port = u.port
    except ValueError:  # an unparseable URL or port: its text may hold anything, say nothing of it
        return "an invalid URL"
    return f"{u.scheme}://{u.hostname or '?'}" + (f":{port}" if port else "")


def _tls_context() -> ssl.SSLContext:
    cafile, capath = os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None
    if cafile or capath:
        try:
            return ssl.create_default_context(cafile=cafile, capath=capath)
        except (OSError, ssl.SSLError) as exc:
            raise DownloadError(f"the CA certificates named by SSL_CERT_FILE/SSL_CERT_DIR cannot be read: "
                                f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:  # pragma: no cover - certifi comes with httpx
        return ssl.create_default_context()


def _proxy_for(u: SplitResult) -> SplitResult | None:
    """The proxy the environment names for this URL, or None (NO_PROXY honoured)."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(u.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(u.hostname or ""):
        return None
    p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        p.port  # noqa: B018 - raises on a malformed port (e.g. an unescaped "/" in the password)
    except ValueError:
        raise DownloadError(f"the proxy for {u.scheme} downloads is not a valid URL (percent-encode special "
                            "characters in its user and password)") from None
    if p.scheme != "http" or not p.hostname:
        raise DownloadError(f"proxy {where(p)} for {u.scheme} downloads is not supported: use an http:// proxy")
    return p


def _proxy_auth(p: SplitResult) -> dict[str, str]:
    if p.username is None:
        return {}
    token = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
    return {"Proxy-Authorization": f"Basic {token}"}


class Download:
    """An open GET: `status`, `length` (Content-Length or None), then `readinto` until it returns 0.

    Use as a context manager (the connection is closed on exit). `readinto` raises DownloadError when the body
    stops before its Content-Length, on a read timeout and on a broken connection."""

    def __init__(self, url: str, timeout: float = 60.0, connect_timeout: float = 15.0) -> None:
        self.timeout, self.connect_timeout = timeout, connect_timeout
        self.received = 0
        self.status: int = 0
        self.length: int | None = None
        self.host: str = where(url)
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        target = urlsplit(url)
        for _ in range(MAX_REDIRECTS + 1):
            self._open(target)
            assert self._resp is not None
            location = self._resp.getheader("Location")
            if self._resp.status not in REDIRECTS or not location:
                break
            self.close()
            following = urlsplit(urljoin(target.geturl(), location))
            if target.scheme == "https" and following.scheme != "https":
                raise DownloadError(f"download from {where(target)} was redirected to {where(following)}: "
                                    "a signed URL is never followed from https to plain http")
            target = following
        else:
            self.close()
            raise DownloadError(f"download from {where(target)} was redirected more than {MAX_REDIRECTS} times")
        self.status = self._resp.status
        self.host = where(target)
        length = self._resp.getheader("Content-Length")
        self.length = int(length) if length is not None and length.strip().isdigit() else None
        encoding = (self._resp.getheader("Content-Encoding") or "identity").strip().lower()
        if self.status == 200 and encoding != "identity":
            self.close()
            raise DownloadError(f"download from {where(target)} came with Content-Encoding {encoding!r}: the dump's "
                                "bytes were not sent as they are stored")

    def _open(self, u: SplitResult) -> None:
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise DownloadError(f"cannot download from {where(u)}: its port is not a number") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise DownloadError(f"cannot download from {where(u)}: only http and https URLs are supported")
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        proxy = _proxy_for(u)
        conn: http.client.HTTPConnection
        headers = {"User-Agent": "pg-backup-guardian", "Accept-Encoding": "identity"}
        if u.scheme == "https":
            if proxy is not None:
                conn = http.client.HTTPSConnection(proxy.hostname or "", proxy.port or 80,
                                                   timeout=self.connect_timeout, context=_tls_context())
                conn.set_tunnel(u.hostname, port, headers=_proxy_auth(proxy))
            else:
                conn = http.client.HTTPSConnection(u.hostname, port, timeout=self.connect_timeout,
                                                   context=_tls_context())
        elif proxy is not None:
            conn = http.client.HTTPConnection(proxy.hostname or "", proxy.port or 80, timeout=self.connect_timeout)
            path = u._replace(fragment="").geturl()  # absolute form through a forwarding proxy
            headers.update(_proxy_auth(proxy))
        else:
            conn = http.client.HTTPConnection(u.hostname, port, timeout=self.connect_timeout)
        self._conn = conn
        via = f" through proxy {where(proxy)}" if proxy is not None else ""
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            conn.request("GET", path, headers=headers)
            self._resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise DownloadError(f"download from {where(u)}{via} failed: {_why(exc)}") from None
        except (ValueError, UnicodeError):  # a URL http.client cannot send (control or non-ASCII characters)
            self.close()
            raise DownloadError(f"download from {where(u)} failed: the URL cannot be sent as it is") from None

    def readinto(self, buf: memoryview | bytearray) -> int:
        """Read up to len(buf) bytes of the body into `buf`; 0 at its end."""
        assert self._resp is not None
        try:
            n = self._resp.readinto(buf)
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"download from {self.host} failed after {self.received} bytes: {_why(exc)}") \
                from None
        self.received += n
        if n == 0 and len(buf) and self.length is not None and self.received < self.length:
            raise DownloadError(f"download from {self.host} was cut short: {self.received} of {self.length} bytes")
        return n

    def fill(self, buf: memoryview) -> int:
        """Fill `buf` (or up to the end of the body); the number of bytes read."""
        pos = 0
        while pos < len(buf):
            n = self.readinto(buf[pos:])
            if n == 0:
                break
            pos += n
        return pos

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        """The body in chunks of `size` bytes (the last may be shorter)."""
        buf = bytearray(size)
        view = memoryview(buf)
        while n := self.fill(view):
            yield bytes(view[:n])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class ObjectGone(DownloadError):
    """The signed URL's object is not there any more (404 or 410): the provider deleted the backup after it
    signed the URL (its retention expired it, or someone removed it)."""


def stream(url: str, timeout: float = 60.0, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """A signed URL's bytes in chunks; raises ObjectGone when the object was deleted, GuardianError on any other
    HTTP error (naming only the host)."""
    with Download(url, timeout=timeout) as body:
        if body.status in (404, 410):
            raise ObjectGone(f"download from {where(url)} failed: HTTP {body.status}, the object is gone")
        if body.status != 200:
            raise GuardianError(f"download failed: HTTP {body.status}")
        yield from body.chunks(chunk_bytes)


def _why(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return f"the body ended early ({len(exc.partial)} bytes of the last piece)"
    if isinstance(exc, http.client.InvalidURL):
        return "invalid URL"  # its message repeats the URL, signature and all
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
