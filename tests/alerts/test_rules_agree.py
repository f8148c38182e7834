"""The RPO alert rules agree with the guardian's own RPO findings.

For a scripted daily schedule over a few simulated days (on-time, late and missed starts), every few minutes:
the pure policy (`daemon.core.policy.evaluate`) gives the findings, and the Exposition's collector gives the series
the guardian would export for that state at that moment. The series go to `promtool test rules` against the
shipped RPO rules (their expressions, `for:` and labels; annotations are tested in alerts/tests/), with the
expectation at each evaluation time derived from the findings: an alert fires exactly when its finding has
been active for the rule's `for:` (as Prometheus's pending -> firing works). One deliberate difference: the
at-risk ticket gives way to the breach page when the page fires, not when the breach begins, so that a database
going from at risk to breached is never shown resolved while the page is still pending.

Test time 0 is the Unix epoch (promtool's start), so the schedule's due times are 02:00 UTC on 1970-01-01 and
the following days; history before it has negative timestamps. No wall clock is read.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from daemon.config import Objectives
from daemon.core.policy import evaluate, newest_good_backup
from daemon.core.risk import next_expected, tolerance_seconds
from daemon.core.snapshot import DatabaseState, Schedule, Snapshot, StateHolder
from daemon.metrics import SnapshotCollector
from tests.support import DAILY, JITTERY, RULES, tool, world

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_DUE = EPOCH + timedelta(hours=2)
DAY = timedelta(days=1)
STEP = timedelta(minutes=5)  # the guardian's evaluation and the rules' evaluation, both every 5 minutes
#: alert -> the finding it must agree with
ALERTS = {"PgBackupRpoBreach": "rpo_breach", "PgBackupRpoAtRisk": "rpo_at_risk",
          "PgBackupRpoUnachievable": "rpo_unachievable"}
#: The families the RPO rules read (the rest of the exposition is irrelevant here).
FAMILIES = {"pgbackup_last_success_timestamp_seconds", "pgbackup_next_expected_backup_timestamp_seconds",
            "pgbackup_backups", "pgbackup_rpo_seconds", "pgbackup_rpo_warning_ratio",
            "pgbackup_rpo_tolerance_seconds", "pgbackup_finding_active"}


@dataclass(frozen=True)
class Scenario:
    """A week of history (start delays in minutes after 02:00), then the simulated days' delays (None:
    the schedule is missed that day)."""

    history: tuple[int, ...]
    days: tuple[int | None, ...]
    objectives: dict[str, str]
    shows: tuple[str, ...]  # the findings the scenario must raise at some point (else it proves little)
    schedules: tuple[Schedule, ...] = (DAILY,)


SCENARIOS = {
    # 24 h RPO (the SuoOps configuration): on time, 12 min late (inside the 15 min tolerance), missed (a breach
    # before the 1 h grace ends), then on time again.
    "daily-24h-late-and-missed": Scenario(JITTERY, (3, 12, None, 4), {}, ("rpo_breach",)),
    # A jittery history (tolerance 49 min) and a 30 min grace: the missed day is at risk before it is breached.
    "missed-at-risk-before-breach": Scenario((3, 50, 3, 50, 3, 50, 3), (3, 4, None, 5),
                                             {"schedule_grace": "30m"}, ("rpo_at_risk", "rpo_breach")),
    # 12 h RPO on a daily schedule: every afternoon the next backup is projected too late.
    "daily-12h-rpo-projected": Scenario(JITTERY, (3, 20, 4), {"rpo": "12h"}, ("rpo_at_risk", "rpo_breach")),
    # No schedule (manual captures at the same hours): the age rule, no tolerance.
    "no-schedule-age-rule": Scenario(JITTERY, (3, None, 4), {}, ("rpo_at_risk", "rpo_breach"),
                                     schedules=()),
}


def begun(s: Scenario) -> list[datetime]:
    first = FIRST_DUE - len(s.history) * DAY
    return ([first + i * DAY + d * timedelta(minutes=1) for i, d in enumerate(s.history)]
            + [FIRST_DUE + i * DAY + d * timedelta(minutes=1) for i, d in enumerate(s.days) if d is not None])


def evaluated(s: Scenario, objectives: Objectives, now: datetime) -> DatabaseState:
    """The database as the guardian holds it after evaluating at `now` (what daemon/evaluation.py publishes)."""
    db = world(now, begun(s), schedules=s.schedules)
    db = replace(db, rpo_seconds=objectives.rpo.total_seconds(), rpo_warning_ratio=objectives.rpo_at_risk_ratio)
    return replace(db, findings=evaluate(db, objectives, [], now), evaluated_at=now,
                   rpo_tolerance_seconds=tolerance_seconds(db, objectives, now),
                   next_expected=next_expected(db, objectives, now))


def exported(db: DatabaseState) -> dict[str, float]:
    """The RPO series the guardian's /metrics would show for `db`: `name{labels}` -> value."""
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(StateHolder(Snapshot(databases={db.name: db}))))
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in FAMILIES:
                labels = ", ".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def rule_for(value: str | None) -> timedelta:
    """A rule's `for:` (Prometheus duration of one unit, as the rules file writes them)."""
    if not value:
        return timedelta(0)
    m = re.fullmatch(r"(\d+)([smh])", value)
    assert m, f"unexpected for: {value}"
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours"}[m[2]]: int(m[1])})


def firing(active: Iterable[bool], hold: timedelta) -> list[bool]:
    """Prometheus's alert states over the evaluations: firing once active continuously for `hold`."""
    out, since = [], None
    for i, on in enumerate(active):
        since = (i if since is None else since) if on else None
        out.append(since is not None and (i - since) * STEP >= hold)
    return out


def rpo_rules(path: Path) -> dict[str, dict[str, Any]]:
    """The shipped RPO alerts without annotations (their templates are tested in alerts/tests/), in `path`."""
    doc = yaml.safe_load(RULES.read_text())
    rules = [{k: v for k, v in r.items() if k != "annotations"}
             for g in doc["groups"] for r in g["rules"] if r.get("alert") in ALERTS]
    path.write_text(yaml.safe_dump({"groups": [{"name": "rpo", "rules": rules}]}, sort_keys=False))
    return {r["alert"]: r for r in rules}


@pytest.mark.parametrize("name", SCENARIOS)
def test_rpo_alerts_fire_exactly_when_the_guardian_finds_the_rpo_at_risk_or_breached(name: str,
                                                                                       tmp_path: Path) -> None:
    scenario = SCENARIOS[name]
    objectives = Objectives.model_validate(scenario.objectives)
    rules = rpo_rules(tmp_path / "rpo.rules.yml")
    steps = int((len(scenario.days) + 0.5) * DAY / STEP)
    series: dict[str, list[float | None]] = {}
    findings: dict[str, list[bool]] = {check: [] for check in ALERTS.values()}
    good: list[bool] = []
    for i in range(steps):
        now = EPOCH + i * STEP
        db = evaluated(scenario, objectives, now)
        for key, value in exported(db).items():
            series.setdefault(key, [None] * steps)[i] = value
        good.append(newest_good_backup(db) is not None)
        active = {f.check: f.active for f in db.findings}
        for check in findings:
            findings[check].append(active[check])

    page = firing(findings["rpo_breach"], rule_for(rules["PgBackupRpoBreach"].get("for")))
    # the ticket's condition: at risk, or breached with a good backup (not "none at all") while the page is pending
    ticket = [r or (b and g and not p) for r, b, g, p in zip(findings["rpo_at_risk"], findings["rpo_breach"],
                                                           good, page, strict=True)]
    expected = {**findings, "rpo_at_risk": ticket}
    cases = []
    for alert, check in ALERTS.items():
        fires = firing(expected[check], rule_for(rules[alert].get("for")))
        for i, on in enumerate(fires):
            case: dict[str, Any] = {"eval_time": f"{i * STEP // timedelta(minutes=1)}m", "alertname": alert}
            if on:
                case["exp_alerts"] = [{"exp_labels": {"severity": rules[alert]["labels"]["severity"],
                                                      "database": "shop"}}]
            cases.append(case)
    for check in scenario.shows:
        assert any(findings[check]), f"{name}: {check} is never active"
    for check in ("rpo_at_risk", "rpo_breach"):
        assert not all(findings[check]), f"{name}: {check} is always active"

    test_file = tmp_path / "agree.test.yml"
    test_file.write_text(yaml.safe_dump({
        "rule_files": ["rpo.rules.yml"],
        "evaluation_interval": f"{STEP // timedelta(minutes=1)}m",
        "tests": [{
            "name": name,
            "interval": f"{STEP // timedelta(minutes=1)}m",
            "input_series": [{"series": key, "values": " ".join("_" if v is None else repr(float(v)) for v in vals)}
                             for key, vals in series.items()],
            "alert_rule_test": cases,
        }],
    }, sort_keys=False))
    proc = subprocess.run([tool("promtool"), "test", "rules", str(test_file)], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode == 0, f"rules disagree with the findings ({name}):\n{proc.stdout[-6000:]}{proc.stderr}"
