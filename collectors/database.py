"""Read-only facts from the live database: size, user table count, server version."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from daemon.core.errors import CollectorError, one_line
from daemon.core.redact import REDACTOR
from daemon.core.snapshot import LiveFacts

_FACTS_SQL = """
SELECT pg_database_size(current_database()),
       (SELECT count(*) FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg_toast%'
           AND n.nspname NOT LIKE 'pg_temp%'),
       current_setting('server_version')
"""


def collect_live(url: str, connect_timeout: float, statement_timeout_ms: int = 10_000) -> LiveFacts:
    """Connect read-only and read the facts. Raises CollectorError with a redacted, readable reason."""
    try:
        with psycopg.connect(
            url, connect_timeout=max(1, int(connect_timeout)), application_name="pg-backup-guardian", autocommit=True,
        ) as conn:
            # SET rather than the `options` startup parameter, which PgBouncer-style poolers reject.
            conn.execute("SET default_transaction_read_only = on")
            conn.execute(f"SET statement_timeout = {int(statement_timeout_ms)}")
            row = conn.execute(_FACTS_SQL).fetchone()
    except psycopg.Error as exc:
        raise CollectorError(REDACTOR(f"cannot read the live database: {one_line(exc)}")) from None
    assert row is not None
    return LiveFacts(size_bytes=int(row[0]), table_count=int(row[1]), server_version=str(row[2]),
                     observed_at=datetime.now(UTC))
