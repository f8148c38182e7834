"""The configuration of one watched database: where it is (a PostgreSQL URL, a Heroku database, or both), its
recovery objectives, its self-managed captures and its restore drills (`daemon.config.drills`).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.config.compliance import ComplianceConfig
from daemon.config.drills import DrillConfig
from daemon.config.fields import NAME_PATTERN, Duration, StrictModel
from daemon.core.durations import format_duration
from daemon.core.redact import REDACTOR


class RtoObjectives(StrictModel):
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


class Objectives(StrictModel):
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


class CaptureConfig(StrictModel):
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


class HerokuDatabase(StrictModel):
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


class DatabaseConfig(StrictModel):
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
    compliance: ComplianceConfig | None = Field(None, description="Scheduled compliance exports (off when absent).")

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
        if not NAME_PATTERN.match(name):
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
