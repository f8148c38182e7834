"""One exception tree for the whole guardian.

Adapters translate library errors (psycopg, subprocess, OS errors) into these at the boundary, so jobs
and the CLI only ever need to catch `GuardianError`. Messages never contain secrets: callers pass
redacted text (see `daemon.core.redact`).
"""


class GuardianError(Exception):
    """Root of every error the guardian raises on purpose."""


class ConfigError(GuardianError):
    """The configuration is invalid. `problems` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class CollectorError(GuardianError):
    """A collector could not read its part of the world (database down, archive unreadable)."""


class CaptureError(GuardianError):
    """A backup capture failed; the message says why in plain words."""


class ToolMissingError(GuardianError):
    """A required external program (pg_dump, initdb, ...) is not installed; the message says how to get it."""


class StoppedByShutdown(GuardianError):
    """Work stopped (or never started) because the guardian is shutting down. Not a failure: it is logged,
    and an action history record it had is closed as "interrupted"; it is never a failed backup attempt."""


class ActionDeclined(GuardianError):
    """A person asked for a change and the guards declined it (paused, kill switch, cooldown, not the leader):
    nothing was done; the message says why."""


class ActionFailed(GuardianError):
    """A person asked for a change, it ran, and it failed (the store refused it, the tool failed)."""


def one_line(exc: BaseException) -> str:
    """An exception's whole message on one line (its type when the message is empty): libpq's second line ("Is
    the server running on that host and accepting TCP/IP connections?"), every host a multi-host connection
    tried, a server's DETAIL and HINT all kept; only the server's quote of the SQL (`LINE n: ...` and the caret
    under it) left out, which repeats the statement and can run long."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    kept = [line for line in lines if line and not line.startswith("LINE ") and set(line) != {"^"}]
    return " ".join(" ".join(kept).split()) or type(exc).__name__
