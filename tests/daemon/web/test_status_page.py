"""The status page as a person reads it: a real GuardianHTTP on loopback over a snapshot of three databases (one
protected, one at risk, one failing), loaded in headless Chromium at a phone's width (390 px) and a laptop's
(1280 px). Screenshots land in test-artifacts/status-page/ at the repository root. Plain-HTTP tests cover
escaping, the 404 page and the status document's fields the page is built from.

Every time is relative to the fixed NOW, which is also the server's clock: nothing depends on today's date.
"""

from __future__ import annotations

import base64
import contextlib
import html
import http.client
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from daemon.config import WebConfig
from daemon.core.check_guide import FIRST_STEPS, RUNBOOK_BASE, RUNBOOKS, TITLES
from daemon.core.policy import CHECKS
from daemon.core.provider import ProviderIncident, ProviderStatus
from daemon.core.recovery import PlanTarget
from daemon.core.snapshot import (
    ActionsStatus,
    ArchiveFacts,
    Backup,
    DatabaseState,
    Decision,
    DrillResult,
    Finding,
    ProviderFacts,
    Snapshot,
    SourceState,
    StateHolder,
    TierStats,
)
from daemon.metrics import Exposition
from daemon.web.server import GuardianHTTP

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "status-page"
NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
DAY = timedelta(days=1)
RPO = 86400.0
HEALTHY, AT_RISK, FAILING = "shop/main", "demo/invoicing", "billing/DATABASE"
PG_DUMP_ERROR = (
    'pg_dump: error: connection to server at "billing-prod-7.internal.example.com" (10.20.30.40), port 5433 '
    "failed: FATAL:  remaining connection slots are reserved for roles with the SUPERUSER attribute\n"
    "pg_dump: detail: 97 of 100 connections are held by application_pool_invoicing_workers_with_a_long_name\n"
    "pg_dump: hint: retry once the pool drains, or raise max_connections on billing-prod-7:5433")
WIDTHS = (390, 1280)
GREEN, RED, GREY = "#2e7d32", "#c62828", "#c4c4c4"


# -- the snapshot -----------------------------------------------------------------------------------------

def backup(db: str, started: datetime, ok: bool = True, error: str | None = None, source: str = "archive") -> Backup:
    return Backup(backup_id=f"{db[:4]}-{int(started.timestamp())}", database=db, source=source, kind="scheduled",
                  started_at=started, finished_at=started + timedelta(minutes=2, seconds=5), succeeded=ok,
                  size_bytes=52_428_800, error=error)


def finding(db: str, check: str, active: bool, hint: str) -> Finding:
    return Finding(database=db, check=check, severity=CHECKS[check], active=active, hint=hint, observed_at=NOW)


def database(name: str, backups: list[Backup], findings: list[Finding], **kw: Any) -> DatabaseState:
    src = SourceState(source="archive", backups=tuple(sorted(backups, key=lambda b: b.started_at)),
                      schedule_interval_seconds=RPO, observed_at=NOW)
    return DatabaseState(name=name, rpo_seconds=RPO, rto_seconds={"database_corruption": 3600.0},
                         sources={"archive": src}, findings=tuple(findings), evaluated_at=NOW, **kw)


def healthy() -> DatabaseState:
    """A good backup every day, the newest 3 h 12 min ago; a passed drill; archive tiers; a PITR window."""
    newest = NOW - timedelta(hours=3, minutes=12)
    drill = DrillResult(scenario="database_corruption", started_at=NOW - 5 * DAY, succeeded=True, reason="ok",
                        recovery_seconds=250.0, rto_seconds=3600.0, phases={}, checks_failed=0)
    archive = ArchiveFacts(kind="s3", tiers={"daily": TierStats(newest=newest, count=7, bytes=7 << 20),
                                             "monthly": TierStats(newest=NOW - 20 * DAY, count=12, bytes=12 << 20)},
                           unencrypted=0, monthly_covered=12, monthly_expected=12, monthly_missing=(), oldest=None,
                           posture_problems=(), observed_at=NOW)
    provider = ProviderFacts(plan="standard-0", continuous_protection=True, rollback_earliest=NOW - 4 * DAY,
                             offers_pitr=True, observed_at=NOW)
    return database(HEALTHY, [backup(HEALTHY, newest - k * DAY) for k in range(30)],
                    [finding(HEALTHY, "rpo_breach", False, "data at risk 3h12m"),
                     finding(HEALTHY, "last_attempt_failed", False, "the last attempt succeeded")],
                    drills=(drill,), archive=archive, provider=provider,
                    next_expected={"archive": newest + DAY})


def at_risk() -> DatabaseState:
    """The newest good backup is 20 h old and the next one is expected in 5 h: too late for a 24 h RPO."""
    newest = NOW - timedelta(hours=20)
    return database(AT_RISK, [backup(AT_RISK, newest - k * DAY) for k in range(10)],
                    [finding(AT_RISK, "rpo_at_risk", True, "the next backup is expected 25h after the last one")],
                    next_expected={"archive": NOW + timedelta(hours=5)})


#: The failing database's 30 days, oldest first: green = a good backup, red = failed attempts only, grey = none.
FAILING_DAYS = ["good"] * 20 + ["none"] * 7 + ["good", "failed", "failed"]


def failing() -> DatabaseState:
    """Good backups until 2 days ago, then two failed attempts (the last with pg_dump's whole error); a failed
    table-restore drill; nothing scheduled next."""
    backups = [backup(FAILING, NOW - 31 * DAY)]  # before the timeline: never drawn
    for offset, state in zip(range(29, -1, -1), FAILING_DAYS, strict=True):
        at = NOW - offset * DAY - timedelta(hours=1)
        if state != "none":
            backups.append(backup(FAILING, at, ok=state == "good",
                                  error=PG_DUMP_ERROR if state == "failed" else None))
    drill = DrillResult(scenario="accidental_deletion", started_at=NOW - 3 * DAY, succeeded=False,
                        reason="the restored table invoices has 0 rows", recovery_seconds=95.0, rto_seconds=7200.0,
                        phases={}, checks_failed=2)
    return database(FAILING, backups,
                    [finding(FAILING, "rpo_breach", True, "data at risk 2d1h exceeds the RPO 24h"),
                     finding(FAILING, "last_attempt_failed", True, "the last attempt failed: pg_dump: error: ...")],
                    drills=(drill,))


#: What the actions decided lately about the failing database, oldest first.
DECISIONS = (
    Decision(NOW - timedelta(hours=5), "capture", FAILING, "dry_run", "emergency capture: rpo_breach"),
    Decision(NOW - timedelta(hours=3), "prune", f"{FAILING}/b0123", "skipped_paused", "past its daily keep"),
    Decision(NOW - timedelta(hours=2), "capture", FAILING, "failed", "pg_dump of db:5432/shop failed: timeout"),
)


def snapshot(*dbs: DatabaseState) -> Snapshot:
    return Snapshot(databases={d.name: d for d in dbs}, first_collection_done=True,
                    control=ActionsStatus(decisions={FAILING: DECISIONS}))


@contextlib.contextmanager
def serving(snap: Snapshot, web: WebConfig | None = None) -> Iterator[GuardianHTTP]:
    """The snapshot served on loopback at a fixed `NOW`; every database has a recovery plan target (a Heroku
    app named after it, an S3 archive)."""
    holder = StateHolder(snap)
    holder.heartbeat_at = NOW
    targets = {name: PlanTarget(heroku_app=name.split("/")[0], archive_kind="s3", archive_base="s3://backups/pg")
               for name in snap.databases}
    server = GuardianHTTP("127.0.0.1", 0, holder, Exposition(holder), clock=lambda: NOW, web=web,
                          plan_targets=targets)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


# -- the browser ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with serving(snapshot(healthy(), at_risk(), failing())) as server:
        yield f"http://127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are missing: install the Debian packages chromium, chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield driver
    finally:
        driver.quit()


def load(driver: Any, url: str, width: int) -> None:
    """Open `url` in a viewport `width` CSS pixels wide and 900 high."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.get(url)
    assert driver.execute_script("return window.innerWidth") == width


def screenshot(driver: Any, name: str) -> None:
    """The whole page, not only the viewport, as test-artifacts/status-page/<name>.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    (ARTIFACTS / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))


def no_horizontal_scroll(driver: Any, width: int) -> None:
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width


def card(driver: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.XPATH, f"//article[.//h2[normalize-space()='{name}']]")


def cells(element: Any) -> list[tuple[str, str]]:
    """The timeline's day cells: (fill colour, tooltip) each, oldest first."""
    from selenium.webdriver.common.by import By

    return [(r.get_attribute("fill"), r.find_element(By.TAG_NAME, "title").get_attribute("textContent"))
            for r in element.find_elements(By.CSS_SELECTOR, "svg rect")]


@pytest.mark.parametrize("width", WIDTHS)
def test_the_overview_says_which_database_needs_attention_and_why(browser: Any, site: str, width: int) -> None:
    from selenium.webdriver.common.by import By

    load(browser, site + "/", width)
    screenshot(browser, f"overview-{width}")
    verdict = browser.find_element(By.CSS_SELECTOR, "h1").text
    assert verdict.startswith("2 of 3 databases need attention")
    assert FAILING in verdict and AT_RISK in verdict and HEALTHY not in verdict
    assert browser.find_element(By.CSS_SELECTOR, "h1").value_of_css_property("background-color") == \
        "rgba(183, 28, 28, 1)"  # critical wins over the warning: red
    no_horizontal_scroll(browser, width)

    ok = card(browser, HEALTHY)
    assert ok.find_element(By.CSS_SELECTOR, ".badge").text == "Protected"
    assert "data at risk 3 h 12 min of a 24 h RPO" in ok.text
    newest = ok.find_element(By.XPATH, ".//dt[.='Newest good backup']/following-sibling::dd/time")
    assert newest.text == "3 h 12 min ago"
    assert newest.get_attribute("title") == "2026-11-30 11:48:00 UTC"
    assert newest.get_attribute("datetime") == "2026-11-30T11:48:00+00:00"
    assert "in 20 h 48 min" in ok.text
    assert "Full restore: restored in 4 min 10 s, RTO 1 h, 5 d ago" in ok.text
    assert "daily: 7 copies, newest 3 h 12 min ago" in ok.text and "monthly: 12 copies, newest 20 d ago" in ok.text
    assert "rollback to any moment since 4 d ago (a 4 d window)" in ok.text
    assert "No active findings." in ok.text
    assert [c for c, _ in cells(ok)] == [GREEN] * 30
    bar = ok.find_element(By.CSS_SELECTOR, ".bar .fill")
    assert bar.get_attribute("style") == "width: 13.3%;"  # 3 h 12 min of 24 h

    risky = card(browser, AT_RISK)
    assert risky.find_element(By.CSS_SELECTOR, ".badge").text == "At risk"
    assert "data at risk 20 h of a 24 h RPO" in risky.text
    assert "The next backup will come too late for the RPO" in risky.text
    assert "no restore drill yet" in risky.text
    link = risky.find_element(By.CSS_SELECTOR, "a.runbook")
    assert link.get_attribute("href") == RUNBOOK_BASE + "pg_backup_rpo_at_risk.md"

    bad = card(browser, FAILING)
    assert bad.find_element(By.CSS_SELECTOR, ".badge").text == "Breach or failure"
    assert "data at risk 2 d 1 h of a 24 h RPO" in bad.text
    assert bad.find_element(By.CSS_SELECTOR, ".bar .fill").get_attribute("style") == "width: 100%;"
    assert "none scheduled" in bad.text
    assert "Table restore: failed: the restored table invoices has 0 rows (2 checks failed), 3 d ago" in bad.text
    assert "Data at risk is past the RPO" in bad.text and "The last backup attempt failed" in bad.text
    assert "First: Take a backup now" in bad.text
    hrefs = {a.get_attribute("href") for a in bad.find_elements(By.CSS_SELECTOR, "a.runbook")}
    assert hrefs == {RUNBOOK_BASE + "pg_backup_rpo_breach.md", RUNBOOK_BASE + "pg_backup_last_attempt_failed.md"}
    days = cells(bad)
    assert [c for c, _ in days] == [{"good": GREEN, "failed": RED, "none": GREY}[s] for s in FAILING_DAYS]
    assert days[0][1] == "2026-11-01: 1 good, 0 failed"
    assert days[20][1] == "2026-11-21: 0 good, 0 failed"
    assert days[-1][1] == "2026-11-30: 0 good, 1 failed"

    decided = bad.find_element(By.XPATH, ".//dt[.='Remedial decisions']/following-sibling::dd")
    assert [li.text.split("\n")[0] for li in decided.find_elements(By.CSS_SELECTOR, "li")] == [
        "capture: failed, 2 h ago", "prune of b0123: not done: actions are paused, 3 h ago",
        "capture: dry run: decided, not done, 5 h ago"]
    assert "pg_dump of db:5432/shop failed: timeout" in decided.text
    assert ok.find_element(By.XPATH, ".//dt[.='Remedial decisions']/following-sibling::dd").text == "none yet"

    heading = bad.find_element(By.CSS_SELECTOR, "h2 a")
    assert heading.get_attribute("href") == site + "/db/" + quote(FAILING, safe="")

    plans = bad.find_elements(By.CSS_SELECTOR, "a.plan")
    assert [a.text for a in plans] == ["corruption", "deletion", "failure", "outage"]
    assert plans[0].get_attribute("href") == (site + "/api/recovery-plan?database=" + quote(FAILING, safe="")
                                              + "&scenario=corruption")


@pytest.mark.parametrize("width", WIDTHS)
def test_a_database_page_shows_its_card_and_whole_errors_in_its_history(browser: Any, site: str, width: int) -> None:
    from selenium.webdriver.common.by import By

    load(browser, site + "/", width)
    card(browser, FAILING).find_element(By.CSS_SELECTOR, "h2 a").click()
    assert browser.current_url == site + "/db/billing%2FDATABASE"
    screenshot(browser, f"database-{width}")
    no_horizontal_scroll(browser, width)
    assert card(browser, FAILING).find_element(By.CSS_SELECTOR, ".badge").text == "Breach or failure"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.history tbody tr")
    assert len(rows) == 10  # the source's ten newest attempts
    assert "failed" in rows[0].text and "archive" in rows[0].text and "50.00MB" in rows[0].text
    assert "2 min 5 s" in rows[0].text and "2026-11-30 14:00:00 UTC" in rows[0].text
    error = rows[0].find_element(By.CSS_SELECTOR, "pre.error")
    assert error.text == PG_DUMP_ERROR  # every line, host and port included, none cut
    assert error.rect["x"] + error.rect["width"] <= width
    assert "good" in rows[2].text and not rows[2].find_elements(By.CSS_SELECTOR, "pre.error")

    load(browser, site + "/db/" + quote(HEALTHY, safe=""), width)
    screenshot(browser, f"database-healthy-{width}")
    assert card(browser, HEALTHY).find_element(By.CSS_SELECTOR, ".badge").text == "Protected"
    no_horizontal_scroll(browser, width)


# -- plain HTTP -----------------------------------------------------------------------------------------------

def test_names_and_values_are_escaped_and_an_unknown_database_is_a_404() -> None:
    evil = "<script>alert('x')</script>/db"
    empty = DatabaseState(name=evil, rpo_seconds=RPO, rto_seconds={}, evaluated_at=NOW,
                          sources={"archive": SourceState(source="archive", observed_at=NOW)},
                          findings=(finding(evil, "rpo_breach", True, "no good backup <b>at all</b>"),))
    with serving(snapshot(empty)) as server:
        code, page = get(server.port, "/")
        assert code == 200
        assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;/db" in page
        assert "no good backup &lt;b&gt;at all&lt;/b&gt;" in page
        assert "no good backup: all data is at risk" in page
        assert "<meta http-equiv='refresh' content='30'>" in page
        code, page = get(server.port, "/db/" + quote(evil, safe=""))
        assert code == 200 and "<script>" not in page and "Backup history" in page
        code, page = get(server.port, "/db/" + quote("shop/absent", safe=""))
        assert code == 404 and "No database named “shop/absent” is watched here" in page


def test_a_heroku_incident_is_a_banner_on_every_page_and_in_the_status_document() -> None:
    """Heroku's incident on Data: one escaped banner with its systems, colour, age and link (https only), and the
    same facts under `provider` in /api/status; a javascript: URL from the status API is not linked."""
    incidents = (
        ProviderIncident("Postgres <b>errors</b>", ("Data",), "red", "https://status.heroku.com/incidents/2871",
                         NOW - timedelta(minutes=40)),
        ProviderIncident("Routing slow", ("Apps",), "yellow", "javascript:alert(1)", None))
    snap = replace(snapshot(healthy()), provider=ProviderStatus(
        {"Apps": "yellow", "Data": "red", "Tools": "green"}, incidents, observed_at=NOW))
    with serving(snap) as server:
        code, page = get(server.port, "/")
        assert code == 200
        assert ("<b>Heroku reports an incident on Data</b>: Postgres &lt;b&gt;errors&lt;/b&gt; (red, since "
                in page)
        assert "40 min ago</time>) <a href='https://status.heroku.com/incidents/2871'>status</a>" in page
        assert "<b>Heroku reports an incident on Apps</b>: Routing slow (yellow). Actions" in page
        assert "javascript:" not in page
        code, page = get(server.port, "/db/" + quote(HEALTHY, safe=""))
        assert "Heroku reports an incident on Data</b>" in page
        code, body = get(server.port, "/api/status")
    provider = json.loads(body)["provider"]
    assert provider["systems"] == {"Apps": "yellow", "Data": "red", "Tools": "green"}
    assert provider["incidents"][0] == {
        "title": "Postgres <b>errors</b>", "systems": ["Data"], "status": "red",
        "url": "https://status.heroku.com/incidents/2871", "since": (NOW - timedelta(minutes=40)).isoformat(),
        "updated_at": None}
    assert provider["text"] == ("Heroku reports an incident on Data: Postgres <b>errors</b>; "
                                "Heroku reports an incident on Apps: Routing slow")
    with serving(snapshot(healthy())) as server:
        assert json.loads(get(server.port, "/api/status")[1])["provider"] is None
        assert "Heroku reports" not in get(server.port, "/")[1]


def test_each_card_links_the_recovery_plan_of_each_scenario_served_as_json() -> None:
    with serving(snapshot(healthy(), failing())) as server:
        _, page = get(server.port, "/")
        links = re.findall(r"<a class='plan' href='([^']+)'>", page)
        assert len(links) == 8  # four scenarios for each of the two databases
        for link in links:
            code, body = get(server.port, html.unescape(link))
            assert code == 200, body
            doc = json.loads(body)
            assert doc["database"] in (HEALTHY, FAILING) and doc["generated_at"] == NOW.isoformat()
        code, body = get(server.port, f"/api/recovery-plan?database={quote(FAILING, safe='')}&scenario=deletion")
        doc = json.loads(body)
        assert doc["drill"]["verdict"] == "failed" and doc["drill"]["scenario"] == "accidental_deletion"
        newest = NOW - 2 * DAY - timedelta(hours=1)  # the newer attempts failed
        assert doc["newest_good_backup"]["id"] == backup(FAILING, newest).backup_id
        assert doc["newest_good_backup"]["data_loss_seconds"] == 2 * 86400 + 3600
        assert {f["check"] for f in doc["findings"]} == {"rpo_breach", "last_attempt_failed"}


@pytest.mark.parametrize(("query", "status", "error"), [
    ("database=billing%2FDATABASE", 400, "missing parameter(s): scenario"),
    ("scenario=corruption", 400, "missing parameter(s): database"),
    ("database=billing%2FDATABASE&scenario=flood", 400, "unknown scenario 'flood'"),
    ("database=absent&scenario=corruption", 404, "no database named 'absent' is watched here"),
    ("database=billing%2FDATABASE&scenario=deletion&before=yesterday", 400, "before 'yesterday' is not a time"),
])
def test_a_bad_recovery_plan_request_is_named(query: str, status: int, error: str) -> None:
    with serving(snapshot(failing())) as server:
        code, body = get(server.port, "/api/recovery-plan?" + query)
    assert code == status and error in json.loads(body)["error"]


def test_before_the_first_collection_the_recovery_plan_is_not_ready_rather_than_empty() -> None:
    with serving(replace(snapshot(failing()), first_collection_done=False)) as server:
        code, body = get(server.port, f"/api/recovery-plan?database={quote(FAILING, safe='')}&scenario=outage")
    assert code == 503 and "first collection" in json.loads(body)["error"]


def test_the_recovery_plan_needs_the_same_authentication_as_the_status() -> None:
    token = "plan-SECRET-token-0123456789"
    with serving(snapshot(failing()), WebConfig(bearer_token=token)) as server:
        path = f"/api/recovery-plan?database={quote(FAILING, safe='')}&scenario=corruption"
        code, body = get(server.port, path)
        assert code == 401 and token not in body
        code, body = get(server.port, path, {"Authorization": f"Bearer {token}"})
        assert code == 200 and json.loads(body)["database"] == FAILING and token not in body


def test_the_status_document_carries_drills_archive_tiers_timeline_and_finding_guides() -> None:
    with serving(snapshot(healthy(), failing())) as server:
        code, body = get(server.port, "/api/status")
    assert code == 200
    dbs = {d["name"]: d for d in json.loads(body)["databases"]}
    ok, bad = dbs[HEALTHY], dbs[FAILING]
    assert ok["drills"] == [{"scenario": "database_corruption", "started_at": (NOW - 5 * DAY).isoformat(),
                             "succeeded": True, "reason": "ok", "recovery_seconds": 250.0, "rto_seconds": 3600.0,
                             "checks_failed": 0, "backup_id": None}]
    assert ok["archive"]["tiers"]["daily"] == {"count": 7, "newest": "2026-11-30T11:48:00+00:00", "bytes": 7 << 20}
    assert ok["archive"]["tiers"]["monthly"]["count"] == 12
    timeline = bad["timeline"]
    assert [d["day"] for d in (timeline[0], timeline[-1])] == ["2026-11-01", "2026-11-30"] and len(timeline) == 30
    assert [("good" if d["good"] else "failed" if d["failed"] else "none") for d in timeline] == FAILING_DAYS
    breach = next(f for f in bad["findings"] if f["check"] == "rpo_breach")
    assert breach["title"] == "Data at risk is past the RPO"
    assert breach["runbook_url"] == RUNBOOK_BASE + "pg_backup_rpo_breach.md" and breach["first_step"]
    assert [(d["action"], d["target"], d["outcome"]) for d in bad["decisions"]] == [
        ("capture", FAILING, "failed"), ("prune", f"{FAILING}/b0123", "skipped_paused"),
        ("capture", FAILING, "dry_run")]
    assert bad["decisions"][0]["time"] == (NOW - timedelta(hours=2)).isoformat() and ok["decisions"] == []


def test_a_backup_kept_by_two_sources_counts_once_in_the_timeline() -> None:
    from daemon.status import backup_timeline

    copy = backup(HEALTHY, NOW - timedelta(hours=2))
    heroku = SourceState(source="heroku", backups=(copy,))
    archive = SourceState(source="archive", backups=(copy,))
    db = DatabaseState(name=HEALTHY, rpo_seconds=RPO, rto_seconds={}, sources={"heroku": heroku, "archive": archive})
    assert backup_timeline(db, NOW)[-1] == {"day": "2026-11-30", "good": 1, "failed": 0}


# -- the catalogue of words -----------------------------------------------------------------------------------

def test_every_check_has_a_title_and_a_first_step() -> None:
    assert set(TITLES) == set(CHECKS)
    assert set(FIRST_STEPS) == set(CHECKS)


def test_every_linked_runbook_exists_and_matches_the_alert_rules() -> None:
    assert set(RUNBOOKS) <= set(CHECKS)
    rules = (ROOT / "alerts" / "pgbackup.rules.yml").read_text()
    for check, file in RUNBOOKS.items():
        assert (ROOT / "docs" / "runbooks" / file).is_file(), (check, file)
        assert RUNBOOK_BASE + file in rules, (check, file)


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 s"), (45, "45 s"), (250, "4 min 10 s"), (3600, "1 h"), (11520, "3 h 12 min"), (86400, "24 h"),
    (47 * 3600 + 59 * 60, "47 h 59 min"), (2 * 86400 + 3600, "2 d 1 h"), (30 * 86400, "30 d"), (-90, "1 min 30 s"),
])
def test_durations_read_in_their_two_largest_units(seconds: float, words: str) -> None:
    from daemon.web.page import human_duration

    assert human_duration(seconds) == words
