"""The HTTP endpoint under hostile or careless clients, over real sockets on loopback: slow and idle
connections, a bounded worker pool, basic and bearer authentication, TLS, and the warning for an endpoint
open beyond this machine without authentication."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from daemon.config import WebConfig, load_config
from daemon.core.errors import ConfigError
from daemon.core.snapshot import StateHolder
from daemon.metrics import Exposition
from daemon.web.server import GuardianHTTP
from tests.support import DaemonProcess, self_signed

HALF_HEAD = b"GET /metrics HTTP/1.1\r\nHost: guardian\r\nAccept: text/plain\r\n"  # no blank line: never ends
TOKEN = "t0ken-for-the-guardian-endpoint"


# -- helpers ----------------------------------------------------------------------------------------------

def web_config(tmp_path: Path, yaml_text: str, env: dict[str, str] | None = None) -> WebConfig:
    """The `web:` section as the real loader reads it from a file (and the environment)."""
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text("web:\n" + "".join(f"  {line}\n" for line in yaml_text.strip().splitlines()))
    return load_config(cfg, environ=env or {}).web


@contextlib.contextmanager
def serving(web: WebConfig | None = None, host: str = "127.0.0.1") -> Iterator[GuardianHTTP]:
    holder = StateHolder()
    holder.heartbeat_at = datetime.now(UTC)
    server = GuardianHTTP(host, 0, holder, Exposition(holder), web=web)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(port: int, path: str, headers: dict[str, str] | None = None, host: str = "127.0.0.1",
        context: ssl.SSLContext | None = None) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn: http.client.HTTPConnection
    if context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=10, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def half_header(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(HALF_HEAD)
    return s


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Wait (until the monotonic deadline) for the server to close `sock`: EOF or reset."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if sock.recv(65536) == b"":
                return True
        except (ConnectionResetError, ssl.SSLError):
            return True
        except TimeoutError:
            return False


def still_open(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable  # no EOF (nor any answer) waiting


# -- slow and idle clients --------------------------------------------------------------------------------

def test_half_sent_request_heads_hold_no_worker_and_are_closed_at_the_header_timeout(tmp_path: Path) -> None:
    web = web_config(tmp_path, "header_timeout: 2s\nworkers: 2")
    with serving(web) as server:
        opened = time.monotonic()
        slow = [half_header(server.port) for _ in range(60)]
        try:
            t0 = time.monotonic()
            code, body, _ = get(server.port, "/healthz")
            assert code == 200 and json.loads(body)["healthy"] is True
            assert time.monotonic() - t0 < 1.0, "a normal request waited behind the slow connections"
            if time.monotonic() - opened < 1.5:  # (on a badly loaded machine the check would come too late)
                assert all(still_open(s) for s in slow), "closed before the header timeout"
            deadline = opened + 2 + 4
            closed = [closed_by_server(s, deadline) for s in slow]
            assert all(closed), f"{closed.count(False)} of 60 half-sent requests still open after the timeout"
            assert time.monotonic() - opened >= 2 * 0.9
        finally:
            for s in slow:
                s.close()


def test_a_request_head_trickled_byte_by_byte_is_still_cut_at_the_header_timeout(tmp_path: Path) -> None:
    web = web_config(tmp_path, "header_timeout: 1500ms\nidle_timeout: 60s")
    with serving(web) as server:
        s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        opened = time.monotonic()
        closed_at = None
        try:
            for byte in HALF_HEAD * 10:  # every byte renews "activity"; only the deadline ends it
                try:
                    s.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic()
                    break
                if not still_open(s):
                    closed_at = time.monotonic()
                    break
                if time.monotonic() - opened > 8:
                    break
                select.select([s], [], [], 0.1)  # pacing: wait for the server's close or 0.1 s
        finally:
            s.close()
        assert closed_at is not None, "the trickling connection was never closed"
        assert 1.5 * 0.9 <= closed_at - opened < 5


def test_idle_keep_alive_connection_is_kept_for_a_second_request_then_closed(tmp_path: Path) -> None:
    web = web_config(tmp_path, "idle_timeout: 1s")
    with serving(web) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            for _ in range(2):  # the same connection answers twice: keep-alive works
                conn.request("GET", "/healthz")
                resp = conn.getresponse()
                assert resp.status == 200
                resp.read()
            assert conn.sock is not None
            answered = time.monotonic()
            assert closed_by_server(conn.sock, answered + 5), "idle keep-alive connection never closed"
            assert time.monotonic() - answered >= 1 * 0.9
        finally:
            conn.close()


def test_many_open_connections_never_grow_the_thread_count_past_the_worker_pool(tmp_path: Path) -> None:
    web = web_config(tmp_path, "workers: 3\nheader_timeout: 30s")
    before = threading.active_count()
    with serving(web) as server:
        slow = [half_header(server.port) for _ in range(60)]
        keep_alive = []
        try:
            for _ in range(20):
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
                conn.request("GET", "/metrics")
                resp = conn.getresponse()
                assert resp.status == 200
                resp.read()
                keep_alive.append(conn)
            assert get(server.port, "/healthz")[0] == 200  # every connection above has been accepted by now
            during = threading.active_count()
            # the workers, the event loop and the /metrics renderer: fixed, whatever the number of connections
            assert during <= before + 3 + 2, f"{during - before} server threads for 80 open connections"
        finally:
            for s in slow:
                s.close()
            t0 = time.monotonic()
            server.stop()
            stop_took = time.monotonic() - t0
            for conn in keep_alive:
                conn.close()
    assert stop_took < 1.0, f"stop() took {stop_took:.2f}s with 80 connections open"


def test_stop_is_quick_and_closes_idle_keep_alive_connections(tmp_path: Path) -> None:
    server = GuardianHTTP("127.0.0.1", 0, StateHolder(), Exposition(StateHolder()), web=WebConfig())
    server.start()
    conns = []
    for _ in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/readyz")
        conn.getresponse().read()
        conns.append(conn)
    t0 = time.monotonic()
    server.stop()
    assert time.monotonic() - t0 < 1.0
    assert all(c.sock is not None and closed_by_server(c.sock, time.monotonic() + 2) for c in conns)
    for c in conns:
        c.close()


# -- authentication ---------------------------------------------------------------------------------------

def test_basic_auth_admits_the_right_password_only_and_keeps_healthz_open(tmp_path: Path) -> None:
    password = "correct horse battery staple"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=12)).decode()
    web = web_config(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'")
    with serving(web) as server:
        for path in ("/metrics", "/api/status", "/", "/readyz", "/nowhere"):
            code, body, resp = get(server.port, path)
            assert code == 401, path
            assert resp.getheader("WWW-Authenticate") == 'Basic realm="pg-backup-guardian"'
        for creds in (basic("prometheus", "wrong password"), basic("mallory", password),
                      {"Authorization": "Basic !!not-base64!!"}, {"Authorization": f"Bearer {password}"}):
            code, body, _ = get(server.port, "/api/status", creds)
            assert code == 401
            assert password.encode() not in body and b"mallory" not in body and b"wrong" not in body
        assert get(server.port, "/healthz")[0] == 200  # container health checks carry no credentials

        t0 = time.monotonic()
        code, body, _ = get(server.port, "/metrics", basic("prometheus", password))
        first = time.monotonic() - t0
        assert code == 200 and b"pgbackup_" in body
        t0 = time.monotonic()
        for _ in range(5):
            assert get(server.port, "/metrics", basic("prometheus", password))[0] == 200
        assert time.monotonic() - t0 < first, "each scrape paid bcrypt again: successful checks are not cached"
        assert get(server.port, "/api/status", basic("prometheus", password + "x"))[0] == 401  # cache is exact
        held = repr([vars(server.auth)]).encode()
        assert password.encode() not in held, "the plaintext password is kept in memory"


def test_basic_auth_users_from_an_exporter_toolkit_web_config_file(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    (tmp_path / "web-config.yml").write_text(f"basic_auth_users:\n  alice: '{hashed}'\n")
    web = web_config(tmp_path, f"config_file: {tmp_path / 'web-config.yml'}")
    with serving(web) as server:
        assert get(server.port, "/api/status")[0] == 401
        assert get(server.port, "/api/status", basic("alice", "s3cret-pass"))[0] == 200


def test_bearer_token_from_the_environment(tmp_path: Path) -> None:
    web = web_config(tmp_path, "idle_timeout: 60s", env={"GUARDIAN_WEB_TOKEN": TOKEN})
    with serving(web) as server:
        assert get(server.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        code, body, resp = get(server.port, "/metrics", {"Authorization": f"Bearer {TOKEN}x"})
        assert code == 401 and TOKEN.encode() not in body
        assert resp.getheader("WWW-Authenticate") == 'Bearer realm="pg-backup-guardian"'
        assert get(server.port, "/metrics")[0] == 401
        assert get(server.port, "/healthz")[0] == 200
        doc = json.loads(get(server.port, "/api/status", {"Authorization": f"Bearer {TOKEN}"})[1])
        assert doc["security"]["auth"] == ["bearer"] and TOKEN not in json.dumps(doc)


# -- TLS --------------------------------------------------------------------------------------------------

def test_tls_with_a_self_signed_certificate_verified_by_the_client(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    web = web_config(tmp_path, f"header_timeout: 1s\ntls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n"
                               f"bearer_token: {TOKEN}")
    client = ssl.create_default_context(cafile=str(cert))  # verifies the chain and the host name
    with serving(web) as server:
        code, body, _ = get(server.port, "/healthz", host="localhost", context=client)
        assert code == 200 and json.loads(body)["healthy"] is True
        code, body, _ = get(server.port, "/api/status", {"Authorization": f"Bearer {TOKEN}"}, context=client)
        assert code == 200 and json.loads(body)["security"]["tls"] is True
        assert get(server.port, "/api/status", context=client)[0] == 401

        untrusting = ssl.create_default_context()  # the system CAs do not know this certificate
        with pytest.raises(ssl.SSLCertVerificationError):
            get(server.port, "/healthz", host="localhost", context=untrusting)
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            get(server.port, "/healthz")  # plain HTTP to the TLS port gets no answer

        silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # never starts a handshake
        opened = time.monotonic()
        try:
            assert closed_by_server(silent, opened + 5), "a connection without handshake was kept"
        finally:
            silent.close()


# -- exposure warning -------------------------------------------------------------------------------------

def _db_config(url: str) -> str:
    return (f"collect_interval: 1s\ndatabases:\n  - name: shop/main\n    url: '{url}'\n"
            "    capture:\n      enabled: false\n")


@pytest.mark.slow
def test_all_interfaces_without_auth_warns_in_the_log_the_status_and_the_page(
        fresh_db: str, run_daemon: Any) -> None:
    d: DaemonProcess = run_daemon(_db_config(fresh_db), listen_host="0.0.0.0")
    status = d.status()
    warnings = status["security"]["warnings"]
    assert len(warnings) == 1 and "without authentication" in warnings[0] and "0.0.0.0" in warnings[0]
    assert status["security"]["loopback_only"] is False and status["security"]["auth"] == []
    assert "WARNING" in d.log() and "without authentication" in d.log()
    page = d.get("/")[1].decode()
    assert "without authentication" in page
    assert d.stop() < 10


@pytest.mark.slow
def test_all_interfaces_with_a_token_needs_it_and_does_not_warn(fresh_db: str, run_daemon: Any) -> None:
    d: DaemonProcess = run_daemon(_db_config(fresh_db), env={"GUARDIAN_WEB_TOKEN": TOKEN}, listen_host="0.0.0.0")
    assert d.get("/api/status")[0] == 401
    code, body, _ = d.get("/api/status", {"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    assert json.loads(body)["security"]["warnings"] == []
    assert "without authentication" not in d.log() and TOKEN not in d.log()
    assert d.stop() < 10


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_loopback_without_auth_does_not_warn(host: str) -> None:
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    with serving(host=host) as server:
        assert server.port > 0
        code, body, _ = get(server.port, "/api/status", host=host)
        assert code == 200
        assert json.loads(body)["security"]["warnings"] == []
        assert "without authentication" not in get(server.port, "/", host=host)[1].decode()


# -- configuration errors ---------------------------------------------------------------------------------

def test_missing_certificate_file_is_a_config_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        web_config(tmp_path, f"tls_server_config:\n  cert_file: {tmp_path}/absent.crt\n  key_file: {tmp_path}/k")
    assert "web.tls_server_config" in str(err.value) and "cert_file" in str(err.value)
    assert "absent.crt" in str(err.value) and "cannot read" in str(err.value)


def test_malformed_bcrypt_hash_is_a_config_error_naming_the_user_without_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text("web:\n  basic_auth_users:\n    prometheus: 'plaintext-password-by-mistake'\n")
    out = subprocess.run([sys.executable, "-m", "daemon", "check", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 3
    text = out.stdout + out.stderr
    assert "web.basic_auth_users" in text and "'prometheus'" in text and "not a bcrypt hash" in text
    assert "Traceback" not in text and "plaintext-password-by-mistake" not in text
