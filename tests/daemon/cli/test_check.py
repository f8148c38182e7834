"""`backup-guardian check`: one collection and evaluation, a table, a Nagios verdict (0 healthy, 1 at risk, 2 breach
or failure, 3 unknown: a configuration error, a collector failed or its facts are stale); and bad input that must
give a clear, secret-free message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster, free_port
from daemon.app import Guardian
from daemon.config import GuardianConfig
from tests.support import create_database


def _check(config: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "daemon", "check", "--config", str(config), *extra],
                          capture_output=True, text=True, timeout=120, env=base, check=False)


def _write(tmp_path: Path, url: str, archive: Path, rpo: str = "24h") -> Path:
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(f"archive:\n  path: {archive}\ndatabases:\n  - name: shop\n    url: '{url}'\n"
                   f"    objectives:\n      rpo: {rpo}\n")
    return cfg


def test_check_is_healthy_after_a_fresh_capture(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    archive = tmp_path / "archive"
    record = Capturer(LocalDirectoryStore(archive)).capture(CaptureRequest(database="shop", url=url))
    out = _check(_write(tmp_path, url, archive))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "shop" in out.stdout and record.backup_id in out.stdout and "OK" in out.stdout


def test_check_exits_2_critical_when_no_backup_exists(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    (tmp_path / "archive").mkdir()  # read, and empty (an archive that cannot be read is unknown: exit 3)
    out = _check(_write(tmp_path, url, tmp_path / "archive"))
    assert out.returncode == 2
    assert "rpo_breach" in out.stdout and "no good backup" in out.stdout


def test_check_json_reports_data_at_risk(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    archive = tmp_path / "archive"
    Capturer(LocalDirectoryStore(archive)).capture(CaptureRequest(database="shop", url=url))
    out = _check(_write(tmp_path, url, archive), "--json")
    doc = json.loads(out.stdout)
    [db] = doc["databases"]
    assert db["name"] == "shop" and db["status"] == "ok"
    assert 0 <= db["data_at_risk_seconds"] < 120
    assert db["live"]["tables"] == 3


def test_unreachable_database_is_a_clear_failure_without_secret(tmp_path: Path) -> None:
    secret = "Sup3r-Secret-Pw"
    port = free_port()
    url = f"postgresql://app:{secret}@127.0.0.1:{port}/shop"
    (tmp_path / "archive").mkdir()
    out = _check(_write(tmp_path, url, tmp_path / "archive"))
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "collector_down" in text and "cannot read the live database" in text
    # the cause whole, on one line: the server, the port, the reason and libpq's next line
    [line] = [line for line in out.stdout.splitlines() if "cannot read the live database" in line]
    assert f'"127.0.0.1", port {port} failed: Connection refused' in line
    assert "Is the server running on that host and accepting TCP/IP connections?" in line
    assert "Traceback" not in text
    assert secret not in text


def test_config_error_exits_3_unknown_and_never_echoes_the_url(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("databases:\n  - name: shop\n    url: 'mysql://root:Hunter2-Pass@db/shop'\n"
                   "    objectives:\n      rpo: -5m\n    colour: blue\n")
    out = _check(cfg)
    assert out.returncode == 3
    lines = [line for line in out.stderr.splitlines() if line.startswith("  ")]
    assert len(lines) == 3, out.stderr
    assert all(str(cfg) in line for line in lines)
    assert any("databases[0].url" in line for line in lines)
    assert any("databases[0].objectives.rpo" in line and "negative" in line for line in lines)
    assert any("databases[0].colour" in line and "unknown key" in line for line in lines)
    assert "Hunter2-Pass" not in out.stdout + out.stderr
    assert "Traceback" not in out.stderr


def test_database_url_from_the_environment_is_watched(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    empty = tmp_path / "empty.yaml"
    empty.write_text(f"archive:\n  path: {tmp_path / 'archive'}\n")
    out = _check(empty, "--json", env={"DATABASE_URL": url, "GUARDIAN_DATABASE_NAME": "from-env"})
    doc = json.loads(out.stdout)
    assert [d["name"] for d in doc["databases"]] == ["from-env"]
    assert url.split(":")[2].split("@")[0] not in out.stdout + out.stderr


def test_captures_off_still_watches_the_archive_and_reports_no_backup(tmp_path: Path, pg_cluster: LocalCluster) -> None:
    url = create_database(pg_cluster)
    (tmp_path / "archive").mkdir()
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"archive:\n  path: {tmp_path / 'archive'}\ndatabases:\n  - name: shop\n    url: '{url}'\n"
                   "    capture: {enabled: false}\n")
    out = _check(cfg)
    assert out.returncode == 2 and "rpo_breach" in out.stdout and "no good backup" in out.stdout


def test_check_says_unknown_naming_the_stale_collector_and_since_when(pg_cluster: LocalCluster,
                                                                       tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    archive = tmp_path / "archive"
    Capturer(LocalDirectoryStore(archive)).capture(CaptureRequest(database="shop", url=url))
    state = f"state_dir: {tmp_path / 'state'}\n"
    cfg = _write(tmp_path, url, archive)
    cfg.write_text(state + cfg.read_text())
    before = datetime.now(UTC).replace(microsecond=0)
    assert _check(cfg).returncode == 0  # every collector succeeds: remembered in the state store
    after = datetime.now(UTC)

    # the live database can no longer be read; the fresh backup alone must not make this OK
    cfg.write_text(state + _write(tmp_path, f"postgresql://app:pw@127.0.0.1:{free_port()}/shop", archive).read_text())
    out = _check(cfg)
    assert out.returncode == 3, out.stdout + out.stderr
    [line] = [line for line in out.stdout.splitlines() if line.startswith("UNKNOWN:")]
    assert "collector database of shop" in line and "stale since " in line
    since = datetime.fromisoformat(line.split("stale since ")[1][:len("2026-01-01T00:00:00+00:00")])
    assert before <= since <= after
    assert "collector_down" in out.stdout


def test_an_archive_that_cannot_be_read_is_unknown_not_a_breach(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    """The self-managed database's archive is where its backups are: while it cannot be read, whether a good
    backup exists is not known. Exit 3 naming the collector, no page for 'no good backup', and no backup
    count of 0 in the metrics (which the breach rule would read as 'none')."""
    url = create_database(pg_cluster)
    (tmp_path / "file").write_text("not a directory")
    cfg = _write(tmp_path, url, tmp_path / "file" / "archive")
    out = _check(cfg, "--json")
    assert out.returncode == 3, out.stdout + out.stderr
    [db] = json.loads(out.stdout)["databases"]
    assert db["status"] == "unknown"
    findings = {f["check"]: f for f in db["findings"]}
    assert not findings["rpo_breach"]["active"] and "archive not read yet" in findings["rpo_breach"]["hint"]
    assert findings["collector_down"]["active"] and "archive" in findings["collector_down"]["hint"]

    g = Guardian(GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "file" / "archive")},
        "databases": [{"name": "shop", "url": url}]}))
    try:
        g.collect_all(one_shot=True)
        samples = {s.name for fam in text_string_to_metric_families(g.exposition.render()[0].decode())
                   for s in fam.samples if s.labels.get("database") == "shop"}
        assert "pgbackup_rpo_seconds" in samples and "pgbackup_backups" not in samples
    finally:
        g.stop()
