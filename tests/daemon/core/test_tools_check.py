"""client_tools_too_old as tables: the server's and the newest backup's PostgreSQL major against pg_restore's."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from daemon.config import Objectives
from daemon.core.policy import ClientTools, evaluate, is_healthy, major_of
from daemon.core.snapshot import Backup, DatabaseState, LiveFacts, SourceState

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PG15 = ClientTools(pg_restore="pg_restore (PostgreSQL) 15.18", pg_dump="pg_dump (PostgreSQL) 15.18",
                   bindir="/usr/lib/postgresql/15/bin")


@pytest.mark.parametrize(("text", "major"), [
    ("15.18 (Debian 15.18-0+deb12u1)", 15),
    ("17.5", 17),
    ("16beta2", 16),
    ("pg_restore (PostgreSQL) 16.4", 16),
    ("pg_dump (PostgreSQL) 18.1 (Debian 18.1-1.pgdg12+2)", 18),
    ("9.6.24", 9),
    ("", None),
    (None, None),
    ("unknown", None),
])
def test_major_of(text: str | None, major: int | None) -> None:
    assert major_of(text) == major


def state(server: str | None = None, written_by: str | None = None, refused: str | None = None) -> DatabaseState:
    b = Backup(backup_id="b1", database="shop/main", source="archive", kind="scheduled",
               started_at=NOW - timedelta(hours=2), finished_at=NOW - timedelta(hours=2), succeeded=True,
               tool_version=written_by, readable_error=refused, too_new_here=refused is not None)
    live = LiveFacts(size_bytes=1, table_count=1, server_version=server, observed_at=NOW) if server else None
    return DatabaseState(name="shop/main", rpo_seconds=86400, rto_seconds={}, live=live,
                         sources={"archive": SourceState("archive", backups=(b,))})


@pytest.mark.parametrize(("server", "written_by", "tools", "active", "words"), [
    # Heroku runs 17, the guardian's tools are 15: every check and drill of its backups would fail.
    ("17.5", None, PG15, True, ["the server runs PostgreSQL 17.5", "pg_restore (PostgreSQL) 15.18",
                                "postgresql-client-17", "PG_MAJOR=17", "pg_dump (PostgreSQL) 15.18 cannot capture"]),
    # The same major, or an older server: read fine.
    ("15.18 (Debian 15.18-0+deb12u1)", None, PG15, False, ["reads PostgreSQL 15 backups"]),
    ("14.11", "pg_dump (PostgreSQL) 14.11", PG15, False, ["reads PostgreSQL 14 backups"]),
    # Newer tools read older dumps.
    ("16.4", None, ClientTools("pg_restore (PostgreSQL) 17.2"), False, ["reads PostgreSQL 16 backups"]),
    # The server is not known yet, but the newest backup says a newer pg_dump wrote it.
    (None, "pg_dump (PostgreSQL) 16.4", PG15, True, ["backup b1 was written by pg_dump (PostgreSQL) 16.4"]),
    # Both known: the newer of the two decides.
    ("15.18", "pg_dump (PostgreSQL) 18.0", PG15, True, ["pg_dump (PostgreSQL) 18.0", "postgresql-client-18"]),
    # Nothing known of the backups, or of the tools: silence, not a guess.
    (None, None, PG15, False, ["not known yet"]),
    ("17.5", None, None, False, ["not known"]),
    ("17.5", None, ClientTools(pg_restore=None), False, ["not known"]),
])
def test_client_tools_too_old(server: str | None, written_by: str | None, tools: ClientTools | None, active: bool,
                              words: list[str]) -> None:
    found = {f.check: f for f in evaluate(state(server, written_by), Objectives(), [], NOW, tools=tools)}
    f = found["client_tools_too_old"]
    assert f.active is active and f.severity == "warning"
    for w in words:
        assert w in f.hint, (w, f.hint)
    if active:
        assert f.value is not None and f.threshold == 15.0 and f.value > f.threshold
        assert is_healthy(found.values())  # a warning: `check` exits WARNING, never CRITICAL
        assert all(not g.active for c, g in found.items() if c in ("unreadable_backup", "rpo_breach"))


def test_the_pg_dump_note_appears_only_when_pg_dump_is_older_than_the_server() -> None:
    tools = replace(PG15, pg_dump="pg_dump (PostgreSQL) 17.2")
    f = {f.check: f for f in evaluate(state("17.5"), Objectives(), [], NOW, tools=tools)}["client_tools_too_old"]
    assert f.active and "cannot capture" not in f.hint


def test_a_backup_the_readability_check_could_not_judge_for_its_version_is_said_even_when_nothing_else_is_known(
) -> None:
    """A Heroku backup carries no pg_dump version, and the server's may not be read yet: when the read-through
    met a dump newer than pg_restore, the finding comes from that, never silence (and never 'unreadable')."""
    refused = ("the dump was written by a newer pg_dump (archive format 1.16) than this pg_restore (pg_restore "
               "(PostgreSQL) 15.18) can read")
    found = {f.check: f for f in evaluate(state(refused=refused), Objectives(), [], NOW, tools=PG15)}
    f = found["client_tools_too_old"]
    assert f.active and "backup b1 could not be read here" in f.hint and "archive format 1.16" in f.hint
    assert not found["unreadable_backup"].active and not found["rpo_breach"].active
