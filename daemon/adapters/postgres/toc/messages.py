"""pg_restore's complaints in plain words: a dump too new for this pg_restore, no dump at all, a truncated or
corrupted one, or pg_restore's own last error on one line (without the SQL it was running).
"""

from __future__ import annotations

import re

from daemon.adapters.postgres.tools import tool_version
from daemon.core.names import escaped

_TOO_NEW = re.compile(r"unsupported version \(([\d.]+)\) in file header")


def too_new(stderr: str) -> bool:
    """pg_restore refused the dump because a newer pg_dump wrote it: the dump was not judged, only the tools.
    pg_restore refuses a header version below 1.0 or above its own newest; every pg_dump since PostgreSQL 8
    writes 1.10 and up (17 writes 1.16), so a refused 1.10-1.29 is a newer pg_dump's and anything else (0.0,
    7.3, 1.200) is a damaged header, which is the dump's fault."""
    m = _TOO_NEW.search(stderr)
    if m is None:
        return False
    major, _, minor = m.group(1).partition(".")
    return major == "1" and minor.split(".")[0].isdigit() and 10 <= int(minor.split(".")[0]) < 30


#: What an unjudged verdict's error says (a dump newer than pg_restore, a stalled check): how a verdict stored before
#: `judged` existed is read back (`unjudged`).
NEWER_DUMP = "was written by a newer pg_dump"
STALLED = "the dump itself was not judged"


def unjudged(error: str | None) -> bool:
    """True when a stored verdict's error says the dump was not judged (only the tools or the check failed)."""
    return bool(error) and (NEWER_DUMP in str(error) or STALLED in str(error))


def explain(stderr: str) -> str:
    """pg_restore's complaint in plain words (version mismatches above all)."""
    text = _last_error(stderr)
    m = _TOO_NEW.search(stderr)
    if m and not too_new(stderr):
        return f"the dump's header is damaged: it claims archive format {m.group(1)}, which no pg_dump writes"
    if m:
        return (f"the dump {NEWER_DUMP} (archive format {m.group(1)}) than this pg_restore "
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
