"""A local stand-in for Heroku: the Platform API, the Postgres Data API and signed dump downloads.

Every fact this double encodes comes from `../shared/reference/heroku-api.md` (beside the checkout) ("the reference");
comments cite its sections as `ref §N`. Where the reference is silent the choice is marked CHOICE and
listed in tests/HEROKU_DOUBLE.md.

Four loopback HTTP servers (stdlib `ThreadingHTTPServer`, one thread per connection):

* platform_url: the Platform API (ref §3, §4), `api.heroku.com`.
* data_url:     the Data API (ref §1, §2, §6), `api.data.heroku.com`, prefix `/client/v11`.
* download_url: the signed, S3-style dump downloads handed out by `actions/public-url` (ref §1.6).
* status_url:   Heroku's public status API, `status.heroku.com` (`GET /api/v4/current-status`; not in the
                reference: its sources are in HEROKU_DOUBLE.md, "Heroku's status API").

Captures are real: `POST /client/v11/databases/{addon_id}/backups` runs `pg_dump -Fc` against the
attachment's database URL, and the public URL streams the dump it wrote.

Run by hand with `python -m tests.doubles.heroku` (see `main`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import hmac
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import psycopg

HEROKU_TS = "%Y-%m-%d %H:%M:%S +0000"  # ref §1.2: "2016-10-01 00:42:54 +0000" (CLI fixtures, GH-1471)
ISO_TS = "%Y-%m-%dT%H:%M:%SZ"  # ref §1.2 (one lib test) and every Platform API object (ref §3.2)
DATA_PREFIX = "/client/v11"  # ref §1
RATE_LIMIT_URL = "https://devcenter.heroku.com/articles/platform-api-reference#rate-limits"  # ref §3.3 [APIEV]
NOT_FOUND_ROUTE = ("The requested API endpoint was not found. Are you using the right HTTP verb (i.e. `GET` vs. "
                   "`POST`), and did you specify your intended version with the `Accept` header?")
MAX_PAGE = 1000  # ref §3.4: default 200, maximum 1000
FAULT_KINDS = ("429", "500", "503", "slow", "timeout", "malformed", "truncated", "404", "status")
TRANSFER_STATES = ("created", "started", "finished", "failed", "canceled")
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
# the default dyno size of a new process type per platform generation (HEROKU_DOUBLE.md, Formations on Cedar and
# Fir: Cedar's sizes are Eco, Basic, Standard-*, Performance-*; Fir's are named dyno-<cores>c-<memory>gb)
GENERATION_SIZES = {"cedar": "standard-1X", "fir": "dyno-1c-0.5gb"}
ERROR_IDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
             410: "gone", 416: "requested_range_not_satisfiable", 422: "invalid_params", 429: "rate_limit",
             500: "internal_server_error", 502: "bad_gateway", 503: "service_unavailable",
             504: "gateway_timeout"}
ADDON_WORDS = ("rigid", "curved", "shallow", "silky", "fluffy", "angular", "tapered", "cubic", "solid", "round",
               "clear", "vertical", "symmetrical", "transparent", "opaque", "flat", "deep", "spherical")
COLORS = ("RED", "BLUE", "GREEN", "ONYX", "AMBER", "COBALT", "PURPLE", "OLIVE", "TEAL", "PINK", "GOLD", "SILVER")
# CHOICE (the reference gives no plan limits; its "31/400" for Standard 0 is illustrative): storage in GB and
# connection limit per plan level. Override through set_database_info(info=[...]) when a test needs others.
PLAN_LIMITS = {"essential-0": (1, 20), "essential-1": (10, 20), "essential-2": (32, 40), "mini": (1, 20),
               "basic": (10, 20), "hobby-dev": (1, 20), "hobby-basic": (10, 20), "0": (64, 120), "2": (256, 400),
               "3": (512, 500), "4": (768, 500), "5": (1024, 500), "6": (1536, 500), "7": (2048, 500),
               "8": (3072, 500), "9": (4096, 500), "10": (4096, 500)}
ROLLBACK_DAYS = {"standard": 4, "premium": 7, "private": 7, "shield": 7}  # ref §5.1 [DC-plans]
# Advanced-tier plans: the CLI's isAdvancedDatabase (heroku/heroku-cli-util src/utils/addons/helpers.ts).
ADVANCED_PLAN = re.compile(r"^(advanced|performance)")
ADVANCED_PREFIX = "/data/postgres/v1"  # heroku/cli src/commands/data/pg/info.ts
# CHOICE (no source gives Advanced's rollback window): 7 days back, the latest point a minute behind the clock.
ADVANCED_ROLLBACK_WINDOW = timedelta(days=7)
ADVANCED_ROLLBACK_LAG = timedelta(minutes=1)
# CHOICE: num_keep (ref §1.2 "probably retention-related") from the historical manual-retention table, ref §5.3.
MANUAL_KEEP = {"hobby": 2, "mini": 2, "basic": 5, "essential": 5, "standard": 25, "premium": 50, "private": 50,
               "shield": 50}
SCHEDULED_KEEP = 7  # ref §5.3: daily scheduled backups kept for 7 days (historical)


# -- public value types -------------------------------------------------------------------------------

@dataclass
class AppInfo:
    """What add_app created, for tests to build requests with."""

    app_name: str
    app_id: str
    addon_id: str
    addon_name: str
    billing_app: str
    attachment_id: str
    attachment_name: str
    plan: str


@dataclass
class RequestRecord:
    """One request as the double saw it. `status` is None while in flight, or when no answer was sent
    (the "timeout" fault, a dropped connection)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    host: str  # "platform" | "data" | "download"
    status: int | None = None
    body: bytes = b""


# -- internal state -----------------------------------------------------------------------------------

@dataclass
class _App:
    id: str
    name: str
    created_at: datetime
    web_host: str
    owner_id: str
    extra_config: dict[str, str] = field(default_factory=dict)
    formation: dict[str, dict[str, Any]] = field(default_factory=dict)
    releases: list[dict[str, Any]] = field(default_factory=list)
    transfer_seq: int = 0
    process_tier: str = "production"  # CHOICE: standard dynos' tier; "eco" and "basic" are the others
    generation: str = "cedar"  # "cedar" or "fir" (HEROKU_DOUBLE.md, Formations on Cedar and Fir)
    refusals: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # process type -> answer


@dataclass
class _Addon:
    id: str
    name: str
    plan: str
    billing_app: str
    database_url: str
    created_at: datetime
    info_fields: dict[str, Any] = field(default_factory=dict)
    info_override: list[dict[str, Any]] | None = None
    status: str = "Available"
    schedules: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    manual_keep: int | None = None  # EXTRA: overrides the plan's manual backup limit (set_manual_keep)
    # Advanced tier only (set_advanced): continuous protection, and the rollback window relative to the clock
    continuous_protection: bool = True
    rollback_enabled: bool = True
    rollback_window: timedelta = ADVANCED_ROLLBACK_WINDOW
    rollback_lag: timedelta = ADVANCED_ROLLBACK_LAG


@dataclass
class _Attachment:
    id: str
    name: str
    app: str
    addon_id: str
    namespace: str | None
    created_at: datetime


@dataclass
class _Transfer:
    uuid: str
    num: int
    app: str  # the app whose sequence `num` belongs to (the add-on's billing app)
    addon_id: str | None
    from_type: str
    to_type: str
    from_name: str
    to_name: str
    from_url: str
    to_url: str
    created_at: datetime
    ts_format: str
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    canceled_at: datetime | None = None
    deleted_at: datetime | None = None
    purged_at: datetime | None = None
    succeeded: bool = False
    processed_bytes: int = 0
    source_bytes: int = 0
    warnings: int = 0
    schedule_uuid: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    num_keep: int = 25
    logs: list[dict[str, Any]] = field(default_factory=list)
    dump_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None


STATUS_SYSTEMS = ("Apps", "Data", "Tools")  # the systems the v4 status API reports, in its order


@dataclass
class _StatusIncident:
    id: int
    title: str
    systems: tuple[str, ...]
    severity: str
    created_at: datetime
    updated_at: datetime
    resolved: bool = False
    updates: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        # the fields `heroku status` reads (title, created_at, full_url, updates[].update_type/updated_at/contents)
        # plus id, updated_at and resolved, which the v3 issues carried; which system an incident affects is not
        # in any public source for v4, so it is only in the `status` colours
        return {"id": self.id, "title": self.title, "resolved": self.resolved,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
                "full_url": f"https://status.heroku.com/incidents/{self.id}",
                "updates": [dict(u) for u in reversed(self.updates)]}


def _status_update(inc: _StatusIncident, kind: str, contents: str, when: datetime) -> dict[str, Any]:
    return {"id": inc.id * 100 + len(inc.updates) + 1, "incident_id": inc.id, "update_type": kind,
            "contents": contents, "created_at": _iso(when), "updated_at": _iso(when)}


@dataclass
class _Fault:
    pattern: re.Pattern[str]
    kind: str
    times: int | None
    delay: float
    status: int | None


@dataclass
class _Resp:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    mode: str = "normal"  # normal | drop (close, no answer) | truncated (short body) | file
    path: Path | None = None


class _ApiError(Exception):
    def __init__(self, status: int, message: str, id_: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.id = id_ or ERROR_IDS.get(status, "error")
        self.url = url


def _json_resp(status: int, obj: Any, headers: dict[str, str] | None = None) -> _Resp:
    return _Resp(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})


def _error_resp(status: int, message: str, id_: str | None = None, url: str | None = None) -> _Resp:
    # ref §0 "Error body": {id, message} and optionally url
    body: dict[str, Any] = {"id": id_ or ERROR_IDS.get(status, "error"), "message": message}
    if url:
        body["url"] = url
    return _json_resp(status, body)


def _fmt_ts(value: datetime | None, fmt: str) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime(HEROKU_TS if fmt == "heroku" else ISO_TS)


def _iso(value: datetime | None) -> str | None:
    return _fmt_ts(value, "iso")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _plan_level(plan: str) -> tuple[str, str]:
    """'heroku-postgresql:standard-0' -> ('standard', 'standard-0')."""
    level = plan.split(":", 1)[1] if ":" in plan else plan
    return level.split("-", 1)[0], level


def _is_advanced(plan: str) -> bool:
    return bool(ADVANCED_PLAN.match(_plan_level(plan)[1]))


def _plan_display(plan: str) -> str:
    """'heroku-postgresql:standard-0' -> 'Standard 0' (ref §2 info "Plan": "Standard 0")."""
    tier, level = _plan_level(plan)
    rest = level[len(tier) + 1:]
    if tier == "hobby":
        return level.capitalize()
    return f"{tier.capitalize()} {rest}".strip()


def _plan_limits(plan: str) -> tuple[int, int] | None:
    _, level = _plan_level(plan)
    if level in PLAN_LIMITS:
        return PLAN_LIMITS[level]
    return PLAN_LIMITS.get(level.rsplit("-", 1)[-1])


def _pretty_bytes(n: float) -> str:
    """'37.1 GB' style (ref §2 "Data Size")."""
    units = ("bytes", "kB", "MB", "GB", "TB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    if i == 0:
        return f"{int(n)} bytes"
    return f"{n:.0f} {units[i]}" if float(n).is_integer() else f"{n:.1f} {units[i]}"


@functools.cache
def _local_version() -> str:
    """The version an unmeasured add-on reports: that of this machine's pg_dump, which writes every dump the
    double serves (so the info and the dumps agree, as they do on Heroku); 17.5 without one."""
    from daemon.adapters.postgres.tools import tool_version

    try:
        return tool_version("pg_dump").split(")", 1)[-1].split()[0]
    except Exception:
        return "17.5"


def _measured(url: str) -> dict[str, Any]:
    """Size, tables, connections and server version of the real database behind an add-on, as Heroku measures
    them for `pg:info` (ref §2). Only a database on loopback is asked (the tests' own clusters: the double never
    reaches past this machine); an invented URL, or a database that does not answer, keeps the fixed figures."""
    if urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        return {}
    try:
        with psycopg.connect(url, connect_timeout=3, options="-c statement_timeout=5000") as conn:
            row = conn.execute(
                "SELECT pg_database_size(current_database()),"
                " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                "   WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                "   AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'),"
                " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),"
                " current_setting('server_version')").fetchone()
    except psycopg.Error:
        return {}
    if row is None:
        return {}
    return {"num_bytes": int(row[0]), "num_tables": int(row[1]), "num_connections": int(row[2]),
            "postgres_version": str(row[3]).split()[0]}


def _strip_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def pg_dump_command(pg_dump: str, url: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """Argument list and environment for `pg_dump -Fc`: the password travels in PGPASSWORD, never argv."""
    parts = urlsplit(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "5"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, hostport = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        if password:
            env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{hostport}" if user else hostport
    dsn = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return [pg_dump, "--format=custom", "--verbose", "--no-password", "--file", str(out), "--dbname", dsn], env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(proc.pid, signal.SIGKILL)


# -- Range pagination (ref §3.4) ------------------------------------------------------------------------

@dataclass
class _Range:
    field: str
    start: str | None
    start_exclusive: bool
    end: str | None
    max: int
    desc: bool


def _parse_range(header: str | None, default_field: str, page_size: int) -> _Range:
    """`<field> [[]start]..[end][; max=N][; order=desc]` with `;` or `,` between options (ref §3.4)."""
    if not header or not header.strip():
        return _Range(default_field, None, False, None, page_size, False)
    head, dots, tail = header.partition("..")
    if not dots:
        raise _ApiError(416, f"Invalid Range header: {header!r}")
    field_name, _, start = head.strip().partition(" ")
    start = start.strip()
    exclusive = start.startswith("]")
    start = start[1:].strip() if exclusive else start
    end, *options = re.split(r"[;,]", tail)
    max_n, desc = page_size, False
    for opt in options:
        key, _, value = opt.strip().partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "max":
            if not value.isdigit() or int(value) < 1:
                raise _ApiError(416, f"Invalid max in Range header: {header!r}")
            max_n = min(int(value), MAX_PAGE)
        elif key == "order":
            if value not in ("asc", "desc"):
                raise _ApiError(416, f"Invalid order in Range header: {header!r}")
            desc = value == "desc"
        elif key:
            raise _ApiError(416, f"Unknown Range parameter {key!r}")
    return _Range(field_name or default_field, start or None, exclusive, end.strip() or None, max_n, desc)


# -- the double ----------------------------------------------------------------------------------------

class HerokuDouble:
    """Heroku Platform API + Data API + signed downloads on loopback; see the module docstring."""

    def __init__(self, *, token: str = "test-token-0123456789", clock: Callable[[], datetime] | None = None,
                 rate_limit: int = 4500, refill_per_minute: float = 75.0, page_size: int = 200,
                 capture_delay: float = 0.0, url_lifetime: timedelta = timedelta(minutes=60),
                 download_tls: ssl.SSLContext | None = None, cli_data_host: str | None = None) -> None:
        self.token = token
        self._clock = clock or (lambda: datetime.now(UTC))
        self.rate_limit = rate_limit
        self.refill_per_minute = refill_per_minute
        self.page_size = min(max(1, page_size), MAX_PAGE)
        self.capture_delay = capture_delay
        self.url_lifetime = url_lifetime
        # Corrections Nov 2026: signed URLs are https (S3 presigned). With a server context (a certificate for
        # 127.0.0.1 from a throwaway CA the test trusts), the download endpoint speaks TLS and the URLs say https.
        self.download_tls = download_tls
        # The real Heroku CLI sends Data API calls to HEROKU_DATA_HOST (a host name only) on the scheme and port of
        # HEROKU_HOST (its http client replaces only the host name). With `cli_data_host`, a request that reaches
        # the platform port under that host name is served as the Data API, as the two real hosts would.
        self.cli_data_host = cli_data_host
        self.platform_url = ""
        self.data_url = ""
        self.download_url = ""
        self.requests: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._apps: dict[str, _App] = {}
        self._addons: dict[str, _Addon] = {}
        self._attachments: list[_Attachment] = []
        self._transfers: list[_Transfer] = []
        self._faults: list[_Fault] = []
        self._expire_mid: dict[str, int] = {}  # transfer uuid -> bytes served before it expires mid-download
        self._tokens = float(rate_limit)
        self._last_refill = self._now()
        self._sign_key = secrets.token_bytes(32)
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._tmpdir: Path | None = None
        self._rng = random.Random()
        self._user_id = str(uuid.uuid4())
        # OAuth authorizations (HEROKU_DOUBLE.md, API tokens): the one of the token in use, non-expiring unless a
        # test says otherwise, and the CLI session's, so a client must find its own by the token
        self.authorizations_forbidden = False
        self._authorizations: list[dict[str, Any]] = []
        self.add_authorization(token, None, "Long-lived guardian token")
        self.add_authorization("cli-session-" + secrets.token_hex(8), timedelta(days=300), "Heroku CLI login")
        self._addon_seq = 0
        self.status_url = ""
        self._incidents: dict[int, _StatusIncident] = {}
        self._incident_seq = 1000

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> HerokuDouble:
        self._tmpdir = Path(tempfile.mkdtemp(prefix="heroku-double-"))
        urls = []
        for kind in ("platform", "data", "download", "status"):
            server = _Server(("127.0.0.1", 0), _Handler)
            server.double = self
            server.kind = kind
            tls = kind == "download" and self.download_tls is not None
            if tls:
                assert self.download_tls is not None
                server.socket = self.download_tls.wrap_socket(server.socket, server_side=True)
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"heroku-double-{kind}", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
            urls.append(f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}")
        self.platform_url, self.data_url, self.download_url, self.status_url = urls
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        with self._lock:
            procs = [t.proc for t in self._transfers if t.proc is not None]
            sockets = list(self._sockets)
        for proc in procs:
            _kill_group(proc)
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for sock in sockets:  # keep-alive and held ("timeout") connections
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads + self._workers:
            thread.join(timeout=5)
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> HerokuDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clock & rate limit (ref §3.3) -----------------------------------------------------------------
    def _now(self) -> datetime:
        return _aware(self._clock())

    def _refill(self) -> None:
        now = self._now()
        elapsed = (now - self._last_refill).total_seconds()
        if elapsed > 0:
            self._tokens = min(float(self.rate_limit), self._tokens + elapsed / 60.0 * self.refill_per_minute)
        self._last_refill = now

    def _take_token(self) -> int | None:
        """One token per counted call; None when the bucket is empty."""
        with self._lock:
            self._refill()
            if self._tokens < 1:
                return None
            self._tokens -= 1
            return math.floor(self._tokens)

    def rate_remaining(self) -> int:
        with self._lock:
            self._refill()
            return math.floor(self._tokens)

    def set_rate_remaining(self, n: int) -> None:
        with self._lock:
            self._tokens = float(max(0, min(n, self.rate_limit)))
            self._last_refill = self._now()

    # -- faults -----------------------------------------------------------------------------------------
    def inject(self, route: str, kind: str, *, times: int | None = None, delay: float = 0.0,
               status: int | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if kind == "status" and status is None:
            raise ValueError("kind='status' needs status=")
        with self._lock:
            self._faults.append(_Fault(re.compile(route), kind, times, delay, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, key: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.pattern.search(key):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- request log ------------------------------------------------------------------------------------
    def request_count(self, host: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if host is None or r.host == host)

    # -- Heroku's status API (HEROKU_DOUBLE.md "Heroku's status API") ---------------------------------------
    def open_incident(self, title: str, *, systems: tuple[str, ...] = ("Data",), severity: str = "red",
                      contents: str = "We are investigating.", created_at: datetime | None = None) -> int:
        """A current incident on `systems` ("Apps", "Data", "Tools") at `severity` ("yellow" or "red"); returns
        its id (its `full_url` is https://status.heroku.com/incidents/<id>)."""
        if severity not in ("yellow", "red") or not set(systems) <= set(STATUS_SYSTEMS):
            raise ValueError(f"severity must be yellow or red and systems among {STATUS_SYSTEMS}")
        with self._lock:
            self._incident_seq += 1
            when = _aware(created_at) if created_at is not None else self._now()
            inc = _StatusIncident(self._incident_seq, title, tuple(systems), severity, when, when)
            inc.updates.append(_status_update(inc, "issue", contents, when))
            self._incidents[inc.id] = inc
            return inc.id

    def update_incident(self, incident_id: int, contents: str, *, title: str | None = None,
                        severity: str | None = None, systems: tuple[str, ...] | None = None) -> None:
        """A new update (`update_type` "update") on a current incident, optionally changing what it says."""
        with self._lock:
            inc = self._incidents[incident_id]
            now = self._now()
            inc.title, inc.severity = title or inc.title, severity or inc.severity
            inc.systems, inc.updated_at = systems or inc.systems, now
            inc.updates.append(_status_update(inc, "update", contents, now))

    def resolve_incident(self, incident_id: int, contents: str = "This incident has been resolved.") -> None:
        """The incident ends (`update_type` "resolved"): it leaves `incidents`, its systems turn green."""
        with self._lock:
            inc = self._incidents[incident_id]
            now = self._now()
            inc.resolved, inc.updated_at = True, now
            inc.updates.append(_status_update(inc, "resolved", contents, now))

    def _current_status(self) -> dict[str, Any]:
        with self._lock:
            current = [i for i in self._incidents.values() if not i.resolved]
            colours = {}
            for system in STATUS_SYSTEMS:
                hit = [i.severity for i in current if system in i.systems]
                colours[system] = "red" if "red" in hit else "yellow" if hit else "green"
            return {"status": [{"system": s, "status": colours[s]} for s in STATUS_SYSTEMS],
                    "incidents": [i.to_json() for i in sorted(current, key=lambda i: i.created_at, reverse=True)],
                    "scheduled": []}

    def _status(self, method: str, path: str) -> _Resp:
        # public and unauthenticated; CHOICE: any other path is a plain 404 (the site's own pages are HTML)
        if method == "GET" and path == "/api/v4/current-status":
            return _json_resp(200, self._current_status())
        return _Resp(404, b"Not Found", {"Content-Type": "text/plain"})

    # -- state setup ------------------------------------------------------------------------------------
    def _addon_id(self) -> str:
        """A random version-4 UUID whose first 32 bits count the add-ons created, so that sorting by id (the
        add-on list's default range field) gives them in the order they were created, the same order at every
        call. CHOICE: the real list's order is not in the sources; a stable one is what a client can rely on."""
        self._addon_seq += 1
        rand = uuid.uuid4().int & ((1 << 96) - 1)
        return str(uuid.UUID(int=(self._addon_seq << 96) | rand))

    def _new_app(self, name: str) -> _App:
        now = self._now()
        app = _App(id=str(uuid.uuid4()), name=name, created_at=now - timedelta(days=30),
                   web_host=f"{name}-{secrets.token_hex(6)}.herokuapp.com", owner_id=self._user_id)
        for kind, command in (("web", "gunicorn app:app"), ("worker", "python worker.py")):
            app.formation[kind] = {"id": str(uuid.uuid4()), "type": kind, "quantity": 1, "size": "standard-1X",
                                   "command": command, "created_at": app.created_at, "updated_at": app.created_at}
        for i, desc in enumerate(("Initial release", "Enable Logplex", "Deploy 3f2e1d0"), start=1):
            self._add_release(app, desc, app.created_at + timedelta(hours=i))
        self._apps[name] = app
        return app

    def add_release(self, app: str, description: str = "Deploy 0a1b2c3", *, created_at: datetime | None = None,
                    email: str = "owner@example.com", eligible_for_rollback: bool = True,
                    status: str = "succeeded") -> dict[str, Any]:
        """A new current release of `app` (a deploy), by `email`, created at `created_at` (default: the clock's
        now); returns it as GET /apps/{app}/releases/{id} shows it."""
        with self._lock:
            a = self._app(app)
            rel = self._add_release(a, description, created_at, email=email)
            rel["eligible_for_rollback"], rel["status"] = eligible_for_rollback, status
            return self._release_json(a, rel)

    def _add_release(self, app: _App, description: str, when: datetime | None = None,
                     slug_id: str | None = None, email: str = "owner@example.com") -> dict[str, Any]:
        for rel in app.releases:
            rel["current"] = False
        release = {"id": str(uuid.uuid4()), "version": len(app.releases) + 1, "status": "succeeded",
                   "current": True, "eligible_for_rollback": True, "description": description,
                   "created_at": when or self._now(), "slug_id": slug_id or str(uuid.uuid4()), "email": email,
                   "addon_plan_names": sorted({self._addons[a.addon_id].plan for a in self._attachments
                                               if a.app == app.name})}
        app.releases.append(release)
        return release

    def _addon_name(self, plan: str) -> str:
        service = plan.split(":", 1)[0].replace("heroku-", "")
        while True:
            name = f"{service}-{self._rng.choice(ADDON_WORDS)}-{self._rng.randint(10000, 99999)}"
            if all(a.name != name for a in self._addons.values()):
                return name

    def _fake_url(self) -> str:
        h = secrets.token_hex(4)
        return (f"postgres://u{h}:p{secrets.token_hex(16)}@ec2-10-0-{self._rng.randint(0, 255)}-"
                f"{self._rng.randint(0, 255)}.compute-1.heroku-double.invalid:5432/d{secrets.token_hex(6)}")

    def _attach(self, app: _App, addon: _Addon, name: str, namespace: str | None) -> _Attachment:
        att = _Attachment(str(uuid.uuid4()), name, app.name, addon.id, namespace, self._now())
        self._attachments.append(att)
        self._add_release(app, f"Attach {name} (@ref:{addon.name})")
        return att

    def add_app(self, name: str, *, database_url: str | None = None, plan: str = "heroku-postgresql:standard-0",
                attachment: str = "DATABASE", billing_app: str | None = None,
                namespace: str | None = None) -> AppInfo:
        with self._lock:
            app = self._apps.get(name) or self._new_app(name)
            if any(a.app == name and a.name == attachment and a.namespace == namespace for a in self._attachments):
                raise ValueError(f"app {name!r} already has an attachment {attachment!r}")
            owner_name = billing_app or name
            owner = self._apps.get(owner_name) or self._new_app(owner_name)
            addon = _Addon(id=self._addon_id(), name=self._addon_name(plan), plan=plan, billing_app=owner.name,
                           database_url=database_url or self._fake_url(), created_at=self._now() - timedelta(days=20))
            self._addons[addon.id] = addon
            if owner is not app:
                # On Heroku the owning app always holds an attachment of its add-on too.
                taken = {a.name for a in self._attachments if a.app == owner.name}
                own_name = attachment if attachment not in taken else next(
                    f"HEROKU_POSTGRESQL_{c}" for c in COLORS if f"HEROKU_POSTGRESQL_{c}" not in taken)
                self._attach(owner, addon, own_name, None)
            att = self._attach(app, addon, attachment, namespace)
            return AppInfo(app.name, app.id, addon.id, addon.name, owner.name, att.id, att.name, plan)

    def _app(self, key: str) -> _App:
        with self._lock:
            app = self._apps.get(key) or next((a for a in self._apps.values() if a.id == key), None)
        if app is None:
            raise _ApiError(404, "Couldn't find that app.")
        return app

    def _addon_for(self, app: str, attachment: str) -> _Addon:
        a = self._app(app)
        for att in self._attachments:
            if att.app == a.name and att.name == attachment:
                return self._addons[att.addon_id]
        raise ValueError(f"app {app!r} has no attachment {attachment!r}")

    def _addon_by_key(self, key: str) -> _Addon:
        """The add-on of a /client/v11/databases/{key} route. CHOICE: an Advanced-tier add-on is not found there
        (whether pg:backups serves Advanced databases is not established; see HEROKU_DOUBLE.md, Plan families)."""
        addon = self._any_addon(key)
        if _is_advanced(addon.plan):
            raise _ApiError(404, "Couldn't find that database.")
        return addon

    def _any_addon(self, key: str) -> _Addon:
        # CHOICE: also accept the add-on name (the legacy client used {resource} names, ref §1.1 notes).
        addon = self._addons.get(key) or next((a for a in self._addons.values() if a.name == key), None)
        if addon is None:
            raise _ApiError(404, "Couldn't find that database.")
        return addon

    def _next_num(self, app: _App) -> int:
        app.transfer_seq += 1
        return app.transfer_seq

    def _num_keep(self, addon: _Addon, scheduled: bool) -> int:
        if not scheduled and addon.manual_keep is not None:
            return addon.manual_keep
        return SCHEDULED_KEEP if scheduled else MANUAL_KEEP.get(_plan_level(addon.plan)[0], 25)

    def add_authorization(self, token: str, lifetime: timedelta | None, description: str) -> str:
        """An OAuth authorization whose access token `token` expires `lifetime` from now (None: never; a negative
        lifetime: already expired); the authorization of an existing token is replaced. Returns its id."""
        now = self._now()
        auth_id = str(uuid.uuid4())
        with self._lock:
            self._authorizations = [a for a in self._authorizations if a["token"] != token]
            self._authorizations.append({"id": auth_id, "token": token, "description": description,
                                         "expires_at": None if lifetime is None else now + lifetime,
                                         "created_at": now - timedelta(days=1)})
        return auth_id

    def set_generation(self, app: str, generation: str) -> None:
        """Make `app` a Cedar or a Fir app: its `generation` and its process types' default size (Cedar
        "standard-1X", Fir "dyno-1c-0.5gb"; HEROKU_DOUBLE.md, Formations on Cedar and Fir)."""
        if generation not in GENERATION_SIZES:
            raise ValueError(f"generation must be one of {sorted(GENERATION_SIZES)}, got {generation!r}")
        with self._lock:
            a = self._apps[app]
            a.generation = generation
            for f in a.formation.values():
                f["size"] = GENERATION_SIZES[generation]

    def set_formation_size(self, app: str, process_type: str, size: str) -> None:
        """Set one process type's dyno size as a person would (e.g. "eco", "basic", "dyno-2c-4gb")."""
        with self._lock:
            self._formation_of(self._apps[app], process_type)["size"] = size

    def refuse_formation(self, app: str, process_type: str, status: int, body: dict[str, Any] | None) -> None:
        """Answer every change of `process_type`'s formation with `status` and `body` (None: accept again)."""
        with self._lock:
            if body is None:
                self._apps[app].refusals.pop(process_type, None)
            else:
                self._apps[app].refusals[process_type] = (status, dict(body))

    def set_manual_keep(self, app: str, keep: int, *, attachment: str = "DATABASE") -> None:
        """EXTRA: the add-on's manual backup limit (num_keep of its manual backups), for tests of expiry."""
        with self._lock:
            addon = self._addon_for(app, attachment)
            addon.manual_keep = keep
            for t in self._transfers:
                if t.addon_id == addon.id and t.schedule_uuid is None and t.to_type == "gof3r":
                    t.num_keep = keep

    def _expire_manual(self, addon: _Addon) -> None:
        """ref §5.3 and Corrections Nov 2026: when a manual capture *finishes* successfully, the successful manual
        backups of the add-on beyond `num_keep` (the oldest first) are marked deleted, and so leave the list.
        Called with the lock held, after the capture's transfer is marked succeeded."""
        manual = [t for t in self._transfers if t.addon_id == addon.id and t.from_type == "pg_dump"
                  and t.to_type == "gof3r" and t.schedule_uuid is None and t.deleted_at is None
                  and t.purged_at is None and t.finished_at is not None and t.succeeded]
        now = self._now()
        for old in sorted(manual, key=lambda t: t.created_at)[:max(0, len(manual) - self._num_keep(addon, False))]:
            old.deleted_at = old.updated_at = now
            old.logs.append({"created_at": now, "level": "info", "message": "Expired: manual backup limit reached"})

    def _to_url(self, app: _App, t_uuid: str, when: datetime) -> str:
        return f"https://xfrtu.s3.amazonaws.com/{app.id}/{when.strftime('%Y-%m-%dT%H:%M:%SZ')}/{t_uuid}"

    def add_transfer(self, app: str, *, scheduled: bool = True, state: str = "finished",
                     created_at: datetime | None = None, started_at: datetime | None = None,
                     finished_at: datetime | None = None, processed_bytes: int = 1000, source_bytes: int = 5000,
                     warnings: int = 0, deleted: bool = False, purged: bool = False,
                     pgbackups_name: str | None = None, from_type: str = "pg_dump", to_type: str = "gof3r",
                     timestamp_format: str = "heroku", logs: list[dict[str, Any]] | None = None,
                     attachment: str = "DATABASE", num_keep: int | None = None) -> dict[str, Any]:
        if state not in TRANSFER_STATES:
            raise ValueError(f"state must be one of {TRANSFER_STATES}")
        if timestamp_format not in ("heroku", "iso"):
            raise ValueError("timestamp_format must be 'heroku' or 'iso'")
        with self._lock:
            addon = self._addon_for(app, attachment)
            owner = self._apps[addon.billing_app]
            now = self._now()
            created = _aware(created_at) if created_at else now - timedelta(minutes=2)
            started = finished = None
            if state != "created":
                started = _aware(started_at) if started_at else created + timedelta(seconds=1)
            if state in ("finished", "failed", "canceled"):
                finished = _aware(finished_at) if finished_at else (started or created) + timedelta(seconds=60)
            t_uuid = str(uuid.uuid4())
            is_backup = to_type == "gof3r"
            restore_like = to_type == "pg_restore"
            t = _Transfer(
                uuid=t_uuid, num=self._next_num(owner), app=owner.name, addon_id=addon.id,
                from_type=from_type, to_type=to_type,
                from_name=attachment if not (restore_like and from_type != "pg_dump") else "BACKUP",
                to_name="BACKUP" if is_backup else attachment,
                from_url=addon.database_url if from_type == "pg_dump" else self._to_url(owner, t_uuid, created),
                to_url=self._to_url(owner, t_uuid, created) if is_backup else addon.database_url,
                created_at=created, ts_format=timestamp_format,
                updated_at=max(x for x in (created, started, finished) if x is not None),
                started_at=started, finished_at=finished,
                canceled_at=finished if state == "canceled" else None,
                succeeded=state == "finished", processed_bytes=processed_bytes, source_bytes=source_bytes,
                warnings=warnings,
                num_keep=num_keep if num_keep is not None else self._num_keep(addon, scheduled),
            )
            if scheduled and from_type == "pg_dump" and is_backup:
                t.schedule_uuid = addon.schedules[0]["uuid"] if addon.schedules else str(uuid.uuid4())
            if pgbackups_name:
                t.options["pgbackups_name"] = pgbackups_name
            if deleted or purged:
                t.deleted_at = (finished or created) + timedelta(days=1)
            if purged:
                t.purged_at = (finished or created) + timedelta(days=2)
            if logs is not None:
                t.logs = [dict(entry) for entry in logs]
            else:
                t.logs = [{"created_at": created, "level": "info", "message": "Transfer created"}]
                if started:
                    t.logs.append({"created_at": started, "level": "info", "message": "Starting transfer"})
                if finished:
                    msg = {"finished": "Transfer completed", "failed": "pg_dump: error: connection failed",
                           "canceled": "Transfer canceled"}[state]
                    t.logs.append({"created_at": finished, "level": "info" if state == "finished" else "error",
                                   "message": msg})
            self._transfers.append(t)
            return self._transfer_json(t, verbose=True)

    def add_schedule(self, app: str, *, hour: int | str = 2, timezone: str = "UTC", attachment: str = "DATABASE",
                     created_at: datetime | None = None) -> dict[str, Any]:
        """A schedule that exists already: created with the add-on unless `created_at` says when."""
        with self._lock:
            addon = self._addon_for(app, attachment)
            return dict(self._upsert_schedule(addon, f"{attachment}_URL", int(hour), timezone,
                                              created_at or addon.created_at))

    def _upsert_schedule(self, addon: _Addon, name: str, hour: int, tz: str,
                         created: datetime | None = None) -> dict[str, Any]:
        # CHOICE: creating a schedule for a name that already has one replaces its hour/timezone
        # (`pg:backups:schedule` is also how users change the time, ref §1.5).
        now = _fmt_ts(created or self._now(), "heroku")
        for sched in addon.schedules:
            if sched["name"].lower() == name.lower():
                sched.update(hour=hour, timezone=tz, updated_at=_fmt_ts(self._now(), "heroku"))
                return sched
        # Corrections Nov 2026: the schedule object also carries days, created_at, updated_at, deleted_at,
        # retain_weeks and retain_months (the CLI reads only name, hour and timezone). CHOICE: the values, which
        # the sources do not give: every day, 4 weekly and 12 monthly backups kept, never deleted while listed.
        sched = {"uuid": str(uuid.uuid4()), "name": name, "hour": hour, "timezone": tz, "days": list(WEEKDAYS),
                 "created_at": now, "updated_at": now, "deleted_at": None, "retain_weeks": 4, "retain_months": 12}
        addon.schedules.append(sched)
        return sched

    def set_advanced(self, app: str, *, attachment: str = "DATABASE", continuous_protection: bool | None = None,
                     rollback_enabled: bool | None = None, rollback_window: timedelta | None = None,
                     rollback_lag: timedelta | None = None) -> None:
        """What an Advanced database's info reports: its continuous protection flag, whether rollback is enabled,
        and its rollback window, earliest = clock - window (not before the add-on's creation), latest = clock -
        lag; both move with the double's clock."""
        with self._lock:
            addon = self._addon_for(app, attachment)
            if not _is_advanced(addon.plan):
                raise ValueError(f"{addon.plan} is not an Advanced-tier plan")
            if continuous_protection is not None:
                addon.continuous_protection = continuous_protection
            if rollback_enabled is not None:
                addon.rollback_enabled = rollback_enabled
            if rollback_window is not None:
                addon.rollback_window = rollback_window
            if rollback_lag is not None:
                addon.rollback_lag = rollback_lag

    def set_database_info(self, app: str, *, attachment: str = "DATABASE", **fields: Any) -> None:
        with self._lock:
            addon = self._addon_for(app, attachment)
            if "info" in fields:
                addon.info_override = fields.pop("info")
            if "status" in fields:
                addon.status = fields.pop("status")
            if "waiting" in fields:
                fields["waiting?"] = fields.pop("waiting")
            if "hot_standby" in fields:
                fields["hot_standby?"] = fields.pop("hot_standby")
            if "database_url" in fields:
                addon.database_url = fields.pop("database_url")
            addon.info_fields.update(fields)

    def set_dump_file(self, app: str, num: int, path: Path) -> None:
        """Serve `path` (streamed from disk) at the transfer's signed download URL, and report its size as
        `processed_bytes`: for big dumps of random bytes without holding them in memory."""
        with self._lock:
            a = self._app(app)
            t = next(x for x in self._visible_transfers(a) if x.num == num)
            t.dump_path = path
            t.processed_bytes = path.stat().st_size

    def expire_during_download(self, app: str, num: int, *, after_bytes: int) -> None:
        """The next download of transfer `num` sends `after_bytes` bytes and breaks off, and the transfer is
        deleted at that moment, as when Heroku's retention expires a backup while it is being read: its info then
        answers 410 and its object is gone."""
        with self._lock:
            a = self._app(app)
            t = next(x for x in self._visible_transfers(a) if x.num == num)
            self._expire_mid[t.uuid] = after_bytes

    def finish_running(self, app: str, *, succeeded: bool = True, processed_bytes: int | None = None) -> None:
        with self._lock:
            a = self._app(app)
            now = self._now()
            procs = []
            for t in self._visible_transfers(a):
                if t.finished_at is None:
                    t.started_at = t.started_at or now
                    t.finished_at = t.updated_at = now
                    t.succeeded = succeeded
                    if processed_bytes is not None:
                        t.processed_bytes = processed_bytes
                    t.logs.append({"created_at": now, "level": "info" if succeeded else "error",
                                   "message": "Transfer completed" if succeeded else "Transfer failed"})
                    self._expire_after(t)
                    if t.proc is not None:
                        procs.append(t.proc)
        for proc in procs:
            _kill_group(proc)

    # -- JSON shapes ------------------------------------------------------------------------------------
    def _transfer_json(self, t: _Transfer, verbose: bool = False) -> dict[str, Any]:
        """Every field of ref §1.2; `schedule` only for scheduled ones, `logs` only when verbose."""
        f = t.ts_format
        out: dict[str, Any] = {
            "uuid": t.uuid, "num": t.num, "from_name": t.from_name, "from_type": t.from_type,
            "from_url": t.from_url, "to_name": t.to_name, "to_type": t.to_type, "to_url": t.to_url,
            "options": dict(t.options), "source_bytes": t.source_bytes, "processed_bytes": t.processed_bytes,
            "succeeded": t.succeeded, "warnings": t.warnings,
            "created_at": _fmt_ts(t.created_at, f), "started_at": _fmt_ts(t.started_at, f),
            "finished_at": _fmt_ts(t.finished_at, f), "updated_at": _fmt_ts(t.updated_at, f),
            "canceled_at": _fmt_ts(t.canceled_at, f), "deleted_at": _fmt_ts(t.deleted_at, f),
            "purged_at": _fmt_ts(t.purged_at, f), "num_keep": t.num_keep,
        }
        if t.schedule_uuid:
            out["schedule"] = {"uuid": t.schedule_uuid}
        if verbose:
            out["logs"] = [{**entry, "created_at": _fmt_ts(entry["created_at"], f)
                            if isinstance(entry.get("created_at"), datetime) else entry.get("created_at")}
                           for entry in t.logs]
        return out

    def _ref(self, app: _App) -> dict[str, str]:
        return {"id": app.id, "name": app.name}

    def _plan_ref(self, plan: str) -> dict[str, str]:
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "plan:" + plan)), "name": plan}

    def _config_vars(self, app: _App) -> dict[str, str]:
        out = {f"{a.name}_URL": self._addons[a.addon_id].database_url for a in self._attachments if a.app == app.name}
        out.update(app.extra_config)
        return out

    def _attachment_json(self, att: _Attachment, include_plan: bool) -> dict[str, Any]:
        """ref §4 step 2: addon.plan only through `Accept-Inclusion: addon:plan`; the rest per [PAPI-schema]."""
        addon = self._addons[att.addon_id]
        addon_obj: dict[str, Any] = {"id": addon.id, "name": addon.name,
                                     "app": self._ref(self._apps[addon.billing_app])}
        if include_plan:
            addon_obj["plan"] = self._plan_ref(addon.plan)
        return {"id": att.id, "name": att.name, "namespace": att.namespace,
                "app": self._ref(self._apps[att.app]), "addon": addon_obj, "config_vars": [f"{att.name}_URL"],
                "created_at": _iso(att.created_at), "updated_at": _iso(att.created_at),
                "web_url": f"https://data.heroku.com/datastores/{addon.id}", "log_input_url": None}

    def _addon_json(self, addon: _Addon) -> dict[str, Any]:
        owner = self._apps[addon.billing_app]
        service = addon.plan.split(":", 1)[0]
        return {"id": addon.id, "name": addon.name, "app": self._ref(owner),
                "addon_service": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "service:" + service)), "name": service},
                "plan": self._plan_ref(addon.plan), "state": "provisioned",
                "config_vars": [f"{a.name}_URL" for a in self._attachments
                                if a.addon_id == addon.id and a.app == owner.name],
                "provider_id": f"resource{abs(hash(addon.id)) % 10**9}@heroku.com", "actions": [],
                "billing_entity": {"id": owner.id, "name": owner.name, "type": "app"},
                "created_at": _iso(addon.created_at), "updated_at": _iso(addon.created_at),
                "web_url": f"https://data.heroku.com/datastores/{addon.id}"}

    def _formation_json(self, app: _App, f: dict[str, Any]) -> dict[str, Any]:
        # ref §3.2 formation
        return {"id": f["id"], "type": f["type"], "quantity": f["quantity"], "size": f["size"],
                "dyno_size": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "size:" + f["size"].lower())),
                              # Fir's sizes are lower case as the CLI lists them (ps/type.ts)
                              "name": f["size"] if f["size"].startswith("dyno-") else
                              f["size"][:1].upper() + f["size"][1:]},
                "command": f["command"], "app": self._ref(app),
                "created_at": _iso(f["created_at"]), "updated_at": _iso(f["updated_at"])}

    def _release_json(self, app: _App, r: dict[str, Any]) -> dict[str, Any]:
        # ref §3.2 release
        return {"id": r["id"], "version": r["version"], "status": r["status"], "current": r["current"],
                "eligible_for_rollback": r["eligible_for_rollback"], "description": r["description"],
                "created_at": _iso(r["created_at"]), "updated_at": _iso(r["created_at"]), "app": self._ref(app),
                "slug": {"id": r["slug_id"]}, "user": {"id": self._user_id, "email": r["email"]},
                "addon_plan_names": list(r["addon_plan_names"]),
                "artifacts": [{"type": "slug", "id": r["slug_id"]}], "output_stream_url": None}

    def _dynos(self, app: _App) -> list[dict[str, Any]]:
        # ref §3.2 dyno; derived from the formation so scaling shows up here
        current = next(r for r in reversed(app.releases) if r["current"])
        out = []
        for f in app.formation.values():
            for i in range(1, f["quantity"] + 1):
                name = f"{f['type']}.{i}"
                out.append({"id": str(uuid.uuid5(uuid.UUID(app.id), name)), "name": name, "type": f["type"],
                            "state": "up", "size": f["size"], "command": f["command"], "attach_url": None,
                            "release": {"id": current["id"], "version": current["version"]},
                            "app": self._ref(app), "created_at": _iso(f["updated_at"]),
                            "updated_at": _iso(f["updated_at"])})
        return out

    def _app_json(self, app: _App) -> dict[str, Any]:
        # ref §3.2 app (subset)
        released = app.releases[-1]["created_at"] if app.releases else app.created_at
        stack = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "stack:heroku-24")), "name": "heroku-24"}
        return {"id": app.id, "name": app.name, "acm": False, "archived_at": None, "build_stack": stack,
                "buildpack_provided_description": "Python", "created_at": _iso(app.created_at),
                "generation": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "gen:" + app.generation)),
                               "name": app.generation},
                "git_url": f"https://git.heroku.com/{app.name}.git", "internal_routing": None,
                "maintenance": False, "owner": {"id": app.owner_id, "email": "owner@example.com"},
                "organization": None, "team": None,
                "process_tier": app.process_tier,  # Corrections Nov 2026: the CLI's ps reads it (eco quota)
                "region": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, "region:us")), "name": "us"},
                "released_at": _iso(released), "repo_size": None, "slug_size": 52_428_800, "space": None,
                "stack": stack, "updated_at": _iso(released), "web_url": f"https://{app.web_host}/"}

    def _db_info_json(self, addon: _Addon, measured: dict[str, Any] | None = None) -> dict[str, Any]:
        """ref §2 response shape; the `info` array is generated from the fields unless overridden. `measured`:
        the real database's figures (`_measured`, read without the double's lock), else the fixed ones."""
        now = self._now()
        parts = urlsplit(addon.database_url)
        fields: dict[str, Any] = {
            "addon_id": addon.id, "name": addon.name, "plan": _plan_display(addon.plan),
            "created_at": _fmt_ts(addon.created_at, "heroku"), "resource_url": _strip_credentials(addon.database_url),
            "database_name": parts.path.lstrip("/"), "database_user": unquote(parts.username or ""),
            "num_bytes": 8_912_896, "num_tables": 5, "num_connections": 3, "postgres_version": _local_version(),
            "following": None, "forked_from": None, "leader": None, "hot_standby?": False, "waiting?": False,
        }
        fields.update(measured or {})
        fields.update(addon.info_fields)
        if addon.info_override is not None:
            fields["info"] = [dict(e) for e in addon.info_override]
            return fields
        tier, _ = _plan_level(addon.plan)
        standard_up = tier in ROLLBACK_DAYS
        limits = _plan_limits(addon.plan)
        size = _pretty_bytes(fields["num_bytes"])
        if limits:
            pct = fields["num_bytes"] / (limits[0] * 1024**3) * 100
            size = f"{size} / {limits[0]} GB ({pct:.2f}%)"
        info: list[dict[str, Any]] = [
            {"name": "Plan", "values": [fields["plan"]]},
            {"name": "Status", "values": [addon.status]},
            {"name": "Data Size", "values": [size]},
            {"name": "Tables", "values": [str(fields["num_tables"])]},
            {"name": "PG Version", "values": [str(fields["postgres_version"])]},
            {"name": "Connections", "values": [f"{fields['num_connections']}/{limits[1]}" if limits
                                               else str(fields["num_connections"])]},
            # Essential has no fork/follow/rollback (ref §5.1): an empty values list, which the CLI skips (ref §2.4)
            {"name": "Fork/Follow", "values": ["Available"] if standard_up else []},
        ]
        if standard_up:
            earliest = max(addon.created_at, now - timedelta(days=ROLLBACK_DAYS[tier]))
            info.append({"name": "Rollback", "values": [f"earliest from {earliest.strftime('%Y-%m-%d %H:%M')} UTC"]})
        if standard_up:  # CHOICE: Essential plans, which offer none (ref §5.2), show no such line
            info.append({"name": "Continuous Protection", "values": ["On"]})
        if fields.get("following"):
            info.append({"name": "Following", "resolve_db_name": True, "values": [fields["following"]]})
        if fields.get("forked_from"):
            info.append({"name": "Forked From", "resolve_db_name": True, "values": [fields["forked_from"]]})
        fields["info"] = info
        return fields

    # -- routing ----------------------------------------------------------------------------------------
    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def _dispatch(self, host: str, method: str, path: str, query: str, headers: Message, body: bytes) -> _Resp:
        fault = self._take_fault(f"{method} {path}")
        if fault is not None:
            resp = self._fault_resp(fault)
            if resp is not None:
                return resp
        if host == "download":
            return self._download(method, path, query)
        if host == "status":
            return self._status(method, path)
        return self._api(host, method, path, query, headers, body)

    def _fault_resp(self, fault: _Fault) -> _Resp | None:
        kind = fault.kind
        if kind == "slow":
            self._stop.wait(fault.delay)
            return None
        if kind == "timeout":
            self._stop.wait(fault.delay or 30.0)
            return _Resp(0, mode="drop")
        if kind == "429":
            # ref §3.3: rate_limit body, no Retry-After
            resp = _error_resp(429, "Your account reached the API rate limit", "rate_limit", RATE_LIMIT_URL)
            resp.headers["RateLimit-Remaining"] = "0"
            return resp
        if kind == "500":
            return _error_resp(500, "Internal server error.")
        if kind == "503":
            return _error_resp(503, "The service is temporarily unavailable. Please try again later.")
        if kind == "404":
            return _error_resp(404, "Couldn't find that resource.", "not_found")
        if kind == "malformed":
            return _Resp(200, b'{"uuid": "0b0c", "num": 10, "from_name": <html>oops',
                         {"Content-Type": "application/json"})
        if kind == "truncated":
            return _Resp(200, b'[{"uuid": "0b0c4bde-1', {"Content-Type": "application/json"}, mode="truncated")
        status = fault.status or 500
        return _error_resp(status, f"Injected HTTP {status}.")

    def _api(self, host: str, method: str, path: str, query: str, headers: Message, body: bytes) -> _Resp:
        scheme, _, credential = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(credential.strip(), self.token):
            # ref §0 Auth; CHOICE: 401s do not spend tokens (the bucket is per account)
            return _error_resp(401, "Invalid credentials provided.", "unauthorized")
        remaining: int | None = None
        if not (host == "platform" and method == "GET" and path == "/account/rate-limits"):  # ref §3.1
            remaining = self._take_token()
            if remaining is None:
                resp = _error_resp(429, "Your account reached the API rate limit", "rate_limit", RATE_LIMIT_URL)
                resp.headers["RateLimit-Remaining"] = "0"
                return resp
        try:
            resp = self._route(host, method, path, parse_qs(query), headers, body)
        except _ApiError as err:
            resp = _error_resp(err.status, err.message, err.id, err.url)
        if remaining is not None:
            resp.headers["RateLimit-Remaining"] = str(remaining)
        return resp

    def _route(self, host: str, method: str, path: str, query: dict[str, list[str]], headers: Message,
               body: bytes) -> _Resp:
        for r_host, r_method, pattern, name in _ROUTES:
            if r_host == host and r_method == method:
                m = pattern.fullmatch(path)
                if m:
                    payload: Any = None
                    if body.strip():
                        try:
                            payload = json.loads(body)
                        except ValueError:
                            raise _ApiError(400, "Invalid JSON in request body.") from None
                    handler = getattr(self, name)
                    return handler(_Ctx(m.groupdict(), query, headers, payload))
        raise _ApiError(404, NOT_FOUND_ROUTE)

    def _paginate(self, items: list[dict[str, Any]], headers: Message,
                  keys: dict[str, Callable[[dict[str, Any]], Any]], default: str) -> _Resp:
        """ref §3.4: Range header, 206 + Next-Range when truncated, 200 on the last page."""
        rng = _parse_range(headers.get("Range"), default, self.page_size)
        if rng.field not in keys:
            raise _ApiError(416, f"Range field {rng.field!r} not supported; use one of {sorted(keys)}")
        key = keys[rng.field]
        ordered = sorted(items, key=key, reverse=rng.desc)

        def conv(v: str) -> Any:
            if ordered and isinstance(key(ordered[0]), int):
                try:
                    return int(v)
                except ValueError:
                    raise _ApiError(416, f"Invalid Range value {v!r}") from None
            return v

        if rng.start is not None:
            s = conv(rng.start)
            if rng.desc:
                ordered = [i for i in ordered if (key(i) < s if rng.start_exclusive else key(i) <= s)]
            else:
                ordered = [i for i in ordered if (key(i) > s if rng.start_exclusive else key(i) >= s)]
        if rng.end is not None:
            e = conv(rng.end)
            ordered = [i for i in ordered if (key(i) >= e if rng.desc else key(i) <= e)]
        page = ordered[:rng.max]
        hdrs = {"Accept-Ranges": ", ".join(sorted(keys))}
        if page:
            hdrs["Content-Range"] = f"{rng.field} {key(page[0])}..{key(page[-1])}"
        status = 200
        if len(ordered) > rng.max:
            status = 206
            hdrs["Next-Range"] = (f"{rng.field} ]{key(page[-1])}..; max={rng.max}"
                                  + ("; order=desc" if rng.desc else ""))
        return _json_resp(status, page, hdrs)

    # -- Data API handlers (ref §1, §2) -----------------------------------------------------------------
    def _visible_transfers(self, app: _App) -> list[_Transfer]:
        """CHOICE: an app sees the transfers numbered under it plus those of add-ons attached to it."""
        attached = {a.addon_id for a in self._attachments if a.app == app.name}
        return [t for t in self._transfers if t.app == app.name or t.addon_id in attached]

    def _find_transfer(self, app: _App, key: str) -> _Transfer:
        """The transfer `key` (num or uuid) of `app`. Corrections Nov 2026: a deleted one answers 410 Gone (GET,
        DELETE, public-url, cancel), not 404: the backup existed and no longer does."""
        visible = self._visible_transfers(app)
        if key.isdigit():  # ref §1.1: num or uuid
            found = sorted((t for t in visible if t.num == int(key)), key=lambda t: t.app != app.name)
        else:
            found = [t for t in visible if t.uuid == key]
        if not found:
            raise _ApiError(404, "Couldn't find that transfer.")
        if found[0].deleted_at is not None:
            # CHOICE: the message; the transfer service's wording for 410 is not in the sources
            raise _ApiError(410, "That backup has been deleted.")
        return found[0]

    def h_transfers(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            # Corrections Nov 2026: the service lists transfers `where deleted_at is null`
            items = [self._transfer_json(t) for t in self._visible_transfers(app) if t.deleted_at is None]
        iso_created = {t.uuid: _iso(t.created_at) for t in self._transfers}
        return self._paginate(items, c.headers, {"num": lambda i: i["num"], "uuid": lambda i: i["uuid"],
                                                 "id": lambda i: i["uuid"],
                                                 "created_at": lambda i: iso_created[i["uuid"]]}, "num")

    def h_transfer(self, c: _Ctx) -> _Resp:
        verbose = c.query.get("verbose", ["false"])[-1].lower() == "true"  # ref §1.1: logs only with verbose
        with self._lock:
            t = self._find_transfer(self._app(c.params["app"]), c.params["x"])
            return _json_resp(200, self._transfer_json(t, verbose=verbose))

    def h_transfer_delete(self, c: _Ctx) -> _Resp:
        with self._lock:
            t = self._find_transfer(self._app(c.params["app"]), c.params["x"])
            now = self._now()
            t.deleted_at = t.deleted_at or now
            t.updated_at = now
            return _json_resp(200, self._transfer_json(t))  # ref §1.1: 200 (CHOICE: body is the transfer)

    def h_public_url(self, c: _Ctx) -> _Resp:
        with self._lock:
            t = self._find_transfer(self._app(c.params["app"]), c.params["x"])
            if t.to_type != "gof3r" or not t.succeeded or t.finished_at is None:
                # Corrections Nov 2026: 400 for a transfer that is not a completed backup
                raise _ApiError(400, "Can only generate public URL for completed transfers")
            now = self._now()
            expires = int(self.url_lifetime.total_seconds())
            date = now.strftime("%Y%m%dT%H%M%SZ")
            sig = self._sign(t.uuid, date, expires)
            url = (f"{self.download_url}/xfrtu/{t.uuid}/backup.dump?X-Amz-Date={date}&X-Amz-Expires={expires}"
                   f"&X-Amz-Signature={sig}")
            # ref §1.6: {url, expires_at}; Corrections Nov 2026: created with 201
            return _json_resp(201, {"url": url, "expires_at": _fmt_ts(now + self.url_lifetime, t.ts_format)})

    def h_cancel(self, c: _Ctx) -> _Resp:
        proc = None
        with self._lock:
            t = self._find_transfer(self._app(c.params["app"]), c.params["x"])
            if t.finished_at is None:  # CHOICE: cancelling a finished transfer changes nothing
                now = self._now()
                t.canceled_at = t.finished_at = t.updated_at = now
                t.succeeded = False
                t.logs.append({"created_at": now, "level": "info", "message": "Transfer canceled by user"})
                proc = t.proc
        if proc is not None:
            _kill_group(proc)
        return _json_resp(200, {})  # ref §1.1: {}

    def h_db_info(self, c: _Ctx) -> _Resp:
        with self._lock:
            url = self._addon_by_key(c.params["addon"]).database_url
        measured = _measured(url)  # a connection to the real database: never while holding the double's lock
        with self._lock:
            return _json_resp(200, self._db_info_json(self._addon_by_key(c.params["addon"]), measured))

    def h_advanced_info(self, c: _Ctx) -> _Resp:
        """heroku/cli src/lib/data/types.ts `InfoResponse`, the fields data:pg:info reads."""
        with self._lock:
            addon = self._any_addon(c.params["addon"])
            if not _is_advanced(addon.plan):
                raise _ApiError(404, "Couldn't find that database.")  # CHOICE: the CLI never asks for one
            return _json_resp(200, self._advanced_info_json(addon))

    def _advanced_info_json(self, addon: _Addon) -> dict[str, Any]:
        now = self._now()
        app = self._apps[addon.billing_app]
        rollback: dict[str, Any] = {"enabled": addon.rollback_enabled, "earliest_time": None, "latest_time": None}
        if addon.rollback_enabled and addon.continuous_protection:
            rollback["earliest_time"] = _iso(max(addon.created_at, now - addon.rollback_window))
            rollback["latest_time"] = _iso(now - addon.rollback_lag)
        tables = int(addon.info_fields.get("num_tables", 5))
        return {
            "addon": {"id": addon.id, "name": addon.name}, "app": {"id": app.id, "name": app.name},
            "created_at": _iso(addon.created_at),
            "features": {"continuous_protection": {"enabled": addon.continuous_protection},
                         "credentials": {"current_count": 1, "enabled": True},
                         "data_encryption": {"enabled": True}, "fork": {"enabled": True},
                         "highly_available": {"enabled": False}, "rollback": rollback},
            "forked_from": None,
            "plan_limits": [{"name": "table-limit", "current": tables, "limit": 4000}],
            "pools": [], "quotas": [], "region": "us", "status": "available", "tier": "advanced",
            "version": _local_version(),
        }

    def h_wait_status(self, c: _Ctx) -> _Resp:
        with self._lock:
            info = self._db_info_json(self._addon_by_key(c.params["addon"]))
            addon = self._addon_by_key(c.params["addon"])
        waiting = bool(info.get("waiting?"))
        return _json_resp(200, {"waiting?": waiting, "error?": addon.status.lower() == "error",
                                "message": "Provisioning" if waiting else addon.status})  # ref §1.1 pg:wait

    def _new_transfer(self, addon: _Addon, from_type: str, to_type: str, from_name: str, to_name: str,
                      from_url: str, to_url: str | None) -> _Transfer:
        owner = self._apps[addon.billing_app]
        now = self._now()
        t_uuid = str(uuid.uuid4())
        t = _Transfer(uuid=t_uuid, num=self._next_num(owner), app=owner.name, addon_id=addon.id,
                      from_type=from_type, to_type=to_type, from_name=from_name, to_name=to_name,
                      from_url=from_url, to_url=to_url or self._to_url(owner, t_uuid, now), created_at=now,
                      ts_format="heroku", updated_at=now, num_keep=self._num_keep(addon, False),
                      source_bytes=int(self._db_info_json(addon)["num_bytes"]))
        t.logs.append({"created_at": now, "level": "info", "message": "Transfer created"})
        self._transfers.append(t)
        return t

    def _primary_attachment(self, addon: _Addon) -> str:
        atts = [a for a in self._attachments if a.addon_id == addon.id]
        own = [a for a in atts if a.app == addon.billing_app]
        return (own or atts)[0].name if atts else "DATABASE"

    def h_capture(self, c: _Ctx) -> _Resp:
        with self._lock:
            addon = self._addon_by_key(c.params["addon"])
            t = self._new_transfer(addon, "pg_dump", "gof3r", self._primary_attachment(addon), "BACKUP",
                                   addon.database_url, None)
            body = self._transfer_json(t)
        self._spawn(self._run_capture, t)
        return _json_resp(200, body)  # ref §6: 200 with a transfer in state created

    def h_restore(self, c: _Ctx) -> _Resp:
        payload = c.payload or {}
        if not isinstance(payload, dict) or not payload.get("backup_url"):
            raise _ApiError(422, "backup_url is required.")
        with self._lock:
            addon = self._addon_by_key(c.params["addon"])
            t = self._new_transfer(addon, "gof3r", "pg_restore", "BACKUP", self._primary_attachment(addon),
                                   str(payload["backup_url"]), addon.database_url)
            if payload.get("extensions"):
                t.options["extensions"] = list(payload["extensions"])
            body = self._transfer_json(t)
        self._spawn(self._run_simulated, t)
        return _json_resp(200, body)

    def h_copy(self, c: _Ctx) -> _Resp:
        payload = c.payload if isinstance(c.payload, dict) else {}
        with self._lock:
            addon = self._addon_by_key(c.params["addon"])
            t = self._new_transfer(addon, "pg_dump", "pg_restore", str(payload.get("from_name", "")),
                                   str(payload.get("to_name", "")), str(payload.get("from_url", "")),
                                   str(payload.get("to_url", "")))
            body = self._transfer_json(t)
        self._spawn(self._run_simulated, t)
        return _json_resp(200, body)

    def h_schedules(self, c: _Ctx) -> _Resp:
        with self._lock:
            items = [dict(s) for s in self._addon_by_key(c.params["addon"]).schedules]
        return self._paginate(items, c.headers, {"uuid": lambda s: s["uuid"], "id": lambda s: s["uuid"],
                                                 "name": lambda s: s["name"]}, "name")

    def h_schedule_create(self, c: _Ctx) -> _Resp:
        p = c.payload if isinstance(c.payload, dict) else {}
        hour = p.get("hour")
        if isinstance(hour, str) and re.fullmatch(r"\d{1,2}", hour.strip()):
            hour = int(hour)
        if not isinstance(hour, int) or isinstance(hour, bool) or not 0 <= hour <= 23:
            raise _ApiError(422, "hour must be an integer between 0 and 23.")
        tz = p.get("timezone") or "UTC"
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(str(tz))
        except Exception:
            # ref §1.5: transferatu is "picky about tz names"
            raise _ApiError(422, f"Invalid timezone: {tz}.") from None
        name = p.get("schedule_name")
        if not name:
            raise _ApiError(422, "schedule_name is required.")
        with self._lock:
            self._upsert_schedule(self._addon_by_key(c.params["addon"]), str(name), hour, str(tz))
        return _Resp(201)  # ref §1.1: 201 with no body

    def h_schedule_delete(self, c: _Ctx) -> _Resp:
        with self._lock:
            addon = self._addon_by_key(c.params["addon"])
            found = [s for s in addon.schedules if s["uuid"] == c.params["sched"]]
            if not found:
                raise _ApiError(404, "Couldn't find that schedule.")
            addon.schedules.remove(found[0])
        return _json_resp(200, dict(found[0]))  # ref §1.1: 200 (CHOICE: body is the deleted schedule)

    # -- background work --------------------------------------------------------------------------------
    def _spawn(self, target: Callable[[_Transfer], None], t: _Transfer) -> None:
        thread = threading.Thread(target=target, args=(t,), name=f"heroku-double-{t.uuid[:8]}", daemon=True)
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(thread)
        thread.start()

    def _begin(self, t: _Transfer, message: str) -> bool:
        if self._stop.wait(self.capture_delay):
            return False
        with self._lock:
            if t.finished_at is not None:  # canceled or forced while waiting
                return False
            now = self._now()
            t.started_at = t.updated_at = now
            t.logs.append({"created_at": now, "level": "info", "message": message})
        return True

    def _finish(self, t: _Transfer, ok: bool, lines: list[tuple[str, str]]) -> None:
        with self._lock:
            t.proc = None
            if t.finished_at is not None:  # canceled / finish_running got there first
                return
            now = self._now()
            for level, msg in lines:
                t.logs.append({"created_at": now, "level": level, "message": msg})
            t.finished_at = t.updated_at = now
            t.succeeded = ok
            self._expire_after(t)

    def _expire_after(self, t: _Transfer) -> None:
        """A manual capture that finished well expires the manual backups beyond `num_keep` (lock held)."""
        if (t.succeeded and t.from_type == "pg_dump" and t.to_type == "gof3r" and t.schedule_uuid is None
                and t.addon_id in self._addons):
            self._expire_manual(self._addons[t.addon_id])

    def _run_simulated(self, t: _Transfer) -> None:
        """CHOICE: restores and copies are state-machine only (nothing is written to any database)."""
        if not self._begin(t, "Starting transfer"):
            return
        if self._stop.wait(0.05):
            return
        with self._lock:
            t.processed_bytes = t.source_bytes
        self._finish(t, True, [("info", "Transfer completed")])

    def _run_capture(self, t: _Transfer) -> None:
        """created -> started (processed_bytes growing) -> finished, with a real `pg_dump -Fc` (ref §6)."""
        if not self._begin(t, "Starting pg_dump"):
            return
        assert self._tmpdir is not None
        with self._lock:
            addon = self._addons[t.addon_id or ""]
            url = addon.database_url
        out = self._tmpdir / f"{t.uuid}.dump"
        try:
            from daemon.adapters.postgres.tools import find_tool
            args, env = pg_dump_command(find_tool("pg_dump"), url, out)
        except Exception as exc:
            self._finish(t, False, [("error", f"pg_dump unavailable: {exc}")])
            return
        try:
            proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self._finish(t, False, [("error", f"could not start pg_dump: {exc}")])
            return
        with self._lock:
            t.proc = proc
            if t.finished_at is not None or self._stop.is_set():
                _kill_group(proc)

        def measure() -> None:  # source_bytes = pg_database_size, measured while pg_dump runs
            size = self._source_size(url)
            if size is not None:
                with self._lock:
                    t.source_bytes = size

        sizer = threading.Thread(target=measure, daemon=True)
        sizer.start()
        stderr: list[bytes] = []
        reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
        reader.start()
        while proc.poll() is None:
            with contextlib.suppress(OSError), self._lock:
                t.processed_bytes = out.stat().st_size
                t.updated_at = self._now()
            if self._stop.wait(0.05):
                _kill_group(proc)
        proc.wait()
        reader.join(timeout=5)
        sizer.join(timeout=5)
        lines = [line.decode(errors="replace").rstrip() for line in stderr]
        ok = proc.returncode == 0
        with self._lock:
            if out.exists():
                t.processed_bytes = out.stat().st_size
            if ok:
                t.dump_path = out
        log = [("info" if ok else "error", line) for line in lines if line]
        log.append(("info", "Transfer completed") if ok else ("error", f"pg_dump exited with {proc.returncode}"))
        self._finish(t, ok, log)

    @staticmethod
    def _source_size(url: str) -> int | None:
        try:
            import psycopg
            with psycopg.connect(url, connect_timeout=3) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
                return int(row[0]) if row else None
        except Exception:
            return None

    # -- signed downloads (ref §1.6) --------------------------------------------------------------------
    def _sign(self, t_uuid: str, date: str, expires: int) -> str:
        return hmac.new(self._sign_key, f"{t_uuid}\n{date}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def _download(self, method: str, path: str, query: str) -> _Resp:
        def s3_error(status: int, code: str, message: str) -> _Resp:
            xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                   f"<Message>{message}</Message></Error>")
            return _Resp(status, xml.encode(), {"Content-Type": "application/xml"})

        m = re.fullmatch(r"/xfrtu/([0-9a-f-]{36})/backup\.dump", path)
        if method != "GET" or not m:
            return s3_error(404, "NoSuchKey", "The specified key does not exist.")
        q = parse_qs(query)
        date = q.get("X-Amz-Date", [""])[0]
        expires_s = q.get("X-Amz-Expires", [""])[0]
        sig = q.get("X-Amz-Signature", [""])[0]
        if not expires_s.isdigit() or not hmac.compare_digest(sig, self._sign(m.group(1), date, int(expires_s))):
            return s3_error(403, "SignatureDoesNotMatch",
                            "The request signature we calculated does not match the signature you provided.")
        try:
            signed_at = datetime.strptime(date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return s3_error(403, "AccessDenied", "Invalid date.")
        if self._now() > signed_at + timedelta(seconds=int(expires_s)):
            return s3_error(403, "AccessDenied", "Request has expired")
        with self._lock:
            t = next((x for x in self._transfers if x.uuid == m.group(1)), None)
            if t is None or t.deleted_at:
                return s3_error(404, "NoSuchKey", "The specified key does not exist.")
            if t.uuid in self._expire_mid:  # expire_during_download: a first part, then the object is gone
                cut = self._expire_mid.pop(t.uuid)
                t.deleted_at = t.updated_at = self._now()
                if t.dump_path is not None and t.dump_path.exists():
                    with t.dump_path.open("rb") as fh:
                        head = fh.read(cut)
                else:
                    head = (b"PGDMP" + b"\0" * max(cut - 5, 0))[:cut]
                return _Resp(200, head, {"Content-Type": "application/octet-stream"}, mode="truncated")
            if t.dump_path is not None and t.dump_path.exists():
                return _Resp(200, b"", {"Content-Type": "application/octet-stream"}, mode="file", path=t.dump_path)
            # CHOICE: seeded transfers (add_transfer) have no real dump: processed_bytes of filler after PGDMP
            size = max(t.processed_bytes, 5)
        return _Resp(200, b"PGDMP" + b"\0" * (size - 5), {"Content-Type": "application/octet-stream"})

    # -- Platform API handlers (ref §3, §4) -------------------------------------------------------------
    def h_account(self, c: _Ctx) -> _Resp:
        """`GET /account` (Corrections Nov 2026: the CLI's `ps` asks it, with the app and its dynos). The Platform
        API's account object; CHOICE: the values, for the one user the double knows."""
        created = _iso(self._now() - timedelta(days=900))
        return _json_resp(200, {
            "id": self._user_id, "email": "owner@example.com", "name": "Owner", "allow_tracking": False,
            "beta": False, "created_at": created, "updated_at": created, "last_login": _iso(self._now()),
            "verified": True, "federated": False, "two_factor_authentication": True, "sms_number": None,
            "suspended_at": None, "delinquent_at": None, "default_organization": None, "default_team": None,
            "identity_provider": None, "country_of_residence": None})

    def _authorization_json(self, a: dict[str, Any]) -> dict[str, Any]:
        # HEROKU_DOUBLE.md, API tokens: expires_in counts down from now; null for a token that never expires
        expires_in = None
        if a["expires_at"] is not None:
            expires_in = int((a["expires_at"] - self._now()).total_seconds())
        token_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "token:" + a["id"]))
        return {"id": a["id"], "description": a["description"], "scope": ["global"], "client": None,
                "grant": None, "refresh_token": None, "session": None,
                "access_token": {"id": token_id, "token": a["token"], "expires_in": expires_in},
                "user": {"id": self._user_id, "email": "owner@example.com", "full_name": "Owner"},
                "created_at": _iso(a["created_at"]), "updated_at": _iso(a["created_at"])}

    def _authorizations_allowed(self) -> None:
        if self.authorizations_forbidden:
            # CHOICE: the text; a token without the global scope cannot list authorizations
            raise _ApiError(403, "This token does not have the scope to access OAuth authorizations.")

    def h_authorizations(self, c: _Ctx) -> _Resp:
        self._authorizations_allowed()
        with self._lock:
            items = [self._authorization_json(a) for a in self._authorizations]
        return _json_resp(200, items)

    def h_authorization(self, c: _Ctx) -> _Resp:
        self._authorizations_allowed()
        with self._lock:
            for a in self._authorizations:
                if a["id"] == c.params["auth"]:
                    return _json_resp(200, self._authorization_json(a))
        raise _ApiError(404, "Couldn't find that authorization.")

    def h_rate_limits(self, c: _Ctx) -> _Resp:
        return _json_resp(200, {"remaining": self.rate_remaining()})  # ref §3.1, not counted

    def h_apps(self, c: _Ctx) -> _Resp:
        with self._lock:
            items = [self._app_json(a) for a in self._apps.values()]
        return self._paginate(items, c.headers, {"id": lambda a: a["id"], "name": lambda a: a["name"]}, "id")

    def h_app(self, c: _Ctx) -> _Resp:
        with self._lock:
            return _json_resp(200, self._app_json(self._app(c.params["app"])))

    def h_formation(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            items = [self._formation_json(app, f) for f in app.formation.values()]
        return self._paginate(items, c.headers, {"id": lambda f: f["id"], "type": lambda f: f["type"]}, "id")

    def _formation_of(self, app: _App, key: str) -> dict[str, Any]:
        for f in app.formation.values():
            if key in (f["type"], f["id"]):
                return f
        raise _ApiError(404, "Couldn't find that formation.")

    def h_formation_one(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            return _json_resp(200, self._formation_json(app, self._formation_of(app, c.params["type"])))

    @staticmethod
    def _quantity(current: int, value: Any) -> int:
        """int, a string "3", or the CLI's relative "+1"/"-1" (ref §3.1 ps:scale)."""
        if isinstance(value, bool):
            raise _ApiError(422, "Invalid quantity.")
        if isinstance(value, int):
            new = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            v = value.strip()
            new = current + int(v) if v[0] in "+-" else int(v)
        else:
            raise _ApiError(422, f"Invalid quantity: {value!r}.")
        if new < 0:
            raise _ApiError(422, "Quantity cannot be negative.")
        return new

    def _apply_formation(self, f: dict[str, Any], update: dict[str, Any]) -> None:
        changes: dict[str, Any] = {}
        if "quantity" in update and update["quantity"] is not None:
            changes["quantity"] = self._quantity(f["quantity"], update["quantity"])
        size = update.get("dyno_size")
        size_name = size.get("name") if isinstance(size, dict) else update.get("size")
        if size_name:
            changes["size"] = str(size_name)
        f.update(changes, updated_at=self._now())

    @staticmethod
    def _refuse_formation(app: _App, f: dict[str, Any], quantity: int | None) -> _Resp | None:
        """Heroku's refusal of a formation change, or None (HEROKU_DOUBLE.md, Formations on Cedar and Fir): a
        refusal set with `refuse_formation`, else more than one Eco or Basic dyno of a process type."""
        refused = app.refusals.get(f["type"])
        if refused is not None:
            return _json_resp(refused[0], dict(refused[1]))
        size = str(f["size"])
        if quantity is not None and quantity > 1 and size.lower() in ("eco", "basic"):
            return _error_resp(422, f"Cannot update to more than 1 {size.capitalize()} size dynos per process type.",
                               "cannot_update")
        return None

    def h_formation_patch(self, c: _Ctx) -> _Resp:
        if not isinstance(c.payload, dict):
            raise _ApiError(422, "Request body must be an object.")
        with self._lock:
            app = self._app(c.params["app"])
            f = self._formation_of(app, c.params["type"])
            wanted = c.payload.get("quantity")
            refused = self._refuse_formation(app, f, None if wanted is None else self._quantity(f["quantity"], wanted))
            if refused is not None:
                return refused
            self._apply_formation(f, c.payload)
            return _json_resp(200, self._formation_json(app, f))

    def h_formation_batch(self, c: _Ctx) -> _Resp:
        updates = c.payload.get("updates") if isinstance(c.payload, dict) else None
        if not isinstance(updates, list) or not all(isinstance(u, dict) and u.get("type") for u in updates):
            raise _ApiError(422, "updates must be a list of objects with a type.")  # ref §3.1: type required
        with self._lock:
            app = self._app(c.params["app"])
            targets = [(self._formation_of(app, str(u["type"])), u) for u in updates]
            # validate everything before changing anything
            for f, u in targets:
                if "quantity" in u:
                    refused = self._refuse_formation(app, f, self._quantity(f["quantity"], u["quantity"]))
                    if refused is not None:
                        return refused
            for f, u in targets:
                self._apply_formation(f, u)
            return _json_resp(200, [self._formation_json(app, f) for f, _ in targets])

    def h_releases(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            items = [self._release_json(app, r) for r in app.releases]
        # CHOICE: without a Range header releases come in version order (the CLI always sends one)
        return self._paginate(items, c.headers, {"id": lambda r: r["id"], "version": lambda r: r["version"]},
                              "version")

    def _release_of(self, app: _App, key: str) -> dict[str, Any]:
        key = key.removeprefix("v") if re.fullmatch(r"v?\d+", key) else key
        for r in app.releases:
            if key in (r["id"], str(r["version"])):
                return r
        raise _ApiError(404, "Couldn't find that release.")

    def h_release(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            return _json_resp(200, self._release_json(app, self._release_of(app, c.params["rel"])))

    def h_rollback(self, c: _Ctx) -> _Resp:
        target_key = c.payload.get("release") if isinstance(c.payload, dict) else None
        if not target_key:
            raise _ApiError(422, "release is required.")  # ref §3.1: `release` is required
        with self._lock:
            app = self._app(c.params["app"])
            target = self._release_of(app, str(target_key))
            new = self._add_release(app, f"Rollback to v{target['version']}", slug_id=target["slug_id"])
            new["addon_plan_names"] = list(target["addon_plan_names"])
            return _json_resp(201, self._release_json(app, new))

    def h_dynos(self, c: _Ctx) -> _Resp:
        with self._lock:
            items = self._dynos(self._app(c.params["app"]))
        return self._paginate(items, c.headers, {"id": lambda d: d["id"], "name": lambda d: d["name"]}, "id")

    def h_dyno(self, c: _Ctx) -> _Resp:
        with self._lock:
            for d in self._dynos(self._app(c.params["app"])):
                if c.params["dyno"] in (d["id"], d["name"]):
                    return _json_resp(200, d)
        raise _ApiError(404, "Couldn't find that process.")

    def h_dyno_restart(self, c: _Ctx) -> _Resp:
        with self._lock:
            dynos = self._dynos(self._app(c.params["app"]))
        if c.params.get("dyno") and not any(c.params["dyno"] in (d["id"], d["name"]) for d in dynos):
            raise _ApiError(404, "Couldn't find that process.")
        return _json_resp(202, {})

    def h_config_vars(self, c: _Ctx) -> _Resp:
        with self._lock:
            return _json_resp(200, self._config_vars(self._app(c.params["app"])))

    @staticmethod
    def _includes_plan(headers: Message) -> bool:
        inclusion = headers.get("Accept-Inclusion") or ""
        return "addon:plan" in [p.strip() for p in inclusion.split(",")]

    def h_attachments(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            items = [self._attachment_json(a, self._includes_plan(c.headers))
                     for a in self._attachments if a.app == app.name]
        return self._paginate(items, c.headers, {"id": lambda a: a["id"], "name": lambda a: a["name"]}, "id")

    def h_all_attachments(self, c: _Ctx) -> _Resp:
        """Every attachment the account can see (the CLI's `addons -a APP` reads this list to show attachments
        from other apps)."""
        with self._lock:
            items = [self._attachment_json(a, self._includes_plan(c.headers)) for a in self._attachments]
        return self._paginate(items, c.headers, {"id": lambda a: a["id"], "name": lambda a: a["name"]}, "id")

    def h_addons(self, c: _Ctx) -> _Resp:
        with self._lock:
            app = self._app(c.params["app"])
            # CHOICE: the add-ons attached to the app, owned by it or not
            ids = list(dict.fromkeys(a.addon_id for a in self._attachments if a.app == app.name))
            items = [self._addon_json(self._addons[i]) for i in ids]
        return self._paginate(items, c.headers, {"id": lambda a: a["id"], "name": lambda a: a["name"]}, "id")

    def h_addon_create(self, c: _Ctx) -> _Resp:
        """ref §3.1/§5.1: add-on create, used for rollback/fork (`config` is kept on the add-on)."""
        p = c.payload if isinstance(c.payload, dict) else {}
        plan = p.get("plan")
        plan_name = plan.get("name") if isinstance(plan, dict) else plan
        if not plan_name:
            raise _ApiError(422, "plan is required.")
        with self._lock:
            app = self._app(c.params["app"])
            taken = {a.name for a in self._attachments if a.app == app.name}
            att_body = p.get("attachment")
            att: dict[str, Any] = att_body if isinstance(att_body, dict) else {}
            att_name = att.get("name") or next(
                (f"HEROKU_POSTGRESQL_{col}" for col in COLORS if f"HEROKU_POSTGRESQL_{col}" not in taken), None)
            if not att_name or att_name in taken:
                raise _ApiError(422, "Attachment name is already taken.")
            addon = _Addon(id=self._addon_id(), name=str(p.get("name") or self._addon_name(str(plan_name))),
                           plan=str(plan_name), billing_app=app.name, database_url=self._fake_url(),
                           created_at=self._now(), config=dict(p.get("config") or {}))
            self._addons[addon.id] = addon
            self._attach(app, addon, str(att_name), None)
            return _json_resp(201, self._addon_json(addon))

    def _match_attachments(self, key: str, app: _App | None) -> list[_Attachment]:
        """Attachment name, its config var (NAME_URL) or the add-on name (ref §4 step 2)."""
        out = []
        for a in self._attachments:
            if app is not None and a.app != app.name:
                continue
            if key in (a.name, f"{a.name}_URL", self._addons[a.addon_id].name, a.addon_id):
                out.append(a)
        return out

    def h_resolve_attachment(self, c: _Ctx) -> _Resp:
        p = c.payload if isinstance(c.payload, dict) else {}
        key = p.get("addon_attachment")
        if not key:
            raise _ApiError(422, "addon_attachment is required.")
        with self._lock:
            app = self._app(str(p["app"])) if p.get("app") else None
            found = self._match_attachments(str(key), app)
            if p.get("addon_service"):
                found = [a for a in found if self._addons[a.addon_id].plan.split(":")[0] == p["addon_service"]]
            if not found:
                raise _ApiError(404, "Couldn't find that add on attachment.", "not_found")
            return _json_resp(200, [self._attachment_json(a, self._includes_plan(c.headers)) for a in found])

    def h_resolve_addon(self, c: _Ctx) -> _Resp:
        p = c.payload if isinstance(c.payload, dict) else {}
        key = p.get("addon")
        if not key:
            raise _ApiError(422, "addon is required.")
        with self._lock:
            app = self._app(str(p["app"])) if p.get("app") else None
            ids = [a.addon_id for a in self._match_attachments(str(key), app)]
            ids += [i for i, ad in self._addons.items() if str(key) in (i, ad.name)]
            addons = [self._addons[i] for i in dict.fromkeys(ids)]
            if p.get("addon_service"):
                addons = [ad for ad in addons if ad.plan.split(":")[0] == p["addon_service"]]
            if not addons:
                raise _ApiError(404, "Couldn't find that add on.", "not_found")
            return _json_resp(200, [self._addon_json(ad) for ad in addons])


@dataclass
class _Ctx:
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Message
    payload: Any


def _routes() -> list[tuple[str, str, re.Pattern[str], str]]:
    seg = "[^/]+"
    table = [
        # Data API, ref §1.1 / §2 / §6
        ("data", "GET", "/apps/(?P<app>{s})/transfers", "h_transfers"),
        ("data", "GET", "/apps/(?P<app>{s})/transfers/(?P<x>{s})", "h_transfer"),
        ("data", "DELETE", "/apps/(?P<app>{s})/transfers/(?P<x>{s})", "h_transfer_delete"),
        ("data", "POST", "/apps/(?P<app>{s})/transfers/(?P<x>{s})/actions/public-url", "h_public_url"),
        ("data", "POST", "/apps/(?P<app>{s})/transfers/(?P<x>{s})/actions/cancel", "h_cancel"),
        ("data", "GET", "/databases/(?P<addon>{s})", "h_db_info"),
        ("data", "GET", "/databases/(?P<addon>{s})/wait_status", "h_wait_status"),
        ("data", "POST", "/databases/(?P<addon>{s})/backups", "h_capture"),
        ("data", "POST", "/databases/(?P<addon>{s})/restores", "h_restore"),
        ("data", "POST", "/databases/(?P<addon>{s})/transfers", "h_copy"),
        ("data", "GET", "/databases/(?P<addon>{s})/transfer-schedules", "h_schedules"),
        ("data", "POST", "/databases/(?P<addon>{s})/transfer-schedules", "h_schedule_create"),
        ("data", "DELETE", "/databases/(?P<addon>{s})/transfer-schedules/(?P<sched>{s})", "h_schedule_delete"),
        # Platform API, ref §3.1 / §4
        # Advanced-tier data API (heroku/cli data:pg:info), on the data host without the /client/v11 prefix
        ("advanced", "GET", "/(?P<addon>{s})/info", "h_advanced_info"),
        ("platform", "GET", "/account", "h_account"),
        ("platform", "GET", "/account/rate-limits", "h_rate_limits"),
        ("platform", "GET", "/oauth/authorizations", "h_authorizations"),
        ("platform", "GET", "/oauth/authorizations/(?P<auth>{s})", "h_authorization"),
        ("platform", "GET", "/apps", "h_apps"),
        ("platform", "GET", "/apps/(?P<app>{s})", "h_app"),
        ("platform", "GET", "/apps/(?P<app>{s})/formation", "h_formation"),
        ("platform", "PATCH", "/apps/(?P<app>{s})/formation", "h_formation_batch"),
        ("platform", "GET", "/apps/(?P<app>{s})/formation/(?P<type>{s})", "h_formation_one"),
        ("platform", "PATCH", "/apps/(?P<app>{s})/formation/(?P<type>{s})", "h_formation_patch"),
        ("platform", "GET", "/apps/(?P<app>{s})/releases", "h_releases"),
        ("platform", "POST", "/apps/(?P<app>{s})/releases", "h_rollback"),
        ("platform", "GET", "/apps/(?P<app>{s})/releases/(?P<rel>{s})", "h_release"),
        ("platform", "GET", "/apps/(?P<app>{s})/dynos", "h_dynos"),
        ("platform", "DELETE", "/apps/(?P<app>{s})/dynos", "h_dyno_restart"),
        ("platform", "GET", "/apps/(?P<app>{s})/dynos/(?P<dyno>{s})", "h_dyno"),
        ("platform", "DELETE", "/apps/(?P<app>{s})/dynos/(?P<dyno>{s})", "h_dyno_restart"),
        ("platform", "GET", "/apps/(?P<app>{s})/config-vars", "h_config_vars"),
        ("platform", "GET", "/apps/(?P<app>{s})/addon-attachments", "h_attachments"),
        ("platform", "GET", "/addon-attachments", "h_all_attachments"),
        ("platform", "GET", "/apps/(?P<app>{s})/addons", "h_addons"),
        ("platform", "POST", "/apps/(?P<app>{s})/addons", "h_addon_create"),
        ("platform", "POST", "/actions/addon-attachments/resolve", "h_resolve_attachment"),
        ("platform", "POST", "/actions/addons/resolve", "h_resolve_addon"),
    ]
    out = []
    for host, method, pattern, name in table:
        prefix = {"data": re.escape(DATA_PREFIX), "advanced": re.escape(ADVANCED_PREFIX)}.get(host, "")
        out.append(("data" if host == "advanced" else host, method, re.compile(prefix + pattern.replace("{s}", seg)),
                    name))
    return out


_ROUTES = _routes()


# -- HTTP plumbing --------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    double: HerokuDouble
    kind: str


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "heroku-double/1.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.double._lock:
            self.server.double._sockets.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.double._lock:
            self.server.double._sockets.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        double = self.server.double
        if double._stop.is_set():
            self.close_connection = True
            return
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        kind = self._kind()
        rec = RequestRecord(self.command, split.path, split.query, dict(self.headers.items()), kind, body=body)
        double._record(rec)
        request_id = self.headers.get("Request-Id") or str(uuid.uuid4())  # ref §0 Request id
        try:
            resp = double._dispatch(kind, self.command, split.path, split.query, self.headers, body)
        except Exception as exc:  # a bug in the double: answer 500 instead of hanging the client
            resp = _error_resp(500, f"heroku double crashed: {exc!r}")
        if resp.mode == "drop" or double._stop.is_set():
            self.close_connection = True
            return
        rec.status = resp.status
        try:
            self._write(resp, request_id)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _kind(self) -> str:
        """Which host this request is for: the server's, or the Data API's when the CLI's data host name is set
        and the request names it (see `HerokuDouble.cli_data_host`)."""
        alias = self.server.double.cli_data_host
        if self.server.kind == "platform" and alias is not None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host == alias:
                return "data"
        return self.server.kind

    def _write(self, resp: _Resp, request_id: str) -> None:
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if self.server.kind not in ("download", "status"):
            self.send_header("Request-Id", request_id)
        if resp.mode == "file" and resp.path is not None:
            size = resp.path.stat().st_size
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return
            with resp.path.open("rb") as fh:
                while chunk := fh.read(64 * 1024):
                    self.wfile.write(chunk)
            return
        declared = len(resp.body) + (4096 if resp.mode == "truncated" else 0)
        self.send_header("Content-Length", str(declared))
        if resp.mode == "truncated":
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)
        self.wfile.flush()
        if resp.mode == "truncated":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


# -- by hand ----------------------------------------------------------------------------------------------

def _demo_state(double: HerokuDouble, database_url: str | None) -> AppInfo:
    info = double.add_app("demo-app", database_url=database_url)
    double.add_schedule("demo-app", hour=2, timezone="UTC")
    now = datetime.now(UTC)
    for days in (3, 2, 1):
        double.add_transfer("demo-app", scheduled=True, created_at=now - timedelta(days=days),
                            processed_bytes=1_437_000, source_bytes=9_000_000)
    double.add_transfer("demo-app", scheduled=False, state="failed", created_at=now - timedelta(hours=5))
    return info


def _by_hand_tls(directory: str | None) -> tuple[ssl.SSLContext | None, Path | None]:
    """A server context for the download endpoint from a throwaway certificate written into `directory`."""
    if directory is None:
        return None, None
    from tests.support import self_signed

    where = Path(directory)
    where.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(where)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.doubles.heroku",
                                     description="Run the Heroku double by hand with a demo app.")
    parser.add_argument("--database-url", help="a real PostgreSQL URL the demo app's DATABASE_URL points at "
                        "(captures then run pg_dump against it); default: a fake URL (captures fail)")
    parser.add_argument("--token", default="test-token-0123456789")
    parser.add_argument("--capture-delay", type=float, default=2.0)
    parser.add_argument("--tls-dir", help="serve signed download URLs over https with a throwaway CA written into "
                        "this directory (the real CLI downloads only https; trust it with NODE_EXTRA_CA_CERTS)")
    parser.add_argument("--cli-data-host", default="localhost",
                        help="the host name the real Heroku CLI is given as HEROKU_DATA_HOST (default: localhost)")
    args = parser.parse_args(argv)
    tls, ca = _by_hand_tls(args.tls_dir)
    with HerokuDouble(token=args.token, capture_delay=args.capture_delay, download_tls=tls,
                      cli_data_host=args.cli_data_host) as double:
        info = _demo_state(double, args.database_url)
        auth = f"-H 'Authorization: Bearer {double.token}'"
        acc = "-H 'Accept: application/vnd.heroku+json; version=3'"
        print(f"platform API: {double.platform_url}")
        print(f"data API:     {double.data_url}")
        print(f"downloads:    {double.download_url}")
        print(f"status API:   {double.status_url}/api/v4/current-status")
        print(f"token:        {double.token}")
        print(f"demo app:     {info.app_name} (id {info.app_id}), add-on {info.addon_name} (id {info.addon_id})")
        print("\nexamples:")
        print(f"  curl -s {auth} {acc} {double.platform_url}/apps/{info.app_name}")
        print(f"  curl -s {auth} {acc} -X POST -H 'Content-Type: application/json' "
              f"-d '{{\"addon_attachment\": \"DATABASE_URL\", \"app\": \"{info.app_name}\"}}' "
              f"-H 'Accept-Inclusion: addon:plan,config_vars' {double.platform_url}/actions/addon-attachments/resolve")
        print(f"  curl -si {auth} {double.data_url}{DATA_PREFIX}/apps/{info.app_name}/transfers")
        print(f"  curl -s {auth} '{double.data_url}{DATA_PREFIX}/apps/{info.app_name}/transfers/1?verbose=true'")
        print(f"  curl -s {auth} {double.data_url}{DATA_PREFIX}/databases/{info.addon_id}")
        print(f"  curl -s {auth} -X POST {double.data_url}{DATA_PREFIX}/databases/{info.addon_id}/backups")
        print(f"  curl -s {auth} -X POST {double.data_url}{DATA_PREFIX}/apps/{info.app_name}/transfers/1"
              "/actions/public-url")
        print(f"  curl -si {auth} {double.platform_url}/account/rate-limits")
        print("\nthe real Heroku CLI (npm heroku), e.g. heroku pg:backups -a demo-app:")
        print(f"  export HEROKU_HOST={double.platform_url} HEROKU_DATA_HOST={args.cli_data_host} "
              f"HEROKU_API_KEY={double.token}" + (f" NODE_EXTRA_CA_CERTS={ca}" if ca else ""))
        print("\nCtrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
