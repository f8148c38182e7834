"""pg_restore's complaints in plain words: a dump too new for this pg_restore, no dump at all, a truncated or
corrupted one, or pg_restore's own last error on one line (without the SQL it was running).
"""

from __future__ import annotations

import re

from daemon.adapters.postgres.tools import tool_version
from daemon.core.names import escaped


def explain(stderr: str) -> str:
    """pg_restore's complaint in plain words (version mismatches above all)."""
    text = _last_error(stderr)
    m = re.search(r"unsupported version \(([\d.]+)\) in file header", stderr)
    if m:
        return (f"the dump was written by a newer pg_dump (archive format {m.group(1)}) than this pg_restore "
                f"({_safe_version()}) can read: install the PostgreSQL client tools of the dump's major version")
    if "input file does not appear to be a valid archive" in stderr or "did not find magic string" in stderr:
        return "not a PostgreSQL custom-format dump (no PGDMP header)"
    if "end of file" in stderr or "could not read input file" in stderr:
        return f"the dump is truncated: it ends in the middle ({text})"
    if "could not uncompress data" in stderr or "incorrect data check" in stderr:
        return f"the dump is corrupted: a data block does not decompress ({text})"
    return text


def _last_error(stderr: str, most: int = 400) -> str:
    """pg_restore's last error: its `error:` line and the server's message lines after it (DETAIL, HINT), not
    the SQL it was running (`LINE n:`, `Command was:` and after, whose last line is often just `);`), followed
    by the TOC entry it was processing when pg_restore names it; on one line, at most `most` characters."""
    lines = stderr.strip().split("\n")
    errors = [i for i, line in enumerate(lines) if line.startswith("pg_restore: error: ")]
    if not errors:
        return escaped(lines[-1].removeprefix("pg_restore: ")).strip() or "pg_restore failed"
    first = errors[-1]
    message = [lines[first].removeprefix("pg_restore: error: ")]
    for line in lines[first + 1:]:
        if line.startswith(("Command was:", "pg_restore: ")):
            break
        if not re.match(r"LINE \d+: |\s*\^\s*$", line):  # the server's quote of the SQL, and its caret
            message.append(line)
    text = re.sub(r"\s+", " ", " ".join(message)).strip()
    entries = [line.removeprefix("pg_restore: from TOC entry ") for line in lines[:first]
               if line.startswith("pg_restore: from TOC entry ")]
    if entries:
        text += f" (at TOC entry {entries[-1].strip()})"
    text = escaped(text)
    return text if len(text) <= most else text[: most - 1] + "…"


def _safe_version() -> str:
    try:
        return tool_version("pg_restore")
    except Exception:
        return "unknown version"
