"""Exit codes: one table for every command, the Nagios plugin convention.

`check` is sold as a Nagios/Icinga check and a cron job, so its codes are the plugin convention's, and every other
command speaks the same four words: 0 OK (done, healthy, or a dry run), 1 WARNING (nothing failed, but it did not
happen or is not right yet: at risk, declined by a guard), 2 CRITICAL (a breach, a failure, a drill or copy that
failed), 3 UNKNOWN (could not be evaluated or not attempted: a configuration error, a bad argument, an unknown
database, a state store or archive that cannot be read, a collector that is down). When several hold, `check`
reports the worst in the order CRITICAL > UNKNOWN > WARNING > OK (a breach it did see is never hidden by facts it
could not read). README's "Exit codes" table is `TABLE` (a test compares them).
"""

from __future__ import annotations

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
#: `run` after a second SIGINT/SIGTERM: the person means it (the shell's 128 + SIGINT).
INTERRUPTED = 130

#: Severity order for "the worst of several": UNKNOWN ranks above WARNING, below CRITICAL.
_RANK = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}


def worst(*codes: int) -> int:
    """The most severe of `codes` (CRITICAL > UNKNOWN > WARNING > OK); OK when there are none."""
    return max(codes, key=_RANK.__getitem__, default=OK)


#: (command, 0, 1, 2, 3): what each code means for each command; "-" where a command never uses it. Every
#: command exits 3 on a configuration error or a bad argument (the first row says so once).
TABLE: tuple[tuple[str, str, str, str, str], ...] = (
    ("every command", "-", "-", "-", "configuration error or bad argument (every problem named)"),
    ("run", "stopped cleanly (SIGTERM/SIGINT)", "-", "-", "cannot start (e.g. the listen address is taken); "
     "130 after a second signal"),
    ("check", "healthy", "at risk: a warning finding is active (a standing one, an RPO the schedule cannot meet, "
     "is shown, not counted)", "breach or failure: a critical finding is "
     "active", "cannot evaluate: no database, a collector down or stale (an `UNKNOWN:` line says which)"),
    ("health", "the daemon's heartbeat is fresh", "-", "/healthz says it is not", "nothing answered"),
    ("config validate", "valid", "-", "-", "invalid"),
    ("config example", "printed", "-", "-", "-"),
    ("archive list", "listed", "-", "-", "the archive cannot be read"),
    ("archive milestone", "marked", "declined (paused, kill switch)", "the store refused", "unknown database or "
     "backup"),
    ("archive prune", "done or dry run", "declined (paused): nothing deleted", "a deletion was refused",
     "the archive cannot be listed"),
    ("archive mirror", "every copy made (or none needed)", "-", "a copy failed", "unknown database"),
    ("drill", "every drill passed", "a drill was skipped (paused, another one running)", "a drill failed",
     "unknown database"),
    ("actions, actions pause/resume", "done", "-", "-", "the state store cannot be read or written"),
    ("capture", "done or dry run", "declined by a guard (paused, cooldown, daily cap, not the leader)",
     "the capture failed", "unknown database"),
    ("recover-rows", "the files are written (also when nothing is missing)", "skipped (paused, a drill running)",
     "the restore or the comparison failed", "bad argument: unknown database or table, no key, no such backup, "
     "--out not empty"),
    ("recovery-plan", "printed", "-", "-", "unknown database or scenario, a `--before` that is not a time"),
    ("timeline", "printed (also when nothing was recorded)", "-", "-", "a `--since` that is not a duration, a "
     "`--database` neither configured nor recorded"),
    ("compliance-export", "the export succeeded", "skipped (paused, another export running, no archive)",
     "the export failed", "unknown database, or one without a compliance section"),
)
