"""End to end with the real monitoring stack from the Debian packages, all on 127.0.0.1 and started here:

- the real daemon (`python -m daemon run`) watches two databases on the test PostgreSQL;
- Prometheus scrapes it every second and evaluates the shipped rules (alerts/pgbackup.rules.yml);
- Alertmanager, configured from the shipped alerts/alertmanager.yml, sends to a webhook receiver of the test;
- an RPO breach pages the technical lead; a good backup resolves it; a breach that stays escalates to DevOps;
- every Grafana panel query (dashboards/*.json) returns data from that Prometheus;
- push mode lands the same metrics in a real Pushgateway (with and without basic auth).

Time is compressed, not skipped: a minute of the shipped configuration is a second here. Every `for:` of the
rules and every Alertmanager route timing (group_wait, group_interval, repeat_interval) is divided by 60 in a
test copy (tests/doubles/promstack.py: scaled_rules, alertmanager_test_config), which keeps their order and
therefore the escalation built on it (DevOps is paged only when a page outlives the lead's 30 minutes, here 30 seconds).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.core.redact import url_password
from tests.doubles.promstack import (
    Prometheus,
    WebhookReceiver,
    alertmanager,
    alertmanager_test_config,
    http_get,
    poll,
    prometheus,
    pushgateway,
    scaled,
    scaled_rules,
)
from tests.support import REPO, DaemonProcess, create_database

RULES = REPO / "alerts" / "pgbackup.rules.yml"
ALERTMANAGER = REPO / "alerts" / "alertmanager.yml"
DASHBOARDS = REPO / "dashboards"
JOB = "pg-backup-guardian"

MAIN = "shop/main"  # an old good backup (3 h over a 2 h RPO), then a fresh one: breach, then resolution
EMPTY = "shop/empty"  # never a good backup: the breach stays and escalates
RPO = timedelta(hours=2)
#: A minute of the shipped configuration is a second in this test.
TIME_FACTOR = 1 / 60
#: The escalation of alerts/alertmanager.yml: a page goes to the lead at once, to DevOps if it outlives 30 minutes.
LEAD, DEVOPS, TICKETS = "technical-lead", "devops-engineer", "tickets"
#: The daemon's own captures fail (pg_dump exits non-zero when -t matches no table), so only the test decides
#: when a good backup appears; the failing attempts are real failures and page as such.
FAILING_DUMP = "--table=pgbackup_e2e_no_such_table"

#: Dashboard queries over metrics this setup cannot emit (a self-managed database on a local archive), and why.
NEEDS: dict[str, str] = {
    "pgbackup_heroku_": "Heroku API polling (no Heroku database here)",
    "pgbackup_archive_copy_lag_seconds": "a Heroku source mirrored into the archive (copy lag)",
    "pgbackup_pitr_": "Heroku continuous protection",
    "pgbackup_provider_plan_info": "a Heroku plan",
}
#: Grafana's built-in interval variables, as a 1 s scrape makes sense of them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300", "__range_ms": "300000"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)\]\]|\$(\w+)")


def _daemon_config(main_url: str, empty_url: str, scratch_url: str) -> str:
    def capture() -> str:  # a schedule shorter than the RPO, as the config demands; every capture fails
        return f"    capture: {{interval: 1h, timeout: 30s, extra_args: ['{FAILING_DUMP}']}}\n"

    return (
        "collect_interval: 1s\n"
        "databases:\n"
        f"  - name: {MAIN}\n    url: '{main_url}'\n" + capture() +
        "    objectives: {rpo: 2h}\n"
        # a drill every minute, so the daemon itself runs one (and counts it) while the test watches
        f"    drill: {{scratch_url: '{scratch_url}', tables: [invoices], full_schedule: '* * * * *'}}\n"
        f"  - name: {EMPTY}\n    url: '{empty_url}'\n" + capture() +
        "    objectives: {rpo: 2h}\n"
        "    drill: {enabled: false}\n"
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}


def _no_template_errors(alerts: list[dict[str, Any]]) -> list[str]:
    return [f"{a['labels'].get('alertname')} {k}: {v}" for a in alerts for k, v in a.get("annotations", {}).items()
            if "error expanding template" in v or "<no value>" in v or "error executing template" in v]


# ---------------------------------------------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------------------------------------------
def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from _panels(p.get("panels") or [])  # rows, collapsed or not


def _substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        assert name in values, f"unknown template variable ${name} in {expr!r}"
        return values[name]

    return _VARIABLE.sub(one, expr)


def _label_values(prom: Prometheus, query: str) -> list[str]:
    """Grafana's `label_values(selector, label)` / `label_values(label)` against Prometheus's HTTP API."""
    m = re.fullmatch(r"\s*label_values\(\s*(?:(.+?)\s*,\s*)?(\w+)\s*\)\s*", query)
    assert m, f"unsupported variable query {query!r}"
    selector, label = m.groups()
    doc = prom.get_json(f"/api/v1/label/{label}/values", **({"match[]": selector} if selector else {}))
    assert doc["status"] == "success", doc
    return sorted(doc["data"])


def _check_dashboards(prom: Prometheus) -> tuple[list[str], list[str], list[str]]:
    """Run every panel query of every dashboard with each variable on "All" (it must return data, unless it needs
    a feature this setup lacks), and once with one concrete value (it must be valid). Returns (queries with data,
    queries without data and why, failures)."""
    with_data: list[str] = []
    skipped: list[str] = []
    failures: list[str] = []
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "no dashboards in dashboards/"
    for path in files:
        board = json.loads(path.read_text())
        # variables, in order (a later one may use an earlier one): "All" values and one concrete value each
        all_values = dict(BUILTINS)
        one_value = dict(BUILTINS)
        for var in board.get("templating", {}).get("list", []):
            name, kind = var["name"], var.get("type")
            if kind == "datasource":
                all_values[name] = one_value[name] = "prometheus"
            elif kind == "query":
                query = var.get("query")
                query = query.get("query") if isinstance(query, dict) else query
                found = _label_values(prom, _substitute(str(query), one_value))
                if not found:
                    failures.append(f"{path.name}: variable ${name} ({query}) has no values")
                    continue
                if name == "database":
                    assert {MAIN, EMPTY} <= set(found), f"${name} offers {found}"
                all_values[name] = (var.get("allValue") or ".*") if var.get("includeAll") else found[0]
                one_value[name] = MAIN if name == "database" else found[0]
            else:
                all_values[name] = one_value[name] = str((var.get("current") or {}).get("value") or ".*")
        for panel in _panels(board.get("panels", [])):
            for target in panel.get("targets") or []:
                raw = target.get("expr")
                if not raw or target.get("hide"):
                    continue
                where = f"{path.name} panel {panel.get('id')} {panel.get('title')!r} {target.get('refId')}"
                metrics = set(re.findall(r"pgbackup_[a-z0-9_]+", raw))
                needs = sorted({why for m in metrics for prefix, why in NEEDS.items() if m.startswith(prefix)})
                one = prom.query(_substitute(raw, one_value))  # a concrete selection must be valid PromQL too
                if one.get("status") != "success":
                    failures.append(f"{where}: query fails: {_substitute(raw, one_value)}: {one.get('error')}")
                expr = _substitute(raw, all_values)
                doc = prom.query(expr)
                if doc.get("status") != "success":
                    failures.append(f"{where}: query fails: {expr}: {doc.get('error')}")
                elif doc["data"]["result"]:
                    with_data.append(f"{where}: {raw}")
                elif needs:
                    skipped.append(f"{where}: {raw} (needs {'; '.join(needs)})")
                elif raw.replace(" ", "").startswith("absent("):
                    skipped.append(f"{where}: {raw} (empty by design while the guardian is scraped)")
                else:
                    failures.append(f"{where}: no data for {expr}")
    return with_data, skipped, failures


# ---------------------------------------------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------------------------------------------
def test_rpo_breach_pages_resolves_escalates_and_every_dashboard_panel_has_data(
    pg_cluster: LocalCluster, own_cluster: LocalCluster, run_daemon: Any, tmp_path: Path
) -> None:
    assert RULES.exists(), "alerts/pgbackup.rules.yml is missing"
    assert ALERTMANAGER.exists(), "alerts/alertmanager.yml is missing"
    main_url, empty_url = create_database(pg_cluster), create_database(pg_cluster)
    body = _daemon_config(main_url, empty_url, own_cluster.url("postgres"))
    state = tmp_path / "state-0"  # where run_daemon puts its first daemon's state (asserted below)
    archive = LocalDirectoryStore(state / "archive")

    # 1. an old good backup of MAIN, made by the guardian's own capture path with a clock 3 h behind
    old = datetime.now(UTC) - timedelta(hours=3)
    Capturer(archive, clock=lambda: old).capture(CaptureRequest(database=MAIN, url=main_url))

    # 2. restore drills of it (full and table) by the CLI, before the daemon starts: it loads their reports
    cli_config = tmp_path / "cli.yaml"
    cli_config.write_text(f"state_dir: {state}\n" + body)
    for scenario in ("full", "table"):
        drill = subprocess.run([sys.executable, "-m", "daemon", "drill", "--config", str(cli_config),
                                "--database", MAIN, "--scenario", scenario],
                               capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, timeout=120)
        assert drill.returncode == 0 and "drill succeeded" in drill.stdout, drill

    rules = tmp_path / "pgbackup.rules.test.yml"
    original_for = scaled_rules(RULES, rules, TIME_FACTOR)
    assert original_for.get("PgBackupRpoBreach"), "the breach rule has no `for:` any more: revisit TIME_FACTOR"

    with contextlib.ExitStack() as stack:
        hook = stack.enter_context(WebhookReceiver())
        am = stack.enter_context(alertmanager(tmp_path / "alertmanager",
                                              alertmanager_test_config(ALERTMANAGER, hook.url, TIME_FACTOR)))
        d: DaemonProcess = run_daemon(body)
        assert d.state_dir == state
        prom = stack.enter_context(prometheus(tmp_path / "prometheus", {JOB: [f"127.0.0.1:{d.port}"]},
                                              [f"127.0.0.1:{am.port}"], resend_delay=scaled("1m", TIME_FACTOR)))

        def context() -> str:
            daemon_log = "\n".join(d.log().splitlines()[-30:])
            return prom.log_tail() + am.log_tail() + hook.summary() + f"\n--- daemon log ---\n{daemon_log}"

        # Prometheus's first scrape, and its first alert sent, come about 5 s after its start (service discovery
        # is throttled to 5 s), a delay the compressed time does not shrink: the rules are loaded once the guardian
        # is scraped and the Alertmanager known, else the guardian-absent rule (5 m, here 5 s) would page for that
        # start-up gap and alerts firing at once would wait for the resend delay.
        poll("Prometheus to scrape the daemon", lambda: prom.vector(f'up{{job="{JOB}"}} == 1'), 30, context)
        prom.wait_for_alertmanagers()
        prom.load_rules([rules])

        # 3. the breach fires in Prometheus: MAIN through data at risk, EMPTY through "no good backup at all"
        breach = poll(f"PgBackupRpoBreach of {MAIN} firing", lambda: prom.alerts(
            "PgBackupRpoBreach", "firing", database=MAIN), 60, context)[0]
        assert breach["labels"]["severity"] == "page"
        assert float(breach["value"]) > RPO.total_seconds()  # seconds of data at risk, about 3 h
        empty = poll(f"PgBackupRpoBreach of {EMPTY} firing", lambda: prom.alerts(
            "PgBackupRpoBreach", "firing", database=EMPTY), 30, context)[0]
        assert float(empty["value"]) == 0  # the "no good backup held" branch
        assert breach["annotations"]["runbook_url"].startswith("https://")
        assert MAIN in breach["annotations"]["summary"]
        # the daemon's failed captures are the newest attempts: that pages too
        poll(f"PgBackupLastAttemptFailed of {MAIN} firing", lambda: prom.alerts(
            "PgBackupLastAttemptFailed", "firing", database=MAIN), 30, context)
        assert not prom.alerts("PgBackupRpoAtRisk", "firing", database=MAIN)  # inhibited anyway, and not at risk

        # 4. Alertmanager routes the page to the technical lead at once (DevOps only later)
        assert am.routes_for(alertname="PgBackupRpoBreach", severity="page", database=MAIN) == [LEAD, DEVOPS]
        page = poll(f"the lead paged for {MAIN}", lambda: hook.notified(
            LEAD, "firing", alertname="PgBackupRpoBreach", database=MAIN), 30, context)[0]
        assert page.labels["severity"] == "page"
        assert page.annotations["summary"] == breach["annotations"]["summary"]
        poll(f"the lead paged for the failed capture of {MAIN}", lambda: hook.notified(
            LEAD, "firing", alertname="PgBackupLastAttemptFailed", database=MAIN), 30, context)
        assert not hook.notified(DEVOPS, database=MAIN), "DevOps paged before the escalation delay" + context()
        assert not hook.notified(TICKETS, severity="page"), "a page went to the ticket queue" + context()

        # 5. a good backup (the guardian's own capture path, real clock) resolves the breach and the failed attempt
        fresh = Capturer(archive).capture(CaptureRequest(database=MAIN, url=main_url, kind="manual"))
        newest = ("pgbackup_last_success_timestamp_seconds", (("database", MAIN), ("source", "archive")))
        d.wait_for("the daemon to read the fresh backup", lambda: abs(
            d.metrics().get(newest, 0) - fresh.started_at.timestamp()) < 0.01, timeout=30)
        poll(f"the alerts of {MAIN} to resolve in Prometheus", lambda: not prom.alerts(
            "PgBackupRpoBreach", database=MAIN) and not prom.alerts("PgBackupLastAttemptFailed", database=MAIN),
            30, context)
        resolved = poll(f"the lead told {MAIN} is resolved", lambda: hook.notified(
            LEAD, "resolved", alertname="PgBackupRpoBreach", database=MAIN), 30, context)[0]
        assert resolved.labels["severity"] == "page"
        # no alert stuck on the old failure: the later good backup resolves the failed-attempt page too
        poll(f"the lead told the failed capture of {MAIN} is resolved", lambda: hook.notified(
            LEAD, "resolved", alertname="PgBackupLastAttemptFailed", database=MAIN), 30, context)
        assert not prom.alerts("PgBackupRpoAtRisk", database=MAIN)  # a fresh backup is far from the RPO
        assert prom.alerts("PgBackupRpoBreach", "firing", database=EMPTY), "the other database must stay breached"

        # 6. the page that outlives the escalation delay reaches DevOps; the resolved one never does
        escalated = poll(f"the {EMPTY} page escalated to DevOps", lambda: hook.notified(
            DEVOPS, "firing", alertname="PgBackupRpoBreach", database=EMPTY), 90, context)[0]
        assert escalated.labels["severity"] == "page"

        # 7. every rule evaluates cleanly against the real series; no annotation template fails
        unhealthy = [(r["name"], r.get("lastError")) for r in prom.rules() if r.get("health") != "ok"]
        assert not unhealthy, f"rules failing in Prometheus: {unhealthy}" + context()
        assert not _no_template_errors(prom.alerts()), _no_template_errors(prom.alerts())
        assert not [a for a in prom.alerts() if a["labels"]["alertname"] in ("PgBackupGuardianAbsent",
                                                                             "PgBackupCollectorDown")], prom.alerts()

        # 8. every dashboard panel has data. The daemon's own scheduled drill (every minute) makes the actions
        # counter exist; increase()/rate() need two samples of it.
        poll("the daemon's scheduled drill to be counted and scraped twice", lambda: prom.vector(
            'count_over_time(pgbackup_actions_total{action="drill"}[5m]) >= 2'), 90, context)
        with_data, skipped, failures = _check_dashboards(prom)
        print(f"\ndashboard queries with data: {len(with_data)}")
        print("dashboard queries without data in this setup:\n  " + "\n  ".join(skipped or ["(none)"]))
        assert not failures, "dashboard queries without data:\n  " + "\n  ".join(failures) + context()
        assert with_data

        # the DevOps groups of both databases were created together and flushed together long ago (step 6):
        # the resolved page of MAIN was never escalated
        assert not hook.notified(DEVOPS, database=MAIN), "DevOps paged for a page resolved in time" + context()
        assert not hook.notified(alertname="PgBackupGuardianAbsent"), "guardian reported absent" + context()
        assert not _no_template_errors([{"labels": n.labels, "annotations": n.annotations}
                                        for n in hook.notified()])
        log = d.log()
        assert "Traceback" not in log
        db_password = url_password(main_url)
        assert db_password and db_password not in log


# ---------------------------------------------------------------------------------------------------------------
# Push mode
# ---------------------------------------------------------------------------------------------------------------
def _crypt() -> ModuleType:
    """The stdlib crypt module (bcrypt through libxcrypt, for the Pushgateway's basic_auth_users)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        crypt = pytest.importorskip("crypt", reason="no crypt module (Python >= 3.13): no bcrypt hash for the "
                                                    "Pushgateway's basic auth")
    salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)  # cost 4: cheap, the hash is only for this test
    if not crypt.crypt("x", salt):
        pytest.skip("the C library's crypt() has no bcrypt")
    return crypt


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


@pytest.mark.parametrize("auth", [False, True], ids=["open", "basic-auth"])
def test_push_mode_lands_the_metrics_in_the_pushgateway(
    pg_cluster: LocalCluster, run_daemon: Any, tmp_path: Path, auth: bool
) -> None:
    url = create_database(pg_cluster)
    users: dict[str, str] = {}
    headers: dict[str, str] = {}
    env: dict[str, str] = {}
    push_user = ""
    password = "pw-" + secrets.token_hex(12)
    if auth:
        crypt = _crypt()
        users = {"guardian": crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}
        headers = {"Authorization": "Basic " + base64.b64encode(f"guardian:{password}".encode()).decode()}
        env = {"GUARDIAN_PUSH_PASSWORD": password}  # the password through the environment, as documented
        push_user = "  username: guardian\n"

    with pushgateway(tmp_path / "pushgateway", users, headers) as gw:
        if auth:
            assert http_get(gw.port, "/metrics")[0] == 401  # closed to anyone without the password
        d: DaemonProcess = run_daemon(
            f"push:\n  url: {gw.url}\n  instance: e2e\n{push_user}collect_interval: 1s\n"
            f"databases:\n  - name: {MAIN}\n    url: '{url}'\n    capture: {{interval: 1h, timeout: 30s}}\n", env)
        d.wait_for("a capture", lambda: d.status()["databases"][0]["newest_good_backup"])
        group = (("instance", "e2e"), ("job", JOB))

        def pushed() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            code, body = gw.get("/metrics")
            assert code == 200, body[:300]
            return _samples(body)

        def context() -> str:
            return gw.log_tail() + "\n--- daemon log ---\n" + d.log()

        rpo_key = ("pgbackup_rpo_seconds", tuple(sorted((("database", MAIN), *group))))
        first = poll("pgbackup_rpo_seconds of the e2e group in the Pushgateway",
                     lambda: (lambda m: m if rpo_key in m else None)(pushed()), 30, context)
        assert first[rpo_key] == 86400  # the default 24 h RPO, as the daemon serves it
        text = gw.get("/metrics")[1].decode()
        assert re.search(r'pgbackup_rpo_seconds\{[^}]*instance="e2e"[^}]*job="pg-backup-guardian"', text)
        push_time = first[("push_time_seconds", group)]
        assert abs(push_time - datetime.now(UTC).timestamp()) < 30

        # pushed again at every collection
        poll("a later push", lambda: pushed()[("push_time_seconds", group)] > push_time, 30, context)

        # the whole exposition: every series the daemon serves is in the pushed group, with the same value
        def same_series() -> bool:
            mine = {(name, tuple(sorted((*labels, *group)))) for name, labels in d.metrics()}
            return mine <= set(pushed())

        poll("the pushed group to hold every series of /metrics", same_series, 30, context)
        pushed_now = pushed()
        success = ("pgbackup_last_success_timestamp_seconds",
                   tuple(sorted((("database", MAIN), ("source", "archive"), *group))))
        assert pushed_now[success] == d.metrics()[(success[0], (("database", MAIN), ("source", "archive")))]
        assert pushed_now[("push_failure_time_seconds", group)] == 0

        log = d.log()
        assert "pushing metrics to" in log and "push to the Pushgateway failed" not in log
        db_password = url_password(url)
        assert db_password and db_password not in log
        assert password not in log
        assert "Traceback" not in log
