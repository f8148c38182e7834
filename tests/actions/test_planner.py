"""Planner and guard tables: every trigger, every guard, with the reason a person reads in the audit log."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from actions.guards import Facts, Intent, decide
from actions.planner import INTERRUPTED_CAPTURE, TakenAction, capture_facts, plan_captures
from daemon.config import ActionsConfig, DatabaseConfig, Objectives
from daemon.core.policy import evaluate
from daemon.core.snapshot import Backup, DatabaseState, Finding, ProviderFacts, Schedule, SourceState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HEROKU = DatabaseConfig(name="shop/DATABASE", heroku={"app": "shop"})
SELF = DatabaseConfig(name="local", url="postgresql://u:pw@127.0.0.1:5432/local")
WATCH_ONLY = DatabaseConfig(name="watched", url="postgresql://u:pw@127.0.0.1:5432/w", capture={"enabled": False})


def finding(db: str, check: str, active: bool = True) -> Finding:
    return Finding(database=db, check=check, severity="critical", active=active, hint=f"{check} hint",
                   observed_at=NOW)


def state(name: str, *findings: Finding, sources: dict[str, SourceState] | None = None) -> DatabaseState:
    return DatabaseState(name=name, rpo_seconds=86400, rto_seconds={}, findings=findings, sources=sources or {})


def backup(bid: str, kind: str, at: datetime, ok: bool = True, source: str = "heroku") -> Backup:
    return Backup(backup_id=bid, database="shop/DATABASE", source=source, kind=kind, started_at=at,
                  finished_at=at + timedelta(minutes=1), succeeded=ok)


CONFIGS = {c.name: c for c in (HEROKU, SELF, WATCH_ONLY)}


@pytest.mark.parametrize("check", ["rpo_at_risk", "rpo_breach", "missed_schedule", "last_attempt_failed",
                                   "size_anomaly"])
def test_every_trigger_finding_plans_one_capture_naming_it(check: str) -> None:
    intents = plan_captures({"shop/DATABASE": state("shop/DATABASE", finding("shop/DATABASE", check))}, CONFIGS,
                            ActionsConfig())
    assert [(i.action, i.target, i.triggers) for i in intents] == [("capture", "shop/DATABASE", (check,))]
    assert f"{check}: {check} hint" in intents[0].reason


@pytest.mark.parametrize("check", ["collector_down", "no_schedule", "drill_failed", "archive_gap", "copy_lag"])
def test_findings_that_a_capture_cannot_fix_plan_nothing(check: str) -> None:
    assert plan_captures({"local": state("local", finding("local", check))}, CONFIGS, ActionsConfig()) == []


def test_inactive_findings_plan_nothing() -> None:
    assert plan_captures({"local": state("local", finding("local", "rpo_breach", active=False))}, CONFIGS,
                         ActionsConfig()) == []


def test_several_triggers_make_one_intent_with_all_of_them() -> None:
    db = state("local", finding("local", "rpo_breach"), finding("local", "missed_schedule"))
    [intent] = plan_captures({"local": db}, CONFIGS, ActionsConfig())
    assert intent.triggers == ("rpo_breach", "missed_schedule")


def test_a_database_the_guardian_cannot_capture_plans_nothing() -> None:
    db = state("watched", finding("watched", "rpo_breach"))
    assert plan_captures({"watched": db}, CONFIGS, ActionsConfig()) == []


@pytest.mark.parametrize(("family", "planned"), [("advanced", False), ("essential", True), ("classic", True)])
def test_an_advanced_heroku_database_is_not_captured_through_pg_backups(family: str, planned: bool) -> None:
    provider = ProviderFacts(plan=f"heroku-postgresql:{family}", continuous_protection=None, rollback_earliest=None,
                             offers_pitr=False, observed_at=NOW, family=family)
    db = replace(state("shop/DATABASE", finding("shop/DATABASE", "rpo_breach")), provider=provider)
    assert bool(plan_captures({"shop/DATABASE": db}, CONFIGS, ActionsConfig())) is planned


def test_triggers_and_the_capture_switch_are_configurable() -> None:
    db = state("local", finding("local", "size_anomaly"))
    assert plan_captures({"local": db}, CONFIGS, ActionsConfig(capture={"triggers": ["rpo_breach"]})) == []
    assert plan_captures({"local": db}, CONFIGS, ActionsConfig(capture={"enabled": False})) == []


INTENT = Intent("capture", "shop/DATABASE", "rpo_breach: 30h without a backup", triggers=("rpo_breach",))
LIVE = Facts(dry_run=False, cooldown=timedelta(hours=2), daily_cap=3)


@pytest.mark.parametrize(("facts", "outcome", "words"), [
    (LIVE, "execute", "capture a backup of shop/DATABASE because rpo_breach"),
    (Facts(dry_run=True, cooldown=timedelta(hours=2), daily_cap=3), "dry_run", "dry run: would capture"),
    (Facts(enabled=False, dry_run=False), "skipped_disabled", "kill switch"),
    (Facts(paused="maintenance window", dry_run=False), "skipped_paused", "paused: maintenance window"),
    (Facts(leader=False, dry_run=False), "skipped_not_leader", "not the leader"),
    (Facts(running="1 capture(s) in progress at heroku", dry_run=False), "skipped_running", "already running"),
    (Facts(dry_run=False, last_taken=NOW - timedelta(minutes=30), last_taken_what="on-request backup b007",
           cooldown=timedelta(hours=2), daily_cap=3), "skipped_cooldown", "b007 was 30m ago, cooldown 2h"),
    (Facts(dry_run=False, last_taken=NOW - timedelta(hours=3), cooldown=timedelta(hours=2), taken_24h=3,
           daily_cap=3), "skipped_cap", "daily cap reached: 3 in the last 24h"),
])
def test_each_guard_stops_the_action_with_its_reason(facts: Facts, outcome: str, words: str) -> None:
    decision = decide(INTENT, facts, NOW)
    assert decision.outcome == outcome
    assert words in decision.reason
    assert "rpo_breach: 30h without a backup" in decision.reason  # the why is always kept


def test_guards_apply_in_order_so_the_reason_names_the_first_that_stopped_it() -> None:
    facts = Facts(enabled=False, paused="x", leader=False, running="y", taken_24h=9, daily_cap=1)
    assert decide(INTENT, facts, NOW).outcome == "skipped_disabled"
    assert decide(INTENT, Facts(paused="x", leader=False, running="y"), NOW).outcome == "skipped_paused"


def test_dry_run_comes_after_cooldown_so_it_says_only_what_would_really_happen() -> None:
    facts = Facts(dry_run=True, last_taken=NOW - timedelta(minutes=5), cooldown=timedelta(hours=1))
    assert decide(INTENT, facts, NOW).outcome == "skipped_cooldown"


def test_cooldown_ends_after_its_time() -> None:
    facts = Facts(dry_run=False, last_taken=NOW - timedelta(hours=2, seconds=1), cooldown=timedelta(hours=2))
    assert decide(INTENT, facts, NOW).go


def test_a_persons_request_skips_the_cooldown_but_not_the_cap_or_a_running_capture() -> None:
    manual = Intent("capture", "local", "requested by a person", manual=True)
    recent = Facts(dry_run=False, last_taken=NOW - timedelta(minutes=1), cooldown=timedelta(hours=2), daily_cap=3)
    assert decide(manual, recent, NOW).go
    assert decide(manual, Facts(dry_run=False, taken_24h=3, daily_cap=3), NOW).outcome == "skipped_cap"
    assert decide(manual, Facts(dry_run=False, running="pg_dump"), NOW).outcome == "skipped_running"


def test_a_planner_block_becomes_its_own_outcome() -> None:
    intent = Intent("scale", "shop/web", "3 failed probes", blocked="max",
                    params={"blocked_reason": "web is at its max of 4"})
    decision = decide(intent, LIVE, NOW)
    assert decision.outcome == "skipped_max" and "web is at its max of 4" in decision.reason


# -- facts from the world ---------------------------------------------------------------------------------

def heroku_state(*backups: Backup, running: int = 0) -> DatabaseState:
    return state("shop/DATABASE", sources={"heroku": SourceState("heroku", backups=backups, in_progress=running)})


def test_a_manual_backup_in_the_sources_history_starts_the_cooldown_even_with_no_history_of_ours() -> None:
    db = heroku_state(backup("a010", "scheduled", NOW - timedelta(hours=30)),
                      backup("b011", "manual", NOW - timedelta(minutes=40), ok=False))
    facts = capture_facts(db, HEROKU, ActionsConfig(dry_run=False), [], NOW, leader=True, paused=None)
    assert facts.last_taken == NOW - timedelta(minutes=40)
    assert "b011" in facts.last_taken_what and "failed" in facts.last_taken_what
    decision = decide(INTENT, facts, NOW)
    assert decision.outcome == "skipped_cooldown" and "b011" in decision.reason


def test_scheduled_backups_do_not_start_the_cooldown() -> None:
    db = heroku_state(backup("a010", "scheduled", NOW - timedelta(minutes=10), ok=False))
    facts = capture_facts(db, HEROKU, ActionsConfig(dry_run=False), [], NOW, leader=True, paused=None)
    assert facts.last_taken is None
    assert decide(INTENT, facts, NOW).go


def test_the_guardians_own_history_counts_toward_cooldown_and_cap() -> None:
    history = [TakenAction(NOW - timedelta(hours=20), "done"), TakenAction(NOW - timedelta(hours=10), "failed"),
               TakenAction(NOW - timedelta(hours=3), "failed", "HTTP 500")]
    facts = capture_facts(heroku_state(), HEROKU, ActionsConfig(dry_run=False), history, NOW, leader=True,
                          paused=None)
    assert facts.taken_24h == 3 and facts.last_taken == NOW - timedelta(hours=3)
    assert "HTTP 500" in facts.last_taken_what
    assert decide(INTENT, facts, NOW).outcome == "skipped_cap"


def test_a_capture_the_source_shows_running_blocks_a_second_one() -> None:
    facts = capture_facts(heroku_state(running=1), HEROKU, ActionsConfig(dry_run=False), [], NOW, leader=True,
                          paused=None)
    assert facts.running and decide(INTENT, facts, NOW).outcome == "skipped_running"


def test_self_managed_databases_read_their_archive_for_running_and_history() -> None:
    db = state("local", sources={"archive": SourceState("archive", in_progress=1, backups=(
        backup("c1", "emergency", NOW - timedelta(minutes=5), source="archive"),))})
    facts = capture_facts(db, SELF, ActionsConfig(dry_run=False), [], NOW, leader=True, paused=None)
    assert facts.running is not None
    assert facts.last_taken == NOW - timedelta(minutes=5)


def test_an_interrupted_capture_holds_no_cooldown_but_counts_toward_the_cap() -> None:
    interrupted = backup("c1", "manual", NOW - timedelta(minutes=5), ok=False, source="archive")
    db = state("local", sources={"archive": SourceState("archive", backups=(
        replace(interrupted, error=INTERRUPTED_CAPTURE),))})
    history = [TakenAction(NOW - timedelta(minutes=5), "interrupted", "interrupted: the process stopped")]
    facts = capture_facts(db, SELF, ActionsConfig(dry_run=False), history, NOW, leader=True, paused=None)
    assert facts.last_taken is None and facts.taken_24h == 1
    assert decide(INTENT, facts, NOW).go


def test_captures_on_the_schedule_count_for_neither_cooldown_nor_cap() -> None:
    history = [TakenAction(NOW - timedelta(minutes=i), "done", kind="scheduled") for i in range(1, 5)]
    facts = capture_facts(heroku_state(), HEROKU, ActionsConfig(dry_run=False), history, NOW, leader=True,
                          paused=None)
    assert facts.last_taken is None and facts.taken_24h == 0


# -- captures against the schedule: findings evaluated by the policy from a daily 02:00 UTC schedule -------------

DUE = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)  # a due time of the schedule; history is the week before it


def scheduled_db(now: datetime, delays: list[int], failed_last: bool = False,
                 objectives: Objectives | None = None) -> DatabaseState:
    """shop/DATABASE on Heroku with a daily 02:00 UTC schedule, one scheduled start a day from a week before
    DUE (`delays` minutes after the due time), its findings evaluated by the policy at `now`."""

    starts = [DUE - timedelta(days=7) + timedelta(days=i, minutes=d) for i, d in enumerate(delays)]
    done = [s for s in starts if s + timedelta(minutes=1) <= now]
    backups = tuple(replace(backup(f"b{i}", "scheduled", s), succeeded=not (failed_last and s == done[-1]))
                    for i, s in enumerate(done))
    running = tuple(s for s in starts if s <= now < s + timedelta(minutes=1))
    src = SourceState(source="heroku", backups=backups, in_progress=len(running), running_started=running,
                      schedules=(Schedule(hour=2, timezone="UTC"),), schedules_known=True, observed_at=now)
    db = state("shop/DATABASE", sources={"heroku": src})
    return replace(db, findings=evaluate(db, objectives or HEROKU.objectives, [], now))


HEALTHY_DAYS = [3, 5, 2, 4, 3, 5, 2, 4, 3, 5, 2]  # a week of history, then today and three more days on time


@pytest.mark.parametrize("hours", range(0, 72), ids=lambda h: f"due+{h}h")
def test_a_healthy_schedule_never_calls_for_an_emergency_capture(hours: int) -> None:
    for minutes in (0, 3, 4, 30):
        now = DUE + timedelta(hours=hours, minutes=minutes)
        assert plan_captures({"shop/DATABASE": scheduled_db(now, HEALTHY_DAYS)}, CONFIGS, ActionsConfig()) == []


@pytest.mark.parametrize(("delays", "failed_last", "objectives", "offset", "trigger"), [
    pytest.param([3] * 7, False, {}, timedelta(minutes=61), "missed_schedule", id="missed"),
    pytest.param([3] * 8, True, {}, timedelta(hours=1), "last_attempt_failed", id="last-attempt-failed"),
    pytest.param([3] * 8, False, {"rpo": "12h"}, timedelta(hours=10), "rpo_at_risk",
                 id="projected-breach-next-backup-too-late"),
    pytest.param([3] * 7, False, {}, timedelta(minutes=30), "rpo_breach", id="breach-past-tolerance"),
])
def test_a_capture_when_the_schedule_cannot_save_the_rpo(delays: list[int], failed_last: bool,
                                                         objectives: dict[str, str], offset: timedelta,
                                                         trigger: str) -> None:
    db = scheduled_db(DUE + offset, delays, failed_last, Objectives.model_validate(objectives))
    [intent] = plan_captures({"shop/DATABASE": db}, CONFIGS, ActionsConfig())
    assert trigger in intent.triggers
