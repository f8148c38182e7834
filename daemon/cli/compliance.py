"""`backup-guardian compliance-export --database X`: a compliance export now, through the guarded action path."""

from __future__ import annotations

import sys

from daemon.app import Guardian
from daemon.cli.exits import CRITICAL, OK, WARNING
from daemon.config import GuardianConfig
from daemon.core.errors import GuardianError


def run(config: GuardianConfig, database: str) -> int:
    """OK when the export succeeded, WARNING when it did not run (paused, busy), CRITICAL when it failed."""
    guardian = Guardian(config)
    try:
        if database not in guardian.databases:
            raise GuardianError(f"unknown database {database!r}; known: {', '.join(guardian.databases)}")
        if guardian.databases[database].compliance is None:
            raise GuardianError(f"database {database!r} has no compliance section (compliance.tables)")
        guardian.collect_all(one_shot=True)
        result = guardian.compliance.export(database, manual=True)
        if result.skipped:
            sys.stdout.write(f"{database}: compliance export skipped: {result.reason}\n")
            return WARNING
        sys.stdout.write(f"{database}: compliance export {'succeeded' if result.ok else 'FAILED'}: {result.reason}\n")
        for f in result.files:
            sys.stdout.write(f"  {f.table}: {f.rows} rows, {f.bytes} bytes, sha256 {f.sha256}\n")
        if result.manifest_at:
            sys.stdout.write(f"  manifest: {result.manifest_at}\n")
        return OK if result.ok else CRITICAL
    finally:
        guardian.stop()
