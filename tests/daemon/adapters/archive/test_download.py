"""daemon/adapters/archive/download.py against real loopback servers: a plain HTTP server with misbehaving routes,
a TLS server whose certificate a throwaway CA signs, and a forwarding/CONNECT proxy. Nothing is patched."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import http.server
import ipaddress
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon.adapters.archive.download import BLOCK, Download, DownloadError, stream
from tests.doubles.heroku import HerokuDouble

BODY = os.urandom(3 * 1024 * 1024 + 12345)  # not a multiple of any buffer size
SIGNED = "X-Amz-Signature=0123456789abcdef-secret-signature"


@dataclass
class Served:
    """What the servers saw."""

    lines: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            served.lines.append(self.requestline)
            served.headers.append(dict(self.headers.items()))
            path = urlsplit(self.path).path
            if path == "/dump":
                self._send(200, BODY)
            elif path == "/relative":
                self._redirect("/dump?" + SIGNED)
            elif path == "/absolute":
                host, port = self.server.server_address[:2]
                self._redirect(f"http://{host}:{port}/relative")
            elif path == "/loop":
                self._redirect("/loop?" + SIGNED)
            elif path == "/cut":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:1_000_000])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            elif path == "/stall":
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY[:4096])
                self.wfile.flush()
                served.release.wait(30)
                self.close_connection = True
            elif path == "/chunked":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(BODY), 700_001):
                    piece = BODY[i:i + 700_001]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            elif path == "/chunked-cut":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(f"{len(BODY):x}\r\n".encode() + BODY[:500_000])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
            elif path == "/downgrade":
                self._redirect("http://127.0.0.1:9/dump?" + SIGNED)
            elif path == "/gzip":
                self._send(200, gzip.compress(b"PGDMP" + b"\0" * 1000), {"Content-Encoding": "gzip"})
            else:
                self._send(403, b"<Error><Code>AccessDenied</Code></Error>")

        def _redirect(self, location: str) -> None:
            self._send(302, b"", {"Location": location})

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _Server:
    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _proxy_handler(seen: Served) -> type[http.server.BaseHTTPRequestHandler]:
    """A forwarding proxy: absolute-form GET is fetched and relayed, CONNECT opens a tunnel."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_CONNECT(self) -> None:
            seen.lines.append(self.requestline)
            seen.headers.append(dict(self.headers.items()))
            host, port = self.path.rsplit(":", 1)
            upstream = socket.create_connection((host, int(port)), timeout=10)
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            _relay(self.connection, upstream)
            self.close_connection = True

        def do_GET(self) -> None:
            seen.lines.append(self.requestline)
            seen.headers.append(dict(self.headers.items()))
            u = urlsplit(self.path)
            upstream = socket.create_connection((u.hostname or "", u.port or 80), timeout=10)
            path = u.path + (f"?{u.query}" if u.query else "")
            upstream.sendall(f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nConnection: close\r\n\r\n".encode())
            while data := upstream.recv(1 << 16):
                self.wfile.write(data)
            upstream.close()
            self.close_connection = True

    return Proxy


def _relay(a: socket.socket, b: socket.socket) -> None:
    socks = [a, b]
    try:
        while True:
            ready, _, _ = select.select(socks, [], [], 10)
            if not ready:
                return
            for s in ready:
                data = s.recv(1 << 16)
                if not data:
                    return
                (b if s is a else a).sendall(data)
    finally:
        b.close()


@pytest.fixture
def served() -> Iterator[Served]:
    yield Served()


@pytest.fixture
def origin(served: Served) -> Iterator[str]:
    server = _Server(_handler(served))
    yield f"http://127.0.0.1:{server.port}"
    served.release.set()
    server.close()


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def read_all(d: Download, size: int = BLOCK) -> bytes:
    view = memoryview(bytearray(size))
    out = bytearray()
    while n := d.fill(view):
        out += view[:n]
    return bytes(out)


def test_the_body_arrives_whole_through_fill_and_chunks(origin: str, served: Served) -> None:
    with Download(f"{origin}/dump?{SIGNED}") as d:
        assert (d.status, d.length) == (200, len(BODY))
        assert hashlib.sha256(read_all(d, 1 << 20)).digest() == hashlib.sha256(BODY).digest()
        assert d.received == len(BODY)
    with Download(f"{origin}/dump") as d:
        pieces = list(d.chunks(1 << 20))
    assert b"".join(pieces) == BODY and all(len(p) == 1 << 20 for p in pieces[:-1])
    assert served.headers[0].get("Accept-Encoding") == "identity"


def test_redirects_are_followed_relative_and_absolute(origin: str, served: Served) -> None:
    with Download(f"{origin}/absolute") as d:
        assert d.status == 200 and read_all(d) == BODY
    assert [line.split()[1] for line in served.lines] == ["/absolute", "/relative", f"/dump?{SIGNED}"]


def test_a_redirect_loop_stops_and_the_error_keeps_the_signature_out(origin: str) -> None:
    with pytest.raises(DownloadError, match="redirected more than 5 times") as err:
        Download(f"{origin}/loop?{SIGNED}")
    assert "Signature" not in str(err.value) and "127.0.0.1" in str(err.value)


def test_a_body_cut_short_is_an_error_with_the_counts(origin: str) -> None:
    with Download(f"{origin}/cut?{SIGNED}") as d, pytest.raises(DownloadError, match="cut short") as err:
        read_all(d)
    assert f"of {len(BODY)} bytes" in str(err.value) and "Signature" not in str(err.value)


def test_a_stalled_body_times_out_on_the_read_timeout(origin: str, served: Served) -> None:
    started = time.monotonic()
    with Download(f"{origin}/stall?{SIGNED}", timeout=0.5, connect_timeout=60) as d, \
            pytest.raises(DownloadError, match="timed out"):
        read_all(d)
    assert time.monotonic() - started < 20  # the 0.5 s read timeout, not the 60 s connect timeout
    served.release.set()


def test_a_chunked_body_is_read_whole(origin: str) -> None:
    with Download(f"{origin}/chunked") as d:
        assert d.length is None and read_all(d) == BODY


def test_a_chunked_body_cut_short_is_an_error(origin: str) -> None:
    with Download(f"{origin}/chunked-cut?{SIGNED}") as d, pytest.raises(DownloadError, match="failed after") as err:
        read_all(d)
    assert "Signature" not in str(err.value)


def test_a_compressed_transfer_encoding_is_refused(origin: str) -> None:
    with pytest.raises(DownloadError, match="Content-Encoding 'gzip'"):
        Download(f"{origin}/gzip")


def test_error_status_is_reported_not_raised(origin: str) -> None:
    with Download(f"{origin}/nope?{SIGNED}") as d:
        assert d.status == 403


def test_connection_refused_names_the_host_only() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(DownloadError, match=f"http://127.0.0.1:{port} failed") as err:
            Download(f"http://127.0.0.1:{port}/dump?{SIGNED}")
    assert "Signature" not in str(err.value)


def test_unsupported_schemes_are_refused() -> None:
    with pytest.raises(DownloadError, match="only http and https"):
        Download(f"ftp://127.0.0.1/dump?{SIGNED}")


# -- proxies ---------------------------------------------------------------------------------------------------
@pytest.fixture
def proxy() -> Iterator[tuple[str, Served]]:
    seen = Served()
    server = _Server(_proxy_handler(seen))
    yield f"http://127.0.0.1:{server.port}", seen
    server.close()


def test_http_goes_through_the_environments_proxy_with_its_credentials(
        origin: str, proxy: tuple[str, Served], monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url.replace("http://", "http://proxyuser:proxy%20pw@"))
    with Download(f"{origin}/dump?{SIGNED}") as d:
        assert read_all(d) == BODY
    assert seen.lines == [f"GET {origin}/dump?{SIGNED} HTTP/1.1"]
    assert seen.headers[0]["Proxy-Authorization"] == "Basic cHJveHl1c2VyOnByb3h5IHB3"  # proxyuser:proxy pw


def test_no_proxy_bypasses_the_proxy(origin: str, proxy: tuple[str, Served], served: Served,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", proxy_url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with Download(f"{origin}/dump") as d:
        assert read_all(d) == BODY
    assert seen.lines == [] and served.lines == ["GET /dump HTTP/1.1"]


def test_all_proxy_is_used_when_no_scheme_proxy_is_set(origin: str, proxy: tuple[str, Served],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_url, seen = proxy
    monkeypatch.setenv("ALL_PROXY", proxy_url)
    with Download(f"{origin}/dump") as d:
        assert read_all(d) == BODY
    assert seen.lines == [f"GET {origin}/dump HTTP/1.1"]


def test_a_malformed_proxy_url_is_refused_without_repeating_it(origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://user:pa/ss@127.0.0.1:3128")  # "/" in the password, not escaped
    with pytest.raises(DownloadError, match="percent-encode") as err:
        Download(f"{origin}/dump")
    assert "pa" not in str(err.value).replace("password", "")


def test_an_https_proxy_url_is_refused_in_plain_words(origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "https://127.0.0.1:1")
    with pytest.raises(DownloadError, match="use an http:// proxy"):
        Download(f"{origin}/dump")


# -- TLS -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pki:
    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a certificate for 127.0.0.1 it signs."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guardian test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("pki")
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return Pki(ca_file, server)


@pytest.fixture
def tls_origin(pki: Pki, served: Served) -> Iterator[str]:
    server = _Server(_handler(served), tls=pki.server)
    yield f"https://127.0.0.1:{server.port}"
    served.release.set()
    server.close()


def test_https_is_verified_against_ssl_cert_file(tls_origin: str, pki: Pki,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with Download(f"{tls_origin}/dump?{SIGNED}") as d:
        assert read_all(d) == BODY


def test_https_with_an_untrusted_certificate_is_refused(tls_origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)  # certifi's bundle does not know the throwaway CA
    with pytest.raises(DownloadError, match="TLS certificate not trusted") as err:
        Download(f"{tls_origin}/dump?{SIGNED}")
    assert "Signature" not in str(err.value)


def test_an_unreadable_ssl_cert_file_is_a_download_error(tls_origin: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "missing.pem"))
    with pytest.raises(DownloadError, match="SSL_CERT_FILE"):
        Download(f"{tls_origin}/dump")


def test_a_redirect_from_https_to_http_is_refused(tls_origin: str, pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with pytest.raises(DownloadError, match="never followed from https to plain http") as err:
        Download(f"{tls_origin}/downgrade")
    assert "Signature" not in str(err.value)


def test_https_goes_through_a_connect_tunnel(tls_origin: str, pki: Pki, proxy: tuple[str, Served],
                                            served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy_url, seen = proxy
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    monkeypatch.setenv("HTTPS_PROXY", proxy_url.replace("http://", "http://u:p@"))
    with Download(f"{tls_origin}/dump?{SIGNED}") as d:
        assert read_all(d) == BODY
    port = urlsplit(tls_origin).port
    assert seen.lines == [f"CONNECT 127.0.0.1:{port} HTTP/1.0"]  # http.client tunnels with HTTP/1.0
    assert seen.headers[0]["Proxy-Authorization"] == "Basic dTpw"  # u:p; the path and query never reach the proxy
    assert served.lines == [f"GET /dump?{SIGNED} HTTP/1.1"]


def test_a_signed_https_url_of_the_heroku_double_downloads_directly_and_through_a_connect_proxy(
    pki: Pki, proxy: tuple[str, Served], sample_dump: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heroku hands out S3 presigned https URLs (reference, Corrections Nov 2026): the guardian's download reads
    one from the double's TLS endpoint, verified against the CA the environment names, directly and through an
    http proxy's CONNECT tunnel; `stream` (drills, read-through) and `Download` (mirror) alike."""
    token = "hrku-tls-SECRET-0123456789"
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    with HerokuDouble(token=token, download_tls=pki.server) as heroku:
        heroku.add_app("shop")
        t = heroku.add_transfer("shop")
        heroku.set_dump_file("shop", t["num"], sample_dump)
        answer = httpx.post(f"{heroku.data_url}/client/v11/apps/shop/transfers/{t['num']}/actions/public-url",
                            headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 201
        url = answer.json()["url"]
        assert url.startswith("https://127.0.0.1:") and "X-Amz-Expires=3600" in url
        assert b"".join(stream(url)) == sample_dump.read_bytes()

        proxy_url, seen = proxy
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        with Download(url) as d:
            assert read_all(d) == sample_dump.read_bytes()
        assert seen.lines == [f"CONNECT 127.0.0.1:{urlsplit(url).port} HTTP/1.0"]
