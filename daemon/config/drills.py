"""The configuration of a database's restore drills: schedules, the scratch server, the tables of the table
drill, and the smoke checks run on the restored database.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from daemon.config.fields import TABLE_NAME_SYNTAX, Duration, StrictModel, TableSpec
from daemon.core.names import parse_column, parse_table
from daemon.core.redact import REDACTOR


class HttpCheck(StrictModel):
    """An HTTP check against a staging app pointed at the restored database."""

    name: str = Field(description="Check name in the report.", examples=["login page"])
    url: str = Field(description="URL to GET.", examples=["https://staging.example.com/health"])
    status: int = Field(200, ge=100, le=599, description="Expected HTTP status.", examples=[200])


class DrillChecks(StrictModel):
    """Smoke checks run on the restored database (besides the built-in ones)."""

    sql: dict[str, str] = Field(
        default_factory=dict, description="Named SQL queries that must return true.",
        examples=[{"paid invoices have payments": "SELECT count(*) = 0 FROM invoices i WHERE i.status = 'paid' "
                   "AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.invoice_id = i.id)"}])
    min_rows: dict[str, int] = Field(default_factory=dict, description="Minimum rows per table (keys: "
                                     f"{TABLE_NAME_SYNTAX}).", examples=[{"users": 1, "invoices": 1}])
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


class DrillConfig(StrictModel):
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
                                    f"{TABLE_NAME_SYNTAX}.", examples=[["invoices", "billing.payments"]])
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
