"""The shipped alerting is tested code: the Prometheus rules pass `promtool check rules` and their unit tests
(`promtool test rules`), the Alertmanager example passes `amtool check-config` and routes pages and tickets as
the recovery procedures escalate, and every alert has its labels, annotations, runbook and tests.

promtool and amtool are real binaries (Debian packages `prometheus` and `prometheus-alertmanager`); a machine
without them fails these tests with the command to install them, it does not skip them.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.support import REPO, RULES, tool

RULE_TESTS = REPO / "alerts" / "tests" / "pgbackup.rules.test.yml"
ALERTMANAGER = REPO / "alerts" / "alertmanager.yml"
RUNBOOKS = REPO / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/pg-backup-guardian/pg-backup-guardian/blob/main/docs/runbooks/"

#: The severity of each alert: page for what needs someone now, ticket for the rest (DESIGN.md section 8).
SEVERITIES = {
    "PgBackupRpoBreach": "page",
    "PgBackupRpoAtRisk": "ticket",
    "PgBackupRpoUnachievable": "ticket",
    "PgBackupMissedSchedule": "page",
    "PgBackupLastAttemptFailed": "page",
    "PgBackupSizeAnomaly": "ticket",
    "PgBackupDrillFailed": "page",
    "PgBackupDrillOverdue": "ticket",
    "PgBackupRecoveryTimeOverRto": "page",
    "PgBackupArchiveGap": "ticket",
    "PgBackupCopyLag": "ticket",
    "PgBackupUnencryptedArchiveObject": "page",
    "PgBackupUnreadableBackup": "page",
    "PgBackupClientToolsTooOld": "ticket",
    "PgBackupHerokuTokenExpiring": "ticket",
    "PgBackupComplianceExportOverdue": "ticket",
    "PgBackupCollectorDown": "ticket",
    "PgBackupRemedialActionFailed": "ticket",
    "PgBackupHerokuIncident": "ticket",
    "PgBackupGuardianAbsent": "page",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_rules_pass_promtool_check_without_warnings() -> None:
    proc = run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS" in out, out
    assert not re.search(r"warn|lint error", out, re.IGNORECASE), out


def test_rules_unit_tests_pass() -> None:
    proc = run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


def test_alertmanager_example_config_is_valid() -> None:
    proc = run(tool("amtool"), "check-config", str(ALERTMANAGER))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SUCCESS" in out, out


@pytest.mark.parametrize(("labels", "receivers"), [
    (["severity=page", "alertname=PgBackupRpoBreach", "database=suoops-backend/DATABASE"],
     "technical-lead,devops-engineer"),
    (["severity=page", "alertname=PgBackupGuardianAbsent"], "technical-lead,devops-engineer"),
    (["severity=ticket", "alertname=PgBackupCopyLag", "database=suoops-backend/DATABASE"], "tickets"),
    (["severity=ticket", "alertname=PgBackupRpoUnachievable", "database=suoops-backend/DATABASE"], "tickets"),
])
def test_alertmanager_pages_the_lead_then_devops_and_files_tickets(labels: list[str], receivers: str) -> None:
    proc = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == receivers


def test_alertmanager_groups_by_alert_and_database() -> None:
    route = yaml.safe_load(ALERTMANAGER.read_text())["route"]
    assert route["group_by"] == ["alertname", "database"]


def test_an_unachievable_rpo_is_one_ticket_not_a_daily_one() -> None:
    routes = yaml.safe_load(ALERTMANAGER.read_text())["route"]["routes"]
    route = next(r for r in routes if r["matchers"] == ['alertname="PgBackupRpoUnachievable"'])
    assert route["receiver"] == "tickets"
    assert route["repeat_interval"] == "720h"


def test_every_alert_is_shipped_with_its_severity() -> None:
    found = {r["alert"]: r["labels"]["severity"] for r in alert_rules()}
    assert found == SEVERITIES


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}:{r['labels'].get('mode', '')}")
def test_every_rule_has_severity_annotations_and_a_runbook(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert rule["labels"].get("severity") in {"page", "ticket"}, name
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{name} has no {key}"
    if "database" in rule["expr"]:
        assert "$labels.database" in annotations["description"], f"{name}'s description does not name the database"
    url = annotations["runbook_url"]
    assert url == f"{RUNBOOK_BASE}{snake(name)}.md", f"{name}: runbook_url {url}"
    runbook = RUNBOOKS / url.removeprefix(RUNBOOK_BASE)
    assert runbook.is_file(), f"{name}: {runbook.relative_to(REPO)} does not exist"
    assert runbook.read_text().startswith(f"# {name}\n"), f"{runbook.name} is not titled {name}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}:{r['labels'].get('mode', '')}")
def test_thresholds_come_from_exported_objectives(rule: dict[str, Any]) -> None:
    """Numbers in an expression are only 0/1 comparisons (findings, success flags); the objectives come from
    pgbackup_rpo_seconds, pgbackup_rpo_warning_ratio, pgbackup_rto_seconds or the daemon's findings. The one
    exception is push-mode staleness, a property of the Pushgateway, not of a database."""
    numbers = set(re.findall(r"(?<![\w.\"])\d+(?:\.\d+)?(?![\w.])", rule["expr"]))
    allowed = {"0", "1"} | ({"300"} if rule["labels"].get("mode") == "push" else set())
    assert numbers <= allowed, f"{rule['alert']} hard-codes {sorted(numbers - allowed)}"


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    doc = yaml.safe_load(RULE_TESTS.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert not names - firing, f"no firing test for {sorted(names - firing)}"
    assert not names - quiet, f"no non-firing test for {sorted(names - quiet)}"
    assert not (firing | quiet) - names, f"tests for unknown alerts {sorted((firing | quiet) - names)}"
