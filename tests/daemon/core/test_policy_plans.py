"""The policy by Heroku Postgres plan family: what protects an Essential, classic and Advanced database, and
which findings each can have. Pure: every time is relative to NOW."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemon.config import Objectives
from daemon.core.policy import data_at_risk_seconds, evaluate
from daemon.core.snapshot import Backup, DatabaseState, ProviderFacts, Schedule, SourceState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PLANS = {"essential": "heroku-postgresql:essential-0", "classic": "heroku-postgresql:standard-0",
         "advanced": "heroku-postgresql:advanced"}


def provider(family: str, *, cp: bool | None = True, latest_ago: timedelta | None = None,
             earliest_ago: timedelta | None = timedelta(days=7)) -> ProviderFacts:
    return ProviderFacts(plan=PLANS[family], continuous_protection=cp,
                         rollback_earliest=NOW - earliest_ago if earliest_ago is not None and cp else None,
                         offers_pitr=family != "essential", observed_at=NOW, family=family,
                         rollback_latest=NOW - latest_ago if latest_ago is not None else None)


def heroku_db(p: ProviderFacts, *backups: Backup, schedules: tuple[Schedule, ...] = (),
              schedules_known: bool = True) -> DatabaseState:
    src = SourceState(source="heroku", backups=backups, schedules=schedules, schedules_known=schedules_known,
                      observed_at=NOW)
    return DatabaseState(name="shop", rpo_seconds=86400, rto_seconds={}, sources={"heroku": src}, provider=p)


def backup(ago: timedelta, ok: bool = True) -> Backup:
    start = NOW - ago
    return Backup(backup_id=f"b{int(ago.total_seconds()) % 1000:03d}", database="shop", source="heroku",
                  kind="manual", started_at=start, finished_at=start + timedelta(minutes=3), succeeded=ok)


def active(db: DatabaseState) -> set[str]:
    return {f.check for f in evaluate(db, Objectives(), [], NOW) if f.active}


# An Advanced database is read without its schedules (pg:backups is not established for it): schedules_known
# stays False, as the collector leaves it.
@pytest.mark.parametrize(("db", "expected"), [
    pytest.param(heroku_db(provider("advanced", latest_ago=timedelta(minutes=1)), schedules_known=False),
                 set(), id="advanced-protected-fresh"),
    pytest.param(heroku_db(provider("advanced", cp=False), schedules_known=False),
                 {"continuous_protection_off", "rpo_breach"}, id="advanced-protection-off"),
    pytest.param(heroku_db(provider("advanced", latest_ago=None), schedules_known=False),
                 {"continuous_protection_off", "rpo_breach"}, id="advanced-rollback-unavailable"),
    pytest.param(heroku_db(provider("advanced", latest_ago=timedelta(hours=20)), schedules_known=False),
                 {"rpo_at_risk"}, id="advanced-latest-point-at-risk"),
    pytest.param(heroku_db(provider("advanced", latest_ago=timedelta(hours=30)), schedules_known=False),
                 {"rpo_breach"}, id="advanced-latest-point-stale"),
    pytest.param(heroku_db(provider("advanced", latest_ago=timedelta(minutes=1)),
                           schedules=(Schedule(hour=(NOW.hour - 3) % 24, timezone="UTC"),)),
                 set(), id="advanced-schedule-never-missed"),
    pytest.param(heroku_db(provider("essential", cp=None), backup(timedelta(hours=2))),
                 {"no_schedule"}, id="essential-without-schedule"),
    pytest.param(heroku_db(provider("essential", cp=False), backup(timedelta(hours=2)),
                           schedules=(Schedule(hour=(NOW.hour - 2) % 24, timezone="UTC"),)),
                 set(), id="essential-protection-off-is-not-a-finding"),
    pytest.param(heroku_db(provider("classic", cp=False), backup(timedelta(hours=2)),
                           schedules=(Schedule(hour=(NOW.hour - 2) % 24, timezone="UTC"),)),
                 {"continuous_protection_off"}, id="classic-protection-off"),
    pytest.param(heroku_db(provider("classic", cp=True), backup(timedelta(hours=2))),
                 {"no_schedule"}, id="classic-without-schedule"),
])
def test_findings_by_plan_family(db: DatabaseState, expected: set[str]) -> None:
    assert active(db) == expected


def test_the_recovery_point_of_an_advanced_database_is_the_newer_of_rollback_latest_and_its_newest_backup() -> None:
    p = provider("advanced", latest_ago=timedelta(hours=5))
    assert data_at_risk_seconds(heroku_db(p, backup(timedelta(hours=8))), NOW) == 5 * 3600
    assert data_at_risk_seconds(heroku_db(p, backup(timedelta(hours=2))), NOW) == 2 * 3600


def test_a_stale_rollback_point_says_so_in_the_breach_hint() -> None:
    db = heroku_db(provider("advanced", latest_ago=timedelta(hours=30)), schedules_known=False)
    breach = next(f for f in evaluate(db, Objectives(), [], NOW) if f.check == "rpo_breach")
    assert breach.active and "latest rollback point is 30h old" in breach.hint, breach.hint


def test_advanced_no_schedule_hint_says_pg_backups_is_not_established() -> None:
    db = heroku_db(provider("advanced", latest_ago=timedelta(minutes=1)), schedules_known=False)
    f = next(f for f in evaluate(db, Objectives(), [], NOW) if f.check == "no_schedule")
    assert not f.active and "not established" in f.hint
