"""`backup-guardian health`, the container's health check: it asks the running daemon's /healthz at the address
the configuration gives (any port, a wildcard bind, HTTPS), with the Nagios exit codes."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon.cli.exits import OK, UNKNOWN


def health(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "daemon", "health"], capture_output=True, text=True, timeout=60,
                          env={**base, **env}, cwd=cwd, check=False)


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A throwaway certificate for a public-looking name only (not 127.0.0.1): the check must still get in."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guardian.example.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("guardian.example.com"),
                                                        x509.IPAddress(ipaddress.ip_address("192.0.2.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


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
    cert, key = self_signed(tmp_path)
    tls = f"web:\n  tls_server_config:\n    cert_file: {cert}\n    key_file: {key}\n"
    d = run_daemon(db_config(fresh_db) + tls, wait_for_health=False)
    cfg = tmp_path / "same.yaml"
    cfg.write_text(f"listen: 127.0.0.1:{d.port}\n{tls}")
    d.wait_for("HTTPS /healthz", lambda: health({"GUARDIAN_CONFIG": str(cfg)}, tmp_path).returncode == OK,
               timeout=30)
    out = health({"GUARDIAN_CONFIG": str(cfg)}, tmp_path)
    assert out.stdout.startswith(f"OK: https://127.0.0.1:{d.port}/healthz"), out.stdout
