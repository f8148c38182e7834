"""The configuration of where backups come from and go to, shared by every database: the archive (a local
directory or an S3-compatible bucket, and its retention per tier) and the Heroku API (access and polling).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from daemon.config.fields import NAME_PATTERN, Duration, Secret, StrictModel
from daemon.core.redact import shorten

_LOOPBACK = {"127.0.0.1", "::1", "localhost", "[::1]"}


class S3Config(StrictModel):
    """An S3-compatible bucket (AWS by default; MinIO, R2, B2 through endpoint_url)."""

    bucket: str = Field(description="Bucket name.", examples=["suoops-backups"])
    prefix: str = Field("pg-backup-guardian", description="Key prefix; each database gets its own folder below it.",
                        examples=["pg-backup-guardian"])
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (default: AWS).",
                                     examples=["https://s3.eu-central-1.amazonaws.com"])
    region: str = Field("us-east-1", description="Region.", examples=["eu-central-1"])
    access_key_id: Secret | None = Field(
        None, description="Access key id (default: the usual AWS variables, profile or instance role).",
        examples=["${AWS_ACCESS_KEY_ID}"])
    secret_access_key: Secret | None = Field(None, description="Secret access key (default: as above).",
                                                examples=["${AWS_SECRET_ACCESS_KEY}"])
    sse: Literal["AES256", "aws:kms"] = Field("AES256", description="Server-side encryption on every put.",
                                              examples=["aws:kms"])
    kms_key_id: str | None = Field(None, description="KMS key for sse aws:kms (default: the AWS managed key).",
                                   examples=["arn:aws:kms:eu-central-1:111122223333:key/abcd-1234"])
    part_size_mb: int = Field(8, ge=5, le=512, description="Multipart part size (raised for a dump of known size "
                              "so it fits S3's 10,000 parts). About 48 MiB of parts are sent at once (at least 2).",
                              examples=[8])
    timeout: Duration = Field(timedelta(seconds=60), description="Connect and read timeout of S3 calls.",
                              examples=["60s"])

    @field_validator("endpoint_url")
    @classmethod
    def _tls(cls, url: str | None) -> str | None:
        if url is None:
            return None
        m = re.match(r"^(https?)://(\[[^\]]+\]|[^/:]+)", url)
        if not m:
            raise ValueError("must be an http(s) URL")
        if m.group(1) == "http" and m.group(2) not in _LOOPBACK:
            raise ValueError("must use https: backups travel encrypted (plain http only for 127.0.0.1/::1)")
        return url.rstrip("/")


class TierKeeps(StrictModel):
    """How long each tier is kept in the archive (the retention policy of the SuoOps backup and recovery
    procedures; `null` keeps forever)."""

    daily: Duration | None = Field(timedelta(days=7), description="Copies that are neither first of week nor month.",
                                   examples=["7d"])
    weekly: Duration | None = Field(timedelta(days=35), description="First copy of each ISO week.", examples=["35d"])
    monthly: Duration | None = Field(timedelta(days=365), description="First copy of each month.", examples=["365d"])
    milestone: Duration | None = Field(None, description="Marked by a person; forever unless set.", examples=[None])


class ArchiveConfig(StrictModel):
    """Where captures are written and Heroku backups mirrored: a local directory or an S3-compatible bucket."""

    kind: Literal["local", "s3"] = Field("local", description="Archive store kind.", examples=["s3"])
    path: Path | None = Field(
        None, description="Archive directory (default: <state_dir>/archive).", examples=["/var/lib/guardian/archive"]
    )
    s3: S3Config | None = Field(None, description="The bucket, when kind is s3.")
    keeps: TierKeeps = Field(default_factory=TierKeeps, description="Retention per tier.")
    mirror: bool | None = Field(
        None, description="Copy each new good Heroku backup into the archive (default: on for s3, off for a local "
        "directory, which a Heroku dyno wipes daily).", examples=[True])

    @property
    def mirrors(self) -> bool:
        return self.mirror if self.mirror is not None else self.kind == "s3"
    copy_grace: Duration = Field(timedelta(hours=2),
                                 description="A provider backup not archived this long after it finished is a "
                                 "copy-lag finding.", examples=["2h"])
    prune_apply: bool = Field(False, description="Let the daily prune delete (default: dry run, listing what it "
                              "would delete).", examples=[False])
    gap_grace: Duration = Field(timedelta(hours=12),
                                description="Slack added to each tier's cadence before an archive gap is reported.",
                                examples=["12h"])

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> ArchiveConfig:
        if self.kind == "s3" and self.s3 is None:
            raise ValueError("kind s3 needs an s3: section with at least a bucket")
        return self


class HerokuPolling(StrictModel):
    """How often Heroku databases are polled: right after each schedule's window closes (its due time plus the
    usual time to finish, learned from that database's own backups), followed up while the outcome is late or a
    capture runs, and at the slow cadence otherwise."""

    fast: Duration = Field(timedelta(minutes=1), description="Shortest follow-up interval while a scheduled "
                           "backup's outcome is late or a capture runs.", examples=["1m"])
    slow: Duration = Field(timedelta(minutes=15), description="Interval otherwise.", examples=["15m"])
    window: Duration = Field(timedelta(minutes=30), description="A schedule's window (due time to expected "
                             "outcome) before the database has backup history to learn it from.", examples=["30m"])


class HerokuStatusConfig(StrictModel):
    """Heroku's public status API (status.heroku.com), polled while some Heroku source or scale target is
    configured: its incidents on Data or Apps annotate findings and hold back actions against Heroku."""

    enabled: bool = Field(True, description="Poll Heroku's status API (false: never ask it).", examples=[True])
    url: str = Field("https://status.heroku.com", description="Base URL of the status API "
                     "(`/api/v4/current-status` is asked of it; the Heroku CLI's HEROKU_STATUS_HOST).",
                     examples=["https://status.heroku.com"])
    interval: Duration = Field(timedelta(minutes=3), description="How often it is polled.", examples=["3m"])
    timeout: Duration = Field(timedelta(seconds=5), description="Timeout of one poll; a timeout marks the "
                              "collector down and changes nothing else.", examples=["5s"])

    @field_validator("url")
    @classmethod
    def _status_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http(s) URL")
        return url.rstrip("/")


class HerokuConfig(StrictModel):
    """Heroku API access, shared by every Heroku database."""

    api_key: Secret | None = Field(
        None, description="API token (better: the HEROKU_API_KEY variable). Read-only scope is enough to watch.",
        examples=["${HEROKU_API_KEY}"],
    )
    platform_url: str = Field("https://api.heroku.com", description="Platform API base URL.",
                              examples=["https://api.heroku.com"])
    data_url: str = Field("https://api.data.heroku.com", description="Postgres Data API base URL.",
                          examples=["https://api.data.heroku.com"])
    timeout: Duration = Field(timedelta(seconds=15), description="Timeout of every API call.", examples=["15s"])
    retries: int = Field(3, ge=0, le=10, description="Retries on 5xx and connection errors.", examples=[3])
    rate_budget_share: float = Field(
        0.5, gt=0, le=1,
        description="Share of the account's rate budget (4,500 requests/hour) the guardian may spend.",
        examples=[0.5],
    )
    polling: HerokuPolling = Field(default_factory=HerokuPolling, description="Adaptive polling.")
    status: HerokuStatusConfig = Field(default_factory=HerokuStatusConfig,
                                       description="Heroku's public status API (incidents on Data and Apps).")
    token_warn_before: Duration = Field(
        timedelta(days=30),
        description="Warn (heroku_token_expiring) this long before the API token expires, when its expiry can be "
                    "read; a token made with `heroku authorizations:create` never expires.",
        examples=["30d"],
    )
    apps: list[str] = Field(
        default_factory=list,
        description="Fleet shorthand: apps to watch with default objectives ('app' or 'app::ATTACHMENT').",
        examples=[["suoops-backend", "billing-api::HEROKU_POSTGRESQL_RED"]],
    )


    @field_validator("apps")
    @classmethod
    def _app_names(cls, apps: list[str]) -> list[str]:
        # Checked here, where the field can be named: each entry becomes a database name in all_databases.
        for entry in apps:
            app, _, attachment = entry.partition("::")
            if not app or not NAME_PATTERN.match(f"{app}/{attachment or 'DATABASE'}"):
                raise ValueError(f"{shorten(entry, 40)!r} is not 'app' or 'app::ATTACHMENT' (letters, digits, "
                                 "_ . - only)")
        return apps

    @field_validator("platform_url", "data_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http(s) URL")
        return url.rstrip("/")
