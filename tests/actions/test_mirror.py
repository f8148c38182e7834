"""The mirror when Heroku deletes the backup it is about to copy (its retention expired it, or a person removed
it): 410 Gone from the API, or the signed URL's object gone. Neither a failure of the guardian nor of the
backup: the next good backup the archive lacks is copied instead, and the log and the audit say so."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from daemon.app import Guardian
from tests.doubles.heroku import HerokuDouble
from tests.doubles.s3 import MotoServer
from tests.support import S3_MIRROR_APP as APP
from tests.support import S3_MIRROR_TOKEN as TOKEN
from tests.support import guardian_for

DB = f"{APP}/DATABASE"


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN) as double:
        yield double


def backup(heroku: HerokuDouble, dump: Path, minutes_ago: int) -> None:
    """A finished scheduled backup taken `minutes_ago`, whose download is the real dump `dump`."""
    at = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    t = heroku.add_transfer(APP, created_at=at, started_at=at, finished_at=at + timedelta(minutes=5))
    heroku.set_dump_file(APP, t["num"], dump)


def two_backups(heroku: HerokuDouble, dump: Path) -> None:
    """a001 two hours ago, a002 one hour ago: scheduled, finished and good (real dumps, readable)."""
    heroku.add_app(APP)
    backup(heroku, dump, 120)
    backup(heroku, dump, 60)


def delete(heroku: HerokuDouble, num: int) -> None:
    """`heroku pg:backups:delete a00N`, as a person (or Heroku's retention) would, through the API."""
    r = httpx.delete(f"{heroku.data_url}/client/v11/apps/{APP}/transfers/{num}",
                     headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.heroku+json; version=3"})
    assert r.status_code == 200


@pytest.fixture
def guardian(heroku: HerokuDouble, moto_server: MotoServer, s3_bucket: tuple[Any, str], tmp_path: Path,
             sample_dump: Path) -> Iterator[Guardian]:
    """A guardian mirroring APP's backups (a001, a002: good) to the S3 bucket, after one collection: it has seen
    a002 as the newest good backup."""
    two_backups(heroku, sample_dump)
    g = guardian_for(heroku, moto_server.endpoint_url, s3_bucket[1], tmp_path)
    try:
        g.collect_all(one_shot=True)
        yield g
    finally:
        g.stop()


def test_a_backup_deleted_before_its_copy_is_skipped_and_the_next_good_one_is_copied(
    heroku: HerokuDouble, guardian: Guardian, s3_bucket: tuple[Any, str]
) -> None:
    client, bucket = s3_bucket
    g = guardian
    delete(heroku, 2)  # Heroku deletes a002 before the mirror asks for its URL: 410
    assert g.mirrors.pending() == 1
    audit = [(a["target"], a["outcome"], a["reason"]) for a in g.audit.read() if a["action"] == "mirror"]
    failed = g.holder.current().actions.get(("mirror", "failed"), 0)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any("a001" in k for k in keys) and not any("a002" in k for k in keys)
    assert failed == 0  # not a failure: no remedial-action alert
    outcomes = [(t.rsplit("/", 1)[-1], o) for t, o, _ in audit]
    assert outcomes == [("a002", "started"), ("a002", "skipped"), ("a001", "started"), ("a001", "done")]
    skipped = next(r for t, o, r in audit if o == "skipped")
    assert "a002" in skipped and "deleted by Heroku (410 Gone)" in skipped and "next good backup" in skipped


def test_when_the_archive_holds_every_remaining_backup_nothing_more_is_copied(
    heroku: HerokuDouble, guardian: Guardian, sample_dump: Path
) -> None:
    g = guardian
    assert g.mirrors.pending() == 1  # a002 copied
    backup(heroku, sample_dump, 30)  # a003
    g.collect_all(one_shot=True)
    delete(heroku, 3)
    assert g.mirrors.pending() == 0
    outcomes = [a["outcome"] for a in g.audit.read() if a["action"] == "mirror"]
    assert g.mirrors.pending() == 0  # a003 is not asked for again; a002 is archived already
    again = [a["outcome"] for a in g.audit.read() if a["action"] == "mirror"]
    assert outcomes == ["started", "done", "started", "skipped"] and again == outcomes


def test_a_backup_that_expires_while_it_is_copied_is_skipped_and_the_next_good_one_is_copied(
    heroku: HerokuDouble, guardian: Guardian, s3_bucket: tuple[Any, str], sample_dump: Path
) -> None:
    """Heroku's retention expires a002 while the mirror streams it: the download breaks off after a part and
    Heroku answers 410 for it since. The half-copy is aborted (no object), a002 is skipped, a001 is copied."""
    client, bucket = s3_bucket
    g = guardian
    heroku.expire_during_download(APP, 2, after_bytes=sample_dump.stat().st_size // 2)
    assert g.mirrors.pending() == 1
    audit = [(a["target"], a["outcome"], a["reason"]) for a in g.audit.read() if a["action"] == "mirror"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert any("a001" in k for k in keys) and not any("a002" in k for k in keys)
    assert g.holder.current().actions.get(("mirror", "failed"), 0) == 0
    outcomes = [(t.rsplit("/", 1)[-1], o) for t, o, _ in audit]
    assert outcomes == [("a002", "started"), ("a002", "skipped"), ("a001", "started"), ("a001", "done")]
    skipped = next(r for t, o, r in audit if o == "skipped")
    assert "deleted by Heroku while it was being copied" in skipped and "cut short" in skipped


def test_a_download_that_breaks_off_while_the_backup_still_exists_is_a_failure(
    heroku: HerokuDouble, guardian: Guardian
) -> None:
    """The other side of the same break: Heroku still has the backup, so the broken download is the mirror's
    failure (retried later), not a deleted backup, and nothing else is copied in its place."""
    g = guardian
    heroku.inject(r"GET /xfrtu/", "truncated", times=1)
    assert g.mirrors.pending() == 0  # nothing copied
    outcomes = [(a["target"].rsplit("/", 1)[-1], a["outcome"]) for a in g.audit.read() if a["action"] == "mirror"]
    assert outcomes == [("a002", "started"), ("a002", "failed")]
