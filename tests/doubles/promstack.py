"""The real Prometheus stack for end-to-end tests: Prometheus, Alertmanager and the Pushgateway from the Debian
packages, each started on 127.0.0.1 in a directory of its own and always stopped, plus a webhook receiver that
records what Alertmanager sends.

Nothing here sleeps to paper over a race: every wait is `poll()`, which watches an observable condition (an HTTP
answer, a recorded notification) until it holds or a deadline passes, and then fails with the servers' logs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import yaml

from daemon.adapters.postgres.cluster import free_port
from tests.support import tool

#: Debian package -> the names its server binary has (Debian's, then upstream's).
BINARIES = {
    "prometheus": ("prometheus",),
    "prometheus-alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "prometheus-pushgateway": ("prometheus-pushgateway", "pushgateway"),
}


def binary(package: str) -> str:
    """The server binary of a Debian package; fails (never skips) with the install command when missing."""
    for name in BINARIES[package]:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    raise AssertionError(f"{BINARIES[package][0]} is missing: apt-get install {package} (.ci/run does)")


def poll(what: str, fn: Callable[[], Any], timeout: float = 30.0, context: Callable[[], str] | None = None,
         interval: float = 0.2) -> Any:
    """Call `fn` until it returns something truthy, and return that; fail after `timeout` seconds with the
    last value (or error) and `context()` (server logs), so a failure explains itself."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = exc
        if time.monotonic() >= deadline:
            extra = context() if context is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}{extra}")
        time.sleep(interval)  # the polling period of an observed condition, not a wait for a race to settle


def http_get(port: int, path: str, headers: dict[str, str] | None = None,
             timeout: float = 10) -> tuple[int, bytes]:
    """GET on 127.0.0.1 with http.client (no proxy from the environment can get in the way)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(text: str) -> float:
    """A Prometheus/Alertmanager duration ("30s", "1h30m", "500ms") in seconds."""
    text = str(text).strip()
    parts = list(_DURATION_PART.finditer(text))
    assert parts and "".join(m.group(0) for m in parts) == text, f"not a Prometheus duration: {text!r}"
    return sum(int(m.group(1)) * _UNIT_SECONDS[m.group(2)] for m in parts)


def scaled(text: str, factor: float, floor_ms: int = 100) -> str:
    """`text` times `factor`, as a duration in milliseconds (at least `floor_ms`)."""
    return f"{max(floor_ms, round(duration_seconds(text) * factor * 1000))}ms"


# ---------------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Server:
    """One running server process, its port and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: Path
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (e.g. basic auth)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return f"\n--- {self.name} log (last {lines} lines) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        assert self.proc.poll() is None, f"{self.name} exited with {self.proc.returncode}{self.log_tail()}"
        return http_get(self.port, path, {**self.headers, **(headers or {})})

    def get_json(self, path: str, **params: str) -> Any:
        code, body = self.get(path + ("?" + urlencode(params) if params else ""))
        doc = json.loads(body)
        assert code in (200, 400, 422), f"{self.name} {path}: HTTP {code}: {body[:500]!r}"
        return doc

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def running(name: str, argv: Callable[[int], list[str]], workdir: Path, ready: str = "/-/ready",
            headers: dict[str, str] | None = None, timeout: float = 30) -> Iterator[Server]:
    """Start `argv(port)` on a free loopback port, wait until `ready` answers 200, and stop it on exit (also
    when the test fails). A port taken between choosing and binding it is retried with another one."""
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        log_path = workdir / f"{name}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(argv(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=workdir)
        server = Server(name, proc, port, workdir, log_path, dict(headers or {}))
        try:
            def is_ready(s: Server = server) -> bool:
                if s.proc.poll() is not None:
                    return True  # exited: stop polling and look at why below
                return s.get(ready)[0] == 200

            poll(f"{name} to be ready", is_ready, timeout, server.log_tail)
            if server.proc.poll() is not None:
                if "address already in use" in server.log() and attempt < 2:
                    continue
                raise AssertionError(f"{name} exited with {server.proc.returncode}{server.log_tail()}")
            yield server
            return
        finally:
            server.stop()


class Prometheus(Server):
    config: dict[str, Any]
    config_path: Path

    def query(self, expr: str) -> dict[str, Any]:
        """The whole /api/v1/query answer (status success or error) for an instant query now."""
        return self.get_json("/api/v1/query", query=expr)

    def vector(self, expr: str) -> list[dict[str, Any]]:
        doc = self.query(expr)
        assert doc.get("status") == "success", f"query failed: {expr}: {doc}"
        return doc["data"]["result"]

    def alerts(self, name: str | None = None, state: str | None = None, **labels: str) -> list[dict[str, Any]]:
        """Alerts Prometheus holds now (pending or firing), filtered by name, state and labels."""
        doc = self.get_json("/api/v1/alerts")
        assert doc.get("status") == "success", doc
        out = []
        for a in doc["data"]["alerts"]:
            lab = a["labels"]
            if name is not None and lab.get("alertname") != name:
                continue
            if state is not None and a["state"] != state:
                continue
            if all(lab.get(k) == v for k, v in labels.items()):
                out.append(a)
        return out

    def rules(self) -> list[dict[str, Any]]:
        doc = self.get_json("/api/v1/rules")
        assert doc.get("status") == "success", doc
        return [{**r, "file": g["file"]} for g in doc["data"]["groups"] for r in g["rules"]]

    def wait_for_alertmanagers(self, timeout: float = 30) -> None:
        """Until Prometheus has discovered every configured Alertmanager (its discovery, like the scrape's, starts
        a few seconds after Prometheus itself; alerts fired before are only re-sent after the resend delay)."""
        wanted = {t for am in self.config["alerting"]["alertmanagers"] for sc in am["static_configs"]
                  for t in sc["targets"]}

        def discovered() -> bool:
            doc = self.get_json("/api/v1/alertmanagers")
            urls = [a["url"] for a in doc["data"]["activeAlertmanagers"]]
            return all(any(f"//{t}/" in u for u in urls) for t in wanted)

        poll("Prometheus to discover the Alertmanagers", discovered, timeout, self.log_tail)

    def load_rules(self, rule_files: list[Path], timeout: float = 30) -> None:
        """Add `rule_files` to the configuration and reload it (SIGHUP); returns once every rule of them has been
        evaluated at least once."""
        self.config["rule_files"] = [str(p) for p in rule_files]
        _write_checked(self.config_path, self.config)
        self.proc.send_signal(signal.SIGHUP)

        def evaluated() -> bool:
            rules = [r for r in self.rules() if r["file"] in self.config["rule_files"]]
            return bool(rules) and all(r.get("lastEvaluation", "").startswith("20") and r.get("health") != "unknown"
                                       for r in rules)

        poll("Prometheus to load and evaluate the rules", evaluated, timeout, self.log_tail)


def _write_checked(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    check = subprocess.run([tool("promtool"), "check", "config", str(path)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, f"promtool check config failed:\n{check.stdout}\n{check.stderr}"


@contextlib.contextmanager
def prometheus(workdir: Path, scrape: dict[str, list[str]], alertmanagers: list[str], interval: str = "1s",
               resend_delay: str = "1m") -> Iterator[Prometheus]:
    """Prometheus scraping `scrape` (job -> host:port targets) every `interval`, evaluating rules as often (none
    until `load_rules`), and sending alerts to `alertmanagers` (host:port), firing ones again every
    `resend_delay`."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                           for job, targets in scrape.items()],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "prometheus.yml"
    _write_checked(path, config)

    def argv(port: int) -> list[str]:
        return [binary("prometheus"), f"--config.file={path}", f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", f"--rules.alert.resend-delay={resend_delay}",
                "--log.level=info"]

    with running("prometheus", argv, workdir) as server:
        prom = Prometheus(**vars(server))
        prom.config, prom.config_path = config, path
        yield prom


class Alertmanager(Server):
    config_path: Path

    def routes_for(self, **labels: str) -> list[str]:
        """The receivers the routing tree picks for an alert with `labels` (amtool's own evaluation)."""
        out = subprocess.run([tool("amtool"), "config", "routes", "test", f"--config.file={self.config_path}",
                              *(f"{k}={v}" for k, v in labels.items())],
                             capture_output=True, text=True, check=True)
        return [r.strip() for r in out.stdout.strip().split(",") if r.strip()]


@contextlib.contextmanager
def alertmanager(workdir: Path, config: dict[str, Any]) -> Iterator[Alertmanager]:
    """Alertmanager with `config`, clustering off, debug logging (each group flush is in its log)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    check = subprocess.run([tool("amtool"), "check-config", str(path)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, f"amtool check-config failed:\n{check.stdout}\n{check.stderr}"

    def argv(port: int) -> list[str]:
        return [binary("prometheus-alertmanager"), f"--config.file={path}", f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=debug"]

    with running("alertmanager", argv, workdir) as server:
        am = Alertmanager(**vars(server))
        am.config_path = path
        yield am


@contextlib.contextmanager
def pushgateway(workdir: Path, users: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Iterator[Server]:
    """The Pushgateway; with `users` (name -> bcrypt hash) every request needs basic auth, and `headers` (the
    Authorization of one of them) are sent with the test's own requests."""
    workdir.mkdir(parents=True, exist_ok=True)
    extra: list[str] = []
    if users:
        web = workdir / "web.yml"
        web.write_text(yaml.safe_dump({"basic_auth_users": users}))
        extra.append(f"--web.config.file={web}")

    def argv(port: int) -> list[str]:
        return [binary("prometheus-pushgateway"), f"--web.listen-address=127.0.0.1:{port}", *extra]

    with running("pushgateway", argv, workdir, headers=headers) as server:
        yield server


# ---------------------------------------------------------------------------------------------------------------
# Shipped configuration, adapted for a test that must finish in seconds
# ---------------------------------------------------------------------------------------------------------------
def scaled_rules(src: Path, dst: Path, factor: float) -> dict[str, str]:
    """Copy the rule file `src` to `dst` with every `for:`/`keep_firing_for:` (and group `interval:`) multiplied by
    `factor`; the expressions, labels and annotations are untouched. Returns alert -> original `for`."""
    doc = yaml.safe_load(src.read_text())
    original: dict[str, str] = {}
    for group in doc.get("groups", []):
        if "interval" in group:
            group["interval"] = scaled(group["interval"], factor)
        for rule in group.get("rules", []):
            for key in ("for", "keep_firing_for"):
                if key in rule:
                    if key == "for" and "alert" in rule:
                        original[rule["alert"]] = rule[key]
                    rule[key] = scaled(rule[key], factor)
    dst.write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    return original


#: Alertmanager's defaults for the route timings (used when the shipped root route leaves one out).
ROUTE_DEFAULTS = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h"}


def alertmanager_test_config(src: Path, webhook_url: str, factor: float) -> dict[str, Any]:
    """The shipped Alertmanager configuration with its routing tree, grouping, `continue`s and inhibit rules
    kept, every route timing multiplied by `factor` (so their order, and the escalation built on it, stays), and
    every receiver replaced by one webhook to `webhook_url`/<receiver name> (send_resolved as shipped)."""
    doc = yaml.safe_load(src.read_text())

    def scale_route(route: dict[str, Any], root: bool) -> None:
        for key, default in ROUTE_DEFAULTS.items():
            if key in route or root:
                route[key] = scaled(route.get(key, default), factor)
        for child in route.get("routes", []):
            scale_route(child, root=False)

    scale_route(doc["route"], root=True)
    receivers = []
    for r in doc.get("receivers", []):
        shipped = [c for c in r.get("webhook_configs", []) if "send_resolved" in c]
        send_resolved = bool(shipped[0]["send_resolved"]) if shipped else True
        receivers.append({"name": r["name"], "webhook_configs": [
            {"url": f"{webhook_url}/{quote(r['name'], safe='')}", "send_resolved": send_resolved}]})
    doc["receivers"] = receivers
    doc.pop("templates", None)  # the receivers that used them are replaced
    return doc


# ---------------------------------------------------------------------------------------------------------------
# Webhook receiver
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Notified:
    """One alert inside one webhook notification."""

    receiver: str  # the receiver the notification was sent for (from the URL path)
    status: str  # the alert's own status: firing or resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    group_status: str  # the notification's status (firing while any alert of the group fires)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records every JSON document POSTed to it (Alertmanager's webhook)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer._lock:
                    outer.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        # port 0: the OS binds a free port atomically (this server is in-process, there is no gap to race)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def notified(self, receiver: str | None = None, status: str | None = None, **labels: str) -> list[Notified]:
        """Every alert of every notification so far, filtered by receiver, alert status and labels."""
        with self._lock:
            posts = list(self.posts)
        out = []
        for path, doc in posts:
            name = doc.get("receiver", "")
            assert path.lstrip("/") == quote(name, safe=""), f"notification for {name!r} arrived on {path!r}"
            for a in doc.get("alerts", []):
                n = Notified(name, a["status"], a["labels"], a.get("annotations", {}), doc.get("status", ""))
                if receiver is not None and n.receiver != receiver:
                    continue
                if status is not None and n.status != status:
                    continue
                if all(n.labels.get(k) == v for k, v in labels.items()):
                    out.append(n)
        return out

    def summary(self) -> str:
        with self._lock:
            posts = list(self.posts)
        lines = [f"{doc.get('receiver')}: {doc.get('status')}: " + ", ".join(
            f"{a['labels'].get('alertname')}{{database={a['labels'].get('database')}}}={a['status']}"
            for a in doc.get("alerts", [])) for _, doc in posts]
        return "\n--- webhook notifications ---\n" + ("\n".join(lines) or "(none)")
