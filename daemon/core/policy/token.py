"""The Heroku API token check: heroku_token_expiring, before the token the guardian uses stops working.

A token printed by `heroku auth:token` belongs to the CLI's login session: it expires (about a year) and is
revoked at logout, and then every Heroku read and action of the guardian fails at once. Its authorization says
how long it has left (`access_token.expires_in`, seconds from the moment it was read; null for a token that
never expires, such as one made with `heroku authorizations:create`). A token that may not list its
authorizations, or that no authorization lists, has an unknown lifetime: that is not a problem in itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from daemon.core.policy.findings import format_duration_s
from daemon.core.snapshot import Finding

CHECK = "heroku_token_expiring"
WARN_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class TokenLifetime:
    """What is known of the token's lifetime. `readable` False: unknown (`why` says why); else `expires_at` is
    None for a token that never expires. Holds no token."""

    readable: bool
    expires_at: datetime | None
    why: str
    read_at: datetime


def token_lifetime(authorization: dict[str, Any] | None, read_at: datetime) -> TokenLifetime:
    """The lifetime an authorization (as `HerokuClient.token_authorization` returns it) states at `read_at`."""
    if authorization is None:
        return TokenLifetime(False, None, "no OAuth authorization lists the token in use", read_at)
    access = authorization.get("access_token")
    expires_in = access.get("expires_in") if isinstance(access, dict) else None
    if expires_in is None:
        return TokenLifetime(True, None, "the token never expires", read_at)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        return TokenLifetime(False, None, f"access_token.expires_in is not a number: {expires_in!r}", read_at)
    return TokenLifetime(True, read_at + timedelta(seconds=expires_in), "", read_at)


def seconds_left(lifetime: TokenLifetime | None, now: datetime) -> float | None:
    """Seconds until the token expires (negative once expired); None when unknown or never expiring."""
    if lifetime is None or not lifetime.readable or lifetime.expires_at is None:
        return None
    return (lifetime.expires_at - now).total_seconds()


def token_check(database: str, lifetime: TokenLifetime | None, now: datetime,
                warn_before: timedelta = WARN_BEFORE) -> Finding:
    """heroku_token_expiring for a database watched through the Heroku API: a warning within `warn_before` of
    the expiry, critical once expired; inactive when it never expires, expires later, or is unknown (the hint
    says "unknown" and why)."""
    def result(active: bool, severity: str, hint: str, left: float | None = None) -> Finding:
        return Finding(database=database, check=CHECK, severity=severity, active=active, hint=hint,
                       observed_at=now, value=left, threshold=warn_before.total_seconds())

    if lifetime is None:
        return result(False, "warning", "unknown: the token's lifetime has not been read yet")
    if not lifetime.readable:
        return result(False, "warning", f"unknown: {lifetime.why}")
    left = seconds_left(lifetime, now)
    if left is None:
        return result(False, "warning", "the Heroku API token never expires")
    fix = ("create a long-lived token with `heroku authorizations:create -d pg-backup-guardian` and set it as "
           "HEROKU_API_KEY")
    if left <= 0:
        return result(True, "critical", f"the Heroku API token expired {format_duration_s(-left)} ago: every Heroku "
                      f"read and action fails; {fix}", left)
    if left <= warn_before.total_seconds():
        return result(True, "warning", f"the Heroku API token expires in {format_duration_s(left)}; {fix} before "
                      "then", left)
    return result(False, "warning", f"the Heroku API token expires in {format_duration_s(left)}", left)
