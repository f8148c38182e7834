"""Exit codes: the Nagios plugin convention for every command (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), the worst
of several in the order CRITICAL > UNKNOWN > WARNING > OK, and the README's table is the code's."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.cli.exits import CRITICAL, OK, TABLE, UNKNOWN, WARNING, worst
from daemon.cli.main import _check_verdict
from daemon.core.snapshot import CollectorStatus, DatabaseState, Finding, Snapshot
from tests.support import REPO, create_database

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd, check=False)


def test_the_readme_table_is_the_codes_table() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    header = "| command | 0 OK | 1 WARNING | 2 CRITICAL | 3 UNKNOWN |"
    assert header in text, "the README's exit code table header is missing or out of date"
    rows = text.split(header, 1)[1].strip().splitlines()[1:1 + len(TABLE)]
    for want, row in zip(TABLE, rows, strict=True):
        cells = tuple(c.strip().replace("\\|", "|") for c in row.strip().strip("|").split(" | "))
        assert cells == want, f"README row {row!r} differs from the code's {want!r}"


def test_the_worst_of_several_ranks_unknown_between_warning_and_critical() -> None:
    assert worst() == OK
    assert worst(OK, WARNING) == WARNING
    assert worst(WARNING, UNKNOWN) == UNKNOWN
    assert worst(UNKNOWN, CRITICAL, WARNING) == CRITICAL


def snapshot(*findings: tuple[str, str], collector_up: bool = True) -> Snapshot:
    """One database with the given (check, severity) findings active, and one collector up or down."""
    db = DatabaseState(name="shop", rpo_seconds=86_400, rto_seconds={}, findings=tuple(
        Finding("shop", check, severity, True, "hint", NOW) for check, severity in findings))
    status = CollectorStatus("archive", "shop", up=collector_up, last_success_at=NOW - timedelta(minutes=1),
                             last_error=None if collector_up else "archive unreadable")
    return Snapshot(databases={"shop": db}, collectors={("archive", "shop"): status}, started_at=NOW)


@pytest.mark.parametrize(("findings", "collector_up", "code"), [
    ((), True, OK),
    ((("rpo_at_risk", "warning"),), True, WARNING),
    ((("rpo_at_risk", "warning"), ("rpo_breach", "critical")), True, CRITICAL),
    ((("rpo_at_risk", "warning"),), False, UNKNOWN),  # facts it could not read may hide something worse
    ((("missed_schedule", "critical"),), False, CRITICAL),  # a breach it did see is never hidden
    ((("retention", "info"),), True, OK),
    ((("rpo_unachievable", "warning"),), True, OK),  # standing: said in the table, not a lasting WARNING
    ((("rpo_unachievable", "warning"), ("size_anomaly", "warning")), True, WARNING),
])
def test_check_reports_the_worst_verdict(findings: tuple[tuple[str, str], ...], collector_up: bool,
                                         code: int) -> None:
    out = io.StringIO()
    assert _check_verdict(snapshot(*findings, collector_up=collector_up), NOW, out) == code
    assert ("UNKNOWN: collector archive of shop is down" in out.getvalue()) == (not collector_up)


def test_check_warns_on_a_warning_finding_of_a_real_database(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    """A fresh good backup and captures off: no breach, but no schedule either (a warning finding): exit 1."""
    url = create_database(pg_cluster)
    archive = tmp_path / "archive"
    Capturer(LocalDirectoryStore(archive)).capture(CaptureRequest(database="shop", url=url))
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"archive:\n  path: {archive}\ndatabases:\n  - name: shop\n    url: '{url}'\n"
                   "    capture: {enabled: false}\n")
    out = cli("check", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == WARNING, out.stdout + out.stderr
    assert "no_schedule" in out.stdout


@pytest.mark.parametrize("args", [("check", "--no-such-flag"), ("no-such-command",), ("drill", "--scenario", "x"),
                                  ("capture",)])
def test_a_bad_argument_is_unknown_with_the_usage_not_a_traceback(args: tuple[str, ...], tmp_path: Path) -> None:
    out = cli(*args, cwd=tmp_path)
    assert out.returncode == UNKNOWN, out.stderr
    assert "usage: backup-guardian" in out.stderr and "Traceback" not in out.stderr


def test_a_configuration_error_is_unknown(tmp_path: Path) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text("collect_interval: soon\n")
    for command in (("check",), ("config", "validate"), ("run",), ("archive", "list"), ("actions",)):
        out = cli(*command, "--config", str(cfg), cwd=tmp_path)
        assert out.returncode == UNKNOWN, (command, out.stderr)
        assert "collect_interval" in out.stderr
