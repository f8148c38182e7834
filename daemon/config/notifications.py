"""The configuration of where the guardian reports what it finds, besides its own HTTP endpoint: Sentry
(events and cron check-ins) and a Pushgateway (push mode).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from daemon.config.fields import Duration, Secret, StrictModel


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
