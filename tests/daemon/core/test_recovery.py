"""The recovery plan, pure: for each scenario of the procedures, with and without a rollback window, with and
without a drill, its recovery time within or over the RTO; the commands carry the real app, attachment, backup
ids and archive paths, and never a password. Times are fixed (no clock is read)."""

from __future__ import annotations

import argparse
import shlex
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from daemon.cli.recover import add_parser
from daemon.core.recovery import PlanTarget, archive_location, drill_verdict, rollback_window
from daemon.core.runbook import DAMAGE_TIME, plan_lines, plan_recovery
from daemon.core.snapshot import Backup, DatabaseState, DrillResult, Finding, ProviderFacts, SourceState

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
RTO = {"database_corruption": 3600.0, "accidental_deletion": 7200.0, "complete_failure": 1800.0,
       "provider_outage": 14400.0}
HEROKU = PlanTarget(heroku_app="suoops-backend", heroku_attachment="DATABASE", archive_kind="s3",
                    archive_base="s3://suoops-backups/pg-backup-guardian", tables=("invoices", "billing.payments"))
SELF = PlanTarget(archive_kind="local", archive_base="/var/lib/guardian/archive", server="db.internal:5433")
NAME = "suoops-backend/DATABASE"


def backup(backup_id: str, age: timedelta, source: str, ok: bool = True) -> Backup:
    started = NOW - age
    return Backup(backup_id=backup_id, database=NAME, source=source, kind="scheduled", started_at=started,
                  finished_at=started + timedelta(minutes=2), succeeded=ok, size_bytes=10_000,
                  sha256="ab" * 32 if source == "archive" else None)


def drill(scenario: str, seconds: float, ok: bool = True) -> DrillResult:
    return DrillResult(scenario=scenario, started_at=NOW - 5 * DAY, succeeded=ok, reason="restored" if ok else
                       "pg_restore failed", recovery_seconds=seconds, rto_seconds=None, phases={}, checks_failed=0,
                       backup_id="a041")


def state(*, rollback: bool = True, drills: tuple[DrillResult, ...] = (), findings: tuple[Finding, ...] = (),
          provider: bool = True) -> DatabaseState:
    heroku = SourceState("heroku", backups=(backup("a040", 2 * DAY + 3 * HOUR, "heroku"),
                                            backup("a041", DAY + 3 * HOUR, "heroku"),
                                            backup("a042", 3 * HOUR, "heroku"),
                                            backup("a043", HOUR, "heroku", ok=False)))
    archive = SourceState("archive", backups=(backup("a040", 2 * DAY + 3 * HOUR, "archive"),
                                              backup("a041", DAY + 3 * HOUR, "archive")))
    facts = ProviderFacts(plan="Standard 0", continuous_protection=rollback,
                          rollback_earliest=NOW - 4 * DAY if rollback else None, offers_pitr=True, observed_at=NOW)
    return DatabaseState(name=NAME, rpo_seconds=86400.0, rto_seconds=RTO,
                         sources={"heroku": heroku, "archive": archive},
                         provider=facts if provider else None, drills=drills, findings=findings)


def text(plan: object) -> str:
    return "\n".join(t for _, t in plan_lines(plan))  # type: ignore[arg-type]


def commands(plan: object) -> list[str]:
    return [c for s in plan.steps for c in s.commands]  # type: ignore[attr-defined]


# -- the newest good backup and its fallbacks ------------------------------------------------------------------

def test_the_newest_good_backup_is_restored_first_with_its_data_loss_and_older_ones_as_fallbacks() -> None:
    plan = plan_recovery(state(), HEROKU, "corruption", NOW)
    assert plan.newest is not None
    newest = plan.newest
    assert (newest.backup_id, newest.sources, newest.data_loss_seconds) == ("a042", ("heroku",), 3 * 3600)
    assert [(c.backup_id, c.sources) for c in plan.fallbacks] == [("a041", ("archive", "heroku")),
                                                                  ("a040", ("archive", "heroku"))]
    assert plan.fallbacks[0].location == "s3://suoops-backups/pg-backup-guardian/suoops-backend%2FDATABASE/a041.dump"
    assert "data loss now 3h" in text(plan)


def test_before_the_damage_only_backups_captured_earlier_count() -> None:
    plan = plan_recovery(state(), HEROKU, "corruption", NOW, before=NOW - DAY)
    assert plan.newest is not None and plan.newest.backup_id == "a041"
    assert "--to '2026-11-29 15:00:00+00:00'" in "\n".join(commands(plan))


def test_in_an_outage_only_copies_outside_heroku_count() -> None:
    plan = plan_recovery(state(), HEROKU, "outage", NOW)
    assert plan.newest is not None and plan.newest.backup_id == "a041"
    cmds = commands(plan)
    assert "aws s3 cp s3://suoops-backups/pg-backup-guardian/suoops-backend%2FDATABASE/a041.dump a041.dump" in cmds
    assert f"echo '{'ab' * 32}  a041.dump' | sha256sum --check" in cmds
    assert "pg_restore --no-owner --no-privileges --exit-on-error --dbname suoops_backend_database_recovery " \
           "a041.dump" in cmds
    assert "curl -s https://status.heroku.com/api/v4/current-status" in cmds
    assert plan.rto_seconds == 14400 and "RTO 4h" in text(plan)


def test_no_good_backup_is_said_loudly() -> None:
    db = replace(state(rollback=False), sources={})
    plan = plan_recovery(db, HEROKU, "corruption", NOW)
    assert plan.newest is None
    assert plan.warnings == ("no good backup: nothing to restore from",)
    assert "WARNING: no good backup" in text(plan)


# -- the rollback window -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "window", "why"), [
    (ProviderFacts("Standard 0", True, NOW - 4 * DAY, True, NOW), (NOW - 4 * DAY, NOW), ""),
    (ProviderFacts("Standard 0", False, None, True, NOW), None, "continuous protection is off"),
    (ProviderFacts("Essential 0", None, None, False, NOW), None, "offers no rollback"),
    (ProviderFacts("Standard 0", True, None, True, NOW), None, "does not report a rollback window"),
    (None, None, "self-managed"),
])
def test_the_rollback_window_and_why_there_is_none(facts: ProviderFacts | None,
                                                    window: tuple[datetime, datetime] | None, why: str) -> None:
    got, reason = rollback_window(facts, NOW)
    assert (None if got is None else (got.earliest, got.latest)) == window
    assert why in reason


def test_with_a_rollback_window_corruption_rolls_back_into_a_new_database() -> None:
    plan = plan_recovery(state(), HEROKU, "corruption", NOW, before=NOW - 2 * HOUR)
    cmds = commands(plan)
    assert ("heroku addons:create heroku-postgresql:standard-0 --app suoops-backend -- --rollback DATABASE_URL "
            "--to '2026-11-30 13:00:00+00:00'") in cmds
    assert "heroku pg:promote HEROKU_POSTGRESQL_<COLOR> --app suoops-backend" in cmds
    assert "heroku pg:backups:restore a042 DATABASE_URL --app suoops-backend --confirm suoops-backend" in cmds
    assert cmds[0] == "heroku pg:backups:capture DATABASE_URL --app suoops-backend"
    assert not any("--to-timestamp" in c for c in cmds)  # the procedures' command does not exist
    assert "rollback    Standard 0: any moment from 2026-11-26 15:00:00+00:00" in text(plan)


def test_an_advanced_database_rolls_back_by_a_fork_up_to_the_latest_point_heroku_reports() -> None:
    """Heroku Postgres Advanced: the rollback is `data:pg:fork --rollback-to`, and the window ends at the latest
    rollback point Heroku reports, not at now."""
    facts = ProviderFacts(plan="Advanced", continuous_protection=True, rollback_earliest=NOW - 7 * DAY,
                          offers_pitr=True, observed_at=NOW, family="advanced", rollback_latest=NOW - 20 * MINUTE)
    window, _ = rollback_window(facts, NOW)
    assert window is not None and (window.earliest, window.latest) == (NOW - 7 * DAY, NOW - 20 * MINUTE)
    plan = plan_recovery(replace(state(), provider=facts), HEROKU, "corruption", NOW, before=NOW - 2 * HOUR)
    cmds = commands(plan)
    assert ("heroku data:pg:fork DATABASE_URL --rollback-to '2026-11-30 13:00:00+00:00' --app suoops-backend"
            in cmds)
    assert not any("addons:create" in c and "--rollback" in c for c in cmds)


def test_an_advanced_database_relies_on_no_pg_backups_step_and_without_a_backup_offers_no_recover_rows() -> None:
    facts = ProviderFacts(plan="Advanced", continuous_protection=True, rollback_earliest=NOW - 7 * DAY,
                          offers_pitr=True, observed_at=NOW, family="advanced", rollback_latest=NOW - MINUTE)
    db = replace(state(), provider=facts, sources={})  # no pg:backups backup, no archived copy
    plan = plan_recovery(db, HEROKU, "deletion", NOW, before=NOW - 2 * HOUR)
    cmds = commands(plan)
    assert not any("pg:backups" in c for c in cmds)
    assert not any(c.startswith("backup-guardian recover-rows") for c in cmds)
    assert any(c.startswith("heroku data:pg:fork DATABASE_URL --rollback-to") for c in cmds)
    assert plan.to_json()["provider_family"] == "advanced"
    assert not any("pg:backups" in a for a in plan.afterwards)
    assert any("data:pg:info" in a for a in plan.afterwards)
    corruption = plan_recovery(db, HEROKU, "corruption", NOW, before=NOW - 2 * HOUR)
    assert not any("pg:backups" in c for c in commands(corruption))
    assert "Keep the current state first" in corruption.steps[0].title
    classic = plan_recovery(state(), HEROKU, "corruption", NOW, before=NOW - 2 * HOUR)
    assert any("pg:backups:capture" in c for c in commands(classic))
    assert any("heroku pg:backups --app" in a for a in classic.afterwards)


def test_without_a_rollback_window_there_is_no_rollback_command_and_the_reason_is_given() -> None:
    plan = plan_recovery(state(rollback=False), HEROKU, "corruption", NOW)
    assert not any("--rollback" in c for c in commands(plan))
    assert "rollback    none: continuous protection is off" in text(plan)


def test_without_a_damage_time_the_rollback_asks_for_it() -> None:
    plan = plan_recovery(state(), HEROKU, "corruption", NOW)
    assert any(f"--to '{DAMAGE_TIME}'" in c for c in commands(plan))


def test_a_damage_time_outside_the_window_is_a_warning() -> None:
    plan = plan_recovery(state(), HEROKU, "corruption", NOW, before=NOW - 6 * DAY)
    assert any("outside the rollback window" in w for w in plan.warnings)


# -- the drill against the RTO ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("scenario", "drills", "verdict", "measured", "rto"), [
    ("corruption", (), "never_measured", None, 3600),
    ("corruption", (drill("database_corruption", 250.0),), "within", 250.0, 3600),
    ("corruption", (drill("database_corruption", 4000.0),), "over", 4000.0, 3600),
    ("corruption", (drill("database_corruption", 250.0, ok=False),), "failed", 250.0, 3600),
    ("corruption", (drill("accidental_deletion", 250.0),), "never_measured", None, 3600),  # not its drill
    ("deletion", (drill("accidental_deletion", 7000.0),), "within", 7000.0, 7200),
    ("deletion", (drill("accidental_deletion", 7300.0),), "over", 7300.0, 7200),
    ("failure", (drill("database_corruption", 2000.0),), "over", 2000.0, 1800),  # the full drill, a 30 min RTO
    ("outage", (drill("database_corruption", 2000.0),), "within", 2000.0, 14400),
])
def test_the_last_drill_is_held_to_the_scenarios_rto(scenario: str, drills: tuple[DrillResult, ...], verdict: str,
                                                     measured: float | None, rto: float) -> None:
    plan = plan_recovery(state(drills=drills), HEROKU, scenario, NOW)
    assert (plan.drill.verdict, plan.drill.measured_seconds, plan.drill.rto_seconds) == (verdict, measured, rto)
    words = {"within": "WITHIN the RTO", "over": "OVER the RTO", "failed": "FAILED",
             "never_measured": "NEVER MEASURED"}[verdict]
    assert words in text(plan)


def test_drill_verdict_takes_the_newest_drill_of_the_kind() -> None:
    old, new = drill("database_corruption", 9000.0), drill("database_corruption", 100.0)
    db = state(drills=(replace(new, started_at=NOW - DAY), old))
    from daemon.core.recovery import SCENARIOS

    assert drill_verdict(db, SCENARIOS["corruption"]).verdict == "within"


# -- each scenario's runbook ----------------------------------------------------------------------------------

def test_deletion_recovers_rows_of_each_critical_table_before_the_deletion() -> None:
    plan = plan_recovery(state(), HEROKU, "deletion", NOW, before=NOW - 2 * HOUR)
    cmds = commands(plan)
    # one run for every critical table (their rows are compared together), into a new directory: the flags the
    # recover-rows command itself takes
    (rows,) = [c for c in cmds if c.startswith("backup-guardian recover-rows")]
    assert rows == ("backup-guardian recover-rows --database suoops-backend/DATABASE --table invoices "
                    "--table billing.payments --before '2026-11-30 13:00:00+00:00' "
                    "--out suoops_backend_database_recovery_rows")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"), lambda p: p)
    args = parser.parse_args(shlex.split(rows)[1:])
    assert (args.tables, args.out) == (["invoices", "billing.payments"], "suoops_backend_database_recovery_rows")
    restore = next(c for c in cmds if c.startswith("pg_restore"))
    assert "--schema public --table invoices --schema billing --table payments" in restore
    assert not any("pg:backups:restore" in c for c in cmds)  # never overwrite the whole database for some rows
    assert plan.rto_seconds == 7200


def test_failure_checks_heroku_releases_and_scales_before_restoring() -> None:
    cmds = commands(plan_recovery(state(rollback=False), HEROKU, "failure", NOW))
    # the rollback names its release: after a rollback by the guardian, `heroku rollback` alone would return to
    # the bad deploy; the guardian's own rollbacks are listed first
    assert cmds[:5] == ["curl -s https://status.heroku.com/api/v4/current-status",
                        "heroku releases --app suoops-backend",
                        "backup-guardian actions --action rollback --target suoops-backend",
                        "heroku rollback v<N> --app suoops-backend",
                        "heroku ps:scale web=2 --app suoops-backend"]
    assert "heroku pg:backups:restore a042 DATABASE_URL --app suoops-backend --confirm suoops-backend" in cmds


@pytest.mark.parametrize("scenario", ["corruption", "deletion", "failure", "outage"])
def test_a_self_managed_database_restores_from_the_archive_with_no_heroku_command(scenario: str) -> None:
    archive = SourceState("archive", backups=(backup("20261130T120000Z", 3 * HOUR, "archive"),))
    db = DatabaseState(name="shop", rpo_seconds=86400.0, rto_seconds=RTO, sources={"archive": archive})
    plan = plan_recovery(db, SELF, scenario, NOW)
    cmds = commands(plan)
    assert not any(c.startswith("heroku") for c in cmds)
    assert "pg_restore --no-owner --no-privileges --exit-on-error" in "\n".join(cmds)
    assert "/var/lib/guardian/archive/shop/20261130T120000Z.dump" in "\n".join(cmds)
    assert "rollback    none: no provider rollback" in text(plan)
    if scenario == "corruption":
        assert cmds[0] == "backup-guardian capture --database shop --reason 'state before recovery'"
    if scenario == "failure":
        assert "pg_isready --host db.internal --port 5433" in cmds


@pytest.mark.parametrize("scenario", ["corruption", "deletion", "failure", "outage"])
def test_every_plan_ends_with_the_procedures_checklist_and_the_active_findings(scenario: str) -> None:
    findings = (Finding(NAME, "rpo_at_risk", "warning", True, "the next backup comes too late", NOW),
                Finding(NAME, "unencrypted_object", "warning", True, "one copy is not encrypted", NOW),
                Finding(NAME, "rpo_breach", "critical", False, "ok", NOW))
    plan = plan_recovery(state(findings=findings), HEROKU, scenario, NOW)
    assert [f.check for f in plan.findings] == ["rpo_at_risk"]  # active, and bearing on a recovery
    assert any("invoice creation" in a for a in plan.afterwards)
    assert any("debrief" in a for a in plan.afterwards)
    doc = plan.to_json()
    assert doc["scenario"] == scenario and doc["findings"][0]["check"] == "rpo_at_risk"
    assert doc["heroku"] == {"app": "suoops-backend", "attachment": "DATABASE"}


def test_an_unknown_scenario_is_named() -> None:
    with pytest.raises(ValueError, match="unknown scenario 'flood'; one of: corruption, deletion, failure, outage"):
        plan_recovery(state(), HEROKU, "flood", NOW)


def test_archive_location_follows_both_stores_layout(tmp_path: object) -> None:
    from pathlib import Path

    from daemon.adapters.archive.local import LocalDirectoryStore

    root = Path(str(tmp_path))
    assert archive_location(str(root), NAME, "a041") == str(LocalDirectoryStore(root).dump_path(NAME, "a041"))


def test_deletion_from_a_backup_only_heroku_holds_downloads_it_and_restores_the_tables_alone() -> None:
    cmds = commands(plan_recovery(state(rollback=False), HEROKU, "deletion", NOW))
    assert "heroku pg:backups:download a042 --app suoops-backend" in cmds
    assert ("pg_restore --no-owner --no-privileges --exit-on-error --schema public --table invoices --schema billing "
            "--table payments --dbname suoops_backend_database_recovery latest.dump") in cmds


def test_no_password_reaches_the_plan() -> None:
    target = replace(SELF, server="db.internal:5433")
    db = replace(state(), name="shop")
    doc = str(plan_recovery(db, target, "failure", NOW).to_json())
    assert "@" not in doc and "postgresql://" not in doc


def test_facts_that_could_not_be_read_now_are_said_first() -> None:
    plan = plan_recovery(state(), HEROKU, "corruption", NOW, unread=("the heroku facts (HTTP 503)",))
    assert plan.warnings[0] == ("could not read the heroku facts (HTTP 503) now: the backups below are the last "
                                "known, maybe not all")
