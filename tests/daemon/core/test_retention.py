"""Retention tiers and the prune plan against a table of objects and times, with time frozen (freezegun):
the pure plan, then the guardian's prune over a real local archive, dry run first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.retention import EXPORT_TIER, ArchivedObject, assign_tier, plan_exports, plan_prune

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEEPS = {"daily": timedelta(days=7), "weekly": timedelta(days=35), "monthly": timedelta(days=365),
         "milestone": None}


def obj(backup_id: str, age: timedelta, tier: str, database: str = "db", **kw: object) -> ArchivedObject:
    return ArchivedObject(database=database, backup_id=backup_id, key=f"{database}/{backup_id}",
                          recovery_point=NOW - age, size_bytes=100, tier=tier, **kw)  # type: ignore[arg-type]


D = timedelta(days=1)
S = timedelta(seconds=1)

# backup id, age, tier, extra fields, deleted?
TABLE: list[tuple[str, timedelta, str, dict[str, object], bool]] = [
    ("daily-newest", 1 * D, "daily", {}, False),                      # newest of its tier and of the database
    ("daily-at-keep", 7 * D, "daily", {}, False),                     # exactly at its keep: kept
    ("daily-past-keep", 7 * D + S, "daily", {}, True),                # one second past: deleted
    ("daily-old", 30 * D, "daily", {}, True),
    ("daily-held", 40 * D, "daily", {"legal_hold": True}, False),      # legal hold
    ("daily-locked", 50 * D, "daily", {"lock_until": NOW + D}, False),  # Object Lock retention still running
    ("daily-lock-over", 60 * D, "daily", {"lock_until": NOW - D}, True),  # retention ended: deletable
    ("daily-failed", 90 * D, "daily", {"succeeded": False}, False),    # not a good copy: a person looks
    ("weekly-newest", 3 * D, "weekly", {}, False),
    ("weekly-in-keep", 35 * D, "weekly", {}, False),
    ("weekly-past", 36 * D, "weekly", {}, True),
    ("monthly-newest", 20 * D, "monthly", {}, False),
    ("monthly-in-keep", 364 * D, "monthly", {}, False),
    ("monthly-past", 366 * D, "monthly", {}, True),
    ("milestone-ancient", 3000 * D, "milestone", {"label": "v1 launch"}, False),
    ("mystery", 500 * D, "hourly", {}, False),                          # unknown tier: kept
]


@freeze_time(NOW)
def test_plan_prune_table() -> None:
    objects = [obj(b, age, tier, **extra) for b, age, tier, extra, _ in TABLE]
    # another database whose only copy is ancient: the newest good copy of a database is never deleted
    objects.append(obj("lonely", 900 * D, "daily", database="other"))
    decisions = {d.obj.backup_id: d for d in plan_prune(objects, KEEPS, datetime.now(UTC))}
    assert {b for b, d in decisions.items() if d.delete} == {b for b, _, _, _, gone in TABLE if gone}
    assert "past its keep" in decisions["daily-old"].reason
    assert decisions["daily-held"].reason.endswith("under legal hold: kept")
    assert "object-locked until" in decisions["daily-locked"].reason
    assert decisions["milestone-ancient"].reason == "milestone: kept forever"
    assert decisions["lonely"].reason == "newest daily copy: kept"
    assert not decisions["daily-failed"].delete and not decisions["mystery"].delete


def test_keep_last_is_a_count_under_the_same_rules() -> None:
    objects = [obj("ms", 900 * D, "milestone", label="v1"), obj("m", 40 * D, "monthly"), obj("w", 30 * D, "weekly"),
               obj("held", 20 * D, "daily", legal_hold=True), obj("locked", 15 * D, "daily", lock_until=NOW + D),
               *[obj(f"d{n}", n * D, "daily") for n in range(1, 6)],
               *[obj(f"f{n}", n * S, "daily", succeeded=False) for n in range(1, 23)]]
    decisions = {d.obj.backup_id: d for d in plan_prune(objects, KEEPS, NOW, keep_last=2)}
    # d1, d2 are the two newest; age plays no part (d3 is within the daily keep and still goes)
    assert {b for b, d in decisions.items() if d.delete} == {"d3", "d4", "d5", "f21", "f22"}
    assert decisions["ms"].reason == "milestone: kept forever"
    assert decisions["m"].reason == "newest monthly copy: kept"
    assert decisions["held"].reason.endswith("under legal hold: kept")
    assert "object-locked until" in decisions["locked"].reason
    assert decisions["d2"].reason == "one of the 2 newest good copies (keep_last): kept"
    assert decisions["f21"].reason == "failed record beyond the newest 20"


@pytest.mark.parametrize(("recovery_point", "tier"), [
    (datetime(2026, 12, 1, 1, 0, tzinfo=UTC), "monthly"),    # first copy of December
    (datetime(2026, 11, 23, 3, 0, tzinfo=UTC), "weekly"),    # first copy of ISO week 48 (a Monday)
    (datetime(2026, 11, 25, 3, 0, tzinfo=UTC), "daily"),     # the week already has one
    (datetime(2026, 11, 2, 0, 30, tzinfo=UTC), "monthly"),  # earlier than November's monthly: it becomes it
])
def test_assign_tier(recovery_point: datetime, tier: str) -> None:
    existing = [
        obj("nov-monthly", NOW - datetime(2026, 11, 3, 2, 0, tzinfo=UTC), "monthly"),
        obj("w48", NOW - datetime(2026, 11, 24, 2, 0, tzinfo=UTC), "daily"),
        obj("dec-milestone", NOW - datetime(2026, 12, 1, 0, 0, tzinfo=UTC), "milestone"),  # milestones ignored
        obj("failed", NOW - datetime(2026, 11, 23, 1, 0, tzinfo=UTC), "daily", succeeded=False),
    ]
    assert assign_tier(recovery_point, existing) == tier


def put(store: LocalDirectoryStore, backup_id: str, age: timedelta, tier: str, label: str | None = None) -> None:
    rp = datetime.now(UTC) - age
    writer = store.begin("db", backup_id, recovery_point=rp)
    writer.write(b"PGDMP" + backup_id.encode())
    writer.commit(BackupRecord(database="db", backup_id=backup_id, kind="scheduled", started_at=rp, finished_at=rp,
                               outcome="succeeded", size_bytes=5 + len(backup_id), tier=tier, label=label))


def test_the_guardians_prune_over_a_local_archive_as_time_passes(tmp_path: Path) -> None:
    config = GuardianConfig.model_validate({
        "state_dir": str(tmp_path / "state"),
        "databases": [{"name": "db", "url": "postgresql://u@127.0.0.1:1/db"}],
    })
    with freeze_time(NOW) as frozen:
        g = Guardian(config)
        try:
            store = g.store
            assert isinstance(store, LocalDirectoryStore)
            for b, age, tier in [("d1", 1 * D, "daily"), ("d6", 6 * D, "daily"), ("d9", 9 * D, "daily"),
                                 ("w20", 20 * D, "weekly"), ("w40", 40 * D, "weekly"),
                                 ("m100", 100 * D, "monthly"), ("m400", 400 * D, "monthly")]:
                put(store, b, age, tier)
            put(store, "ms", 2000 * D, "milestone", label="first invoice")

            dry = g.prune(apply=False)
            assert sorted(d.obj.backup_id for d in dry if d.delete) == ["d9", "m400", "w40"]
            assert len(store.list_records("db")) == 8  # the dry run deletes nothing

            g.prune(apply=True)
            assert sorted(r.backup_id for r in store.list_records("db")) == ["d1", "d6", "m100", "ms", "w20"]
            assert not (store.dump_path("db", "d9")).exists()

            frozen.tick(timedelta(days=2))  # d6 is now 8 days old; d1 stays the newest daily
            assert [d.obj.backup_id for d in g.prune(apply=True) if d.delete] == ["d6"]
            frozen.tick(timedelta(days=400))  # everything is old now: only the newest of each tier stays
            assert [d.obj.backup_id for d in g.prune(apply=True) if d.delete] == []
            assert sorted(r.backup_id for r in store.list_records("db")) == ["d1", "m100", "ms", "w20"]
            audit = g.audit.read(action="prune")
        finally:
            g.stop()
    done = sorted(a["target"] for a in audit if a["outcome"] == "done" and a["target"] != "db")
    assert done == ["db/d6", "db/d9", "db/m400", "db/w40"]
    # one execution per applied prune that deleted something (the last had nothing to delete: no record)
    assert [a["reason"] for a in audit if a["target"] == "db" and a["outcome"] == "done"] == [
        "3 of 3 copies deleted", "1 of 1 copy deleted"]
    assert sorted(a["target"] for a in audit if a["outcome"] == "dry_run") == ["db/d9", "db/m400", "db/w40"]


def _export(at: datetime, **kw: object) -> ArchivedObject:
    return ArchivedObject(database="db", backup_id=f"compliance/{at:%Y%m%dT%H%M%SZ}", key="k", recovery_point=at,
                          size_bytes=1, tier=EXPORT_TIER, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("at", "now", "deleted"), [
    (datetime(2019, 11, 25, 12, 0, tzinfo=UTC), NOW, True),  # seven calendar years to the second
    (datetime(2019, 11, 25, 12, 0, 1, tzinfo=UTC), NOW, False),  # a second younger
    (datetime(2019, 11, 26, tzinfo=UTC), NOW, False),
    (datetime(2020, 2, 29, 6, 0, tzinfo=UTC), datetime(2027, 2, 28, 5, 59, tzinfo=UTC), False),
    (datetime(2020, 2, 29, 6, 0, tzinfo=UTC), datetime(2027, 2, 28, 6, 0, tzinfo=UTC), True),  # no 29th in 2027
])
def test_a_compliance_export_goes_only_once_it_is_keep_years_calendar_years_old(
    at: datetime, now: datetime, deleted: bool
) -> None:
    [decision] = plan_exports([_export(at)], {"db": 7}, now)
    assert decision.delete is deleted, decision.reason


def test_an_old_compliance_export_stays_when_locked_held_or_its_keep_is_unknown() -> None:
    old = datetime(2010, 1, 1, tzinfo=UTC)
    locked = plan_exports([_export(old, lock_until=NOW + D)], {"db": 7}, NOW)
    held = plan_exports([_export(old, legal_hold=True)], {"db": 7}, NOW)
    unknown = plan_exports([_export(old)], {}, NOW)
    backup = plan_exports([obj("b1", 5000 * D, "daily")], {"db": 1}, NOW)  # a backup is never planned here
    assert [d.delete for d in locked + held + unknown + backup] == [False] * 4
    assert "object-locked" in locked[0].reason and "legal hold" in held[0].reason
