"""The pgbackup_* metric families (DESIGN.md section 6): `SnapshotCollector.collect()` turns the state snapshot
into families, group by group (backups, objectives, live facts, provider, archive, actions, drills, findings,
collectors, Heroku API); it does no I/O. Rendering and serving them is `daemon.metrics.exposition`'s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from actions.guards import OUTCOMES
from daemon import __version__
from daemon.core.policy import CHECKS, copy_lag_seconds
from daemon.core.provider import SYSTEMS, WATCHED_SYSTEMS
from daemon.core.snapshot import DrillResult, Snapshot, StateHolder

DB_SOURCE = ["database", "source"]
ACTION_OUTCOMES = (("drill", "done"), ("drill", "failed"), ("drill", "skipped"), ("mirror", "done"),
                   ("mirror", "failed"), ("prune", "done"), ("prune", "dry_run"), ("prune", "refused"),
                   *((a, o) for a in ("capture", "scale", "rollback") for o in OUTCOMES),
                   ("rollback", "skipped_declined"))


class RenderCancelled(Exception):
    """The renderer was stopped in the middle of a rendering."""


def _never() -> bool:
    return False


def _ts(dt: datetime) -> float:
    return dt.timestamp()


class SnapshotCollector(Collector):
    """Yields every pgbackup_* family from the snapshot held by `holder`."""

    def __init__(self, holder: StateHolder) -> None:
        self.holder = holder
        self._pin = threading.local()  # per thread: the snapshot a rendering is bound to, and its stop check

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; skip the registration-time collect

    @contextmanager
    def pinned(self, snap: Snapshot, cancelled: Callable[[], bool]) -> Iterator[None]:
        """Within the block, `collect()` on this thread reads `snap` (not the newest snapshot), so a cached
        body is labelled with the version it really shows; it raises `RenderCancelled` between groups of
        families once `cancelled()` is true."""
        self._pin.value = (snap, cancelled)
        try:
            yield
        finally:
            self._pin.value = None

    def collect(self) -> Iterator[Metric]:
        pin: tuple[Snapshot, Callable[[], bool]] | None = getattr(self._pin, "value", None)
        snap, cancelled = pin if pin is not None else (self.holder.current(), _never)
        for group in (self._build_info, self._backups, self._objectives, self._live, self._provider,
                      self._archive, self._actions, self._drills, self._compliance, self._findings, self._collectors,
                      self._heroku, self._heroku_status):
            if cancelled():
                raise RenderCancelled("the renderer is stopping")
            yield from group(snap)

    def _build_info(self, snap: Snapshot) -> Iterator[Metric]:
        info = GaugeMetricFamily("pgbackup_build_info", "Guardian version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        demo = GaugeMetricFamily("pgbackup_demo_mode", "1 when watching the embedded demo database.")
        demo.add_metric([], 1 if snap.demo else 0)
        yield demo

    def _backups(self, snap: Snapshot) -> Iterator[Metric]:
        g = {
            "success": GaugeMetricFamily("pgbackup_last_success_timestamp_seconds",
                                         "Recovery point (capture start) of the newest good backup.", labels=DB_SOURCE),
            "attempt": GaugeMetricFamily("pgbackup_last_attempt_timestamp_seconds",
                                         "Start time of the newest backup attempt, good or not.", labels=DB_SOURCE),
            "ok": GaugeMetricFamily("pgbackup_last_attempt_succeeded",
                                    "1 when the newest backup attempt succeeded, else 0.", labels=DB_SOURCE),
            "size": GaugeMetricFamily("pgbackup_last_size_bytes", "Size of the newest good backup.",
                                      labels=DB_SOURCE),
            "dur": GaugeMetricFamily("pgbackup_last_duration_seconds", "Duration of the newest good backup.",
                                     labels=DB_SOURCE),
            "count": GaugeMetricFamily("pgbackup_backups", "Good backups held, by kind.",
                                       labels=[*DB_SOURCE, "kind"]),
            "running": GaugeMetricFamily("pgbackup_in_progress", "Backup captures running now.", labels=DB_SOURCE),
            "sched": GaugeMetricFamily("pgbackup_schedule_configured", "1 when a backup schedule exists.",
                                       labels=DB_SOURCE),
            "next": GaugeMetricFamily("pgbackup_schedule_next_timestamp_seconds",
                                      "When the next scheduled backup is due.", labels=DB_SOURCE),
            "expected": GaugeMetricFamily("pgbackup_next_expected_backup_timestamp_seconds",
                                          "Expected start (recovery point) of the next good backup: a capture "
                                          "running now, else the due time plus the schedule's usual start delay.",
                                          labels=DB_SOURCE),
        }
        for name, db in snap.databases.items():
            for src_name, src in db.sources.items():
                labels = [name, src_name]
                newest, last = src.newest_good, src.last_attempt
                if newest is not None:
                    g["success"].add_metric(labels, _ts(newest.recovery_point))
                    g["size"].add_metric(labels, newest.size_bytes)
                    if newest.duration_seconds is not None:
                        g["dur"].add_metric(labels, newest.duration_seconds)
                if last is not None:
                    g["attempt"].add_metric(labels, _ts(last.started_at))
                    g["ok"].add_metric(labels, 1 if last.succeeded else 0)
                kinds: dict[str, int] = {"scheduled": 0, "manual": 0, "emergency": 0}
                for b in src.good:
                    kinds[b.kind] = kinds.get(b.kind, 0) + 1
                # a source never read has no count: 0 would say "no good backup" (a page) where it is unknown
                for kind, n in kinds.items() if src.listed else ():
                    g["count"].add_metric([*labels, kind], n)
                g["running"].add_metric(labels, src.in_progress)
                g["sched"].add_metric(labels, 1 if src.has_schedule else 0)
                if src.schedule_next_at is not None:
                    g["next"].add_metric(labels, _ts(src.schedule_next_at))
                if src_name in db.next_expected:
                    g["expected"].add_metric(labels, _ts(db.next_expected[src_name]))
        yield from g.values()

    def _objectives(self, snap: Snapshot) -> Iterator[Metric]:
        rpo = GaugeMetricFamily("pgbackup_rpo_seconds", "Recovery point objective.", labels=["database"])
        ratio = GaugeMetricFamily("pgbackup_rpo_warning_ratio",
                                  "Share of the RPO at which data is reported at risk.", labels=["database"])
        rto = GaugeMetricFamily("pgbackup_rto_seconds", "Recovery time objective per scenario.",
                                labels=["database", "scenario"])
        tolerance = GaugeMetricFamily("pgbackup_rpo_tolerance_seconds",
                                      "How far past the RPO data at risk may go before it is a breach: the "
                                      "schedule's normal start jitter and capture time (0 without a schedule).",
                                      labels=["database"])
        for name, db in snap.databases.items():
            rpo.add_metric([name], db.rpo_seconds)
            if db.evaluated_at is not None:
                tolerance.add_metric([name], db.rpo_tolerance_seconds)
            ratio.add_metric([name], db.rpo_warning_ratio)
            for scenario, seconds in db.rto_seconds.items():
                rto.add_metric([name, scenario], seconds)
        yield from (rpo, ratio, rto, tolerance)

    def _live(self, snap: Snapshot) -> Iterator[Metric]:
        size = GaugeMetricFamily("pgbackup_database_size_bytes", "Live database size (pg_database_size).",
                                 labels=["database"])
        tables = GaugeMetricFamily("pgbackup_database_tables", "User tables in the live database.",
                                   labels=["database"])
        for name, db in snap.databases.items():
            if db.live is not None:
                if db.live.size_bytes is not None:
                    size.add_metric([name], db.live.size_bytes)
                if db.live.table_count is not None:
                    tables.add_metric([name], db.live.table_count)
        yield from (size, tables)

    def _provider(self, snap: Snapshot) -> Iterator[Metric]:
        pitr = GaugeMetricFamily("pgbackup_pitr_enabled",
                                 "1 when point-in-time recovery (Heroku continuous protection) is on.",
                                 labels=["database"])
        earliest = GaugeMetricFamily("pgbackup_pitr_earliest_timestamp_seconds",
                                     "Earliest time a point-in-time recovery (rollback) can reach.",
                                     labels=["database"])
        plan = GaugeMetricFamily("pgbackup_provider_plan_info", "The provider's plan (always 1).",
                                 labels=["database", "plan"])
        latest = GaugeMetricFamily("pgbackup_pitr_latest_timestamp_seconds",
                                   "Latest time a point-in-time recovery (rollback) can reach (Advanced plans).",
                                   labels=["database"])
        family = GaugeMetricFamily("pgbackup_plan_family_info",
                                   "The plan's family: essential, classic, advanced or unknown (always 1).",
                                   labels=["database", "family"])
        for name, db in snap.databases.items():
            p = db.provider
            if p is None:
                continue
            plan.add_metric([name, p.plan], 1)
            family.add_metric([name, p.family], 1)
            if p.rollback_latest is not None:
                latest.add_metric([name], _ts(p.rollback_latest))
            if p.continuous_protection is not None:
                pitr.add_metric([name], 1 if p.continuous_protection else 0)
            if p.rollback_earliest is not None:
                earliest.add_metric([name], _ts(p.rollback_earliest))
        yield from (pitr, earliest, latest, plan, family)

    def _archive(self, snap: Snapshot) -> Iterator[Metric]:
        lt = ["database", "tier"]
        last = GaugeMetricFamily("pgbackup_archive_last_timestamp_seconds",
                                 "Recovery point of the newest archived copy per tier.", labels=lt)
        objects = GaugeMetricFamily("pgbackup_archive_objects", "Good archived copies per tier.", labels=lt)
        size = GaugeMetricFamily("pgbackup_archive_bytes", "Bytes of good archived copies per tier.", labels=lt)
        unenc = GaugeMetricFamily("pgbackup_archive_unencrypted_objects",
                                  "Archived copies without server-side encryption.", labels=["database"])
        coverage = GaugeMetricFamily("pgbackup_archive_monthly_coverage_months",
                                     "Months of the last twelve (since the archive began) with a monthly copy.",
                                     labels=["database"])
        expected = GaugeMetricFamily("pgbackup_archive_monthly_expected_months",
                                     "Months of the last twelve the archive has existed.", labels=["database"])
        posture = GaugeMetricFamily("pgbackup_archive_posture_problems",
                                    "Bucket posture problems (versioning, encryption, public access, lifecycle).",
                                    labels=["database"])
        lag = GaugeMetricFamily("pgbackup_archive_copy_lag_seconds",
                                "Provider's newest good recovery point minus the archive's newest.",
                                labels=["database"])
        for name, db in snap.databases.items():
            a = db.archive
            if a is None:
                continue
            for tier, st in a.tiers.items():
                if st.newest is not None:
                    last.add_metric([name, tier], _ts(st.newest))
                objects.add_metric([name, tier], st.count)
                size.add_metric([name, tier], st.bytes)
            unenc.add_metric([name], a.unencrypted)
            coverage.add_metric([name], a.monthly_covered)
            expected.add_metric([name], a.monthly_expected)
            posture.add_metric([name], len(a.posture_problems))
            copy_lag = copy_lag_seconds(db)
            if copy_lag is not None:
                lag.add_metric([name], copy_lag)
        yield from (last, objects, size, unenc, coverage, expected, posture, lag)

    def _drills(self, snap: Snapshot) -> Iterator[Metric]:
        ls = ["database", "scenario"]
        last = GaugeMetricFamily("pgbackup_drill_last_timestamp_seconds", "Start of the last restore drill.",
                                 labels=ls)
        ok = GaugeMetricFamily("pgbackup_drill_last_success", "1 when the last restore drill succeeded.", labels=ls)
        last_ok = GaugeMetricFamily("pgbackup_drill_last_success_timestamp_seconds",
                                    "Start of the last successful restore drill.", labels=ls)
        recovery = GaugeMetricFamily("pgbackup_drill_recovery_seconds",
                                     "Measured recovery time of the last drill (download + restore + checks).",
                                     labels=ls)
        phases = GaugeMetricFamily("pgbackup_drill_duration_seconds", "Duration of each phase of the last drill.",
                                   labels=[*ls, "phase"])
        failed = GaugeMetricFamily("pgbackup_drill_checks_failed", "Smoke checks that failed in the last drill.",
                                   labels=ls)
        leftovers = GaugeMetricFamily("pgbackup_drill_scratch_leftovers",
                                      "Scratch databases of this database's drills still on the ledger: not dropped "
                                      "because their server could not be reached or proven.", labels=["database"])
        for name, db in snap.databases.items():
            leftovers.add_metric([name], len(db.scratch_leftovers))
            by_scenario: dict[str, list[DrillResult]] = {}
            for d in db.drills:
                by_scenario.setdefault(d.scenario, []).append(d)
            for scenario, runs in by_scenario.items():
                newest = max(runs, key=lambda d: d.started_at)
                lv = [name, scenario]
                last.add_metric(lv, _ts(newest.started_at))
                ok.add_metric(lv, 1 if newest.succeeded else 0)
                good = [d.started_at for d in runs if d.succeeded]
                if good:
                    last_ok.add_metric(lv, _ts(max(good)))
                recovery.add_metric(lv, newest.recovery_seconds)
                failed.add_metric(lv, newest.checks_failed)
                for phase, seconds in newest.phases.items():
                    phases.add_metric([*lv, phase], seconds)
        yield from (last, ok, last_ok, recovery, phases, failed, leftovers)

    def _compliance(self, snap: Snapshot) -> Iterator[Metric]:
        last = GaugeMetricFamily("pgbackup_compliance_export_last_timestamp_seconds",
                                 "Time of the last compliance export.", labels=["database"])
        ok = GaugeMetricFamily("pgbackup_compliance_export_last_success",
                               "1 when the last compliance export succeeded.", labels=["database"])
        good = GaugeMetricFamily("pgbackup_compliance_export_last_success_timestamp_seconds",
                                 "Time of the last successful compliance export.", labels=["database"])
        rows = GaugeMetricFamily("pgbackup_compliance_export_rows",
                                 "Rows of each table in the last successful compliance export.",
                                 labels=["database", "table"])
        size = GaugeMetricFamily("pgbackup_compliance_export_bytes", "Compressed bytes of each table in the last "
                                 "successful compliance export.", labels=["database", "table"])
        for name, db in snap.databases.items():
            c = db.compliance
            if c is None:
                continue
            if c.at is not None:
                last.add_metric([name], _ts(c.at))
                ok.add_metric([name], 1 if c.ok else 0)
            if c.good_at is not None:
                good.add_metric([name], _ts(c.good_at))
            for table, n, b in c.tables:  # tables come from the configuration: a bounded label
                rows.add_metric([name, table], n)
                size.add_metric([name, table], b)
        yield from (last, ok, good, rows, size)

    def _actions(self, snap: Snapshot) -> Iterator[Metric]:
        fam = CounterMetricFamily("pgbackup_actions", "Action decisions by outcome since start.",
                                  labels=["action", "outcome"])
        # every known outcome starts at 0, so increase() sees the first action too
        counts = {k: 0 for k in ACTION_OUTCOMES} | dict(snap.actions)
        for (action, outcome), n in sorted(counts.items()):
            fam.add_metric([action, outcome], n)
        yield fam
        c = snap.control
        last = GaugeMetricFamily("pgbackup_action_last_timestamp_seconds",
                                 "End of the newest execution of each action by this guardian.", labels=["action"])
        for action, at in sorted(c.last_taken.items()):
            last.add_metric([action], _ts(at))
        yield last
        yield GaugeMetricFamily("pgbackup_leader", "1 when this replica is the leader (it acts and drills).",
                                value=1 if c.leader else 0)
        yield GaugeMetricFamily("pgbackup_actions_dry_run", "1 when remedial actions only decide and audit.",
                                value=1 if c.dry_run else 0)
        yield GaugeMetricFamily("pgbackup_actions_enabled",
                                "1 when remedial actions may run (kill switch on and not paused).",
                                value=1 if c.enabled and c.paused is None else 0)
        up = GaugeMetricFamily("pgbackup_probe_up", "1 when the app health probe's last answer was healthy.",
                               labels=["probe"])
        latency = GaugeMetricFamily("pgbackup_probe_latency_seconds", "Latency of the probe's last answer.",
                                    labels=["probe"])
        fails = GaugeMetricFamily("pgbackup_probe_consecutive_failures", "Failed probes in a row.",
                                  labels=["probe"])
        for p in c.probes:
            up.add_metric([p.name], 1 if p.up else 0)
            latency.add_metric([p.name], p.latency_seconds)
            fails.add_metric([p.name], p.consecutive_failures)
        yield from (up, latency, fails)

    def _heroku_status(self, snap: Snapshot) -> Iterator[Metric]:
        """Heroku's own status (status.heroku.com), as last read: each system's colour and its incidents."""
        p = snap.provider
        if p is None:
            return
        colour = GaugeMetricFamily("pgbackup_heroku_system_status", "Heroku's status of the system (Apps, Data, "
                                   "Tools) as last read from its status API: 0 green, 1 yellow, 2 red.",
                                   labels=["system"])
        incidents = GaugeMetricFamily("pgbackup_heroku_incidents", "Current incidents Heroku reports on the "
                                      "system (Data or Apps) as last read from its status API.", labels=["system"])
        for system in SYSTEMS:
            value = p.colour_value(system)
            if value is not None:
                colour.add_metric([system], value)
        for system in WATCHED_SYSTEMS:
            incidents.add_metric([system], sum(1 for i in p.incidents if system in i.systems))
        yield colour
        yield incidents

    def _heroku(self, snap: Snapshot) -> Iterator[Metric]:
        h = snap.heroku
        if h is None:
            return
        remaining = GaugeMetricFamily("pgbackup_heroku_ratelimit_remaining",
                                      "RateLimit-Remaining of the last Heroku API response.")
        if h.ratelimit_remaining is not None:
            remaining.add_metric([], h.ratelimit_remaining)
        yield remaining
        expiry = GaugeMetricFamily("pgbackup_heroku_token_expiry_timestamp_seconds",
                                   "When the Heroku API token expires; absent when unknown or never expiring.")
        if h.token_readable and h.token_expires_at is not None:
            expiry.add_metric([], h.token_expires_at.timestamp())
        yield expiry
        requests = CounterMetricFamily("pgbackup_heroku_requests", "Heroku API requests made since start.")
        requests.add_metric([], h.requests_total)
        yield requests
        for metric, help_text, value in (
            ("pgbackup_heroku_pass_requests", "Heroku API requests made by the last collection pass.",
             h.pass_requests),
            ("pgbackup_heroku_pass_budget_requests", "Requests the last pass was allowed (its rate budget share).",
             h.pass_allowance),
            ("pgbackup_heroku_pass_deferred", "Databases due for a poll that the last pass deferred (budget).",
             h.pass_deferred),
            ("pgbackup_heroku_poll_stretch_ratio",
             "Desired polling rate over what the rate budget allows (1 = not stretched).", h.stretch),
        ):
            g = GaugeMetricFamily(metric, help_text)
            g.add_metric([], value)
            yield g

    def _findings(self, snap: Snapshot) -> Iterator[Metric]:
        fam = GaugeMetricFamily("pgbackup_finding_active", "1 while a check finds a problem, else 0.",
                                labels=["database", "check", "severity"])
        for name, db in snap.databases.items():
            active = {f.check: f.active for f in db.findings}
            if db.evaluated_at is None:
                continue
            for check, severity in CHECKS.items():
                fam.add_metric([name, check, severity], 1 if active.get(check) else 0)
        yield fam

    def _collectors(self, snap: Snapshot) -> Iterator[Metric]:
        labels = ["collector", "database"]
        up = GaugeMetricFamily("pgbackup_collector_up", "1 when the collector's last run succeeded.", labels=labels)
        dur = GaugeMetricFamily("pgbackup_collector_duration_seconds", "Duration of the collector's last run.",
                                labels=labels)
        last = GaugeMetricFamily("pgbackup_collector_last_success_timestamp_seconds",
                                 "When the collector last succeeded.", labels=labels)
        errors = CounterMetricFamily("pgbackup_collector_errors", "Failed collector runs since start.",
                                     labels=labels)
        stale = GaugeMetricFamily("pgbackup_collector_stale",
                                  "1 when the collector had not succeeded within its expected interval at the last "
                                  "evaluation: the facts it provides for the database are the last known, not fresh.",
                                  labels=labels)
        stale_after = GaugeMetricFamily("pgbackup_collector_stale_after_seconds",
                                        "Age after which the collector's facts count as stale (its pacing).",
                                        labels=labels)
        for (collector, database), st in sorted(snap.collectors.items()):
            lv = [collector, database]
            db = snap.databases.get(database)
            if st.stale_after_seconds is not None:
                stale_after.add_metric(lv, st.stale_after_seconds)
                if db is not None and db.evaluated_at is not None:
                    stale.add_metric(lv, 1 if st.stale(db.evaluated_at) else 0)
            up.add_metric(lv, 1 if st.up else 0)
            dur.add_metric(lv, st.last_duration_seconds)
            if st.last_success_at is not None:
                last.add_metric(lv, _ts(st.last_success_at))
            errors.add_metric(lv, st.errors_total)
        yield from (up, dur, last, errors, stale, stale_after)
