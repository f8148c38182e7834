"""The readability check: the cheap proof that a backup is a whole, readable custom-format dump.

Two reads, no database: `pg_restore --list` gives the table of contents (tables, which carry data, versions),
and `pg_restore -f /dev/null` reads every data block through (the TOC alone says nothing of a dump cut short
or corrupted after its header). `read_toc(path)` checks a file; `TocTee` checks a stream as the dump goes by
(a capture or a mirror), so no second pass over the dump is needed.

The package: `listing` (the table of contents, name matching, entry selection), `readability` (the check on a
file or a stream), `messages` (pg_restore's errors in plain words).
"""

from daemon.adapters.postgres.toc.listing import Toc, TocEntry, listing_key, match_tables, parse_toc, table_entries
from daemon.adapters.postgres.toc.messages import explain
from daemon.adapters.postgres.toc.readability import TocTee, read_stream, read_toc

__all__ = ["Toc", "TocEntry", "TocTee", "explain", "listing_key", "match_tables", "parse_toc", "read_stream",
           "read_toc", "table_entries"]
