"""The configuration of a database's compliance exports: which tables are exported (each as gzip CSV, with a
manifest of checksums) from its newest good backup restored into a scratch database, how often, and how long
the exported objects are kept. Off unless configured.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from daemon.config.fields import TABLE_NAME_SYNTAX, StrictModel, TableSpec

#: Cadence names and their length in days (the overdue check adds the grace to it).
CADENCES: dict[str, int] = {"weekly": 7, "monthly": 31, "quarterly": 92, "yearly": 366}
#: When each cadence's export is due (cron, UTC): 06:00 on the 2nd, after the monthly drill of the 1st.
CRONS: dict[str, str] = {"weekly": "0 6 * * mon", "monthly": "0 6 2 * *", "quarterly": "0 6 2 1,4,7,10 *",
                         "yearly": "0 6 2 1 *"}


class ComplianceObjects(StrictModel):
    """Objects of the application (e.g. invoice PDFs) copied into the export, their checksums in the manifest; read
    with the archive's S3 connection (`archive.s3`)."""

    bucket: str | None = Field(None, description="S3 bucket holding them (default: the archive's bucket), read "
                               "with archive.s3's connection.",
                               examples=["suoops-files"])
    prefix: str = Field(description="Key prefix of the objects to copy.", examples=["invoices/pdf/"])


class ComplianceConfig(StrictModel):
    """A compliance export: each table as gzip CSV plus a manifest, written under the archive's compliance
    prefix, taken from the newest good backup restored into a proven scratch database (never production)."""

    tables: list[TableSpec] = Field(description=f"Tables to export: {TABLE_NAME_SYNTAX}.",
                                    examples=[["invoices", "users", "audit_logs", "payments"]])
    every: Literal["weekly", "monthly", "quarterly", "yearly"] = Field(
        "monthly", description="How often an export is due.", examples=["monthly"])
    keep_years: int = Field(7, ge=1, le=100, description="Years each export is kept, from its own time; "
                            "the archive's prune deletes it after that, never earlier.", examples=[7])
    objects: ComplianceObjects | None = Field(None, description="Application objects to copy with the export.")

    @field_validator("tables")
    @classmethod
    def _some(cls, tables: list[str]) -> list[str]:
        if not tables:
            raise ValueError("name at least one table to export")
        if len(set(tables)) != len(tables):
            raise ValueError("a table is listed twice")
        return tables
