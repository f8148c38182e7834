"""The drill jobs: scheduled and requested restore drills, their reports and history, and the sweep of scratch
databases a crashed drill left behind.

A drill runs as a recorded execution through the pipeline (`drill:<name>` held, history and audit), so a drill
whose process dies leaves a record that the next start closes as interrupted. Its result is published into the
snapshot (the newest per scenario, and after a failure the newest good one too), written as a report (JSON and
Markdown, copied to an S3 archive) and kept in the state store, from which the next start reads the history.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from actions.audit import AuditLog, person
from actions.drill.outcome import FULL, TABLE, DrillRun, Progress, to_result
from actions.drill.report import load_latest, write_report
from actions.drill.run import DrillBusy, DrillRunner, drill_lock
from actions.guards import Decision, Intent
from actions.pipeline import DRILL, SCRATCH_SWEEP, Pipeline
from actions.runner import Outcome
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.sentry import Notifier
from daemon.adapters.statestore import StateStore
from daemon.config import DatabaseConfig
from daemon.core import policy
from daemon.core.errors import GuardianError
from daemon.core.snapshot import DatabaseState, DrillResult, StateHolder


@functools.lru_cache(maxsize=64)
def cron_interval(expr: str) -> timedelta:
    """The longest gap between the next few firings of a cron expression (its drill's interval)."""
    trigger = CronTrigger.from_crontab(expr, timezone=UTC)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    fires: list[datetime] = []
    for _ in range(5):
        nxt = trigger.get_next_fire_time(None, t)
        if nxt is None:
            break
        fires.append(nxt)
        t = nxt + timedelta(seconds=1)
    gaps = [b - a for a, b in itertools.pairwise(fires)]
    return max(gaps) if gaps else timedelta(days=31)


def scenarios(db: DatabaseConfig) -> dict[str, str]:
    """Scenario -> cron of the drills this database gets."""
    if not db.drill.enabled:
        return {}
    out = {FULL: db.drill.full_schedule}
    if db.drill.tables:
        out[TABLE] = db.drill.table_schedule
    return out


def drill_policy(db: DatabaseConfig, since: datetime | None) -> policy.DrillPolicy | None:
    """How often this database's drills are due, for the `drill_overdue` check."""
    mine = scenarios(db)
    if not mine:
        return None
    return policy.DrillPolicy(intervals={s: cron_interval(c) for s, c in mine.items()}, grace=db.drill.overdue_grace,
                              since=since)


def result_from_report(doc: dict[str, Any]) -> DrillResult:
    return DrillResult(
        scenario=str(doc["scenario"]), started_at=datetime.fromisoformat(doc["started_at"]),
        succeeded=bool(doc["succeeded"]), reason=str(doc.get("reason", "")),
        recovery_seconds=float(doc.get("recovery_seconds") or 0), rto_seconds=doc.get("rto_seconds"),
        phases={k: float(v) for k, v in (doc.get("phases_seconds") or {}).items()},
        checks_failed=sum(1 for c in doc.get("checks", []) if not c.get("ok")),
        backup_id=(doc.get("backup") or {}).get("id"), report=doc.get("_path"),
    )


class DrillService:
    """Drills of the databases this guardian watches, and the scratch sweep."""

    def __init__(self, databases: dict[str, DatabaseConfig], runner: DrillRunner, pipeline: Pipeline,
                 holder: StateHolder, state: StateStore, store: ArchiveStore, notifier: Notifier, audit: AuditLog,
                 state_dir: Path, copy_reports: bool, billing_app: Callable[[str], str | None],
                 republish: Callable[[], object], count: Callable[[str, str], None],
                 clock: Callable[[], datetime]) -> None:
        """`copy_reports`: reports also go to the archive store (S3); `republish()` re-evaluates."""
        self.databases = databases
        self.runner = runner
        self.pipeline = pipeline
        self.holder = holder
        self.state = state
        self.store = store
        self.notifier = notifier
        self.audit = audit
        self.state_dir = state_dir
        self.copy_reports = copy_reports
        self.billing_app = billing_app
        self.republish = republish
        self.count = count
        self.clock = clock

    def load_history(self) -> None:
        """The newest drill per scenario (and the newest good one) from the state store, or from the report
        files of an older version that kept them only in the state directory."""
        for name in self.databases:
            results = []
            try:
                docs = self.state.drills(name) or load_latest(self.state_dir, name)
            except GuardianError as exc:
                logger.warning("drill history of {} unavailable: {}", name, exc)
                docs = load_latest(self.state_dir, name)
            for doc in docs:
                try:
                    results.append(result_from_report(doc))
                except (KeyError, TypeError, ValueError):
                    continue
            if results:
                self.holder.update_database(name, partial(_with_drills, drills=tuple(results)))

    def drill(self, name: str, scenario: str = FULL, progress: Progress | None = None,
              manual: bool = False) -> DrillRun:
        """Run one drill now (scheduled or requested), report it, and publish its result."""
        runs: list[DrillRun] = []

        def work(_id: int) -> Outcome:
            run, report = self._drill(name, scenario, progress)
            runs.append(run)
            details = {} if run.skipped else {"scenario": scenario, "report": report,
                                              "recovery_seconds": round(run.recovery_seconds, 1)}
            return Outcome(run.succeeded, run.reason, details, skipped=run.skipped, interrupted=run.stopped)

        intent = Intent("drill", name, f"{scenario} drill", params={"scenario": scenario}, manual=manual,
                        requested_by=person() if manual else None)
        outcome = self.pipeline.run_held(DRILL, intent, work, unlocked_ok=False)
        if isinstance(outcome, Decision):  # paused, or not the leader: audited by the pipeline
            return DrillRun(database=name, scenario=scenario, started_at=self.clock(), skipped=True,
                            reason=outcome.reason)
        if outcome is None or not runs:  # another process drills this database now, or its lock is unavailable
            self.count("drill", "skipped")
            return DrillRun(database=name, scenario=scenario, started_at=self.clock(), skipped=True,
                            reason=outcome.detail if outcome is not None else
                            f"a drill of {name} is running in another process")
        return runs[0]

    def _drill(self, name: str, scenario: str, progress: Progress | None) -> tuple[DrillRun, str | None]:
        """The drill itself: run, report, publish. Returns the run and where its report went."""
        db = self.databases[name]
        state = self.holder.current().databases[name]
        cron = scenarios(db).get(scenario)
        schedule = None if cron is None else {
            "schedule": {"type": "crontab", "value": cron}, "checkin_margin": 60,
            "max_runtime": int(db.drill.timeout.total_seconds() // 60), "timezone": "UTC"}
        token = self.notifier.job_started(f"drill-{scenario}-{name}", schedule)
        run = self.runner.run(db, state, scenario, self.billing_app(name), progress)
        if run.skipped:  # busy or shutting down: no verdict, no report, no finding
            if not run.stopped:  # like a capture the shutdown stops: no check-in saying it went well
                self.notifier.job_finished(f"drill-{scenario}-{name}", token, True, 0.0)
            return run, None
        self.notifier.job_finished(f"drill-{scenario}-{name}", token, run.succeeded, run.recovery_seconds)
        path = self._report(run)
        result = to_result(run, str(path))

        def apply(s: DatabaseState) -> DatabaseState:
            others = [d for d in s.drills if d.scenario != scenario]
            # after a failure the newest good drill of the scenario stays (it says when one last succeeded)
            good = [d for d in s.drills if d.scenario == scenario and d.succeeded] if not run.succeeded else []
            return replace(s, drills=(*others, *good[-1:], result))

        self.holder.update_database(name, apply)
        try:  # a scratch database the drill could not drop stays on the ledger until a sweep drops it
            left = [(e.database, f"{e.name}: not dropped after its drill; the next start sweeps it")
                    for e in self.state.scratch_entries() if e.database == name]
            self._publish_leftovers(left, only=name)
        except GuardianError as exc:
            logger.warning("scratch ledger unreadable: {}", exc)
        self.republish()  # one evaluation at a time (the notifier tracks state changes)
        return run, str(path)

    def _report(self, run: DrillRun) -> Path:
        """Write the run's report, keep it in the drill history and (S3 archive) copy it to the bucket."""
        path, doc, text = write_report(run, self.state_dir)
        try:
            self.state.add_drill(run.database, run.scenario, run.started_at, run.succeeded,
                                 {**doc, "_path": str(path)})
        except GuardianError as exc:
            logger.warning("drill history not stored: {}", exc)
        if self.copy_reports:
            try:
                self.store.put_blob(run.database, f"{path.stem}.json", json.dumps(doc, indent=2).encode(),
                                    "application/json")
                self.store.put_blob(run.database, f"{path.stem}.md", text.encode(), "text/markdown")
            except GuardianError as exc:
                logger.warning("drill report not copied to the archive: {}", exc)
        return path

    def sweep_scratch(self, manual: bool = False) -> None:
        """Drop scratch databases and downloads a crashed drill left behind (each scratch server once); never
        while a drill runs, in this process or another, nor while actions are paused or on a follower."""
        decision = self.pipeline.decide(SCRATCH_SWEEP, Intent(
            "scratch_sweep", "scratch servers", "drop scratch databases a crashed drill left behind", manual=manual))
        if not decision.go:
            self.pipeline.note(decision)
            return
        try:
            with drill_lock(self.state_dir):
                self._sweep_scratch()
        except DrillBusy:
            logger.info("a drill is running: leftover scratch databases are swept later")

    def _sweep_scratch(self) -> None:
        if self.runner.sweep_downloads():
            logger.info("removed downloads left by an interrupted drill")
        legacy = self.state_dir / "drills" / "scratch-ledger.json"
        if legacy.exists():
            logger.warning("{} (the scratch ledger of earlier versions) is ignored: its entries name no server and "
                           "carry no marker, so they cannot be proven to be scratch databases; drop any that still "
                           "exist by hand", legacy)
        try:
            report = self.runner.sweep_scratch()
        except GuardianError as exc:
            logger.warning("could not sweep leftover scratch databases: {}", exc)
            return
        for entry in report.killed:
            logger.warning("killed the pg_restore of {} that outlived its drill", entry.name)
        for entry in report.live:
            logger.info("scratch database {} of {} belongs to a drill running in another process: left alone",
                        entry.name, entry.database)
        for entry, how in report.dropped:
            logger.info("scratch database {} of {} left by an earlier drill: {}", entry.name, entry.database, how)
            self.audit.record("scratch_sweep", entry.database, "done", how, scratch=entry.name,
                              server=entry.server_id)
        for entry, why in report.kept:
            logger.warning("scratch database {} of {} kept: {}", entry.name, entry.database, why)
            self.audit.record("scratch_sweep", entry.database, "kept", why, scratch=entry.name,
                              server=entry.server_id)
        self._publish_leftovers([(e.database, f"{e.name}: {why}") for e, why in report.kept])
        self.republish()

    def _publish_leftovers(self, kept: list[tuple[str, str]], only: str | None = None) -> None:
        """Publish, per watched database (or only `only`), the scratch databases still on the ledger and why."""
        by_db: dict[str, tuple[str, ...]] = {}
        for database, why in kept:
            by_db[database] = (*by_db.get(database, ()), why)
        for name in self.databases if only is None else [only]:
            self.holder.update_database(name, partial(_with_leftovers, leftovers=by_db.get(name, ())))


def _with_drills(db: DatabaseState, drills: tuple[DrillResult, ...]) -> DatabaseState:
    return replace(db, drills=drills)


def _with_leftovers(db: DatabaseState, leftovers: tuple[str, ...]) -> DatabaseState:
    return replace(db, scratch_leftovers=leftovers)
