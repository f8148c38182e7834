"""Generate the Grafana dashboards of pg-backup-guardian (Grafana 10+ JSON model, schemaVersion 39).

    python dashboards/generate.py           # write dashboards/pgbackup-*.json
    python dashboards/generate.py --check   # exit 1 when the committed JSON differs from what this file makes

Plain dicts and `json`, no dependency: the boards are small, and the helpers below keep every panel
consistent (one datasource variable, one grid layout, one legend and unit style). Every query uses only
metrics and labels the daemon emits (`daemon/metrics/families.py`); `tests/alerts/test_drift.py` scrapes a real guardian
and fails on any name or label a board uses that it does not find.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
JSON = dict[str, Any]

DATASOURCE: JSON = {"type": "prometheus", "uid": "${datasource}"}
DB = 'database=~"$database"'
SCENARIO = 'scenario=~"$scenario"'
GUARDIAN_JOB = 'job=~"pg-backup-guardian.*"'
GRID_WIDTH = 24

GREEN, YELLOW, RED, BLUE = "green", "yellow", "red", "blue"


# -- building blocks ----------------------------------------------------------------------------------------------
def target(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False, table: bool = False) -> JSON:
    t: JSON = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
               "editorMode": "code", "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def targets(*items: tuple[str, str], instant: bool = False, table: bool = False) -> list[JSON]:
    """Several (expr, legend) queries with refIds A, B, C, ..."""
    return [target(expr, legend, ref=chr(ord("A") + i), instant=instant, table=table)
            for i, (expr, legend) in enumerate(items)]


def thresholds(*steps: tuple[float | None, str]) -> JSON:
    return {"mode": "absolute", "steps": [{"value": v, "color": c} for v, c in steps]}


def value_map(mapping: dict[str, tuple[str, str]]) -> list[JSON]:
    """{"1": ("OK", "green")} -> a Grafana value mapping."""
    return [{"type": "value", "options": {k: {"text": text, "color": color, "index": i}
                                          for i, (k, (text, color)) in enumerate(mapping.items())}}]


def override_by_name(pattern: str, **props: Any) -> JSON:
    return {"matcher": {"id": "byRegexp", "options": pattern},
            "properties": [{"id": k, "value": v} for k, v in props.items()]}


def panel(kind: str, title: str, tgts: list[JSON], *, unit: str = "", description: str = "",
          steps: JSON | None = None, mappings: list[JSON] | None = None, overrides: list[JSON] | None = None,
          options: JSON | None = None, custom: JSON | None = None, transformations: list[JSON] | None = None,
          no_value: str | None = None, min_value: float | None = None, size: tuple[int, int] = (12, 8)) -> JSON:
    defaults: JSON = {"unit": unit or "none", "thresholds": steps or thresholds((None, GREEN)),
                      "mappings": mappings or [], "color": {"mode": "thresholds" if steps else "palette-classic"}}
    if custom:
        defaults["custom"] = custom
    if no_value is not None:
        defaults["noValue"] = no_value
    if min_value is not None:
        defaults["min"] = min_value
    p: JSON = {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
               "targets": tgts, "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
               "options": options or {}, "_size": size}
    if transformations:
        p["transformations"] = transformations
    return p


def timeseries(title: str, tgts: list[JSON], *, unit: str, description: str = "", stack: bool = False,
               bars: bool = False, overrides: list[JSON] | None = None, steps: JSON | None = None,
               size: tuple[int, int] = (12, 8)) -> JSON:
    custom: JSON = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
                    "showPoints": "never", "spanNulls": True, "lineInterpolation": "stepAfter",
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                    "thresholdsStyle": {"mode": "off"}}
    return panel("timeseries", title, tgts, unit=unit, description=description, custom=custom,
                 overrides=overrides, steps=steps, size=size,
                 options={"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}})


def stat(title: str, tgts: list[JSON], *, unit: str = "", description: str = "", steps: JSON | None = None,
         mappings: list[JSON] | None = None, no_value: str | None = None, size: tuple[int, int] = (6, 4)) -> JSON:
    return panel("stat", title, tgts, unit=unit, description=description, steps=steps, mappings=mappings,
                 no_value=no_value, size=size,
                 options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "background", "graphMode": "none", "textMode": "value_and_name",
                          "justifyMode": "auto", "orientation": "auto"})


def bargauge(title: str, tgts: list[JSON], *, unit: str, description: str = "", steps: JSON | None = None,
             min_value: float | None = 0, size: tuple[int, int] = (12, 8)) -> JSON:
    return panel("bargauge", title, tgts, unit=unit, description=description, steps=steps, min_value=min_value,
                 size=size, options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                     "orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True})


def table(title: str, tgts: list[JSON], *, description: str = "", overrides: list[JSON] | None = None,
          rename: dict[str, str] | None = None, hide: Sequence[str] = ("Time",), mappings: list[JSON] | None = None,
          size: tuple[int, int] = (12, 8)) -> JSON:
    """An instant table; several queries are merged on their common labels (one row per series)."""
    transformations: list[JSON] = []
    if len(tgts) > 1:
        transformations.append({"id": "merge", "options": {}})
    transformations.append({"id": "organize", "options": {
        "excludeByName": dict.fromkeys(hide, True), "renameByName": rename or {}, "indexByName": {}}})
    return panel("table", title, tgts, description=description, overrides=overrides, mappings=mappings,
                 transformations=transformations, size=size,
                 options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
                 custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False})


def state_timeline(title: str, tgts: list[JSON], *, mappings: list[JSON], steps: JSON, description: str = "",
                   size: tuple[int, int] = (12, 8)) -> JSON:
    return panel("state-timeline", title, tgts, description=description, mappings=mappings, steps=steps, size=size,
                 custom={"fillOpacity": 80, "lineWidth": 0},
                 options={"showValue": "never", "mergeValues": True, "rowHeight": 0.9, "alignValue": "left",
                          "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}})


def row(title: str) -> JSON:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "_size": (GRID_WIDTH, 1)}


def layout(panels: list[JSON]) -> list[JSON]:
    """Flow panels left to right, wrapping at 24 columns; rows start a new line. Assigns ids and gridPos."""
    out, x, y, line_height = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        w, h = p.pop("_size")
        if p["type"] == "row" or x + w > GRID_WIDTH:
            x, y, line_height = 0, y + line_height, 0
        out.append({"id": i, "gridPos": {"x": x, "y": y, "w": w, "h": h}, **p})
        x += w
        line_height = max(line_height, h)
        if p["type"] == "row":
            x, y, line_height = 0, y + h, 0
    return out


def datasource_variable() -> JSON:
    return {"type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1,
            "regex": "", "skipUrlSync": False}


def query_variable(name: str, label: str, query: str) -> JSON:
    return {"type": "query", "name": name, "label": label, "datasource": DATASOURCE, "query": query,
            "definition": query, "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True,
            "options": [], "refresh": 2, "regex": "", "sort": 1, "skipUrlSync": False}


def dashboard(uid: str, title: str, description: str, panels: list[JSON], variables: list[JSON],
              links: list[JSON] | None = None) -> JSON:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["pg-backup-guardian", "postgresql", "backup"],
        "timezone": "utc", "editable": True, "graphTooltip": 1, "fiscalYearStartMonth": 0, "liveNow": False,
        "refresh": "1m", "schemaVersion": 39, "version": 1, "weekStart": "",
        "time": {"from": "now-7d", "to": "now"},
        "timepicker": {"refresh_intervals": ["30s", "1m", "5m", "15m", "1h"]},
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": links or [],
        "panels": layout(panels),
    }


DATABASE_VAR = query_variable("database", "Database", "label_values(pgbackup_rpo_seconds, database)")
SCENARIO_VAR = query_variable("scenario", "Scenario",
                              f"label_values(pgbackup_drill_last_timestamp_seconds{{{DB}}}, scenario)")
OK_FAILED = value_map({"1": ("OK", GREEN), "0": ("FAILED", RED)})
ACTIVE = value_map({"0": ("ok", GREEN), "1": ("ACTIVE", RED)})
RISK = f"time() - max by (database) (pgbackup_last_success_timestamp_seconds{{{DB}}})"


# -- overview ------------------------------------------------------------------------------------------------------
def overview() -> JSON:
    panels: list[JSON] = [
        row("Data at risk (RPO)"),
        timeseries("Data at risk vs RPO", targets(
            (RISK, "{{database}} data at risk"),
            (f"max by (database) (pgbackup_rpo_seconds{{{DB}}})", "{{database}} RPO"),
            (f"max by (database) (pgbackup_rpo_seconds{{{DB}}}) + on (database) "
             f"max by (database) (pgbackup_rpo_tolerance_seconds{{{DB}}})", "{{database}} breach from"),
        ), unit="s", size=(16, 9),
            description="Data at risk = now - recovery point (pg_dump start) of the newest good backup, any source. "
                        "The dashed line is the RPO objective, the dotted one where a breach begins: the RPO plus "
                        "the schedule's learned tolerance (its usual start jitter and capture time). 'At risk' is "
                        "projected from the next expected backup, not read off this chart: see the findings.",
            overrides=[override_by_name(".* RPO$", **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                                                      "color": {"mode": "fixed", "fixedColor": RED}}),
                       override_by_name(".* breach from$", **{"custom.lineStyle": {"fill": "dot", "dash": [0, 10]},
                                                               "color": {"mode": "fixed", "fixedColor": YELLOW}})]),
        bargauge("Data at risk, share of RPO", targets(
            (f"({RISK}) / on (database) max by (database) (pgbackup_rpo_seconds{{{DB}}})", "{{database}}"),
            instant=True), unit="percentunit", size=(8, 9),
            steps=thresholds((None, GREEN), (0.8, YELLOW), (1, RED)),
            description="100 % = the RPO itself; a breach begins past it by the schedule's tolerance. Yellow from "
                        "80 %, the 'at risk' share used for databases without a schedule."),
        table("Newest backup per database and source", targets(
            (f"pgbackup_last_success_timestamp_seconds{{{DB}}} * 1000", ""),
            (f"pgbackup_last_attempt_timestamp_seconds{{{DB}}} * 1000", ""),
            (f"pgbackup_last_attempt_succeeded{{{DB}}}", ""),
            (f"pgbackup_last_duration_seconds{{{DB}}}", ""),
            (f"pgbackup_in_progress{{{DB}}}", ""),
            instant=True, table=True), size=(24, 7),
            description="Recovery point of the newest good backup, the newest attempt and its outcome.",
            hide=("Time", "__name__", "job", "instance"),
            rename={"Value #A": "newest good (recovery point)", "Value #B": "newest attempt",
                    "Value #C": "newest attempt succeeded", "Value #D": "duration of newest good",
                    "Value #E": "running now"},
            overrides=[override_by_name("newest good.*|newest attempt$", unit="dateTimeAsIso"),
                       override_by_name("newest attempt succeeded", mappings=OK_FAILED,
                                        **{"custom.cellOptions": {"type": "color-background"}}),
                       override_by_name("duration.*", unit="s")]),
        row("Schedule"),
        table("Backup schedules", targets(
            (f"pgbackup_schedule_configured{{{DB}}}", ""),
            (f"pgbackup_schedule_next_timestamp_seconds{{{DB}}} * 1000", ""),
            instant=True, table=True), size=(12, 7),
            description="Whether a schedule exists (Heroku schedule or the guardian's own capture job) and when "
                        "the next backup is due.",
            hide=("Time", "__name__", "job", "instance"),
            rename={"Value #A": "schedule", "Value #B": "next backup due"},
            overrides=[override_by_name("schedule", mappings=value_map({"1": ("configured", GREEN),
                                                                        "0": ("NONE", RED)}),
                                        **{"custom.cellOptions": {"type": "color-background"}}),
                       override_by_name("next backup due", unit="dateTimeAsIso")]),
        stat("Next backup due in", targets(
            (f"pgbackup_schedule_next_timestamp_seconds{{{DB}}} - time()", "{{database}} ({{source}})"),
            instant=True), unit="s", size=(12, 7),
            steps=thresholds((None, RED), (0, GREEN)),
            description="Negative (red) = the scheduled time has passed; see the missed_schedule finding."),
        row("Size"),
        timeseries("Backup size and live database size", targets(
            (f"pgbackup_last_size_bytes{{{DB}}}", "{{database}} newest backup ({{source}})"),
            (f"pgbackup_database_size_bytes{{{DB}}}", "{{database}} live database"),
        ), unit="bytes", size=(16, 8),
            description="A newest backup far smaller than the previous ones is a size anomaly (lost data or a "
                        "broken dump)."),
        timeseries("Good backups held, by kind", targets(
            (f"sum by (database, kind) (pgbackup_backups{{{DB}}})", "{{database}} {{kind}}"),
        ), unit="short", stack=True, size=(8, 8)),
        row("Archive tiers"),
        table("Archive per tier", targets(
            (f"pgbackup_archive_objects{{{DB}}}", ""),
            (f"pgbackup_archive_bytes{{{DB}}}", ""),
            (f"pgbackup_archive_last_timestamp_seconds{{{DB}}} * 1000", ""),
            instant=True, table=True), size=(12, 8),
            hide=("Time", "__name__", "job", "instance"),
            rename={"Value #A": "copies", "Value #B": "bytes", "Value #C": "newest copy (recovery point)"},
            overrides=[override_by_name("bytes", unit="bytes"),
                       override_by_name("newest copy.*", unit="dateTimeAsIso")]),
        timeseries("Archive copy lag", targets(
            (f"pgbackup_archive_copy_lag_seconds{{{DB}}}", "{{database}}"),
            (f"max by (database, tier) (time() - pgbackup_archive_last_timestamp_seconds{{{DB}}})",
             "{{database}} {{tier}} age"),
        ), unit="s", size=(12, 8),
            description="Copy lag = the provider's newest good recovery point minus the archive's newest; age = "
                        "now minus the newest copy of each tier."),
        stat("Unencrypted archive objects", targets(
            (f"sum by (database) (pgbackup_archive_unencrypted_objects{{{DB}}})", "{{database}}"),
            instant=True), size=(8, 4), steps=thresholds((None, GREEN), (1, RED))),
        stat("Monthly copies, last 12 months", targets(
            (f"pgbackup_archive_monthly_coverage_months{{{DB}}}", "{{database}} covered"),
            (f"pgbackup_archive_monthly_expected_months{{{DB}}}", "{{database}} expected"),
            instant=True), unit="short", size=(8, 4)),
        stat("Bucket posture problems", targets(
            (f"sum by (database) (pgbackup_archive_posture_problems{{{DB}}})", "{{database}}"),
            instant=True), size=(8, 4), steps=thresholds((None, GREEN), (1, YELLOW))),
        row("Restore drills"),
        table("Last drill per database and scenario", targets(
            (f"pgbackup_drill_last_timestamp_seconds{{{DB}}} * 1000", ""),
            (f"pgbackup_drill_last_success{{{DB}}}", ""),
            (f"pgbackup_drill_recovery_seconds{{{DB}}}", ""),
            (f"pgbackup_rto_seconds{{{DB}}} and on (database, scenario) pgbackup_drill_recovery_seconds{{{DB}}}",
             ""),
            instant=True, table=True), size=(12, 8),
            hide=("Time", "__name__", "job", "instance"),
            rename={"Value #A": "last drill", "Value #B": "result", "Value #C": "recovery time",
                    "Value #D": "RTO"},
            overrides=[override_by_name("last drill", unit="dateTimeAsIso"),
                       override_by_name("result", mappings=OK_FAILED,
                                        **{"custom.cellOptions": {"type": "color-background"}}),
                       override_by_name("recovery time|RTO", unit="s")]),
        bargauge("Recovery time, share of RTO", targets(
            (f"max by (database, scenario) (pgbackup_drill_recovery_seconds{{{DB}}}) / on (database, scenario) "
             f"max by (database, scenario) (pgbackup_rto_seconds{{{DB}}})", "{{database}} {{scenario}}"),
            instant=True), unit="percentunit", size=(12, 8),
            steps=thresholds((None, GREEN), (0.8, YELLOW), (1, RED)),
            description="Measured recovery time (download + restore + checks) of the last drill over the RTO of "
                        "the scenario it rehearses."),
        row("Actions and findings"),
        timeseries("Actions taken per day", targets(
            ("sum by (action, outcome) (increase(pgbackup_actions_total[1d]))", "{{action}} {{outcome}}"),
        ), unit="short", bars=True, stack=True, size=(12, 8),
            description="Mirror, prune and drill decisions in the last 24 h, by outcome (done, failed, dry_run, "
                        "refused)."),
        table("Active findings", targets(
            (f"pgbackup_finding_active{{{DB}}} == 1", ""), instant=True, table=True), size=(12, 8),
            hide=("Time", "__name__", "job", "instance", "Value"),
            overrides=[override_by_name("severity", mappings=value_map({"critical": ("critical", RED),
                                                                        "warning": ("warning", YELLOW)}),
                                        **{"custom.cellOptions": {"type": "color-background"}})],
            description="Every check that currently finds a problem (see the runbooks for each check)."),
        stat("Active findings by severity", targets(
            (f"sum by (severity) (pgbackup_finding_active{{{DB}}})", "{{severity}}"), instant=True),
            size=(24, 4), steps=thresholds((None, GREEN), (1, RED))),
        row("Guardian health"),
        stat("Guardian scraped", targets(
            (f"up{{{GUARDIAN_JOB}}}", "{{instance}}"),
            (f"absent(up{{{GUARDIAN_JOB}}}) * -1", "absent"),
            instant=True), size=(6, 5),
            mappings=value_map({"1": ("UP", GREEN), "0": ("DOWN", RED), "-1": ("ABSENT", RED)}),
            steps=thresholds((None, RED), (1, GREEN)),
            description="Prometheus' own `up` for the guardian's scrape job (job name pg-backup-guardian*); "
                        "ABSENT when no such target exists at all."),
        stat("Version", targets(("pgbackup_build_info", "{{version}}"), instant=True), size=(6, 5),
             steps=thresholds((None, BLUE))),
        stat("Heroku API rate limit remaining", targets(
            ("pgbackup_heroku_ratelimit_remaining", "{{instance}}"), instant=True), unit="short", size=(6, 5),
            steps=thresholds((None, RED), (500, YELLOW), (1500, GREEN)), no_value="no Heroku"),
        stat("Heroku poll stretch", targets(
            ("pgbackup_heroku_poll_stretch_ratio", "{{instance}}"), instant=True), unit="none", size=(6, 5),
            steps=thresholds((None, GREEN), (1.01, YELLOW), (3, RED)), no_value="no Heroku",
            description="Desired polling rate over what the rate budget allows; 1 = every database polled on time."),
        state_timeline("Collectors up", targets(
            (f"min by (collector, database) (pgbackup_collector_up{{{DB}}})", "{{collector}} {{database}}")),
            mappings=value_map({"1": ("up", GREEN), "0": ("DOWN", RED)}),
            steps=thresholds((None, RED), (1, GREEN)), size=(12, 8)),
        timeseries("Collector errors per second", targets(
            (f"sum by (collector, database) (rate(pgbackup_collector_errors_total{{{DB}}}[$__rate_interval]))",
             "{{collector}} {{database}}"),
        ), unit="short", size=(12, 8)),
        timeseries("Collector run time and staleness", targets(
            (f"pgbackup_collector_duration_seconds{{{DB}}}", "{{collector}} {{database}} run time"),
            (f"time() - pgbackup_collector_last_success_timestamp_seconds{{{DB}}}",
             "{{collector}} {{database}} since last success"),
        ), unit="s", size=(12, 8)),
        timeseries("Heroku API requests", targets(
            ("rate(pgbackup_heroku_requests_total[$__rate_interval]) * 60", "requests / min"),
            ("pgbackup_heroku_pass_requests", "last pass"),
            ("pgbackup_heroku_pass_budget_requests", "last pass budget"),
            ("pgbackup_heroku_pass_deferred", "deferred databases"),
        ), unit="short", size=(12, 8)),
    ]
    return dashboard("pgbackup-overview", "PostgreSQL backups: overview",
                     "pg-backup-guardian: data at risk vs RPO, schedules, sizes, archive, drills vs RTO, actions, "
                     "findings and the guardian's own health.", panels, [DATABASE_VAR],
                     links=[{"title": "Drill history", "type": "link", "url": "/d/pgbackup-drills",
                             "keepTime": True, "includeVars": True, "icon": "dashboard", "targetBlank": False,
                             "asDropdown": False, "tags": [], "tooltip": ""}])


# -- drill history -------------------------------------------------------------------------------------------------
def drills() -> JSON:
    sel = f"{DB}, {SCENARIO}"
    drill_checks = 'check=~"drill_failed|drill_overdue|recovery_time_over_rto"'
    panels: list[JSON] = [
        row("Last drill"),
        stat("Last drill result", targets(
            (f"pgbackup_drill_last_success{{{sel}}}", "{{database}} {{scenario}}"), instant=True),
            mappings=OK_FAILED, steps=thresholds((None, RED), (1, GREEN)), size=(8, 6)),
        stat("Since the last drill", targets(
            (f"time() - pgbackup_drill_last_timestamp_seconds{{{sel}}}", "{{database}} {{scenario}}"),
            instant=True), unit="s", size=(8, 6), steps=thresholds((None, GREEN), (40 * 86400, YELLOW))),
        stat("Since the last successful drill", targets(
            (f"time() - pgbackup_drill_last_success_timestamp_seconds{{{sel}}}", "{{database}} {{scenario}}"),
            instant=True), unit="s", size=(8, 6), steps=thresholds((None, GREEN), (40 * 86400, YELLOW)),
            no_value="never"),
        table("Drills per database and scenario", targets(
            (f"pgbackup_drill_last_timestamp_seconds{{{sel}}} * 1000", ""),
            (f"pgbackup_drill_last_success{{{sel}}}", ""),
            (f"pgbackup_drill_last_success_timestamp_seconds{{{sel}}} * 1000", ""),
            (f"pgbackup_drill_recovery_seconds{{{sel}}}", ""),
            (f"pgbackup_rto_seconds{{{sel}}} and on (database, scenario) pgbackup_drill_recovery_seconds{{{sel}}}",
             ""),
            (f"pgbackup_drill_checks_failed{{{sel}}}", ""),
            instant=True, table=True), size=(24, 7),
            hide=("Time", "__name__", "job", "instance"),
            rename={"Value #A": "last drill", "Value #B": "result", "Value #C": "last successful drill",
                    "Value #D": "recovery time", "Value #E": "RTO", "Value #F": "checks failed"},
            overrides=[override_by_name("last drill|last successful drill", unit="dateTimeAsIso"),
                       override_by_name("result", mappings=OK_FAILED,
                                        **{"custom.cellOptions": {"type": "color-background"}}),
                       override_by_name("recovery time|RTO", unit="s")]),
        row("Recovery time"),
        timeseries("Recovery time vs RTO", targets(
            (f"pgbackup_drill_recovery_seconds{{{sel}}}", "{{database}} {{scenario}} recovery time"),
            (f"pgbackup_rto_seconds{{{sel}}} and on (database, scenario) pgbackup_drill_recovery_seconds{{{sel}}}",
             "{{database}} {{scenario}} RTO"),
        ), unit="s", size=(12, 9),
            description="The measured recovery time (download + restore + checks) of the latest drill, kept over "
                        "time by Prometheus, against the RTO of the scenario it rehearses (dashed).",
            overrides=[override_by_name(".* RTO$", **{"custom.lineStyle": {"fill": "dash", "dash": [10, 10]},
                                                      "color": {"mode": "fixed", "fixedColor": RED}})]),
        timeseries("Phase durations of the latest drill", targets(
            (f"sum by (database, scenario, phase) (pgbackup_drill_duration_seconds{{{sel}}})",
             "{{database}} {{scenario}} {{phase}}"),
        ), unit="s", stack=True, size=(12, 9),
            description="download, verify, restore, checks, drop: where the recovery time goes."),
        bargauge("Phases of the latest drill", targets(
            (f"pgbackup_drill_duration_seconds{{{sel}}}", "{{database}} {{scenario}} {{phase}}"), instant=True),
            unit="s", size=(12, 8)),
        timeseries("Smoke checks failed", targets(
            (f"pgbackup_drill_checks_failed{{{sel}}}", "{{database}} {{scenario}}"),
        ), unit="short", bars=True, size=(12, 8), steps=thresholds((None, GREEN), (1, RED))),
        row("Drill findings and runs"),
        state_timeline("Drill findings", targets(
            (f"max by (database, check) (pgbackup_finding_active{{{DB}, {drill_checks}}})", "{{database}} {{check}}")),
            mappings=ACTIVE, steps=thresholds((None, GREEN), (1, RED)), size=(16, 8),
            description="drill_failed, drill_overdue and recovery_time_over_rto over time."),
        timeseries("Drills run per day (all databases)", targets(
            ('sum by (outcome) (increase(pgbackup_actions_total{action="drill"}[1d]))', "{{outcome}}"),
        ), unit="short", bars=True, stack=True, size=(8, 8),
            description="From pgbackup_actions_total{action=\"drill\"}, which carries no database label."),
    ]
    return dashboard("pgbackup-drills", "PostgreSQL backups: restore drills",
                     "pg-backup-guardian: restore drill history per database and scenario, recovery time vs RTO, "
                     "phase durations and smoke checks.", panels, [DATABASE_VAR, SCENARIO_VAR],
                     links=[{"title": "Overview", "type": "link", "url": "/d/pgbackup-overview", "keepTime": True,
                             "includeVars": True, "icon": "dashboard", "targetBlank": False, "asDropdown": False,
                             "tags": [], "tooltip": ""}])


BOARDS = {"pgbackup-overview.json": overview, "pgbackup-drills.json": drills}


def render(board: JSON) -> str:
    return json.dumps(board, indent=2, sort_keys=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed JSON is out of date")
    parser.add_argument("--out", type=Path, default=HERE, help="output directory (default: dashboards/)")
    args = parser.parse_args(argv)
    stale = []
    for name, build in BOARDS.items():
        path: Path = args.out / name
        text = render(build())
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run `python dashboards/generate.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
