"""`backup-guardian health`: the container's health check, asked of the daemon's own /healthz at the address the
configuration gives (`listen`, `GUARDIAN_LISTEN`), over HTTPS when `web.tls_server_config` is set. A fixed
`curl http://127.0.0.1:9729/healthz` reported a daemon on another port, or behind TLS, as unhealthy.

0 OK: the scheduler's heartbeat is fresh; 2 CRITICAL: /healthz answered that it is not; 3 UNKNOWN: nothing
answered (not started yet, or gone).
"""

from __future__ import annotations

import sys

import httpx

from daemon.cli.exits import CRITICAL, OK, UNKNOWN
from daemon.config import GuardianConfig

TIMEOUT_SECONDS = 5.0


def healthz_url(config: GuardianConfig) -> str:
    """Where this guardian's /healthz answers from the same host: a wildcard bind is asked on loopback."""
    host, port = config.listen_host_port
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104 - read, not bound
    scheme = "https" if config.web.tls_server_config is not None else "http"
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def run(config: GuardianConfig) -> int:
    url = healthz_url(config)
    try:
        # The daemon's own endpoint, asked from its own host: its certificate may name a public host, not this
        # address, and nothing but the health verdict is read.
        resp = httpx.get(url, timeout=TIMEOUT_SECONDS, verify=False)  # noqa: S501
    except httpx.HTTPError as exc:
        sys.stdout.write(f"UNKNOWN: {url} did not answer ({type(exc).__name__}: {exc})\n")
        return UNKNOWN
    if resp.status_code == 200:
        age = resp.json().get("heartbeat_age_seconds")
        sys.stdout.write(f"OK: {url}: heartbeat {age:.0f} s ago\n" if isinstance(age, int | float) else f"OK: {url}\n")
        return OK
    sys.stdout.write(f"CRITICAL: {url} answered {resp.status_code}: {resp.text[:200]}\n")
    return CRITICAL
