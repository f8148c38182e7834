"""`backup-guardian health`, the container's health check: it asks the running daemon's /healthz at the address
the configuration gives (any port, a wildcard bind, HTTPS), with the Nagios exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemon.cli.exits import OK, UNKNOWN
from tests.support import self_signed


def health(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "daemon", "health"], capture_output=True, text=True, timeout=60,
                          env={**base, **env}, cwd=cwd, check=False)


def db_config(url: str) -> str:
    return f"collect_interval: 1h\ndatabases:\n  - name: shop\n    url: '{url}'\n    capture:\n      enabled: false\n"


def test_health_asks_the_configured_port_on_a_wildcard_bind(fresh_db: str, run_daemon: Any, tmp_path: Path) -> None:
    d = run_daemon(db_config(fresh_db), listen_host="0.0.0.0")
    out = health({"GUARDIAN_LISTEN": f"0.0.0.0:{d.port}"}, tmp_path)
    assert out.returncode == OK, out.stdout + out.stderr
    assert out.stdout.startswith(f"OK: http://127.0.0.1:{d.port}/healthz: heartbeat ")

    d.stop()
    gone = health({"GUARDIAN_LISTEN": f"0.0.0.0:{d.port}"}, tmp_path)
    assert gone.returncode == UNKNOWN and "did not answer" in gone.stdout, gone.stdout


def test_health_speaks_https_when_tls_is_on(fresh_db: str, run_daemon: Any, tmp_path: Path) -> None:
    # a certificate for a public-looking name only, not 127.0.0.1: the check must still get in
    cert, key = self_signed(tmp_path, names=("guardian.example.com",), addresses=("192.0.2.1",))
    tls = f"web:\n  tls_server_config:\n    cert_file: {cert}\n    key_file: {key}\n"
    d = run_daemon(db_config(fresh_db) + tls, wait_for_health=False)
    cfg = tmp_path / "same.yaml"
    cfg.write_text(f"listen: 127.0.0.1:{d.port}\n{tls}")
    d.wait_for("HTTPS /healthz", lambda: health({"GUARDIAN_CONFIG": str(cfg)}, tmp_path).returncode == OK,
               timeout=30)
    out = health({"GUARDIAN_CONFIG": str(cfg)}, tmp_path)
    assert out.stdout.startswith(f"OK: https://127.0.0.1:{d.port}/healthz"), out.stdout
