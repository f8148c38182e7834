"""The configuration of where the guardian reports what it finds, besides its own HTTP endpoint: Sentry
(events and cron check-ins), Apprise URLs (chat, email, paging, webhooks) and a Pushgateway (push mode).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, time, timedelta
from typing import Annotated
from urllib.parse import unquote

from pydantic import AfterValidator, Field, SecretStr, field_validator

from daemon.config.fields import Duration, Secret, StrictModel
from daemon.core.redact import REDACTOR, shorten


class SentryConfig(StrictModel):
    """Sentry: events when a finding opens, Crons check-ins for freshness, jobs and the guardian itself."""

    dsn: Secret | None = Field(None, description="Sentry DSN (better: the SENTRY_DSN variable); none: log only.",
                                  examples=["${SENTRY_DSN}"])
    environment: str = Field("production", description="Sentry environment.", examples=["production"])
    reminder: Duration = Field(timedelta(hours=24), description="Re-send an open finding this often.",
                               examples=["24h"])
    flap_window: Duration = Field(
        timedelta(minutes=15), description="A finding that closes and opens again within this window is the same "
        "incident (no new event); a close is announced (check-in ok, log) only after it stayed closed this long.",
        examples=["15m"])


class PushConfig(StrictModel):
    """Push mode: send the metrics to a Pushgateway after every collection (Heroku worker dynos get no inbound
    HTTP)."""

    url: str | None = Field(None, description="Pushgateway base URL; none: push mode off.",
                            examples=["https://pushgateway.example.com"])
    job: str = Field("pg-backup-guardian", description="The job label of the pushed group.",
                     examples=["pg-backup-guardian"])
    instance: str | None = Field(None, description="Grouping key instance (default: the host name).",
                                 examples=["suoops-guardian"])
    username: str | None = Field(None, description="Basic auth user.", examples=["guardian"])
    password: Secret | None = Field(None, description="Basic auth password (better: GUARDIAN_PUSH_PASSWORD).",
                                       examples=["${GUARDIAN_PUSH_PASSWORD}"])


def _apprise_url(url: SecretStr) -> SecretStr:
    """An URL Apprise can read (scheme known, required tokens present); the error shows the scheme only, since
    the rest of the URL carries the endpoint's token."""
    import apprise  # imported only when URLs are configured: it loads every service plugin

    text = url.get_secret_value().strip()
    with _apprise_silenced():  # Apprise logs an URL it cannot read in full, token and all
        plugin = apprise.Apprise.instantiate(text)
    if plugin is None:
        scheme = text.split("://", 1)[0] if "://" in text else ""
        shown = f"{shorten(scheme, 20)}://" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else "no scheme"
        raise ValueError(f"Apprise cannot read this URL ({shown}; the rest is not shown: it holds the token)")
    # Tokens in the path (slack://A/B/C, tgram://bot:token) are no URL password: register each piece Apprise
    # itself hides when it prints the URL privately (host, port, user and plain path words stay readable).
    shown_pieces = set(_pieces(unquote(plugin.url(privacy=True))))
    for piece in _pieces(text):
        if piece not in shown_pieces:
            REDACTOR.add(piece)
            REDACTOR.add(unquote(piece))
    return SecretStr(text)


@contextmanager
def _apprise_silenced() -> Iterator[None]:
    log = logging.getLogger("apprise")
    was = log.disabled
    log.disabled = True
    try:
        yield
    finally:
        log.disabled = was


def _pieces(url: str) -> list[str]:
    """The parts of an URL between its delimiters (scheme excluded)."""
    return [p for p in re.split(r"[/@:?&=,#]+", url.split("://", 1)[-1]) if p]


#: One Apprise notification URL: a secret (it carries the endpoint's token), checked by Apprise at load time.
NotifyUrl = Annotated[Secret, AfterValidator(_apprise_url)]
_DIGEST_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class NotificationsConfig(StrictModel):
    """Messages to where the team already is (Slack, Teams, email, Telegram, Discord, PagerDuty, webhooks)
    through Apprise: when a finding opens, while it stays open (at sentry.reminder), when it resolves."""

    urls: list[NotifyUrl] = Field(
        default_factory=list, description="Apprise URLs (better: GUARDIAN_NOTIFY_URLS, whitespace- or "
        "comma-separated); each is a secret. See https://github.com/caronc/apprise/wiki for every service.",
        examples=[["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#backups",
                   "mailtos://user:app-password@gmail.com"]])
    digest: str | None = Field(None, description="Daily digest of every database's state at this time (HH:MM, "
                               "UTC); none: no digest.", examples=["08:00"])

    @field_validator("digest")
    @classmethod
    def _hh_mm(cls, digest: str | None) -> str | None:
        if digest is not None and not _DIGEST_TIME.match(digest):
            raise ValueError("must be a time of day HH:MM (UTC), e.g. 08:00")
        return digest

    @property
    def digest_time(self) -> time | None:
        """The digest time as a UTC time of day, or None."""
        if self.digest is None:
            return None
        hours, minutes = self.digest.split(":")
        return time(int(hours), int(minutes), tzinfo=UTC)
