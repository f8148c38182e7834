"""The status page: an overview at / and a page per database at /db/<url-quoted name>, as server-rendered HTML.

Built from the status document alone (`daemon.status`, what /api/status serves), so the page never shows what
the API does not carry. Every value from the document is HTML-escaped; relative times ("3 h ago") are counted
from the document's `generated_at`. No script, no external resource; the page reloads itself every 30 s.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from daemon.core.recovery import SCENARIOS as PLANS
from daemon.status import human_size
from daemon.web.page_style import CSS

REFRESH_SECONDS = 30
LABELS = {"ok": "Protected", "warning": "At risk", "critical": "Breach or failure", "unknown": "Unknown"}
#: Order of concern: what the verdict names first.
RANK = {"critical": 0, "unknown": 1, "warning": 2, "ok": 3}
SCENARIOS = {"database_corruption": "Full restore", "accidental_deletion": "Table restore"}
#: A decision's outcome in words, and its colour.
OUTCOME_WORDS = {
    "done": ("done", "ok"), "started": ("started", "muted"), "failed": ("failed", "critical"),
    "interrupted": ("interrupted", "warning"), "dry_run": ("dry run: decided, not done", "muted"),
    "skipped_disabled": ("not done: actions are disabled", "muted"),
    "skipped_paused": ("not done: actions are paused", "warning"),
    "skipped_not_leader": ("left to the leader", "muted"), "skipped_running": ("not done: one is running", "muted"),
    "skipped_cooldown": ("not done: in its cooldown", "muted"),
    "skipped_cap": ("not done: daily cap reached", "warning"),
    "skipped_max": ("not done: at its maximum", "warning"), "skipped_busy": ("not done: busy", "muted"),
    "skipped_unavailable": ("not done: unavailable", "warning"),
}
#: The scenarios a recovery plan is linked for (daemon.core.recovery.SCENARIOS), in the procedures' order.
PLAN_SCENARIOS = tuple(PLANS)  # the recovery plan's scenarios, in the procedures' order
DAY_COLOURS = {"good": "#2e7d32", "failed": "#c62828", "none": "#c4c4c4"}


# -- words for numbers and times ------------------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """A duration in its two largest units: 45 s, 4 min 10 s, 3 h 12 min, 24 h, 3 d 2 h (days from 48 h on)."""
    total = round(abs(seconds))
    units = [("d", 86400), ("h", 3600), ("min", 60), ("s", 1)]
    if total < 48 * 3600:
        units = units[1:]
    for i, (name, size) in enumerate(units):
        if total >= size:
            text = f"{total // size} {name}"
            if i + 1 < len(units) and (rest := total % size // units[i + 1][1]):
                text += f" {rest} {units[i + 1][0]}"
            return text
    return "0 s"


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _exact(iso: str) -> str:
    return _parse(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def _relative(iso: str, now: datetime) -> str:
    ahead = (_parse(iso) - now).total_seconds()
    if abs(ahead) < 1:
        return "now"
    return f"in {human_duration(ahead)}" if ahead > 0 else f"{human_duration(ahead)} ago"


def _time(iso: str, now: datetime, text: str | None = None) -> str:
    """A <time> element: relative words, the exact UTC time on hover."""
    return (f'<time datetime="{escape(iso)}" title="{escape(_exact(iso))}">'
            f"{escape(text if text is not None else _relative(iso, now))}</time>")


def db_href(name: str) -> str:
    return "/db/" + quote(name, safe="")


# -- the page shell ----------------------------------------------------------------------------------------------

def _shell(doc: dict[str, Any], title: str, body: str) -> str:
    generated = doc["generated_at"]
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta http-equiv='refresh' content='{REFRESH_SECONDS}'><title>{escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<header class='top'><a href='/'>pg-backup-guardian</a> <span>{escape(doc['version'])}</span>"
        f"<span class='gen'>as of {escape(_exact(generated))}</span></header><main>{_notices(doc)}{body}</main>"
        "<footer><a href='/api/status'>/api/status</a> · <a href='/metrics'>/metrics</a></footer></body></html>"
    )


def _notices(doc: dict[str, Any]) -> str:
    out = []
    if doc.get("demo"):
        out.append("<p class='notice'><b>Demo mode</b>: watching a throwaway local database. "
                   "Set DATABASE_URL to watch yours.</p>")
    actions = doc.get("actions") or {}
    if actions.get("mode", "live") != "live":
        role = "this replica is the leader" if actions.get("leader") else "this replica is a follower"
        out.append(f"<p class='notice s-warning'><b>Remedial actions: {escape(actions['mode'])}</b> ({role})</p>")
    for warning in (doc.get("security") or {}).get("warnings", []):
        out.append(f"<p class='notice s-critical'><b>Security</b>: {escape(warning)}</p>")
    out.extend(_provider_notices(doc))
    return "".join(out)


def _provider_notices(doc: dict[str, Any]) -> list[str]:
    """One banner per incident Heroku reports on Data or Apps: the incident is Heroku's; the guardian's
    actions against Heroku wait for its end."""
    out = []
    for inc in (doc.get("provider") or {}).get("incidents", []):
        url = inc.get("url") or ""
        link = f" <a href='{escape(url)}'>status</a>" if url.startswith("https://") else ""
        since = f", since {_time(inc['since'], _parse(doc['generated_at']))}" if inc.get("since") else ""
        out.append(f"<p class='notice s-warning provider'><b>Heroku reports an incident on "
                   f"{escape(', '.join(inc.get('systems') or []))}</b>: {escape(inc.get('title') or '')} "
                   f"({escape(inc.get('status') or '')}{since}){link}. Actions against Heroku wait for its end.</p>")
    return out


# -- the overview ------------------------------------------------------------------------------------------------

def overview_page(doc: dict[str, Any]) -> str:
    """The page at /: the verdict, then one card per database (worst first), each linking to its own page."""
    now = _parse(doc["generated_at"])
    dbs = sorted(doc["databases"], key=lambda d: (RANK.get(d["status"], 1), d["name"]))
    cards = "".join(_card(db, now, link=True) for db in dbs)
    return _shell(doc, "pg-backup-guardian", f"{_verdict(dbs)}<div class='cards'>{cards}</div>")


def _verdict(dbs: list[dict[str, Any]]) -> str:
    """One sentence on the whole fleet; its colour is the worst status (critical or unknown wins)."""
    n = len(dbs)
    bad = [d for d in dbs if d["status"] != "ok"]
    if n == 0:
        text, level = "No database is watched yet", "unknown"
    elif not bad:
        text, level = ("The database is protected" if n == 1 else f"All {n} databases are protected"), "ok"
    else:
        names = ", ".join(f"{d['name']} ({LABELS.get(d['status'], d['status']).lower()})" for d in bad)
        verb = "needs" if len(bad) == 1 else "need"
        text = f"{len(bad)} of {n} database{'s' if n != 1 else ''} {verb} attention: {names}"
        level = "critical" if any(d["status"] in ("critical", "unknown") for d in bad) else "warning"
    return f"<h1 class='verdict s-{level}'>{escape(text)}</h1>"


# -- one database ------------------------------------------------------------------------------------------------

def _card(db: dict[str, Any], now: datetime, link: bool) -> str:
    status = db["status"]
    name = escape(db["name"])
    title = f"<a href='{escape(db_href(db['name']))}'>{name}</a>" if link else name
    facts = [("Newest good backup", _newest(db, now)), ("Next backup", _next(db, now))]
    if db.get("breach_at"):
        breached = _parse(db["breach_at"]) <= now
        facts.append(("Breached since" if breached else "Breach after", _time(db["breach_at"], now, _exact(
            db["breach_at"])) + (f" ({_relative(db['breach_at'], now)})" if breached else "")))
    facts += [("Restore drills", _drills(db, now)), ("Archive copies", _archive(db, now)),
              ("Remedial decisions", _decisions(db, now))]
    if (pitr := _pitr(db, now)) is not None:
        facts.append(("Point-in-time recovery", pitr))
    facts.append(("Recovery plan", _plans(db["name"])))
    stale = [s for s, src in sorted(db["sources"].items()) if src["stale"]]
    if stale:
        facts.append(("Stale facts", escape(f"the last known values of {', '.join(stale)}: its collector is down "
                                            "or late")))
    rows = "".join(f"<div><dt>{escape(k)}</dt><dd>{v}</dd></div>" for k, v in facts)
    return (f"<article class='card s-{escape(status)}'><header><h2>{title}</h2>"
            f"<span class='badge s-{escape(status)}'>{escape(LABELS.get(status, status))}</span></header>"
            f"{_risk(db)}<dl>{rows}</dl>{_timeline(db)}{_findings(db)}</article>")


def _risk(db: dict[str, Any]) -> str:
    """Data at risk against the RPO: a bar (capped at 100 %) and the same in words."""
    risk, rpo = db["data_at_risk_seconds"], db["rpo_seconds"] or 0
    if risk is None:
        width, level, text = 100.0, "critical", "no good backup: all data is at risk"
    else:
        ratio = risk / rpo if rpo > 0 else 1.0
        width = max(0.0, min(100.0, ratio * 100))
        level = "ok" if ratio < 0.8 else ("warning" if ratio < 1 else "critical")
        text = f"data at risk {human_duration(risk)} of a {human_duration(rpo)} RPO"
    return (f"<div class='risk'><div class='bar' role='img' aria-label='{escape(text)}'>"
            f"<span class='fill s-{level}' style='width:{width:.1f}%'></span></div>"
            f"<p class='risk-text'>{escape(text)}</p></div>")


def _newest(db: dict[str, Any], now: datetime) -> str:
    b = db["newest_good_backup"]
    if b is None:
        return "<span class='s-text-critical'>none</span>"
    return f"{_time(b['recovery_point'], now)} <span class='muted'>({escape(b['source'])}, {escape(b['id'])})</span>"


def _next(db: dict[str, Any], now: datetime) -> str:
    at = db.get("next_expected_backup")
    if not at:
        return "none scheduled"
    if _parse(at) < now:
        return f"expected {_time(at, now)} <span class='s-text-warning'>(late)</span>"
    return _time(at, now)


def _drills(db: dict[str, Any], now: datetime) -> str:
    drills = db.get("drills") or []
    if not drills:
        return "no restore drill yet"
    items = []
    for d in drills:
        label = escape(SCENARIOS.get(d["scenario"], d["scenario"].replace("_", " ")))
        rto = d["rto_seconds"]
        if d["succeeded"]:
            text = f"restored in {human_duration(d['recovery_seconds'])}, " + (
                f"RTO {human_duration(rto)}" if rto else "no RTO set")
            over = rto is not None and d["recovery_seconds"] > rto
            cls = "critical" if over else "ok"
            text += " (over the RTO)" if over else ""
        else:
            cls = "critical"
            text = f"failed: {d['reason']}" + (f" ({d['checks_failed']} checks failed)" if d["checks_failed"] else "")
        items.append(f"<li class='drill s-text-{cls}'>{label}: {escape(text)}, {_time(d['started_at'], now)}</li>")
    return f"<ul class='plain'>{''.join(items)}</ul>"


def _archive(db: dict[str, Any], now: datetime) -> str:
    archive = db.get("archive")
    if not archive or not archive["tiers"]:
        return "no external archive"
    items = []
    for tier, t in archive["tiers"].items():
        newest = f", newest {_time(t['newest'], now)}" if t["newest"] else ""
        copies = f"{t['count']} cop{'y' if t['count'] == 1 else 'ies'}"
        items.append(f"<li>{escape(tier)}: {escape(copies)}{newest}</li>")
    return f"<ul class='plain'>{''.join(items)}</ul>"


def _decisions(db: dict[str, Any], now: datetime) -> str:
    """The newest decisions of the guardian's actions about this database, in words: what, how it ended, why."""
    decisions = db.get("decisions") or []
    if not decisions:
        return "none yet"
    items = []
    for d in decisions:
        words, cls = OUTCOME_WORDS.get(d["outcome"], (d["outcome"].replace("_", " "), "muted"))
        copy = d["target"][len(db["name"]) + 1:] if d["target"] != db["name"] else ""
        what = escape(d["action"].replace("_", " ") + (f" of {copy}" if copy else ""))
        items.append(f"<li class='decision'><b>{what}</b>: <span class='s-text-{cls}'>{escape(words)}</span>, "
                     f"{_time(d['time'], now)}<br><span class='muted'>{escape(d['reason'])}</span></li>")
    return f"<ul class='plain'>{''.join(items)}</ul>"


def _pitr(db: dict[str, Any], now: datetime) -> str | None:
    p = db.get("provider")
    if p is None:
        return None
    if p["continuous_protection"] and p["rollback_earliest"] and p.get("rollback_latest"):
        return (f"rollback to any moment from {_time(p['rollback_earliest'], now)} to "
                f"{_time(p['rollback_latest'], now)}")
    if p["continuous_protection"] and p["rollback_earliest"]:
        window = human_duration((now - _parse(p["rollback_earliest"])).total_seconds())
        return f"rollback to any moment since {_time(p['rollback_earliest'], now)} (a {escape(window)} window)"
    if p["continuous_protection"]:
        return "continuous protection on"
    if p["offers_pitr"]:
        return f"<span class='s-text-warning'>off, although the {escape(p['plan'])} plan offers it</span>"
    return f"not offered by the {escape(p['plan'])} plan"


def plan_href(name: str, scenario: str) -> str:
    """The JSON recovery plan of database `name` in `scenario` (served by daemon.web.server)."""
    return f"/api/recovery-plan?database={quote(name, safe='')}&scenario={quote(scenario, safe='')}"


def _plans(name: str) -> str:
    """A link to the recovery plan of each scenario of the procedures."""
    links = [f"<a class='plan' href='{escape(plan_href(name, s))}'>{escape(s)}</a>" for s in PLAN_SCENARIOS]
    return " · ".join(links)


def _timeline(db: dict[str, Any]) -> str:
    """One cell a UTC day, oldest left: green a good backup started, red attempts but none good, grey none."""
    days = db.get("timeline") or []
    cells = []
    for i, d in enumerate(days):
        state = "good" if d["good"] else ("failed" if d["failed"] else "none")
        tip = f"{d['day']}: {d['good']} good, {d['failed']} failed"
        cells.append(f"<rect class='day {state}' x='{i * 10}' y='0' width='8' height='16' rx='1.5' "
                     f"fill='{DAY_COLOURS[state]}'><title>{escape(tip)}</title></rect>")
    if not days:
        return ""
    first, last = escape(days[0]["day"]), escape(days[-1]["day"])
    return (f"<figure class='timeline'><figcaption>Backups, last {len(days)} days</figcaption>"
            f"<svg viewBox='0 0 {len(days) * 10 - 2} 16' preserveAspectRatio='none' role='img' "
            f"aria-label='backups per day from {first} to {last}'>{''.join(cells)}</svg>"
            f"<div class='axis'><span>{first}</span><span>{last}</span></div></figure>")


def _findings(db: dict[str, Any]) -> str:
    active = sorted((f for f in db["findings"] if f["active"]), key=lambda f: RANK.get(f["severity"], 2))
    if not active:
        return "<p class='none-active'>No active findings.</p>"
    items = []
    for f in active:
        link = f" <a class='runbook' href='{escape(f['runbook_url'])}'>Runbook</a>" if f.get("runbook_url") else ""
        first = f"<p class='first'><b>First:</b> {escape(f['first_step'])}</p>" if f.get("first_step") else ""
        items.append(f"<li class='finding s-{escape(f['severity'])}'><div class='ftitle'><span class='sev'>"
                     f"{escape(f['severity'])}</span> <strong>{escape(f['title'])}</strong>{link}</div>"
                     f"<p class='hint'>{escape(f['hint'])}</p>{first}</li>")
    return f"<ul class='findings'>{''.join(items)}</ul>"


def database_page(doc: dict[str, Any], name: str) -> tuple[int, str]:
    """The page of the database called `name`: its card and backup history; 404 and a short page when no
    database has that name."""
    db = next((d for d in doc["databases"] if d["name"] == name), None)
    if db is None:
        body = (f"<h1 class='verdict s-unknown'>No database named “{escape(name)}” is watched here</h1>"
                "<p><a href='/'>All databases</a></p>")
        return 404, _shell(doc, "not found: pg-backup-guardian", body)
    now = _parse(doc["generated_at"])
    body = (f"<p class='back'><a href='/'>← All databases</a></p>{_card(db, now, link=False)}"
            f"<h2 class='section'>Backup history</h2>{_history(db, now)}")
    return 200, _shell(doc, f"{name}: pg-backup-guardian", body)


def _history(db: dict[str, Any], now: datetime) -> str:
    """The recent attempts of every source, newest first, each error in full (a pg_dump error spans lines)."""
    backups = [b for src in db["sources"].values() for b in src["backups"]]
    backups.sort(key=lambda b: b["recovery_point"], reverse=True)
    if not backups:
        return "<p>No backup attempt is known.</p>"
    rows = []
    for b in backups:
        outcome = "good" if b["succeeded"] else "failed"
        duration = human_duration(b["duration_seconds"]) if b["duration_seconds"] is not None else "not finished"
        error = f"<pre class='error'>{escape(b['error'])}</pre>" if b.get("error") else ""
        point = b["recovery_point"]
        rows.append(
            f"<tr class='{outcome}'><td data-label='Started'>{_time(point, now, _exact(point))}</td>"
            f"<td data-label='Source'>{escape(b['source'])}</td><td data-label='Kind'>{escape(b['kind'])}</td>"
            f"<td data-label='Outcome' class='s-text-{'ok' if b['succeeded'] else 'critical'}'>{outcome}</td>"
            f"<td data-label='Size'>{escape(human_size(b['size_bytes'] or 0))}</td>"
            f"<td data-label='Duration'>{escape(duration)}</td><td data-label='Error'>{error}</td></tr>")
    return ("<table class='history'><thead><tr><th>Started</th><th>Source</th><th>Kind</th><th>Outcome</th>"
            f"<th>Size</th><th>Duration</th><th>Error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
