"""keep_last after a real capture: the archive's one deletion plan (never a milestone, a locked copy or the newest
of a tier), every deletion audited, the pause obeyed (keep_last, the prune job and `archive prune --apply`), and
a refused delete never changes the outcome of the capture that triggered it."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from actions.audit import AuditLog
from actions.deletions import Deletions
from actions.pipeline import Gate, Pipeline, Switches
from actions.runner import ActionRunner
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.archive.records import BackupRecord
from daemon.adapters.archive.s3 import S3ArchiveStore
from daemon.adapters.archive.store import ArchiveStore
from daemon.adapters.statestore import StateStore, open_state_store
from daemon.app import Guardian
from daemon.config import GuardianConfig
from tests.doubles.s3 import MotoServer, s3_client
from tests.support import s3_section

D = timedelta(days=1)


def seed(store: ArchiveStore, backup_id: str, rp: datetime, tier: str, label: str | None = None) -> None:
    """A good archived copy of `db` with this recovery point and tier (a tiny stand-in dump)."""
    writer = store.begin("db", backup_id, recovery_point=rp)
    writer.write(b"PGDMP" + backup_id.encode())
    writer.commit(BackupRecord(database="db", backup_id=backup_id, kind="scheduled", started_at=rp, finished_at=rp,
                               outcome="succeeded", size_bytes=5 + len(backup_id), tier=tier, label=label))


def stepping_clock(start: datetime) -> Callable[[], datetime]:
    """A clock that starts at `start` and moves a millisecond per reading (backup ids stay unique)."""
    ticks = itertools.count()
    return lambda: start + timedelta(milliseconds=next(ticks))


def config_doc(tmp_path: Path, url: str, keep_last: int, **archive: Any) -> dict[str, Any]:
    return {"state_dir": str(tmp_path / "state"), "archive": archive or {"path": str(tmp_path / "archive")},
            "databases": [{"name": "db", "url": url, "capture": {"keep_last": keep_last}}]}


def deletions(store: ArchiveStore, config: GuardianConfig, state: StateStore, now: datetime,
              paused: Callable[[], str | None] = lambda: None,
              counted: list[tuple[str, str]] | None = None) -> Deletions:
    """Deletions over `store` with real guards, runner (history, lock) and audit log on `state`; what
    `pgbackup_actions_total` would count goes to `counted`, from both, as the daemon wires them."""
    def count(action: str, outcome: str) -> None:
        if counted is not None:
            counted.append((action, outcome))

    gate = Gate(Switches(enabled=lambda: True, paused=paused, leader=lambda: True, dry_run=lambda _kind: False),
                lambda: now)
    audit = AuditLog(state, lambda: now)
    runner = ActionRunner(state, audit, count, lambda: now)
    return Deletions(store, dict(config.archive.keeps), Pipeline(runner, gate), audit, count, lambda: now)


def two_past_their_keep(tmp_path: Path) -> tuple[LocalDirectoryStore, GuardianConfig, datetime]:
    """A local archive of `db` with two daily copies past the daily keep and a recent one; its config; now."""
    store = LocalDirectoryStore(tmp_path / "archive")
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    for age in (30, 31):
        seed(store, f"old-{age}", now - age * D, "daily")
    seed(store, "recent", now - D, "daily")
    config = GuardianConfig.model_validate(config_doc(tmp_path, "postgresql://unused@127.0.0.1/db", keep_last=0))
    return store, config, now


def ids(store: ArchiveStore) -> set[str]:
    return {r.backup_id for r in store.list_records("db")}


def test_keep_last_never_deletes_a_milestone_or_the_newest_of_a_tier_and_audits_every_deletion(
    fresh_db: str, tmp_path: Path,
) -> None:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # a Wednesday: the capture lands in a week and month with copies
    g = Guardian(GuardianConfig.model_validate(config_doc(tmp_path, fresh_db, keep_last=2)),
                 clock=stepping_clock(now))
    store = g.store
    try:
        tmp_path.joinpath("archive").mkdir()
        seed(store, "launch", now - 400 * D, "milestone", label="v1 launch")
        seed(store, "month", now - 20 * D, "monthly")
        seed(store, "week", now - 9 * D, "weekly")
        for n in range(1, 5):
            seed(store, f"day{n}", now - n * D, "daily")
        seeded = ids(store)

        ok, detail = g.captures.capture("db", "manual")
        assert ok, detail
        audit = g.audit.read(action="keep_last")
        history = g.state.actions(action="keep_last")
    finally:
        g.stop()

    left = ids(store)
    [new] = left - seeded
    # the two newest (the capture, day1) stay; the milestone, the newest weekly and monthly stay whatever the count
    assert left == {new, "day1", "launch", "month", "week"}
    deleted = seeded - left
    assert deleted == {"day2", "day3", "day4"}
    copies = [a for a in audit if a["target"] != "db"]
    assert sorted(a["target"] for a in copies if a["outcome"] == "done") == sorted(f"db/{b}" for b in deleted)
    assert all("beyond the 2 newest good copies" in a["reason"] for a in copies)
    # the database's run: one execution in the history, its start and end in the audit log
    assert [(a["outcome"], a["reason"]) for a in audit if a["target"] == "db"] == [
        ("started", "3 copies past their keep"), ("done", "3 of 3 copies deleted")]
    assert [(h.target, h.outcome, h.details["deleted"]) for h in history] == [("db", "done", 3)]


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "daemon", *args, "--config", str(cfg)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=cfg.parent)


def test_a_paused_guardian_deletes_nothing_by_keep_last_the_prune_job_or_the_cli(
    fresh_db: str, tmp_path: Path,
) -> None:
    doc = config_doc(tmp_path, fresh_db, keep_last=1)
    doc["archive"]["prune_apply"] = True
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(json.dumps(doc))  # YAML is a superset of JSON
    store = LocalDirectoryStore(tmp_path / "archive")
    now = datetime.now(UTC)
    for backup_id, age in [("old", 30 * D), ("older", 40 * D), ("oldest", 50 * D), ("recent", 10 * D)]:
        seed(store, backup_id, now - age, "daily")  # all past the daily keep, all beyond keep_last=1
    paused = _cli(cfg, "actions", "pause", "--reason", "restoring by hand")
    assert paused.returncode == 0, paused.stderr

    g = Guardian(GuardianConfig.model_validate(doc))
    try:
        ok, detail = g.captures.capture("db", "manual")  # the pause stops the capture itself too
        assert not ok and "actions are paused: restoring by hand" in detail
        assert g.deletions.keep_last("db", 1) == 0  # what runs after each good capture
        g.prune()  # what the daily prune job runs (prune_apply: true)
    finally:
        g.stop()
    cli = _cli(cfg, "archive", "prune", "--apply")

    assert {"old", "older", "oldest", "recent"} <= ids(store)  # nothing deleted
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert "nothing deleted: actions are paused (restoring by hand)" in cli.stdout
    g = Guardian(GuardianConfig.model_validate(doc))
    try:
        audit = g.audit.read()
    finally:
        g.stop()
    skipped = [(a["action"], a["target"]) for a in audit if a["outcome"] == "skipped_paused"]
    assert skipped == [("capture", "db"), ("keep_last", "db"), ("prune", "db"), ("prune", "db")]
    assert all("actions are paused: restoring by hand" in a["reason"] for a in audit
               if a["outcome"] == "skipped_paused")
    assert not [a for a in audit if a["action"] in ("keep_last", "prune") and a["outcome"] == "done"]


def test_an_object_locked_copy_refused_during_keep_last_leaves_the_capture_succeeded(
    fresh_db: str, moto_server: MotoServer, tmp_path: Path,
) -> None:
    client = s3_client(moto_server.endpoint_url)
    bucket = f"lock-{uuid.uuid4().hex[:20]}"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    doc = config_doc(tmp_path, fresh_db, keep_last=1, kind="s3", s3=s3_section(moto_server.endpoint_url, bucket))
    g = Guardian(GuardianConfig.model_validate(doc))
    store = g.store
    assert isinstance(store, S3ArchiveStore)
    now = datetime.now(UTC)
    try:
        seed(store, "locked", now - 30 * D, "daily")
        seed(store, "old", now - 20 * D, "daily")
        seed(store, "recent", now - 10 * D, "daily")
        g.collect_all(one_shot=True)  # the archive is listed (each dump's HEAD cached by its ETag) ...
        # ... then a person locks one copy: a retention change leaves the ETag alone, so the listing the plan
        # works from does not show it; the delete itself must find out
        client.put_object_retention(Bucket=bucket, Key=store.key("db", "locked"), Retention={
            "Mode": "COMPLIANCE", "RetainUntilDate": now + 30 * D})

        ok, detail = g.captures.capture("db", "manual")
        snap = g.holder.current()
        audit = g.audit.read(action="keep_last")
    finally:
        g.stop()

    assert ok and "succeeded" in detail, detail
    last = snap.databases["db"].sources["archive"].last_attempt
    assert last is not None and last.succeeded
    newest = max(store.list_records("db"), key=lambda r: r.started_at)
    assert newest.outcome == "succeeded" and newest.kind == "manual"
    assert "locked" in ids(store) and "old" not in ids(store)
    outcomes = {a["target"]: a for a in audit}
    assert outcomes["db/locked"]["outcome"] == "refused"
    assert "Object Lock" in outcomes["db/locked"]["reason"]
    assert outcomes["db/old"]["outcome"] == "done"
    # keep_last's run ends failed (the store refused one copy); the capture that triggered it did not
    assert outcomes["db"]["outcome"] == "failed" and "1 refused by the store" in outcomes["db"]["reason"]


def test_a_pause_that_comes_during_a_prune_stops_the_deletions_still_to_come(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "archive")
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    for age in (30, 31, 32, 33):
        seed(store, f"old-{age}", now - age * D, "daily")  # all four past the daily keep
    seed(store, "recent", now - D, "daily")
    config = GuardianConfig.model_validate(config_doc(tmp_path, "postgresql://unused@127.0.0.1/db", keep_last=0))
    state = open_state_store(None, tmp_path / "state")
    answers = iter([None, None])  # not paused when the run starts and the first copy goes; paused right after

    def paused() -> str | None:
        return next(answers, "paused by hand during the prune")

    try:
        deletions(store, config, state, now, paused).prune(["db"], apply=True)
        audit = [(a["target"], a["outcome"], a.get("backups")) for a in state.audit(action="prune")]
        history = state.actions(action="prune")
    finally:
        state.close()
    assert ids(store) == {"old-30", "old-31", "old-32", "recent"}  # only the oldest went
    assert audit == [("db", "started", None), ("db/old-33", "done", None), ("db", "done", None),
                     ("db", "skipped_paused", ["old-32", "old-31", "old-30"])]
    # the run is one execution in the history: what went and what a pause left
    assert [(h.target, h.outcome, h.details["deleted"], h.details["left"]) for h in history] == [("db", "done", 1, 3)]
    assert "1 of 4 copies deleted, 3 left: " in history[0].details["detail"]


def test_a_prune_never_deletes_from_an_archive_another_process_is_pruning(tmp_path: Path) -> None:
    """The deletions of one database run under `prune:<database>`: while another process (here a second store
    connection, as another guardian or `archive prune --apply` would hold it) prunes it, nothing is deleted and
    the record says so; once it let go, the prune goes."""
    store, config, now = two_past_their_keep(tmp_path)
    state = open_state_store(None, tmp_path / "state")
    other = open_state_store(None, tmp_path / "state")
    counted: list[tuple[str, str]] = []
    try:
        service = deletions(store, config, state, now, counted=counted)
        with other.exclusive("prune:db"):
            service.prune(["db"], apply=True)
            assert ids(store) == {"old-30", "old-31", "recent"}
        busy = [(a["outcome"], a["target"]) for a in state.audit(action="prune")]
        busy_history = state.actions(action="prune")
        service.prune(["db"], apply=True)
        after = [(a["target"], a["outcome"]) for a in state.audit(action="prune")]
        history = state.actions(action="prune")
    finally:
        other.close()
        state.close()
    assert busy == [("skipped_busy", "db")] and busy_history == []
    assert ids(store) == {"recent"}
    assert after[1:] == [("db", "started"), ("db/old-31", "done"), ("db/old-30", "done"), ("db", "done")]
    assert [(h.outcome, h.details["deleted"]) for h in history] == [("done", 2)]
    # the counter counts copies, as before: the run's own end is not counted a second time
    assert counted == [("prune", "skipped_busy"), ("prune", "done"), ("prune", "done")]


def test_a_prune_cut_short_by_a_crash_is_closed_as_interrupted(tmp_path: Path) -> None:
    """A prune whose process died mid-run leaves its history record "running"; the next guardian to read the
    history closes it as interrupted (its lock is free), so it never blocks or misleads the guards."""
    store, config, now = two_past_their_keep(tmp_path)
    state = open_state_store(None, tmp_path / "state")
    try:
        service = deletions(store, config, state, now)
        real_delete = store.delete

        def crash_after_first(database: str, backup_id: str) -> None:
            real_delete(database, backup_id)
            raise SystemExit("the process died in the middle of the prune")

        store.delete = crash_after_first  # type: ignore[method-assign]
        with pytest.raises(SystemExit):
            service.prune(["db"], apply=True)
        running = state.running_actions("prune", "db")
        service.pipeline.runner.close_interrupted("prune", "db")
        history = state.actions(action="prune")
    finally:
        state.close()
    assert [r.outcome for r in running] == ["running"]
    assert [h.outcome for h in history] == ["interrupted"]
