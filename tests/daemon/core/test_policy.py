"""The RPO/size/attempt/collector policy as tables: pure functions of the state and `now`, so no clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from daemon.config import Objectives
from daemon.core.durations import format_duration
from daemon.core.policy import CompliancePolicy, data_at_risk_seconds, evaluate, is_healthy, newest_good_backup
from daemon.core.snapshot import Backup, CollectorStatus, DatabaseState, Finding, SourceState

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
RPO = timedelta(hours=24)
SECOND = timedelta(seconds=1)
IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(timedelta(hours=-8))


# -- builders ---------------------------------------------------------------------------------------------

def backup(
    ago: timedelta,
    *,
    ok: bool = True,
    source: str = "archive",
    size: int = 1000,
    took: timedelta = timedelta(minutes=5),
    backup_id: str | None = None,
    error: str | None = None,
    database: str = "shop",
    now: datetime = NOW,
) -> Backup:
    """A backup that started `ago` before `now` and took `took`."""
    started = now - ago
    return Backup(
        backup_id=backup_id or f"{source}-{int(ago.total_seconds())}",
        database=database, source=source, kind="scheduled", started_at=started, finished_at=started + took,
        succeeded=ok, size_bytes=size, error=error if not ok else None,
    )


def database(*backups: Backup, name: str = "shop") -> DatabaseState:
    """A database whose sources hold the given backups (oldest first, grouped by source)."""
    by_source: dict[str, list[Backup]] = {}
    for b in backups:
        by_source.setdefault(b.source, []).append(b)
    sources = {
        src: SourceState(source=src, backups=tuple(sorted(bs, key=lambda b: b.started_at)))
        for src, bs in by_source.items()
    }
    return DatabaseState(name=name, rpo_seconds=RPO.total_seconds(), rto_seconds={}, sources=sources)


def objectives(**overrides: Any) -> Objectives:
    return Objectives.model_validate(overrides)


def findings(
    db: DatabaseState,
    objs: Objectives | None = None,
    collectors: Iterable[CollectorStatus] = (),
    now: datetime = NOW,
) -> dict[str, Finding]:
    return {f.check: f for f in evaluate(db, objs or objectives(), collectors, now)}


# -- RPO boundaries ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("age", "breach", "at_risk"),
    [
        pytest.param(RPO - SECOND, False, True, id="rpo-minus-1s"),
        pytest.param(RPO, False, True, id="rpo-exactly"),
        pytest.param(RPO + SECOND, True, False, id="rpo-plus-1s"),
        pytest.param(RPO * 0.8 - SECOND, False, False, id="at-risk-threshold-minus-1s"),
        pytest.param(RPO * 0.8, False, True, id="at-risk-threshold-exactly"),
        pytest.param(RPO * 0.8 + SECOND, False, True, id="at-risk-threshold-plus-1s"),
        pytest.param(timedelta(minutes=5), False, False, id="fresh"),
        pytest.param(RPO * 3, True, False, id="long-breached"),
    ],
)
def test_rpo_breach_and_at_risk_at_exact_boundaries(age: timedelta, breach: bool, at_risk: bool) -> None:
    result = findings(database(backup(age)))

    assert result["rpo_breach"].active is breach
    assert result["rpo_at_risk"].active is at_risk
    assert result["rpo_breach"].value == age.total_seconds()
    assert result["rpo_breach"].threshold == RPO.total_seconds()
    assert result["rpo_at_risk"].threshold == pytest.approx(RPO.total_seconds() * 0.8)


@pytest.mark.parametrize(
    ("rpo", "ratio", "age", "breach", "at_risk"),
    [
        pytest.param("1h", 0.5, timedelta(minutes=29, seconds=59), False, False, id="1h-half-below"),
        pytest.param("1h", 0.5, timedelta(minutes=30), False, True, id="1h-half-at"),
        pytest.param("1h", 0.5, timedelta(hours=1, seconds=1), True, False, id="1h-breach"),
        pytest.param("15m", 0.9, timedelta(minutes=13, seconds=30), False, True, id="15m-ninety-percent"),
    ],
)
def test_rpo_uses_the_databases_own_objectives(
    rpo: str, ratio: float, age: timedelta, breach: bool, at_risk: bool
) -> None:
    result = findings(database(backup(age)), objectives(rpo=rpo, rpo_at_risk_ratio=ratio))

    assert (result["rpo_breach"].active, result["rpo_at_risk"].active) == (breach, at_risk)


def test_recovery_point_is_start_so_a_backup_started_before_the_window_breaches_even_if_it_finished_inside() -> None:
    started = timedelta(hours=24, minutes=10)
    late = backup(started, took=timedelta(hours=1, minutes=10))  # finished 23h ago
    assert late.finished_at == NOW - timedelta(hours=23)

    result = findings(database(late))

    assert result["rpo_breach"].active
    assert result["rpo_breach"].value == started.total_seconds()


def test_breach_hint_names_the_age_and_the_objective() -> None:
    hint = findings(database(backup(timedelta(hours=30))))["rpo_breach"].hint

    assert "30h ago" in hint
    assert f"RPO is {format_duration(RPO)}" in hint


# -- timezones --------------------------------------------------------------------------------------------

def _in_zone(b: Backup, tz: timezone) -> Backup:
    assert b.finished_at is not None
    return Backup(
        backup_id=b.backup_id, database=b.database, source=b.source, kind=b.kind,
        started_at=b.started_at.astimezone(tz), finished_at=b.finished_at.astimezone(tz),
        succeeded=b.succeeded, size_bytes=b.size_bytes,
    )


@pytest.mark.parametrize("tz", [IST, PST, timezone(timedelta(hours=14))], ids=["+05:30", "-08:00", "+14:00"])
@pytest.mark.parametrize("age", [RPO - SECOND, RPO + SECOND, RPO * 0.8], ids=["inside", "breach", "at-risk"])
def test_backups_with_non_utc_offsets_evaluate_like_their_utc_equivalents(tz: timezone, age: timedelta) -> None:
    utc_result = findings(database(backup(age)))
    zoned = _in_zone(backup(age), tz)
    assert zoned.started_at.utcoffset() == tz.utcoffset(None)

    zoned_result = findings(database(zoned))

    for check in ("rpo_breach", "rpo_at_risk"):
        assert zoned_result[check].active is utc_result[check].active
        assert zoned_result[check].value == utc_result[check].value


def test_now_with_a_non_utc_offset_is_the_same_instant() -> None:
    db = database(_in_zone(backup(RPO + SECOND), IST))

    result = findings(db, now=NOW.astimezone(PST))

    assert result["rpo_breach"].active
    assert data_at_risk_seconds(db, NOW.astimezone(PST)) == (RPO + SECOND).total_seconds()


def test_a_database_never_observed_is_unknown_not_breached() -> None:
    result = findings(database())
    assert not result["rpo_breach"].active and result["rpo_breach"].hint == "not observed yet"
    assert not result["rpo_at_risk"].active


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(database(backup(timedelta(hours=1))), objectives(), [], NOW.replace(tzinfo=None))


# -- no good backup, failed attempts ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "backups",
    [
        pytest.param((), id="nothing-at-all"),
        pytest.param((backup(timedelta(hours=1), ok=False, error="disk full"),), id="only-failures"),
    ],
)
def test_rpo_breach_with_a_hint_when_there_is_no_good_backup(backups: tuple[Backup, ...]) -> None:
    db = database(*backups)
    if not db.sources:  # observed, and empty
        db = replace(db, sources={"archive": SourceState(source="archive")})

    result = findings(db)

    assert newest_good_backup(db) is None
    assert result["rpo_breach"].active
    assert result["rpo_breach"].value is None
    assert "no good backup" in result["rpo_breach"].hint
    assert not result["rpo_at_risk"].active
    assert not is_healthy(result.values())


def test_last_attempt_failed_when_a_failed_attempt_is_newer_than_the_last_success() -> None:
    good = backup(timedelta(hours=2))
    failed = backup(timedelta(hours=1), ok=False, error="pg_dump: connection refused", backup_id="b-failed")

    result = findings(database(good, failed))

    assert result["last_attempt_failed"].active
    assert "b-failed" in result["last_attempt_failed"].hint
    assert "connection refused" in result["last_attempt_failed"].hint
    assert not result["rpo_breach"].active  # the older success still covers the RPO
    assert not is_healthy(result.values())


def test_last_attempt_failed_resolves_when_a_later_attempt_succeeds() -> None:
    good = backup(timedelta(hours=3))
    failed = backup(timedelta(hours=2), ok=False, error="timeout")
    recovered = backup(timedelta(hours=1), backup_id="b-recovered")

    before = findings(database(good, failed))
    after = findings(database(good, failed, recovered))

    assert before["last_attempt_failed"].active
    assert not after["last_attempt_failed"].active
    assert "b-recovered" in after["last_attempt_failed"].hint
    assert is_healthy(after.values())


def test_last_attempt_is_the_newest_across_sources() -> None:
    archive_ok = backup(timedelta(hours=2), source="archive")
    heroku_failed = backup(timedelta(hours=1), source="heroku", ok=False, error="quota")

    result = findings(database(archive_ok, heroku_failed))

    assert result["last_attempt_failed"].active
    assert "heroku" in result["last_attempt_failed"].hint


def test_no_attempt_at_all_is_not_a_failed_attempt() -> None:
    assert not findings(database())["last_attempt_failed"].active


# -- size anomaly -----------------------------------------------------------------------------------------

def _history(previous_sizes: list[int], newest_size: int) -> DatabaseState:
    """Good backups a day apart, oldest first, then the newest one an hour ago."""
    older = [backup(timedelta(days=len(previous_sizes) - i, hours=1), size=s) for i, s in enumerate(previous_sizes)]
    return database(*older, backup(timedelta(hours=1), size=newest_size))


@pytest.mark.parametrize(
    ("previous", "newest", "active"),
    [
        pytest.param([1000, 1000, 1000], 499, True, id="below-half-of-median"),
        pytest.param([1000, 1000, 1000], 500, False, id="exactly-at-limit"),
        pytest.param([1000, 1000, 1000], 501, False, id="just-above-limit"),
        pytest.param([1000, 1000, 1000], 5000, False, id="much-larger"),
        pytest.param([100, 1000, 1200], 450, True, id="median-not-mean"),
        pytest.param([100, 150, 200, 1000, 1200], 110, False, id="median-of-five-is-200"),
        pytest.param([1000, 1000], 1, False, id="not-enough-history"),
        pytest.param([], 1, False, id="first-backup"),
    ],
)
def test_size_anomaly_compares_newest_with_median_of_previous_good_backups(
    previous: list[int], newest: int, active: bool
) -> None:
    result = findings(_history(previous, newest))

    assert result["size_anomaly"].active is active
    assert result["size_anomaly"].value == newest


def test_size_anomaly_limit_is_ratio_times_median() -> None:
    result = findings(_history([800, 1000, 1200], 10), objectives(size_anomaly_ratio=0.25))

    assert result["size_anomaly"].active
    assert result["size_anomaly"].threshold == 250


def test_size_anomaly_ignores_failed_attempts_in_the_history() -> None:
    previous = [backup(timedelta(days=d), size=1000) for d in (4, 3, 2)]
    failed_tiny = backup(timedelta(hours=12), ok=False, size=1, error="disk full")
    newest = backup(timedelta(hours=1), size=600)

    assert not findings(database(*previous, failed_tiny, newest))["size_anomaly"].active


def test_size_anomaly_needs_the_configured_history() -> None:
    db = _history([1000, 1000, 1000], 10)

    assert findings(db, objectives(size_anomaly_min_history=3))["size_anomaly"].active
    assert not findings(db, objectives(size_anomaly_min_history=4))["size_anomaly"].active


def test_size_anomaly_still_works_when_the_required_history_is_longer_than_seven() -> None:
    db = _history([1000] * 10, 10)

    assert findings(db, objectives(size_anomaly_min_history=8))["size_anomaly"].active


def test_size_anomaly_is_warning_so_the_database_stays_healthy() -> None:
    result = findings(_history([1000, 1000, 1000], 10))

    assert result["size_anomaly"].active
    assert result["size_anomaly"].severity == "warning"
    assert is_healthy(result.values())


# -- collectors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("collectors", "active"),
    [
        pytest.param([], False, id="no-collectors"),
        pytest.param([CollectorStatus("archive", "shop", up=True)], False, id="up"),
        pytest.param([CollectorStatus("archive", "shop", up=False)], True, id="down"),
        pytest.param([CollectorStatus("archive", "other", up=False)], False, id="other-database-down"),
        pytest.param(
            [CollectorStatus("archive", "shop", up=True), CollectorStatus("live", "other", up=False)],
            False, id="mine-up-other-down",
        ),
    ],
)
def test_collector_down_counts_only_this_databases_collectors(
    collectors: list[CollectorStatus], active: bool
) -> None:
    result = findings(database(backup(timedelta(hours=1))), collectors=collectors)

    assert result["collector_down"].active is active


def test_collector_down_hint_names_the_down_collectors() -> None:
    collectors = [CollectorStatus("live", "shop", up=False), CollectorStatus("archive", "shop", up=False),
                  CollectorStatus("heroku", "other", up=False)]

    hint = findings(database(backup(timedelta(hours=1))), collectors=collectors)["collector_down"].hint

    assert "archive, live" in hint
    assert "heroku" not in hint


# -- several sources, health ------------------------------------------------------------------------------

def test_newest_good_backup_across_sources_is_used() -> None:
    old_archive = backup(timedelta(hours=30), source="archive", backup_id="a-old")
    fresh_heroku = backup(timedelta(hours=2), source="heroku", backup_id="h-fresh")
    newer_failure = backup(timedelta(hours=1), source="archive", ok=False, error="x")
    db = database(old_archive, fresh_heroku, newer_failure)

    newest = newest_good_backup(db)

    assert newest is not None and newest.backup_id == "h-fresh"
    assert data_at_risk_seconds(db, NOW) == timedelta(hours=2).total_seconds()
    assert not findings(db)["rpo_breach"].active


def test_every_check_yields_a_finding_for_the_database_at_now() -> None:
    result = evaluate(database(backup(timedelta(hours=1))), objectives(), [], NOW)

    assert sorted(f.check for f in result) == sorted(
        ["rpo_breach", "rpo_at_risk", "rpo_unachievable", "last_attempt_failed", "size_anomaly", "collector_down",
         "missed_schedule", "no_schedule", "continuous_protection_off", "archive_gap", "copy_lag", "unencrypted_object",
         "bucket_posture", "retention", "unreadable_backup", "drill_failed", "drill_overdue",
         "recovery_time_over_rto", "scratch_leftover", "client_tools_too_old", "compliance_export_overdue"])
    assert {f.database for f in result} == {"shop"}
    assert {f.observed_at for f in result} == {NOW}


def _finding(check: str, severity: str, active: bool) -> Finding:
    return Finding(database="shop", check=check, severity=severity, active=active, hint="", observed_at=NOW)


@pytest.mark.parametrize(
    ("items", "healthy"),
    [
        pytest.param([], True, id="nothing"),
        pytest.param([_finding("rpo_breach", "critical", False)], True, id="critical-inactive"),
        pytest.param([_finding("rpo_at_risk", "warning", True)], True, id="warning-active"),
        pytest.param([_finding("rpo_breach", "critical", True)], False, id="critical-active"),
        pytest.param([_finding("rpo_at_risk", "warning", True), _finding("last_attempt_failed", "critical", True)],
                     False, id="mixed"),
    ],
)
def test_is_healthy_only_when_no_critical_finding_is_active(items: list[Finding], healthy: bool) -> None:
    assert is_healthy(items) is healthy


def test_fresh_good_backup_with_everything_up_is_healthy() -> None:
    result = findings(database(backup(timedelta(hours=1))), collectors=[CollectorStatus("archive", "shop", up=True)])

    # the builder's source has no schedule, which is a warning of its own and nothing else
    assert [c for c, f in result.items() if f.active] == ["no_schedule"]
    assert result["no_schedule"].severity == "warning"
    assert is_healthy(result.values())


def test_an_unreadable_backup_is_not_good_and_is_a_critical_finding() -> None:
    good = backup(timedelta(hours=30))
    unreadable = replace(backup(timedelta(hours=1)), backup_id="bad", readable=False,
                         readable_error="the dump is truncated")
    db = database(good, unreadable)
    result = findings(db)
    assert newest_good_backup(db) == good  # data at risk counts from the last restorable backup
    assert result["rpo_breach"].active
    assert result["unreadable_backup"].active and "truncated" in result["unreadable_backup"].hint
    assert result["unreadable_backup"].severity == "critical"


def test_a_backup_unreadable_in_the_archive_is_unreadable_in_every_source() -> None:
    from daemon.core.snapshot import share_unreadable

    heroku_copy = replace(backup(timedelta(hours=1)), backup_id="a007", source="heroku")
    archived = replace(heroku_copy, source="archive", readable=False, readable_error="not a dump")
    sources = {"heroku": SourceState(source="heroku", backups=(heroku_copy,)),
               "archive": SourceState(source="archive", backups=(archived,))}
    shared = share_unreadable(sources)
    assert shared["heroku"].newest_good is None and shared["archive"].newest_good is None
    assert shared["heroku"].backups[0].readable_error == "not a dump"


def test_monitor_slugs_of_long_names_stay_distinct() -> None:
    from daemon.adapters.sentry import slug

    a = slug("pgbackup-drill-database_corruption-suoops-backend/DATABASE")
    b = slug("pgbackup-drill-database_corruption-suoops-backend/HEROKU_POSTGRESQL_RED")
    assert a != b and len(a) <= 50 and len(b) <= 50
    assert slug("pgbackup-rpo-shop") == "pgbackup-rpo-shop"


# -- retention: a month without a monthly copy ----------------------------------------------------------------

MONTH_START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("now, missing, active", [
    (MONTH_START + timedelta(minutes=5), ("2026-11",), False),  # the month's first copy is not due yet
    (MONTH_START + timedelta(hours=37), ("2026-11",), True),  # past a day plus the 12 h grace: it should be there
    (MONTH_START + timedelta(minutes=5), ("2026-11", "2026-10"), True),  # last month has none: always a finding
    (MONTH_START + timedelta(days=20), (), False),
])
def test_retention_does_not_count_the_current_month_before_its_first_copy_is_due(
        now: datetime, missing: tuple[str, ...], active: bool) -> None:
    from daemon.core.policy.archive import ArchivePolicy, archive_checks
    from daemon.core.snapshot import ArchiveFacts, DatabaseState

    facts = ArchiveFacts(kind="local", tiers={}, unencrypted=0, monthly_covered=2 - len(missing), monthly_expected=2,
                         monthly_missing=missing, oldest=MONTH_START - timedelta(days=15), posture_problems=(),
                         observed_at=now)
    db = DatabaseState(name="shop", rpo_seconds=86400, rto_seconds={}, archive=facts)
    policy = ArchivePolicy(copy_grace=timedelta(hours=2), gap_grace=timedelta(hours=12), mirrored_from=None)
    [retention] = [f for f in archive_checks(db, policy, now) if f.check == "retention"]
    assert retention.active is active, retention.hint
    if active:
        assert "2026-10" in retention.hint or now - MONTH_START > timedelta(days=1)


# -- compliance_export_overdue: cadence plus grace from the newest good export (or from when it was configured),
# and the last export's failure
CD = timedelta(days=1)
MONTH, GRACE = 31 * CD, 7 * CD


def compliance_finding(policy: CompliancePolicy | None) -> tuple[bool, str]:
    found = {f.check: f for f in evaluate(database(), objectives(), [], NOW, compliance=policy)}
    f = found["compliance_export_overdue"]
    assert f.severity == "warning"
    return f.active, f.hint


@pytest.mark.parametrize(("policy", "active", "says"), [
    (None, False, "no compliance export is configured"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 10 * CD), False, "on schedule"),  # no chance yet
    (CompliancePolicy(MONTH, GRACE, since=NOW - 39 * CD), True, "never succeeded"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * CD, last_at=NOW - 30 * CD, last_ok=True,
                      last_good_at=NOW - 30 * CD), False, "on schedule"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * CD, last_at=NOW - 37 * CD, last_ok=True,
                      last_good_at=NOW - 37 * CD), False, "on schedule"),  # inside the grace
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * CD, last_at=NOW - 38 * CD - timedelta(hours=1),
                      last_ok=True, last_good_at=NOW - 38 * CD - timedelta(hours=1)),
     True, "last success 913h ago (every 31d)"),
    (CompliancePolicy(MONTH, GRACE, since=NOW - 400 * CD, last_at=NOW - CD, last_ok=False,
                      last_reason="table public.audit_logs is not in the backup", last_good_at=NOW - 20 * CD),
     True, "failed: table public.audit_logs is not in the backup"),
])
def test_compliance_export_overdue_or_failed(policy: CompliancePolicy | None, active: bool, says: str) -> None:
    got_active, hint = compliance_finding(policy)
    assert got_active is active, hint
    assert says in hint
