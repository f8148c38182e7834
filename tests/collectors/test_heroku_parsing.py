"""Heroku transfers, schedules and database info parsed by the reference's rules
(../shared/reference/heroku-api.md sections 1.2, 1.3, 1.5, 2)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from collectors.heroku import (
    is_backup,
    parse_advanced_info,
    parse_database_info,
    parse_schedules,
    parse_timestamp,
    require_transfer_num,
    to_backups,
    transfer_name,
    transfer_num,
    transfer_status,
)
from daemon.core.errors import CaptureError


def transfer(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uuid": "u-1", "num": 10, "from_type": "pg_dump", "to_type": "gof3r", "from_name": "DATABASE",
        "to_name": "BACKUP", "succeeded": True, "created_at": "2016-10-02 00:42:54 +0000",
        "started_at": "2016-10-02 00:42:55 +0000", "finished_at": "2016-10-02 00:43:00 +0000",
        "canceled_at": None, "deleted_at": None, "purged_at": None, "processed_bytes": 1437,
        "source_bytes": 1000000, "warnings": 0, "options": {},
    }
    base.update(kw)
    return base


@pytest.mark.parametrize(("kw", "name"), [
    ({"schedule": {"uuid": "s"}}, "a010"),
    ({}, "b010"),
    ({"num": 5}, "b005"),
    ({"num": 1234}, "b1234"),  # larger numbers are not truncated
    ({"to_type": "pg_restore"}, "c010"),
    ({"from_type": "gof3r", "to_type": "pg_restore"}, "r010"),
    ({"from_type": "htcat", "to_type": "gof3r"}, "b010"),
    ({"options": {"pgbackups_name": "b001"}}, "ob001"),
    ({"options": {"pgbackups_name": "a003"}, "schedule": {"uuid": "s"}}, "oa003"),
])
def test_transfer_names_follow_the_cli(kw: dict[str, Any], name: str) -> None:
    assert transfer_name(transfer(**kw)) == name


@pytest.mark.parametrize(("kw", "backup"), [
    ({}, True),
    ({"to_type": "pg_restore"}, False),  # a copy
    ({"from_type": "gof3r", "to_type": "pg_restore"}, False),  # a restore
    ({"from_type": "htcat", "to_type": "gof3r"}, False),
])
def test_only_pg_dump_to_gof3r_is_a_backup(kw: dict[str, Any], backup: bool) -> None:
    assert is_backup(transfer(**kw)) is backup


@pytest.mark.parametrize(("text", "expected"), [
    ("2016-10-01 00:42:54 +0000", datetime(2016, 10, 1, 0, 42, 54, tzinfo=UTC)),
    ("2016-10-01 02:42:54 +0200", datetime(2016, 10, 1, 0, 42, 54, tzinfo=UTC)),
    ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC)),
    ("2025-01-01T05:30:00+05:30", datetime(2025, 1, 1, tzinfo=UTC)),
    ("2025-01-01T00:00:00.123456Z", datetime(2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)),
    ("", None), (None, None), ("yesterday", None), (12345, None),
])
def test_both_timestamp_formats_parse_and_nonsense_is_none(text: Any, expected: datetime | None) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(("kw", "status"), [
    ({}, "completed"),
    ({"succeeded": False}, "failed"),
    ({"succeeded": False, "canceled_at": "2016-10-02 00:43:00 +0000"}, "canceled"),
    ({"finished_at": None, "succeeded": False}, "running"),
    ({"finished_at": None, "started_at": None, "succeeded": False}, "pending"),
])
def test_status_follows_the_cli(kw: dict[str, Any], status: str) -> None:
    assert transfer_status(transfer(**kw)) == status


def test_backups_exclude_deleted_purged_copies_and_restores_and_count_running_ones() -> None:
    transfers = [
        transfer(num=1, schedule={"uuid": "s"}),
        transfer(num=2, deleted_at="2016-10-03 00:00:00 +0000"),
        transfer(num=3, purged_at="2016-10-03 00:00:00 +0000"),
        transfer(num=4, to_type="pg_restore"),
        transfer(num=5, from_type="gof3r", to_type="pg_restore"),
        transfer(num=6, succeeded=False, started_at="2016-10-03 00:00:00 +0000",
                 finished_at="2016-10-03 00:01:00 +0000"),
        transfer(num=7, finished_at=None, succeeded=False),
        transfer(num=8, finished_at=None, started_at=None, succeeded=False),
    ]
    backups, running = to_backups("app/DATABASE", transfers)
    assert [b.backup_id for b in backups] == ["a001", "b006"]
    assert len(running) == 2  # start times of the running (num 7) and pending (num 8, created_at) ones
    good, failed = backups
    assert good.kind == "scheduled" and good.succeeded and good.size_bytes == 1437
    assert good.recovery_point == datetime(2016, 10, 2, 0, 42, 55, tzinfo=UTC)  # started_at, not finished_at
    assert failed.kind == "manual" and not failed.succeeded and failed.error == "failed"


def test_missing_optional_fields_are_tolerated() -> None:
    minimal = {"num": 3, "from_type": "pg_dump", "to_type": "gof3r", "succeeded": True,
               "created_at": "2025-01-01T00:00:00Z", "finished_at": "2025-01-01T00:10:00Z"}
    [b], running = to_backups("db", [minimal])
    assert b.backup_id == "b003" and b.started_at == datetime(2025, 1, 1, tzinfo=UTC)  # created_at stands in
    assert b.size_bytes == 0 and running == ()


def test_completed_with_warnings_is_good_and_says_so() -> None:
    [b], _ = to_backups("db", [transfer(warnings=2)])
    assert b.succeeded and b.error == "finished with 2 warnings"


def test_schedules_hour_as_int_or_string_and_bad_hours_dropped() -> None:
    got = parse_schedules([
        {"uuid": "1", "name": "DATABASE_URL", "hour": 5, "timezone": "UTC"},
        {"uuid": "2", "name": "RED_URL", "hour": "06", "timezone": "America/New_York"},
        {"uuid": "3", "name": "X", "hour": "noon", "timezone": "UTC"},
        {"uuid": "4", "name": "Y", "hour": 25, "timezone": "UTC"},
        {"uuid": "5", "name": "Z", "hour": 2},
    ])
    assert [(s.hour, s.timezone, s.name) for s in got] == [
        (5, "UTC", "DATABASE_URL"), (6, "America/New_York", "RED_URL"), (2, "UTC", "Z")]


def test_database_info_parsed_from_the_info_array_leniently() -> None:
    doc = {
        "addon_id": "x", "plan": "standard-0", "num_bytes": 39837204889, "num_tables": 51,
        "postgres_version": "17.5",
        "info": [
            {"name": "Plan", "values": ["Standard 0"]},
            {"name": "Data Size", "values": ["37.1 GB / 64 GB (58.04%)"]},
            {"name": "Rollback", "values": ["earliest from 2025-12-19 13:59 UTC"]},
            {"name": "Continuous Protection", "values": ["On"]},
            {"name": "Something New", "values": ["whatever"]},
            {"name": "Empty", "values": []},
            "not even an object",
        ],
    }
    provider, live = parse_database_info(doc)
    assert provider.plan == "standard-0" and provider.offers_pitr
    assert provider.continuous_protection is True
    assert provider.rollback_earliest == datetime(2025, 12, 19, 13, 59, tzinfo=UTC)
    assert live is not None and live.size_bytes == 39837204889 and live.table_count == 51
    assert live.server_version == "17.5"


@pytest.mark.parametrize(("rollback", "expected"), [
    ("from 2013-10-18 20:00 UTC", datetime(2013, 10, 18, 20, 0, tzinfo=UTC)),
    ("earliest from 2025-12-19 13:59 UTC", datetime(2025, 12, 19, 13, 59, tzinfo=UTC)),
    ("Unsupported", None),
    ("", None),
])
def test_rollback_earliest_in_old_and_new_wording(rollback: str, expected: datetime | None) -> None:
    doc = {"info": [{"name": "Rollback", "values": [rollback]}]}
    provider, _ = parse_database_info(doc, "heroku-postgresql:standard-0")
    assert provider.rollback_earliest == expected


def test_essential_plan_does_not_offer_continuous_protection_and_tables_come_from_info() -> None:
    provider, live = parse_database_info({
        "plan": "essential-0",
        "info": [{"name": "Tables", "values": ["7"]}, {"name": "Continuous Protection", "values": ["Off"]}],
    })
    assert not provider.offers_pitr and provider.continuous_protection is False
    assert live is not None and live.table_count == 7


def test_empty_info_gives_unknowns_not_errors() -> None:
    provider, live = parse_database_info({})
    assert provider.plan == "unknown" and provider.continuous_protection is None
    assert provider.rollback_earliest is None and live is None


@pytest.mark.parametrize(("name", "num"), [
    ("a012", 12), ("b003", 3), ("b1234", 1234), ("a0", 0),
    ("c005", None), ("r010", None), ("ofoo", None), ("a", None), ("", None), ("b12x", None), ("b-1", None),
    ("a\u0661\u0662", None),  # Unicode (Arabic-Indic) digits are no transfer number
    ("20260301T020000000Z-scheduled", None),  # an archive id
])
def test_a_backup_name_gives_its_transfer_number_only_when_it_has_one(name: str, num: int | None) -> None:
    assert transfer_num(name) == num
    if num is None:
        with pytest.raises(CaptureError, match=f"^{re.escape(name)} is not a Heroku backup name"):
            require_transfer_num(name)
    else:
        assert require_transfer_num(name) == num


@pytest.mark.parametrize(("features", "cp", "earliest", "latest"), [
    ({"continuous_protection": {"enabled": True},
      "rollback": {"enabled": True, "earliest_time": "2026-11-18T12:00:00Z", "latest_time": "2026-11-25T11:59:00Z"}},
     True, datetime(2026, 11, 18, 12, 0, tzinfo=UTC), datetime(2026, 11, 25, 11, 59, tzinfo=UTC)),
    ({"continuous_protection": {"enabled": False}, "rollback": {"enabled": True, "earliest_time": None,
                                                                "latest_time": None}}, False, None, None),
    ({"continuous_protection": {"enabled": True},
      "rollback": {"enabled": False, "earliest_time": "2026-11-18T12:00:00Z", "latest_time": "2026-11-25T11:59:00Z"}},
     True, None, None),
    ({"continuous_protection": "yes", "rollback": "soon"}, None, None, None),
    ({}, None, None, None),
])
def test_advanced_info_is_read_leniently(features: dict[str, Any], cp: bool | None, earliest: datetime | None,
                                         latest: datetime | None) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    provider, _ = parse_advanced_info({"features": features, "tier": "advanced"}, "heroku-postgresql:advanced", now)
    assert (provider.family, provider.continuous_protection, provider.rollback_earliest,
            provider.rollback_latest) == ("advanced", cp, earliest, latest)


def test_classic_info_carries_the_family_of_the_add_on_plan() -> None:
    provider, _ = parse_database_info({"plan": "Essential 0", "info": []}, "heroku-postgresql:essential-0")
    assert provider.family == "essential" and provider.rollback_latest is None
    provider, _ = parse_database_info({"plan": "Standard 0"})
    assert provider.family == "classic"
