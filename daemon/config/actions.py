"""The configuration of the remedial actions and their guards: the kill switch and dry run, emergency
captures (triggers, cooldown, daily cap) and app health probes that scale a Heroku formation.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from daemon.config.fields import Duration, StrictModel
from daemon.core.redact import REDACTOR

Trigger = Literal["rpo_at_risk", "rpo_breach", "missed_schedule", "last_attempt_failed", "size_anomaly"]
TRIGGERS: tuple[Trigger, ...] = ("rpo_at_risk", "rpo_breach", "missed_schedule", "last_attempt_failed",
                                 "size_anomaly")


class EmergencyCapture(StrictModel):
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


class ScaleTarget(StrictModel):
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


class RollbackConfig(StrictModel):
    """Rolling back a bad deploy (scenario 3 of the SuoOps backup and recovery procedures): when a scale probe's
    app starts failing soon after a new release and was healthy before it, roll back to the previous release."""

    enabled: bool = Field(False, description="Roll back a bad deploy (off by default; still subject to dry_run "
                          "and the kill switch).", examples=[False])
    within: Duration = Field(timedelta(minutes=30), description="Only failures that start within this time after "
                             "a new release count as caused by it.", examples=["30m"])
    max_target_age: Duration = Field(timedelta(days=7), description="Never roll back to a release older than "
                                     "this.", examples=["7d"])
    cooldown: Duration = Field(timedelta(hours=1), description="Minimum time between two rollbacks of an app.",
                               examples=["1h"])
    daily_cap: int = Field(2, ge=1, le=20, description="At most this many rollbacks of an app in 24 hours.",
                           examples=[2])


class ActionsConfig(StrictModel):
    """Remedial actions and their guards. A new install runs them dry: decisions are logged and audited, nothing
    is done, until `dry_run: false`."""

    enabled: bool = Field(True, description="Global kill switch: false stops every remedial action (captures, "
                          "scaling) at once; `backup-guardian actions pause` does the same at run time.",
                          examples=[True])
    dry_run: bool = Field(True, description="Decide and audit, but do nothing (the default on a new install).",
                          examples=[True])
    capture: EmergencyCapture = Field(default_factory=EmergencyCapture, description="Emergency captures.")
    scale: list[ScaleTarget] = Field(default_factory=list, description="App health probes and dyno scale-up.")
    rollback: RollbackConfig = Field(default_factory=RollbackConfig, description="Rolling back a bad deploy "
                                     "when a scale probe fails soon after a release (off by default).")

    @field_validator("scale")
    @classmethod
    def _unique_probes(cls, targets: list[ScaleTarget]) -> list[ScaleTarget]:
        dupes = sorted(n for n, count in Counter(t.name for t in targets).items() if count > 1)
        if dupes:
            raise ValueError(f"probe names must be unique; repeated: {', '.join(dupes)}")
        return targets
