"""PostgreSQL versions as the guardian compares them: the major in a version string, and the client programs it
runs (pure data; the adapter in daemon.adapters.postgres.tools reads them, the policy compares them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MAJOR = re.compile(r"(\d+)(?:\.\d+)?")
_PROGRAM = re.compile(r"^\S+ \(PostgreSQL\)\s*")  # `pg_restore --version`'s prefix


def major_of(version: str | None) -> int | None:
    """The major version in a version string: '15.18 (Debian 15.18-0+deb12u1)', '17.5' or
    'pg_restore (PostgreSQL) 16.4' -> 15, 17, 16; None when it holds no number."""
    if not version:
        return None
    m = _MAJOR.search(_PROGRAM.sub("", version))
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ClientTools:
    """The PostgreSQL client programs the guardian runs, as their `--version` lines (None: not found)."""

    pg_restore: str | None
    pg_dump: str | None = None
    bindir: str | None = None  # where they were found, for the advice

    @property
    def pg_restore_major(self) -> int | None:
        return major_of(self.pg_restore)

    @property
    def pg_dump_major(self) -> int | None:
        return major_of(self.pg_dump)
