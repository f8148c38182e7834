"""The one configuration model, and how it is loaded from a YAML file and the environment.

Sources, in order (later wins for scalar settings):
  1. defaults in the model below;
  2. an optional YAML file (`--config PATH` or `GUARDIAN_CONFIG`), which can list several databases;
  3. environment variables: `DATABASE_URL` (one database, used only when the file lists none) and the
     explicit `GUARDIAN_*` table in `ENV_VARS`. An unknown `GUARDIAN_*` variable is an error (likely a typo).

Every problem is reported at once, one line each, naming the field and where it came from (the file path or
the environment variable). Secret values (database URLs) are never echoed back.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from daemon.config.file import read_config_file
from daemon.core.durations import format_duration, parse_duration
from daemon.core.errors import ConfigError
from daemon.core.names import parse_column, parse_table
from daemon.core.redact import REDACTOR, redact_url, shorten
from daemon.web.auth import check_bcrypt_hash, server_tls_context


def _positive(td: timedelta) -> timedelta:
    if td <= timedelta(0):
        raise ValueError("must be a positive duration")
    return td


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _register_secret(secret: SecretStr) -> SecretStr:
    """Every secret the config holds is masked wherever it might appear later (logs, messages, events)."""
    REDACTOR.add(secret.get_secret_value())
    REDACTOR.add_url(secret.get_secret_value())
    return secret


#: A secret value (token, key, password, DSN): masked by the process-wide redactor from the moment it is read.
Secret = Annotated[SecretStr, AfterValidator(_register_secret)]


def _table_name(text: str) -> str:
    parse_table(text)  # raises ValueError saying what is wrong with the spelling
    return text


#: A table as `table` (in public), `schema.table`, or with SQL double quotes: `"my.schema"."we""ird"`.
TableSpec = Annotated[str, AfterValidator(_table_name)]
_NAME_SYNTAX = ('schema.table, or table for public; a part holding dots, quotes or spaces in SQL double quotes, '
                'a quote doubled: "my.schema"."we""ird"')

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RtoObjectives(_Model):
    """Recovery time objective per scenario (the RTO column of the SuoOps backup and recovery procedures)."""

    database_corruption: Duration = Field(
        timedelta(minutes=60), description="Full restore (rehearsed by the full drill).", examples=["60m"]
    )
    accidental_deletion: Duration = Field(
        timedelta(hours=2), description="Single-table restore (rehearsed by the table drill).", examples=["2h"]
    )
    complete_failure: Duration = Field(
        timedelta(minutes=30), description="Whole application down.", examples=["30m"]
    )
    provider_outage: Duration = Field(timedelta(hours=4), description="Provider outage.", examples=["4h"])


class Objectives(_Model):
    """Recovery objectives of one database (defaults: the RTO/RPO table of the SuoOps backup and recovery
    procedures)."""

    rpo: Duration = Field(
        timedelta(hours=24), description="Maximum acceptable data loss (recovery point objective).", examples=["24h"]
    )
    rpo_at_risk_ratio: float = Field(
        0.8, gt=0, lt=1, description="Warn when data at risk reaches this share of the RPO.", examples=[0.8]
    )
    rto: RtoObjectives = Field(default_factory=RtoObjectives, description="Recovery time objectives.")
    size_anomaly_ratio: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Flag the newest good backup when it is smaller than this share of the median of the "
        "previous ones.",
        examples=[0.5],
    )
    size_anomaly_min_history: int = Field(
        3, ge=1, description="Previous good backups needed before sizes are compared.", examples=[3]
    )
    schedule_grace: Duration = Field(
        timedelta(hours=1),
        description="How long after its scheduled time a backup may start before the schedule counts as missed "
        "(for interval schedules at most half the interval).",
        examples=["1h"],
    )
    rpo_breach_tolerance_min: Duration = Field(
        timedelta(minutes=15),
        description="Least breach tolerance of a scheduled database, and the tolerance while its history is too "
        "short to learn from: data at risk may pass the RPO by this much before it is a breach (a schedule's "
        "backups start a little later some days).",
        examples=["15m"],
    )
    rpo_breach_tolerance_max: Duration = Field(
        timedelta(hours=1),
        description="Most breach tolerance a schedule can learn from its start jitter and capture time.",
        examples=["1h"],
    )

    @model_validator(mode="after")
    def _tolerance_bounds(self) -> Objectives:
        if self.rpo_breach_tolerance_min > self.rpo_breach_tolerance_max:
            raise ValueError(f"rpo_breach_tolerance_min ({format_duration(self.rpo_breach_tolerance_min)}) must not "
                             f"exceed rpo_breach_tolerance_max ({format_duration(self.rpo_breach_tolerance_max)})")
        return self


class CaptureConfig(_Model):
    """Self-managed `pg_dump -Fc` captures into the archive."""

    enabled: bool = Field(True, description="Capture backups of this database with pg_dump.", examples=[True])
    interval: Duration | None = Field(
        None,
        description="Time between scheduled captures (default: half the at-risk share of the RPO, at most 12h; "
        "must be shorter than the RPO).",
        examples=["6h"],
    )
    timeout: Duration = Field(
        timedelta(hours=2), description="A capture running longer is killed and recorded as failed.",
        examples=["2h"],
    )
    keep_last: int = Field(
        0, ge=0, description="After each capture, delete good copies beyond this many newest (0 keeps all); "
        "milestones, Object-Locked copies and the newest copy of each tier are kept regardless, every deletion "
        "is audited, and nothing is deleted while actions are paused.",
        examples=[30],
    )
    extra_args: list[str] = Field(
        default_factory=list,
        description="Extra pg_dump arguments, as a list (never a shell string).",
        examples=[["--exclude-table-data=audit_log"]],
    )

    @field_validator("extra_args")
    @classmethod
    def _no_output_flags(cls, args: list[str]) -> list[str]:
        for arg in args:
            if arg.split("=")[0] in {"-f", "--file", "-F", "--format", "-d", "--dbname"}:
                raise ValueError(f"{arg!r} is set by the guardian itself")
        return args


class HerokuDatabase(_Model):
    """A Heroku Postgres database: the app and the attachment name, resolved like the Heroku CLI does."""

    app: str = Field(description="Heroku app name (or id).", examples=["suoops-backend"])
    attachment: str = Field(
        "DATABASE", description="Attachment name (DATABASE, HEROKU_POSTGRESQL_RED, other-app::DATABASE).",
        examples=["DATABASE"],
    )

    @field_validator("attachment")
    @classmethod
    def _strip_url(cls, value: str) -> str:
        return value.removesuffix("_URL")


class HttpCheck(_Model):
    """An HTTP check against a staging app pointed at the restored database."""

    name: str = Field(description="Check name in the report.", examples=["login page"])
    url: str = Field(description="URL to GET.", examples=["https://staging.example.com/health"])
    status: int = Field(200, ge=100, le=599, description="Expected HTTP status.", examples=[200])


class DrillChecks(_Model):
    """Smoke checks run on the restored database (besides the built-in ones)."""

    sql: dict[str, str] = Field(
        default_factory=dict, description="Named SQL queries that must return true.",
        examples=[{"paid invoices have payments": "SELECT count(*) = 0 FROM invoices i WHERE i.status = 'paid' "
                   "AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id)"}])
    min_rows: dict[str, int] = Field(default_factory=dict, description="Minimum rows per table (keys: "
                                     f"{_NAME_SYNTAX}).", examples=[{"users": 1, "invoices": 1}])
    fresh_columns: dict[str, Duration] = Field(
        default_factory=dict,
        description="table.column or schema.table.column timestamps whose newest value must be at most this older "
        "than the recovery point (names quoted as in drill.tables).",
        examples=[{"invoices.created_at": "2d"}])
    http: list[HttpCheck] = Field(default_factory=list, description="HTTP checks against a staging URL.")

    @field_validator("min_rows", "fresh_columns")
    @classmethod
    def _names(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        parse = parse_table if info.field_name == "min_rows" else parse_column
        for key in value:
            try:
                parse(key)
            except ValueError as exc:
                raise ValueError(f"key {key!r}: {exc}") from None
        return value


class DrillConfig(_Model):
    """Restore drills: prove that the newest good backup restores, and measure how long it takes."""

    enabled: bool = Field(True, description="Run drills on their schedules.", examples=[True])
    scratch_url: SecretStr | None = Field(
        None, description="PostgreSQL server to restore into (a role allowed to CREATE DATABASE); default: a "
        "throwaway local cluster the guardian starts for each drill. Exactly one server: several hosts, "
        "load_balance_hosts, target_session_attrs, service files and URLs without a host are refused.",
        examples=["postgresql://drill:secret@scratch.internal:5432/postgres"])
    full_schedule: str = Field("0 4 1 * *", description="Cron (UTC) of the full drill: monthly by default.",
                               examples=["0 4 1 * *"])
    table_schedule: str = Field("0 5 1 1,4,7,10 *", description="Cron (UTC) of the table drill: quarterly.",
                                examples=["0 5 1 1,4,7,10 *"])
    tables: list[TableSpec] = Field(default_factory=list, description="Critical tables for the table drill: "
                                    f"{_NAME_SYNTAX}.", examples=[["invoices", "billing.payments"]])
    jobs: int = Field(2, ge=1, le=64, description="pg_restore --jobs.", examples=[2])
    allow_unproven_scratch: bool = Field(
        False, description="Drill into scratch_url even when the production server cannot be reached to compare "
        "identities (a Heroku-only database has no production URL here). Off: such drills are refused.",
        examples=[False])
    timeout: Duration = Field(timedelta(hours=2), description="A drill running longer is stopped and failed.",
                              examples=["2h"])
    overdue_grace: Duration = Field(timedelta(days=7), description="Slack after a drill's interval before it "
                                    "counts as overdue.", examples=["7d"])
    checks: DrillChecks = Field(default_factory=DrillChecks, description="Smoke checks.")

    @field_validator("full_schedule", "table_schedule")
    @classmethod
    def _cron(cls, expr: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(expr, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a cron expression ({exc})") from None
        return expr

    @field_validator("scratch_url")
    @classmethod
    def _scratch(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            REDACTOR.add_url(url.get_secret_value())
            if not re.match(r"^postgres(ql)?://", url.get_secret_value()):
                raise ValueError("must be a postgresql:// or postgres:// URL")
            from daemon.adapters.postgres.scratch import scratch_url_problem  # the same rule the drill applies

            problem = scratch_url_problem(url.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return url


class DatabaseConfig(_Model):
    """One watched database: a PostgreSQL URL (self-managed captures, live facts), a Heroku database, or both."""

    name: str = Field(
        description="Stable name used in metrics labels and the archive layout (default for Heroku: app/ATTACHMENT).",
        examples=["suoops-backend"],
    )
    url: SecretStr | None = Field(
        None,
        description="PostgreSQL connection URL (read-only access is enough to watch; pg_dump needs SELECT).",
        examples=["postgresql://guardian:secret@db.example.com:5432/suoops"],
    )
    heroku: HerokuDatabase | None = Field(None, description="Watch this Heroku Postgres database's backups.")
    connect_timeout: Duration = Field(
        timedelta(seconds=10), description="Timeout for connecting to the database.", examples=["10s"]
    )
    capture: CaptureConfig = Field(default_factory=CaptureConfig, description="Self-managed captures.")
    objectives: Objectives = Field(default_factory=Objectives, description="Recovery objectives.")
    drill: DrillConfig = Field(default_factory=DrillConfig, description="Restore drills.")

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and "name" not in data and isinstance(data.get("heroku"), dict):
            heroku = data["heroku"]
            if isinstance(heroku.get("app"), str):
                attachment = str(heroku.get("attachment") or "DATABASE").removesuffix("_URL")
                return {**data, "name": f"{heroku['app']}/{attachment}"}
        return data

    @model_validator(mode="after")
    def _url_or_heroku(self) -> DatabaseConfig:
        if self.url is None and self.heroku is None:
            raise ValueError("give a url, a heroku app, or both")
        explicit = self.capture.interval
        if self.self_managed and explicit is not None and explicit >= self.objectives.rpo:
            raise ValueError(f"capture.interval ({format_duration(explicit)}) must be shorter than "
                             f"objectives.rpo ({format_duration(self.objectives.rpo)}): every capture would "
                             "start after the RPO is already breached")
        return self

    @property
    def capture_interval(self) -> timedelta:
        """The configured capture interval, or one derived from the objectives so that a capture lands well
        before data is at risk: RPO x at-risk ratio / 2, at most 12 h (24 h RPO -> 9h36m)."""
        if self.capture.interval is not None:
            return self.capture.interval
        derived = self.objectives.rpo * self.objectives.rpo_at_risk_ratio / 2
        return min(derived, timedelta(hours=12))

    @property
    def self_managed(self) -> bool:
        """True when the guardian captures this database itself (it has a URL and captures are on)."""
        return self.url is not None and self.capture.enabled

    @field_validator("name")
    @classmethod
    def _valid_name(cls, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError("use letters, digits and _ . : / @ - (at most 128 characters)")
        return name

    @field_validator("url")
    @classmethod
    def _valid_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        raw = url.get_secret_value()
        REDACTOR.add_url(raw)
        if not re.match(r"^postgres(ql)?://", raw):
            raise ValueError("must be a postgresql:// or postgres:// URL")
        return url


_LOOPBACK = {"127.0.0.1", "::1", "localhost", "[::1]"}


class S3Config(_Model):
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



class TierKeeps(_Model):
    """How long each tier is kept in the archive (the retention policy of the SuoOps backup and recovery
    procedures; `null` keeps forever)."""

    daily: Duration | None = Field(timedelta(days=7), description="Copies that are neither first of week nor month.",
                                   examples=["7d"])
    weekly: Duration | None = Field(timedelta(days=35), description="First copy of each ISO week.", examples=["35d"])
    monthly: Duration | None = Field(timedelta(days=365), description="First copy of each month.", examples=["365d"])
    milestone: Duration | None = Field(None, description="Marked by a person; forever unless set.", examples=[None])


class ArchiveConfig(_Model):
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


class DemoConfig(_Model):
    """The embedded demo used when no database is configured at all."""

    enabled: bool = Field(
        True, description="Start a throwaway local PostgreSQL when no database is configured.", examples=[True]
    )
    capture_interval: Duration = Field(
        timedelta(minutes=2), description="How often the demo database is captured.", examples=["2m"]
    )


class HerokuPolling(_Model):
    """How often Heroku databases are polled: right after each schedule's window closes (its due time plus the
    usual time to finish, learned from that database's own backups), followed up while the outcome is late or a
    capture runs, and at the slow cadence otherwise."""

    fast: Duration = Field(timedelta(minutes=1), description="Shortest follow-up interval while a scheduled "
                           "backup's outcome is late or a capture runs.", examples=["1m"])
    slow: Duration = Field(timedelta(minutes=15), description="Interval otherwise.", examples=["15m"])
    window: Duration = Field(timedelta(minutes=30), description="A schedule's window (due time to expected "
                             "outcome) before the database has backup history to learn it from.", examples=["30m"])


class HerokuConfig(_Model):
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
            if not app or not _NAME.match(f"{app}/{attachment or 'DATABASE'}"):
                raise ValueError(f"{shorten(entry, 40)!r} is not 'app' or 'app::ATTACHMENT' (letters, digits, "
                                 "_ . - only)")
        return apps

    @field_validator("platform_url", "data_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("must be an http(s) URL")
        return url.rstrip("/")


class SentryConfig(_Model):
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



class PushConfig(_Model):
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



class TlsServerConfig(_Model):
    """TLS for the HTTP endpoint (the exporter-toolkit's `tls_server_config`); files are read once at start."""

    cert_file: Path = Field(description="PEM certificate (chain) the endpoint presents.",
                            examples=["/etc/guardian/tls.crt"])
    key_file: Path = Field(description="PEM private key of cert_file (unencrypted).",
                           examples=["/etc/guardian/tls.key"])
    client_ca_file: Path | None = Field(None, description="PEM CA certificates that sign client certificates "
                                        "(mutual TLS; needs a verifying client_auth_type).",
                                        examples=["/etc/guardian/clients-ca.crt"])
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] = Field(
        "NoClientCert", description="Client certificate policy, as the exporter-toolkit names it.",
        examples=["RequireAndVerifyClientCert"])
    min_version: Literal["TLS12", "TLS13"] = Field("TLS12", description="Oldest TLS version accepted.",
                                                  examples=["TLS12"])

    @model_validator(mode="after")
    def _loadable(self) -> TlsServerConfig:
        if (self.client_ca_file is None) != (self.client_auth_type == "NoClientCert"):
            raise ValueError("client_ca_file and a verifying client_auth_type (VerifyClientCertIfGiven, "
                             "RequireAndVerifyClientCert) go together")
        server_tls_context(self.cert_file, self.key_file, self.client_ca_file, self.client_auth_type,
                           self.min_version)
        return self


class WebConfig(_Model):
    """The HTTP endpoint's defences: timeouts, a bounded worker pool, optional TLS and authentication (basic
    auth with bcrypt hashes or a bearer token). /healthz stays open for container health checks."""

    config_file: Path | None = Field(
        None, description="An exporter-toolkit web config file (tls_server_config, basic_auth_users), read once at "
        "start, e.g. /etc/guardian/web-config.yml; the same keys may be given inline below instead.",
        examples=[None])
    tls_server_config: TlsServerConfig | None = Field(None, description="Serve HTTPS instead of HTTP.",
                                                      examples=[None])  # shown commented out: it needs real files
    basic_auth_users: dict[str, Secret] = Field(
        default_factory=dict, description="User name -> bcrypt hash of the password (htpasswd -nBC 10).",
        examples=[{"prometheus": "$2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze"}])
    bearer_token: Secret | None = Field(
        None, description="Accept `Authorization: Bearer <token>` (better: the GUARDIAN_WEB_TOKEN variable).",
        examples=["${GUARDIAN_WEB_TOKEN}"])
    header_timeout: Duration = Field(
        timedelta(seconds=10), description="A connection must deliver a whole request head (and finish its TLS "
        "handshake) within this time, however slowly it trickles in.", examples=["10s"])
    idle_timeout: Duration = Field(timedelta(seconds=60), description="Close a keep-alive connection idle this "
                                   "long.", examples=["60s"])
    workers: int = Field(4, ge=1, le=64, description="Threads that answer requests (slow clients hold none: "
                         "requests are read and responses written asynchronously).", examples=[4])
    max_connections: int = Field(100, ge=1, le=10000, description="Open connections beyond this wait in the "
                                 "listen backlog.", examples=[100])

    @model_validator(mode="before")
    @classmethod
    def _read_config_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("config_file"):
            return data
        path = Path(str(data["config_file"]))
        problems: list[str] = []
        doc = read_config_file(path, problems)  # the web config file is read as safely as the main one
        if problems:
            raise ValueError(f"config_file {problems[0]}")
        unknown = sorted(set(doc) - {"tls_server_config", "basic_auth_users"})
        if unknown:
            raise ValueError(f"config_file {path}: unsupported key(s) {', '.join(map(str, unknown))} "
                             "(supported: tls_server_config, basic_auth_users)")
        both = sorted(k for k in doc if k in data)
        if both:
            raise ValueError(f"{', '.join(both)}: given both inline and in config_file {path}; keep one")
        try:
            cls.model_validate(doc)  # first on its own, so that a problem names the file it is in
        except ValidationError as exc:
            raise ValueError("; ".join(f"config_file {path}: {_dotted(tuple(map(str, e['loc'])))}: "
                                       f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())) from None
        return {**data, **doc}

    @field_validator("basic_auth_users")
    @classmethod
    def _hashes(cls, users: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in users.items():
            try:
                check_bcrypt_hash(value.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"user {name!r}: {exc}") from None
        return users

    @field_validator("bearer_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return token



Trigger = Literal["rpo_at_risk", "rpo_breach", "missed_schedule", "last_attempt_failed", "size_anomaly"]
TRIGGERS: tuple[Trigger, ...] = ("rpo_at_risk", "rpo_breach", "missed_schedule", "last_attempt_failed",
                                 "size_anomaly")


class EmergencyCapture(_Model):
    """Emergency captures: a backup taken now when backups are at risk (Heroku capture or pg_dump)."""

    enabled: bool = Field(True, description="Plan emergency captures (still subject to dry_run and the kill "
                          "switch).", examples=[True])
    triggers: list[Trigger] = Field(default_factory=lambda: list(TRIGGERS),
                                    description="Findings that call for an emergency capture.",
                                    examples=[list(TRIGGERS)])
    cooldown: Duration = Field(
        timedelta(hours=2), description="No second emergency capture of a database within this time of the last "
        "manual capture (the guardian's or a person's, as the source's own history shows it).", examples=["2h"])
    daily_cap: int = Field(3, ge=1, le=100, description="At most this many emergency captures per database in "
                           "24 hours.", examples=[3])
    poll_interval: Duration = Field(timedelta(seconds=3), description="How often a Heroku capture is followed "
                                    "(the CLI's pg:backups:capture uses 3s).", examples=["3s"])
    timeout: Duration = Field(timedelta(hours=3), description="Stop following a Heroku capture after this long "
                              "(it is recorded as failed; Heroku may still finish it).", examples=["3h"])


class ScaleTarget(_Model):
    """One app health probe and the formation it may scale up (scenario 3 of the SuoOps backup and recovery
    procedures)."""

    name: str = Field(description="Stable name of the probe (a metric label).", examples=["api"])
    url: str = Field(description="URL to GET; healthy means an expected status within max_latency.",
                     examples=["https://suoops-backend.herokuapp.com/health"])
    app: str = Field(description="Heroku app whose formation is scaled.", examples=["suoops-backend"])
    process_type: str = Field("web", pattern=r"^[-\w]{1,128}$", description="Formation process type.",
                              examples=["web"])
    interval: Duration = Field(timedelta(seconds=30), description="Time between probes.", examples=["30s"])
    timeout: Duration = Field(timedelta(seconds=10), description="Probe request timeout (a timeout is a failure).",
                              examples=["10s"])
    max_latency: Duration = Field(timedelta(seconds=5), description="A slower answer counts as a failure.",
                                  examples=["5s"])
    expect_status: list[int] = Field(default_factory=lambda: [200], description="Statuses that count as healthy.",
                                     examples=[[200, 204]])
    failures: int = Field(3, ge=1, le=100, description="Consecutive failed probes before a scale-up (N).",
                          examples=[3])
    max_quantity: int = Field(4, ge=1, le=100, description="Never scale above this many dynos.", examples=[4])
    healthy_for: Duration = Field(timedelta(minutes=15), description="Scale back to the baseline after this long "
                                  "healthy (M).", examples=["15m"])
    cooldown: Duration = Field(timedelta(minutes=10), description="Minimum time between two scale changes.",
                               examples=["10m"])
    daily_cap: int = Field(6, ge=1, le=100, description="At most this many scale changes in 24 hours.",
                           examples=[6])

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://", url):
            raise ValueError("must be an http:// or https:// URL")
        REDACTOR.add_url(url)  # a probe URL may carry credentials or a token in its query
        return url


class ActionsConfig(_Model):
    """Remedial actions and their guards. A new install runs them dry: decisions are logged and audited, nothing
    is done, until `dry_run: false`."""

    enabled: bool = Field(True, description="Global kill switch: false stops every remedial action (captures, "
                          "scaling) at once; `backup-guardian actions pause` does the same at run time.",
                          examples=[True])
    dry_run: bool = Field(True, description="Decide and audit, but do nothing (the default on a new install).",
                          examples=[True])
    capture: EmergencyCapture = Field(default_factory=EmergencyCapture, description="Emergency captures.")
    scale: list[ScaleTarget] = Field(default_factory=list, description="App health probes and dyno scale-up.")

    @field_validator("scale")
    @classmethod
    def _unique_probes(cls, targets: list[ScaleTarget]) -> list[ScaleTarget]:
        dupes = sorted(n for n, count in Counter(t.name for t in targets).items() if count > 1)
        if dupes:
            raise ValueError(f"probe names must be unique; repeated: {', '.join(dupes)}")
        return targets


class StateConfig(_Model):
    """Where the guardian keeps its history (audit log, findings, drills, actions) and how replicas share work."""

    url: Secret | None = Field(None, description="PostgreSQL URL of a shared state store (needed on Heroku, whose "
                               "disks are wiped daily, and for several replicas); none: SQLite in state_dir.",
                               examples=["postgresql://guardian:secret@db.example.com:5432/guardian"])
    leader_interval: Duration = Field(timedelta(seconds=10), description="How often replicas try for (or confirm)"
                                      " leadership; a dead leader is replaced within this time.", examples=["10s"])
    shard_count: int = Field(1, ge=1, le=1024, description="Split the databases across this many replica groups "
                             "by a stable hash of their names.", examples=[1])
    shard_index: int = Field(0, ge=0, description="This replica's group (0 .. shard_count - 1).", examples=[0])

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not re.match(r"^postgres(ql)?://", url.get_secret_value()):
            raise ValueError("must be a postgresql:// or postgres:// URL")
        return url

    @model_validator(mode="after")
    def _index_in_range(self) -> StateConfig:
        if self.shard_index >= self.shard_count:
            raise ValueError(f"shard_index ({self.shard_index}) must be below shard_count ({self.shard_count})")
        return self


class GuardianConfig(_Model):
    """pg-backup-guardian configuration."""

    listen: str = Field(
        "127.0.0.1:9729", description="HTTP bind address for /metrics, /healthz, /readyz, /api/status.",
        examples=["127.0.0.1:9729"],
    )
    state_dir: Path = Field(
        Path("guardian-state"), description="Directory for the archive, the demo cluster and state.",
        examples=["/var/lib/guardian"],
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people, json (one object a line) for log drains.", examples=["text"]
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Minimum log level.", examples=["INFO"]
    )
    collect_interval: Duration = Field(
        timedelta(seconds=30), description="Time between collection passes.", examples=["30s"]
    )
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig, description="Archive store.")
    demo: DemoConfig = Field(default_factory=DemoConfig, description="Embedded demo mode.")
    heroku: HerokuConfig = Field(default_factory=HerokuConfig, description="Heroku API access and fleet.")
    sentry: SentryConfig = Field(default_factory=SentryConfig, description="Sentry notifications.")
    push: PushConfig = Field(default_factory=PushConfig, description="Pushgateway push mode.")
    actions: ActionsConfig = Field(default_factory=ActionsConfig, description="Remedial actions and guards.")
    state: StateConfig = Field(default_factory=StateConfig, description="State store, leadership, sharding.")
    web: WebConfig = Field(default_factory=WebConfig, description="HTTP endpoint timeouts, TLS and authentication.")
    databases: list[DatabaseConfig] = Field(
        default_factory=list, description="Watched databases.", examples=[[{}]]
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        bad_host = ":" in host and not (host.startswith("[") and host.endswith("]"))
        bad_port = not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536
        if not sep or not host or bad_host or bad_port:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9729 or [::1]:9729")
        return listen

    @field_validator("databases")
    @classmethod
    def _unique_names(cls, databases: list[DatabaseConfig]) -> list[DatabaseConfig]:
        _check_unique([d.name for d in databases])
        return databases

    @model_validator(mode="after")
    def _heroku_needs_a_token(self) -> GuardianConfig:
        if self.heroku_databases and self.heroku.api_key is None:
            raise ValueError("Heroku databases are configured but no API token: set HEROKU_API_KEY")
        if self.actions.scale and self.heroku.api_key is None:
            raise ValueError("actions.scale needs a Heroku API token with write access: set HEROKU_API_KEY")
        return self

    @property
    def heroku_databases(self) -> list[DatabaseConfig]:
        return [d for d in self.all_databases if d.heroku is not None]

    @property
    def all_databases(self) -> list[DatabaseConfig]:
        """`databases` plus the fleet shorthand `heroku.apps` (skipping apps listed in full already)."""
        listed = {(d.heroku.app, d.heroku.attachment) for d in self.databases if d.heroku is not None}
        names = {d.name for d in self.databases}
        out = list(self.databases)
        for entry in self.heroku.apps:
            app, _, attachment = entry.partition("::")
            attachment = (attachment or "DATABASE").removesuffix("_URL")
            name = f"{app}/{attachment}"
            if (app, attachment) not in listed and name not in names:
                out.append(DatabaseConfig(name=name, heroku=HerokuDatabase(app=app, attachment=attachment)))
                names.add(name)
        return out

    @property
    def archive_dir(self) -> Path:
        return self.archive.path or self.state_dir / "archive"

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _check_unique(names: list[str]) -> None:
    dupes = sorted(n for n, count in Counter(names).items() if count > 1)  # linear: a file may list thousands
    if dupes:
        raise ValueError(f"database names must be unique; repeated: {', '.join(dupes)}")


# ---------------------------------------------------------------------------------------------------------
# Loading

#: Environment variable -> (path in the config document, applies to the DATABASE_URL database only).
ENV_VARS: dict[str, tuple[str, ...]] = {
    "GUARDIAN_LISTEN": ("listen",),
    "GUARDIAN_STATE_DIR": ("state_dir",),
    "GUARDIAN_LOG_FORMAT": ("log_format",),
    "GUARDIAN_LOG_LEVEL": ("log_level",),
    "GUARDIAN_COLLECT_INTERVAL": ("collect_interval",),
    "GUARDIAN_ARCHIVE_DIR": ("archive", "path"),
    "GUARDIAN_DEMO": ("demo", "enabled"),
    "GUARDIAN_DATABASE_NAME": ("databases", "0", "name"),
    "GUARDIAN_CAPTURE_INTERVAL": ("databases", "0", "capture", "interval"),
    "GUARDIAN_CAPTURE_ENABLED": ("databases", "0", "capture", "enabled"),
    "GUARDIAN_RPO": ("databases", "0", "objectives", "rpo"),
    "HEROKU_API_KEY": ("heroku", "api_key"),
    "GUARDIAN_HEROKU_PLATFORM_URL": ("heroku", "platform_url"),
    "GUARDIAN_HEROKU_DATA_URL": ("heroku", "data_url"),
    "GUARDIAN_HEROKU_RATE_BUDGET_SHARE": ("heroku", "rate_budget_share"),
    "GUARDIAN_ARCHIVE_KIND": ("archive", "kind"),
    "GUARDIAN_S3_BUCKET": ("archive", "s3", "bucket"),
    "GUARDIAN_S3_PREFIX": ("archive", "s3", "prefix"),
    "GUARDIAN_S3_ENDPOINT_URL": ("archive", "s3", "endpoint_url"),
    "GUARDIAN_S3_REGION": ("archive", "s3", "region"),
    "GUARDIAN_S3_SSE": ("archive", "s3", "sse"),
    "GUARDIAN_S3_KMS_KEY_ID": ("archive", "s3", "kms_key_id"),
    "SENTRY_DSN": ("sentry", "dsn"),
    "SENTRY_ENVIRONMENT": ("sentry", "environment"),
    "GUARDIAN_PUSHGATEWAY_URL": ("push", "url"),
    "GUARDIAN_PUSH_INSTANCE": ("push", "instance"),
    "GUARDIAN_PUSH_USERNAME": ("push", "username"),
    "GUARDIAN_PUSH_PASSWORD": ("push", "password"),
    "GUARDIAN_ACTIONS_ENABLED": ("actions", "enabled"),
    "GUARDIAN_DRY_RUN": ("actions", "dry_run"),
    "GUARDIAN_STATE_URL": ("state", "url"),
    "GUARDIAN_SHARD_COUNT": ("state", "shard_count"),
    "GUARDIAN_SHARD_INDEX": ("state", "shard_index"),
    "GUARDIAN_WEB_CONFIG_FILE": ("web", "config_file"),
    "GUARDIAN_WEB_TOKEN": ("web", "bearer_token"),
}
#: Comma-separated list variables -> path.
LIST_ENV_VARS: dict[str, tuple[str, ...]] = {"GUARDIAN_HEROKU_APPS": ("heroku", "apps")}
_NOT_SETTINGS = {"GUARDIAN_CONFIG", "GUARDIAN_PG_BINDIR"}  # read before/outside the model
_SECRET_FIELDS = {"url", "api_key", "dsn", "password", "secret_access_key", "scratch_url", "bearer_token",
                  "basic_auth_users"}


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None) -> GuardianConfig:
    """Build the configuration from the optional YAML file and the environment.

    Raises ConfigError listing every problem (one line each, naming field and source).
    """
    env = dict(os.environ if environ is None else environ)
    path = path or env.get("GUARDIAN_CONFIG") or None
    doc: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}  # path prefix -> where it came from (for error lines)
    problems: list[str] = []
    where = str(path) if path else "environment"
    if path:
        doc = read_config_file(Path(path), problems)

    unknown = sorted(k for k in env if k.startswith("GUARDIAN_") and k not in ENV_VARS
                     and k not in LIST_ENV_VARS and k not in _NOT_SETTINGS)
    for key in unknown:
        problems.append(f"environment variable {shorten(key, 80)}: unknown setting (known: "
                        f"{', '.join(sorted(ENV_VARS))})")

    database_url = env.get("DATABASE_URL")
    file_dbs = doc.get("databases")
    if file_dbs is not None and not isinstance(file_dbs, list):
        problems.append(f"{where}: databases: must be a list of databases, not {type(file_dbs).__name__}")
        file_dbs = None
        doc.pop("databases")
    elif isinstance(file_dbs, list):
        # Checked on the raw document too: pydantic skips the field validator when an entry is invalid.
        raw_names: list[str] = [d["name"] for d in file_dbs if isinstance(d, dict) and isinstance(d.get("name"), str)]
        try:
            _check_unique(raw_names)
        except ValueError as exc:
            problems.append(f"{where}: databases: {exc}")
    if database_url and not file_dbs:
        REDACTOR.add_url(database_url)
        doc["databases"] = [{"name": _name_from_url(database_url), "url": database_url}]
        origin[("databases", "0", "url")] = "environment variable DATABASE_URL"
        origin[("databases", "0", "name")] = "environment variable DATABASE_URL"
    for var, target in ENV_VARS.items():
        if var not in env:
            continue
        if target[0] == "databases" and not (database_url and not file_dbs):
            problems.append(f"environment variable {var}: applies only to the database given in DATABASE_URL")
            continue
        _set_path(doc, target, env[var])
        origin[target] = f"environment variable {var}"
    for var, target in LIST_ENV_VARS.items():
        if env.get(var):
            _set_path(doc, target, [x.strip() for x in env[var].split(",") if x.strip()])  # type: ignore[arg-type]
            origin[target] = f"environment variable {var}"

    if problems and not doc:
        raise ConfigError(_bounded(problems))
    try:
        config = GuardianConfig.model_validate(doc)
    except ValidationError as exc:
        problems.extend(_describe(exc, where, origin))
    if problems:
        raise ConfigError(_bounded(list(dict.fromkeys(problems))))  # the raw and model uniqueness checks may agree
    return config


#: At most this many problem lines, each at most MAX_PROBLEM_CHARS long: a file of 10,000 bad entries or one
#: huge value gives a screenful, not megabytes.
MAX_PROBLEMS, MAX_PROBLEM_CHARS = 50, 500


def _bounded(problems: list[str]) -> list[str]:
    lines = [shorten(line, MAX_PROBLEM_CHARS) for line in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        lines.append(f"... and {len(problems) - MAX_PROBLEMS:,} more problems")
    return lines


def _set_path(doc: dict[str, Any], target: tuple[str, ...], value: str) -> None:
    node: Any = doc
    for i, key in enumerate(target[:-1]):
        nxt_is_index = target[i + 1].isdigit()
        if key.isdigit():
            node = node[int(key)]
            continue
        if key not in node or not isinstance(node[key], dict | list):
            node[key] = [] if nxt_is_index else {}
        if nxt_is_index and not node[key]:
            node[key].append({})
        node = node[key]
    node[target[-1]] = value


def _name_from_url(url: str) -> str:
    from urllib.parse import urlsplit

    try:
        dbname = urlsplit(url).path.lstrip("/")
    except ValueError:
        dbname = ""
    return dbname or "database"


def _describe(exc: ValidationError, where: str, origin: dict[tuple[str, ...], str]) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        source = where
        for n in range(len(loc), 0, -1):
            if loc[:n] in origin:
                source = origin[loc[:n]]
                break
        field = shorten(_dotted(loc), 80) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        msg = msg.removeprefix("Value error, ")
        shown = ""
        if err["type"] not in {"missing", "extra_forbidden"} and not (set(loc) & _SECRET_FIELDS):
            value = err.get("input")
            if isinstance(value, str | int | float | bool):
                shown = f" (got {_shown(value)})"
        lines.append(REDACTOR(f"{source}: {field}: {shorten(msg, 300)}{shown}"))
    return lines


def _shown(value: str | int | float | bool, limit: int = 80) -> str:
    """The value as it may be echoed: passwords masked, and a long one cut, saying how long it was in all."""
    if not isinstance(value, str) or len(value) <= limit:
        return shorten(redact_url(repr(value)), limit)
    return f"{redact_url(value)[:limit]!r}... ({len(value):,} characters in all)"  # masked before it is cut


def _dotted(loc: tuple[str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


# ---------------------------------------------------------------------------------------------------------
# The example file, generated from the model so it cannot drift from it.


def example_yaml() -> str:
    """A commented example configuration listing every field with its description and example."""
    lines = ["# pg-backup-guardian configuration (generated by `backup-guardian config example`).",
             "# Every key is optional except databases[].name and databases[].url."]
    _emit(GuardianConfig, lines, indent="")
    return "\n".join(lines) + "\n"


def _emit(model: type[BaseModel], lines: list[str], indent: str, first_prefix: str | None = None) -> None:
    prefix = first_prefix
    for name, field in model.model_fields.items():
        lead = prefix if prefix is not None else indent
        prefix = None
        if field.description:
            lines.append(f"{indent}# {field.description}")
        sub = _submodel(field.annotation)
        if sub is not None and field.examples == [None]:  # an optional section the example cannot fill in
            nested = [f"{lead}{name}:"]
            _emit(sub, nested, indent + "  ")
            lines.append(f"{indent}# (to use it, remove the leading '#: ' and point it at real files)")
            lines.extend(f"{indent}#: {line[len(indent):]}" for line in nested)
        elif sub is not None and not _is_list(field.annotation):
            lines.append(f"{lead}{name}:")
            _emit(sub, lines, indent + "  ")
        elif sub is not None:
            lines.append(f"{lead}{name}:")
            _emit(sub, lines, indent + "    ", first_prefix=indent + "  - ")
        else:
            value = field.examples[0] if field.examples else field.default
            dumped = yaml.safe_dump({name: value}, default_flow_style=True, width=200).strip()
            lines.append(f"{lead}{dumped[1:-1].strip()}")


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _is_list(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is list
