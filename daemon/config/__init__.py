"""The one configuration model, and how it is loaded from a YAML file and the environment.

Sources, in order (later wins for scalar settings):
  1. defaults in the model;
  2. an optional YAML file (`--config PATH` or `GUARDIAN_CONFIG`), which can list several databases;
  3. environment variables: `DATABASE_URL` (one database, used only when the file lists none) and the
     explicit `GUARDIAN_*` table in `ENV_VARS`. An unknown `GUARDIAN_*` variable is an error (likely a typo).

Every problem is reported at once, one line each, naming the field and where it came from (the file path or
the environment variable). Secret values (database URLs) are never echoed back.

The model is split by what it configures: `fields` (types and the strict base every section shares),
`databases` (one watched database and its objectives and captures), `drills` (its restore drills), `sources`
(the archive and the Heroku API), `actions` (remedial actions and their guards), `notifications` (Sentry,
Pushgateway), `web` (the HTTP endpoint), `guardian` (the top-level `GuardianConfig`); `file` reads the YAML
file, `loading` builds the configuration from it and the environment, `example` writes the example file.
This package re-exports the names the rest of the code imports.
"""

from daemon.config.actions import TRIGGERS, ActionsConfig, EmergencyCapture, RollbackConfig, ScaleTarget, Trigger
from daemon.config.databases import CaptureConfig, DatabaseConfig, HerokuDatabase, Objectives, RtoObjectives
from daemon.config.drills import DrillChecks, DrillConfig, HttpCheck
from daemon.config.example import example_yaml
from daemon.config.fields import Duration, Secret, TableSpec
from daemon.config.guardian import DemoConfig, GuardianConfig, StateConfig
from daemon.config.loading import ENV_VARS, LIST_ENV_VARS, MAX_PROBLEM_CHARS, MAX_PROBLEMS, load_config
from daemon.config.notifications import NotificationsConfig, PushConfig, SentryConfig
from daemon.config.sources import ArchiveConfig, HerokuConfig, HerokuPolling, S3Config, TierKeeps
from daemon.config.web import TlsServerConfig, WebConfig

__all__ = [
    "ENV_VARS",
    "LIST_ENV_VARS",
    "MAX_PROBLEMS",
    "MAX_PROBLEM_CHARS",
    "TRIGGERS",
    "ActionsConfig",
    "ArchiveConfig",
    "CaptureConfig",
    "DatabaseConfig",
    "DemoConfig",
    "DrillChecks",
    "DrillConfig",
    "Duration",
    "EmergencyCapture",
    "GuardianConfig",
    "HerokuConfig",
    "HerokuDatabase",
    "HerokuPolling",
    "HttpCheck",
    "NotificationsConfig",
    "Objectives",
    "PushConfig",
    "RollbackConfig",
    "RtoObjectives",
    "S3Config",
    "ScaleTarget",
    "Secret",
    "SentryConfig",
    "StateConfig",
    "TableSpec",
    "TierKeeps",
    "TlsServerConfig",
    "Trigger",
    "WebConfig",
    "example_yaml",
    "load_config",
]
