"""How the configuration is loaded: the YAML file (read by `daemon.config.file`), its `${VAR}` references
expanded from the environment, then the environment's own settings (`DATABASE_URL` and the explicit `GUARDIAN_*`
table), validated by the model, every problem reported at once, one line each, naming the field and where it came
from, secrets never echoed.

`${NAME}` anywhere in a string value of the file is replaced by the variable's value (an unset variable is a
configuration error naming the field and the variable); `$${NAME}` stands for a literal `${NAME}`. A value put
into a secret field this way is registered with the redactor, like one written in the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from daemon.config.fields import dotted_path
from daemon.config.file import read_config_file
from daemon.config.guardian import GuardianConfig, check_unique_names
from daemon.core.errors import ConfigError
from daemon.core.redact import REDACTOR, redact_url, shorten

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
    "GUARDIAN_HEROKU_STATUS_URL": ("heroku", "status", "url"),
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
LIST_ENV_VARS: dict[str, tuple[str, ...]] = {"GUARDIAN_HEROKU_APPS": ("heroku", "apps"),
                                             "GUARDIAN_NOTIFY_URLS": ("notifications", "urls")}
_NOT_SETTINGS = {"GUARDIAN_CONFIG", "GUARDIAN_PG_BINDIR"}  # read before/outside the model
_SECRET_FIELDS = {"url", "api_key", "dsn", "password", "secret_access_key", "scratch_url", "bearer_token",
                  "basic_auth_users", "urls"}


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
        doc = expand_env(doc, env, where, problems)

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
            check_unique_names(raw_names)
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
            items = split_urls(env[var]) if var == "GUARDIAN_NOTIFY_URLS" else env[var].split(",")
            _set_path(doc, target, [x.strip() for x in items if x.strip()])  # type: ignore[arg-type]
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


def split_urls(text: str) -> list[str]:
    """URLs separated by whitespace or commas; a comma inside a URL (Apprise's `?to=a@x.com,b@x.com`) stays,
    since only a comma followed by the next `scheme://` separates."""
    return [u for u in re.split(r"\s+|,(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)", text) if u]


_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(node: Any, env: dict[str, str], where: str, problems: list[str], at: tuple[str, ...] = ()) -> Any:
    """`node` with every `${NAME}` in its strings replaced from `env`; an unset one is a problem naming the field
    and the variable (the reference stays, so the model reports nothing more for it)."""
    if isinstance(node, dict):
        return {k: expand_env(v, env, where, problems, (*at, str(k))) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_env(v, env, where, problems, (*at, str(i))) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def value(m: re.Match[str]) -> str:
        literal, name = m.group(1), m.group(2)
        if literal:
            return m.group(0)[1:]  # $${NAME}: the text ${NAME}
        if name not in env:
            problems.append(f"{where}: {dotted_path(at) or '(top level)'}: environment variable {name} is not set "
                            f"(the file says ${{{name}}})")
            return m.group(0)
        return env[name]

    expanded = _REFERENCE.sub(value, node)
    if expanded != node and at and at[-1] in _SECRET_FIELDS:
        if at[-1].endswith("url"):
            REDACTOR.add_url(expanded)
        else:
            REDACTOR.add(expanded)
    return expanded


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
        field = shorten(dotted_path(loc), 80) or "(top level)"
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
