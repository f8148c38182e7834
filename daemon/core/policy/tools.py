"""The client tools check: client_tools_too_old, when this machine's pg_restore is older than the PostgreSQL that
writes the database's backups. pg_restore reads only archives of its own major version and older, so every
readability check and restore drill would fail there (and a pg_dump older than the server cannot capture it):
said once, as what it is, before any of those fails and reads like a broken backup.
"""

from __future__ import annotations

from datetime import datetime

from daemon.core.policy.findings import finding, newest_good_backup
from daemon.core.snapshot import DatabaseState, Finding
from daemon.core.versions import ClientTools, major_of

__all__ = ["ClientTools", "client_tools_check", "major_of"]


def client_tools_check(db: DatabaseState, tools: ClientTools | None, now: datetime) -> Finding:
    """Active when the database's backups come from a newer PostgreSQL major than this pg_restore reads: the
    server's version (the collectors read it from the database or the provider), or the pg_dump that wrote the
    newest good backup, when its record says."""
    have = tools.pg_restore_major if tools is not None else None
    if tools is None or have is None:
        return finding(db, "client_tools_too_old", False, "the client tools' version is not known", now)
    sources = []
    live = db.live.server_version if db.live is not None else None
    server = major_of(live)
    if live and server is not None:
        sources.append((server, f"the server runs PostgreSQL {live.split()[0]}"))
    newest = newest_good_backup(db)
    written = major_of(newest.tool_version) if newest is not None else None
    if newest is not None and written is not None:
        sources.append((written, f"backup {newest.backup_id} was written by {newest.tool_version}"))
    if newest is not None and newest.too_new_here and not any(need > have for need, _ in sources):
        # the readability check met it: pg_restore refused the newest backup as written by a newer pg_dump
        return finding(db, "client_tools_too_old", True,
                       f"backup {newest.backup_id} could not be read here: {newest.readable_error}. Readability "
                       "checks and restore drills of it cannot run and a restore from this machine would fail; "
                       f"install the client tools of the server's major version, newer than {tools.pg_restore}, "
                       "or point GUARDIAN_PG_BINDIR at them", now, threshold=float(have))
    if not sources:
        return finding(db, "client_tools_too_old", False, "the version of the backups is not known yet", now)
    need, why = max(sources, key=lambda s: s[0])
    if need <= have:
        return finding(db, "client_tools_too_old", False, f"{tools.pg_restore} reads PostgreSQL {need} backups", now,
                       value=float(need), threshold=float(have))
    also = ""
    if tools.pg_dump_major is not None and server is not None and tools.pg_dump_major < server:
        also = f"; {tools.pg_dump} cannot capture it either"
    where = f" (in {tools.bindir})" if tools.bindir else ""
    hint = (f"{why}, but {tools.pg_restore}{where} reads only PostgreSQL {have} and older: readability checks and "
            f"restore drills cannot run here and a restore from this machine would fail{also}. Install the "
            f"PostgreSQL {need} client tools (Debian: postgresql-client-{need} from apt.postgresql.org) or point "
            f"GUARDIAN_PG_BINDIR at them; the container image takes --build-arg PG_MAJOR={need}")
    return finding(db, "client_tools_too_old", True, hint, now, value=float(need), threshold=float(have))
