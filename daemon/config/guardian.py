"""The top-level configuration, `GuardianConfig`: the process's own settings (listen address, state
directory, logging, collection interval, demo mode, state store and sharding), its sections, and the watched
databases (listed in full, or the Heroku fleet shorthand).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Literal

from platformdirs import user_state_path
from pydantic import Field, SecretStr, field_validator, model_validator

from daemon.config.actions import ActionsConfig
from daemon.config.databases import DatabaseConfig, HerokuDatabase
from daemon.config.fields import Duration, Secret, StrictModel
from daemon.config.notifications import NotificationsConfig, PushConfig, SentryConfig
from daemon.config.sources import ArchiveConfig, HerokuConfig
from daemon.config.web import WebConfig


def default_state_dir() -> Path:
    """The per-user state directory ($XDG_STATE_HOME/pg-backup-guardian on Linux, ~/.local/state/... by default):
    the same for every command a user runs, wherever it is run from."""
    return user_state_path("pg-backup-guardian", appauthor=False)


class DemoConfig(StrictModel):
    """The embedded demo used when no database is configured at all."""

    enabled: bool = Field(
        True, description="Start a throwaway local PostgreSQL when no database is configured.", examples=[True]
    )
    capture_interval: Duration = Field(
        timedelta(minutes=2), description="How often the demo database is captured.", examples=["2m"]
    )


class StateConfig(StrictModel):
    """Where the guardian keeps its history (audit log, findings, drills, actions) and how replicas share work."""

    url: Secret | None = Field(None, description="PostgreSQL URL of a shared state store (needed on Heroku, whose "
                               "disks are wiped daily, and for several replicas); none: SQLite in state_dir.",
                               examples=["postgresql://guardian:secret@db.example.com:5432/guardian"])
    leader_interval: Duration = Field(timedelta(seconds=10), description="How often replicas try for (or confirm)"
                                      " leadership; a dead leader is replaced within this time.", examples=["10s"])
    shard_count: int = Field(1, ge=1, le=1024, description="Split the databases across this many replica groups "
                             "by a stable hash of their names.", examples=[1])
    shard_index: int = Field(0, ge=0, description="This replica's group (0 .. shard_count - 1).", examples=[0])
    history_keep: Duration = Field(timedelta(days=400), description="How long the history of findings (opened, "
                                   "resolved, notified) and of Heroku's incidents (what `backup-guardian timeline` "
                                   "shows) is kept; older entries are deleted as new ones are written.",
                                   examples=["400d"])

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


class GuardianConfig(StrictModel):
    """pg-backup-guardian configuration."""

    listen: str = Field(
        "127.0.0.1:9729", description="HTTP bind address for /metrics, /healthz, /readyz, /api/status.",
        examples=["127.0.0.1:9729"],
    )
    state_dir: Path = Field(
        default_factory=lambda: default_state_dir(),
        description="Directory for the archive, the demo cluster and state (default: the per-user state directory, "
                    "e.g. ~/.local/state/pg-backup-guardian).",
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
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig,
                                               description="Chat, email, paging and webhook messages (Apprise).")
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
        check_unique_names([d.name for d in databases])
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


def check_unique_names(names: list[str]) -> None:
    dupes = sorted(n for n, count in Counter(names).items() if count > 1)  # linear: a file may list thousands
    if dupes:
        raise ValueError(f"database names must be unique; repeated: {', '.join(dupes)}")
