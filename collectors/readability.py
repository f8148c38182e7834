"""Read-through of Heroku backups the archive does not copy: each new one is streamed from its signed URL into
the readability check (`daemon.adapters.postgres.toc.read_stream`), nothing stored. A mirror reads its copies on
the way, so databases the archive covers are left to it.

The verdicts are bounded (only backups the source still lists keep theirs) and replaced whole, never mutated:
the evaluation reads them from the collection thread while this job writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from loguru import logger

from collectors.archive import ArchiveReader
from collectors.fleet import HerokuSide
from collectors.heroku import deleted_while_read, require_transfer_num, transfer_num
from daemon.adapters.archive.download import DownloadError, stream
from daemon.adapters.heroku import HerokuGone
from daemon.adapters.postgres.toc import Toc, read_stream
from daemon.adapters.postgres.toc.messages import NEWER_DUMP
from daemon.config import DatabaseConfig
from daemon.core.errors import GuardianError
from daemon.core.snapshot import SOURCE_HEROKU, Backup, SourceState, StateHolder


class ReadThrough:
    """The readability verdicts of Heroku backups, by (database, backup id)."""

    def __init__(self, holder: StateHolder, databases: dict[str, DatabaseConfig], archive: ArchiveReader,
                 heroku: HerokuSide, stopping: Callable[[], bool], republish: Callable[[], object]) -> None:
        self.holder = holder
        self.databases = databases
        self.archive = archive
        self.heroku = heroku
        self.stopping = stopping
        self.republish = republish
        self.verdicts: dict[tuple[str, str], Toc] = {}

    def check(self) -> int:
        """Read through each new Heroku backup the archive does not copy. Returns how many were read."""
        api = self.heroku.api
        if api is None:
            return 0
        done = 0
        for name, db in self.holder.current().databases.items():
            cfg = self.databases.get(name)
            src = db.sources.get(SOURCE_HEROKU)
            newest = src.newest_good if src is not None else None
            app = self.heroku.billing_app(name)
            if (cfg is None or newest is None or app is None or self.archive.covers(cfg)
                    or (name, newest.backup_id) in self.verdicts or transfer_num(newest.backup_id) is None
                    or any(f.check == "client_tools_too_old" and f.active for f in db.findings)):
                continue  # (this pg_restore could not judge it: the finding says so, no download for nothing)
            if self.stopping():
                break
            num = require_transfer_num(newest.backup_id)
            try:
                url = str(api.public_url(app, num)["url"])
                toc = read_stream(stream(url))
            except (HerokuGone, DownloadError) as exc:
                if not deleted_while_read(exc, api, app, num):
                    logger.warning("readability check of {} {} not done: {}", name, newest.backup_id, exc)
                    continue
                # not a verdict on the backup: the next collection lists what remains, and its newest is read
                logger.info("readability check of {} {} not done: Heroku deleted it meanwhile (its retention "
                            "expired it); the next good backup is read after the next collection", name,
                            newest.backup_id)
                continue
            except GuardianError as exc:
                logger.warning("readability check of {} {} not done: {}", name, newest.backup_id, exc)
                continue
            listed = {b.backup_id for b in src.backups} if src is not None else set()
            kept = {k: v for k, v in self.verdicts.items() if k[0] != name or k[1] in listed}
            self.verdicts = {**kept, (name, newest.backup_id): toc}
            if not toc.judged:
                logger.warning("{} {} from Heroku was not judged: {}", name, newest.backup_id, toc.error)
            elif not toc.ok:
                logger.error("{} {} from Heroku is not a readable dump: {}", name, newest.backup_id, toc.error)
            done += 1
        if done:
            self.republish()
        return done

    def with_verdicts(self, name: str, sources: dict[str, SourceState]) -> dict[str, SourceState]:
        """Heroku backups carry the verdict of their read-through, when one ran."""
        src = sources.get(SOURCE_HEROKU)
        seen = self.verdicts
        if src is None or not seen:
            return sources
        backups = tuple(_with(b, seen.get((name, b.backup_id))) if b.readable is None else b for b in src.backups)
        return {**sources, SOURCE_HEROKU: replace(src, backups=backups)}


def _with(backup: Backup, toc: Toc | None) -> Backup:
    """A backup with its read-through verdict: readable or not when the check judged it; when it could not (a
    newer pg_dump wrote it than this pg_restore reads), not judged, and marked so the policy says why."""
    if toc is None:
        return backup
    if toc.judged:
        return replace(backup, readable=toc.ok, readable_error=toc.error)
    return replace(backup, readable_error=toc.error, too_new_here=NEWER_DUMP in (toc.error or ""))
