"""End to end: the real daemon process against a real PostgreSQL, scraped over real HTTP."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from daemon.adapters.postgres.cluster import LocalCluster
from daemon.core.redact import url_password
from tests.support import DaemonProcess, create_database

DB = "shop/main"
L_ARCHIVE = (("database", DB), ("source", "archive"))


def _config(url: str, archive: str | None = None, capture_interval: str = "3s") -> str:
    archive_line = f"archive:\n  path: {archive}\n" if archive else ""
    return (f"collect_interval: 1s\n{archive_line}databases:\n  - name: {DB}\n    url: '{url}'\n"
            f"    capture:\n      interval: {capture_interval}\n      timeout: 30s\n")


def _finding(m: dict[Any, float], check: str) -> float | None:
    for (name, labels), value in m.items():
        d = dict(labels)
        if name == "pgbackup_finding_active" and d.get("check") == check and d.get("database") == DB:
            return value
    return None


def _collector_up(m: dict[Any, float], collector: str) -> float | None:
    return m.get(("pgbackup_collector_up", (("collector", collector), ("database", DB))))


def test_daemon_captures_serves_metrics_survives_a_database_outage_and_recovers(
    own_cluster: LocalCluster, run_daemon: Any
) -> None:
    url = create_database(own_cluster)
    password = url_password(url)
    assert password
    d: DaemonProcess = run_daemon(_config(url))

    # 1. a capture lands and /metrics reports it exactly
    newest = d.wait_for("first capture", lambda: d.status()["databases"][0]["newest_good_backup"])
    record_path = d.state_dir / "archive" / quote(DB, safe="") / f"{newest['id']}.json"
    record = json.loads(record_path.read_text())
    dump = record_path.with_suffix(".dump").read_bytes()
    m = d.metrics()
    started = datetime.fromisoformat(record["started_at"]).timestamp()
    success_ts = d.wait_for("metrics of the capture",
                            lambda: d.metrics().get(("pgbackup_last_success_timestamp_seconds", L_ARCHIVE)))
    assert abs(success_ts - started) < 0.01  # the recovery point is the capture start, not its end
    assert datetime.fromisoformat(record["finished_at"]).timestamp() >= success_ts
    m = d.metrics()
    newest_size = m[("pgbackup_last_size_bytes", L_ARCHIVE)]
    newest_rec = json.loads(max(record_path.parent.glob("*.json")).read_text())
    newest_dump = record_path.parent / f"{newest_rec['backup_id']}.dump"
    assert newest_size == newest_rec["size_bytes"] == newest_dump.stat().st_size
    assert len(dump) == record["size_bytes"]
    assert hashlib.sha256(dump).hexdigest() == record["sha256"]
    assert m[("pgbackup_last_attempt_succeeded", L_ARCHIVE)] == 1
    assert _collector_up(m, "database") == 1 and _collector_up(m, "archive") == 1
    assert m[("pgbackup_database_tables", (("database", DB),))] == 3
    assert m[("pgbackup_rpo_seconds", (("database", DB),))] == 86400
    assert _finding(m, "rpo_breach") == 0
    # the status says when the next capture is expected and when a breach would begin, the page shows both
    status = d.status()["databases"][0]
    assert set(status["next_expected_by_source"]) == {"archive"}
    point = datetime.fromisoformat(status["newest_good_backup"]["recovery_point"])
    assert datetime.fromisoformat(status["breach_at"]) == point + timedelta(
        seconds=status["rpo_seconds"] + status["rpo_tolerance_seconds"])
    assert datetime.fromisoformat(status["next_expected_backup"]) > point
    page = d.get("/")[1].decode()
    assert "<dt>Next backup</dt><dd><time datetime=" in page and "<dt>Breach after</dt><dd><time datetime=" in page

    # 2. promtool has nothing to say about the live exposition
    code, body, _ = d.get("/metrics")
    assert code == 200
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package 'prometheus' (.ci/run does)"
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, check=False)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint

    # 3. PostgreSQL goes away: the daemon stays up, the collector shows down, the failed capture shows
    port = own_cluster.port
    own_cluster.stop(mode="immediate")
    d.wait_for("database collector down", lambda: _collector_up(d.metrics(), "database") == 0)
    d.wait_for("failed attempt in the policy", lambda: _finding(d.metrics(), "last_attempt_failed") == 1)
    m = d.metrics()
    assert m[("pgbackup_last_attempt_succeeded", L_ARCHIVE)] == 0
    assert m[("pgbackup_collector_errors_total", (("collector", "database"), ("database", DB)))] >= 1
    assert d.get("/healthz")[0] == 200
    status = d.status()["databases"][0]
    failed = [f for f in status["findings"] if f["active"] and f["check"] == "last_attempt_failed"]
    assert failed and "failed" in failed[0]["hint"]
    assert status["newest_good_backup"] is not None  # older good backups still count

    # 4. PostgreSQL comes back: the next pass and capture recover on their own
    own_cluster.start(port=port)
    d.wait_for("database collector up", lambda: _collector_up(d.metrics(), "database") == 1)
    d.wait_for("failed attempt resolved", lambda: _finding(d.metrics(), "last_attempt_failed") == 0)

    # 5. no secret anywhere a person or Prometheus can read
    for text in (d.get("/metrics")[1].decode(), d.get("/api/status")[1].decode(), d.get("/")[1].decode(), d.log()):
        assert password not in text
    assert "Traceback" not in d.log()

    # 6. SIGTERM: ordered shutdown well within 10 s
    assert d.stop() < 10
    assert d.proc.returncode == 0
    assert "stopped" in d.log()


def test_readyz_and_metrics_before_and_after_first_collection(pg_cluster: LocalCluster, run_daemon: Any) -> None:
    url = create_database(pg_cluster)
    d = run_daemon(_config(url, capture_interval="12h"))
    d.wait_for("ready", lambda: d.get("/readyz")[0] == 200)
    code, body, headers = d.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert code == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")
    _, _, headers = d.get("/metrics", {"Accept-Encoding": "gzip"})
    assert headers.get("Content-Encoding") == "gzip"
    assert d.get("/nope")[0] == 404


def test_unwritable_archive_keeps_the_daemon_up_and_reports_the_failure(
    pg_cluster: LocalCluster, run_daemon: Any, tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("the archive directory cannot be created below a file")
    url = create_database(pg_cluster)
    d = run_daemon(_config(url, archive=str(not_a_dir / "archive"), capture_interval="2s"))
    d.wait_for("failed capture in the policy", lambda: _finding(d.metrics(), "last_attempt_failed") == 1)
    assert _collector_up(d.metrics(), "archive") == 0
    assert d.get("/healthz")[0] == 200
    log = d.log()
    assert "not writable" in log or "cannot create the archive directory" in log
    assert "Traceback" not in log
    assert url_password(url) not in log
    assert d.stop() < 10


@pytest.mark.parametrize("fmt", ["json"])
def test_json_log_lines_are_parseable(pg_cluster: LocalCluster, run_daemon: Any, fmt: str) -> None:
    url = create_database(pg_cluster)
    d = run_daemon(f"log_format: {fmt}\n" + _config(url, capture_interval="12h"))
    d.wait_for("a capture", lambda: d.status()["databases"][0]["newest_good_backup"])
    d.stop()
    lines = [json.loads(line) for line in d.log().splitlines() if line.strip()]
    assert any("capture of shop/main succeeded" in doc["message"] for doc in lines)
    assert all({"time", "level", "message"} <= doc.keys() for doc in lines)
