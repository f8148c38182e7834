"""Configuration: defaults, YAML file plus environment, every problem reported at once without secrets, the
generated example, human durations, and the `config` CLI's exit codes."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from daemon.config import GuardianConfig, Objectives, example_yaml, load_config
from daemon.core.durations import format_duration, parse_duration
from daemon.core.errors import ConfigError
from tests.support import REPO

PG_URL = "postgresql://guardian:pw-file@db.example.com:5432/shop"


def write(tmp_path: Path, text: str, name: str = "guardian.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def problems_of(path: Path | None, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, environ or {})
    assert err.value.problems, "a ConfigError must list at least one problem"
    assert str(err.value) == "\n".join(err.value.problems)
    return err.value.problems


# -- defaults and layering --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("scenario", "rto"),
    [
        ("database_corruption", timedelta(minutes=60)),
        ("accidental_deletion", timedelta(hours=2)),
        ("complete_failure", timedelta(minutes=30)),
        ("provider_outage", timedelta(hours=4)),
    ],
)
def test_default_rto_per_scenario_is_the_seed_table(tmp_path: Path, scenario: str, rto: timedelta) -> None:
    config = load_config(write(tmp_path, f"databases:\n  - name: shop\n    url: {PG_URL}\n"), {})

    assert getattr(config.databases[0].objectives.rto, scenario) == rto
    assert getattr(Objectives().rto, scenario) == rto


def test_default_rpo_is_24h_with_warning_at_80_percent() -> None:
    assert Objectives().rpo == timedelta(hours=24)
    assert Objectives().rpo_at_risk_ratio == 0.8


def test_no_file_and_empty_environment_gives_defaults_and_no_database() -> None:
    config = load_config(None, {})

    assert config == GuardianConfig()
    assert config.databases == []
    assert config.listen_host_port == ("127.0.0.1", 9729)
    assert config.archive_dir == config.state_dir / "archive"


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}) == GuardianConfig()


def test_several_databases_each_with_their_own_objectives(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        databases:
          - name: shop
            url: {PG_URL}
            objectives:
              rpo: 1h
              rpo_at_risk_ratio: 0.5
              rto:
                database_corruption: 15m
          - name: analytics/warehouse
            url: postgres://reader:pw-two@warehouse:5432/dw
            capture:
              interval: 7d
            objectives:
              rpo: 8d
    """)

    config = load_config(path, {})

    shop, warehouse = config.databases
    assert (shop.name, warehouse.name) == ("shop", "analytics/warehouse")
    assert shop.objectives.rpo == timedelta(hours=1)
    assert shop.objectives.rpo_at_risk_ratio == 0.5
    assert shop.objectives.rto.database_corruption == timedelta(minutes=15)
    assert shop.objectives.rto.provider_outage == timedelta(hours=4)  # unset scenarios keep the default
    assert warehouse.objectives.rto == Objectives().rto
    assert warehouse.capture_interval == timedelta(days=7)
    assert shop.capture_interval == timedelta(minutes=15)  # derived: 1h RPO x 0.5 at-risk share / 2
    assert warehouse.url is not None
    assert warehouse.url.get_secret_value() == "postgres://reader:pw-two@warehouse:5432/dw"


def test_capture_interval_not_shorter_than_the_rpo_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        databases:
          - name: shop
            url: {PG_URL}
            capture:
              interval: 24h
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert "databases[0]: capture.interval (1d) must be shorter than objectives.rpo (1d)" in str(err.value)


def test_database_url_is_used_when_no_file_is_given() -> None:
    config = load_config(None, {"DATABASE_URL": "postgres://u:pw-env@host:5432/d8f3kq"})

    [db] = config.databases
    assert db.name == "d8f3kq"
    assert db.url.get_secret_value() == "postgres://u:pw-env@host:5432/d8f3kq"


def test_database_url_is_used_when_the_file_lists_no_databases(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 0.0.0.0:9000\n")

    config = load_config(path, {"DATABASE_URL": "postgres://u:pw-env@host/app", "GUARDIAN_RPO": "6h"})

    [db] = config.databases
    assert db.name == "app"
    assert db.objectives.rpo == timedelta(hours=6)
    assert config.listen == "0.0.0.0:9000"


def test_database_url_is_ignored_when_the_file_lists_databases(tmp_path: Path) -> None:
    path = write(tmp_path, f"databases:\n  - name: shop\n    url: {PG_URL}\n")

    config = load_config(path, {"DATABASE_URL": "postgres://u:pw-env@host/other"})

    assert [d.name for d in config.databases] == ["shop"]
    assert config.databases[0].url.get_secret_value() == PG_URL


def test_environment_overrides_the_file_for_scalar_settings(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: 127.0.0.1:1111\nlog_level: DEBUG\n")

    config = load_config(path, {"GUARDIAN_LISTEN": "[::1]:2222", "GUARDIAN_ARCHIVE_DIR": "/srv/archive"})

    assert config.listen_host_port == ("::1", 2222)
    assert config.log_level == "DEBUG"
    assert config.archive_dir == Path("/srv/archive")


def test_guardian_config_variable_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "log_format: json\n")

    assert load_config(None, {"GUARDIAN_CONFIG": str(path)}).log_format == "json"


# -- bad input: each problem names the field and where it came from --------------------------------------

FILE = "<file>"  # stands for the config file's path in the table below


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        pytest.param("listen: [a\n  b: c\n", {}, [FILE + ":2:", "invalid YAML"], id="invalid-yaml-with-line"),
        pytest.param("- a\n- b\n", {}, [FILE, "top level must be a mapping"], id="not-a-mapping"),
        pytest.param("listne: 127.0.0.1:1\n", {}, [FILE, "listne: unknown key"], id="unknown-top-level-key"),
        pytest.param("archive:\n  kind: local\n  bucket: x\n", {}, [FILE, "archive.bucket: unknown key"],
                     id="unknown-nested-key"),
        pytest.param(
            f"databases:\n  - name: a\n    url: {PG_URL}\n    objectives:\n      rto:\n        meteor: 1h\n",
            {}, [FILE, "databases[0].objectives.rto.meteor: unknown key"], id="unknown-deeply-nested-key"),
        pytest.param(
            f"databases:\n  - name: a\n    url: {PG_URL}\n    objectives:\n      rpo: -5m\n",
            {}, [FILE, "databases[0].objectives.rpo", "negative"], id="negative-duration"),
        pytest.param("collect_interval: -30\n", {}, [FILE, "collect_interval", "positive"],
                     id="negative-seconds"),
        pytest.param("collect_interval: 0s\n", {}, [FILE, "collect_interval", "positive"], id="zero-duration"),
        pytest.param(
            f"databases:\n  - name: a\n    url: {PG_URL}\n    connect_timeout: 5 minutes\n",
            {}, [FILE, "databases[0].connect_timeout", "not a duration"], id="malformed-duration"),
        pytest.param("demo:\n  capture_interval: soon\n", {}, [FILE, "demo.capture_interval", "not a duration"],
                     id="malformed-nested-duration"),
        pytest.param("collect_interval: true\n", {}, [FILE, "collect_interval", "boolean"],
                     id="boolean-duration"),
        pytest.param(
            f"databases:\n  - name: a\n    url: {PG_URL}\n  - name: b\n    url: {PG_URL}\n"
            f"  - name: a\n    url: {PG_URL}\n",
            {}, [FILE, "must be unique", "repeated: a"], id="duplicate-database-names"),
        pytest.param("databases:\n  - name: a\n    url: mysql://u:pw@h/db\n", {},
                     [FILE, "databases[0].url", "postgresql://"], id="non-postgres-url"),
        pytest.param("databases:\n  - name: a\n", {}, [FILE, "databases[0]", "give a url, a heroku app"],
                     id="missing-url"),
        pytest.param(f"databases:\n  - name: a b\n    url: {PG_URL}\n", {}, [FILE, "databases[0].name"],
                     id="bad-database-name"),
        pytest.param(
            f"databases:\n  - name: a\n    url: {PG_URL}\n    capture:\n      extra_args: ['--file=/tmp/x']\n",
            {}, [FILE, "databases[0].capture.extra_args", "set by the guardian"], id="pg-dump-output-flag"),
        pytest.param("log_format: xml\n", {}, [FILE, "log_format"], id="bad-literal"),
        pytest.param("listen: localhost\n", {}, [FILE, "listen", "host:port"], id="listen-without-port"),
        pytest.param("listen: 127.0.0.1:99999\n", {}, [FILE, "listen", "host:port"], id="listen-port-too-big"),
        pytest.param("listen: ':9729'\n", {}, [FILE, "listen", "host:port"], id="listen-without-host"),
        pytest.param("", {"GUARDIAN_LISTNE": "127.0.0.1:1"}, ["environment variable GUARDIAN_LISTNE", "unknown"],
                     id="unknown-guardian-env-var"),
        pytest.param("", {"GUARDIAN_LISTEN": "nowhere"}, ["environment variable GUARDIAN_LISTEN", "listen"],
                     id="bad-listen-from-env"),
        pytest.param("", {"DATABASE_URL": "postgres://u:pw@h/app", "GUARDIAN_RPO": "-1h"},
                     ["environment variable GUARDIAN_RPO", "databases[0].objectives.rpo", "negative"],
                     id="negative-rpo-from-env"),
        pytest.param("", {"DATABASE_URL": "mysql://u:pw@h/app"},
                     ["environment variable DATABASE_URL", "databases[0].url", "postgresql://"],
                     id="non-postgres-database-url"),
        pytest.param("", {"GUARDIAN_RPO": "1h"}, ["environment variable GUARDIAN_RPO", "DATABASE_URL"],
                     id="database-setting-without-database-url"),
    ],
)
def test_bad_input_gives_a_config_error_naming_field_and_source(
    tmp_path: Path, text: str, environ: dict[str, str], expected: list[str]
) -> None:
    path = write(tmp_path, text)

    problems = problems_of(path, environ)

    assert len(problems) == 1, problems
    for fragment in expected:
        assert fragment.replace(FILE, str(path)) in problems[0]


def test_duplicate_database_names_are_reported_with_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        listen: localhost
        databases:
          - name: shop
            url: {PG_URL}
          - name: shop
            url: {PG_URL}
    """)

    problems = problems_of(path, {})

    assert len(problems) == 2, problems
    assert any("repeated: shop" in line for line in problems)


def test_bare_ipv6_listen_address_without_port_is_rejected(tmp_path: Path) -> None:
    [problem] = problems_of(write(tmp_path, "listen: '::1'\n"), {})

    assert "listen" in problem


def test_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    [problem] = problems_of(path)

    assert str(path) in problem
    assert "cannot read" in problem


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, f"""
        listen: localhost
        colour: blue
        databases:
          - name: shop
            url: {PG_URL}
            objectives:
              rpo: -5m
    """)

    problems = problems_of(path, {})

    assert len(problems) == 3, problems
    assert all(line.startswith(f"{path}: ") for line in problems)
    fields = sorted(line.split(": ")[1] for line in problems)
    assert fields == ["colour", "databases[0].objectives.rpo", "listen"]


def test_file_and_environment_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, "colour: blue\nlog_level: LOUD\n")

    problems = problems_of(path, {"GUARDIAN_TYPO": "1"})

    assert len(problems) == 3, problems
    assert sum(str(path) in line for line in problems) == 2
    assert sum("GUARDIAN_TYPO" in line for line in problems) == 1


def _secret_layouts(password: str) -> dict[str, str]:
    """Config files that each hold `password` and contain other errors too."""
    return {
        "wrong-scheme": f"""
            listen: localhost
            databases:
              - name: shop
                url: mysql://guardian:{password}@db.example.com/shop
                connect_timeout: -1s
                colour: blue
        """,
        "valid-url-other-errors": f"""
            collect_interval: never
            databases:
              - name: shop
                url: postgresql://guardian:{password}@db.example.com/shop
                objectives:
                  rpo: -5m
              - name: shop
                url: postgresql://guardian:{password}@db.example.com/shop
        """,
        "url-in-the-wrong-field": f"""
            databases:
              - name: shop
                url: postgresql://guardian:{password}@db.example.com/shop
                connect_timeout: postgresql://guardian:{password}@db.example.com/shop
        """,
        "url-where-the-list-belongs": f"""
            log_level: LOUD
            databases: postgresql://guardian:{password}@db.example.com/shop
        """,
        "conninfo-in-pg-dump-args": f"""
            databases:
              - name: shop
                url: postgresql://guardian:{password}@db.example.com/shop
                capture:
                  extra_args: ["--dbname=host=db password={password}"]
        """,
        "url-under-an-unknown-key": f"""
            database_url: postgresql://guardian:{password}@db.example.com/shop
            listen: nowhere
        """,
    }


def test_no_secret_in_problem_lines_of_a_file_with_several_errors(tmp_path: Path) -> None:
    path = write(tmp_path, _secret_layouts("hunter2-secret")["wrong-scheme"])

    problems = problems_of(path, {})

    assert len(problems) == 4, problems  # listen, url, connect_timeout, colour
    assert any("databases[0].url" in line for line in problems)
    for line in problems:
        assert "hunter2" not in line


@pytest.mark.parametrize("layout", sorted(_secret_layouts("x")))
def test_no_secret_in_problem_lines_wherever_the_url_is_written(tmp_path: Path, layout: str) -> None:
    # a password no other test registered with the process-wide redactor, so each layout proves itself
    password = "pw" + secrets.token_hex(8)
    path = write(tmp_path, _secret_layouts(password)[layout])

    problems = problems_of(path, {})

    assert all(password not in line for line in problems), problems
    assert all(password[:6] not in line for line in problems), problems


def test_no_secret_from_database_url_in_problem_lines() -> None:
    password = "pw" + secrets.token_hex(8)
    env = {"DATABASE_URL": f"mysql://u:{password}@h/app", "GUARDIAN_RPO": "soon", "GUARDIAN_X": "1"}

    problems = problems_of(None, env)

    assert len(problems) == 3, problems
    assert all(password not in line for line in problems)


# -- the generated example --------------------------------------------------------------------------------

def _assert_lists_every_field(model: type[BaseModel], doc: dict[str, Any], where: str) -> None:
    assert set(doc) == set(model.model_fields), f"{where}: {sorted(set(model.model_fields) ^ set(doc))}"
    for name, field in model.model_fields.items():
        annotation = field.annotation
        sub = next((a for a in (annotation, *getattr(annotation, "__args__", ()))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            continue
        value = doc[name]
        for item in value if isinstance(value, list) else [value]:
            _assert_lists_every_field(sub, item, f"{where}.{name}")


def test_example_yaml_parses_and_lists_every_field_of_the_model() -> None:
    # sections that need real files (TLS certificates) are listed commented out with '#: '
    doc = yaml.safe_load(re.sub(r"^(\s*)#: ", r"\1", example_yaml(), flags=re.MULTILINE))

    assert isinstance(doc, dict)
    _assert_lists_every_field(GuardianConfig, doc, "(top level)")


#: The variables the generated example refers to with ${NAME}, as a deployment would set them.
EXAMPLE_ENV = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "aws-secret-from-env",
               "HEROKU_API_KEY": "heroku-token-from-env", "SENTRY_DSN": "https://key@o1.ingest.sentry.io/2",
               "GUARDIAN_PUSH_PASSWORD": "push-password-from-env", "GUARDIAN_WEB_TOKEN": "web-token-from-env"}


def test_example_yaml_loads_without_error(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, example_yaml()), dict(EXAMPLE_ENV))

    [db] = config.databases
    assert db.name == "suoops-backend"
    assert db.objectives.rpo == timedelta(hours=24)
    assert db.capture.extra_args == ["--exclude-table-data=audit_log"]


# -- durations --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400),
        ("7d", 7 * 86400),
        ("24h", 86400),
        ("90s", 90),
        ("5m", 300),
        ("2w", 14 * 86400),
        ("1.5h", 5400),
        ("250ms", 0.25),
        (" 1H 30M ", 5400),
        ("45", 45),
        (90, 90),
        (2.5, 2.5),
    ],
)
def test_duration_parses_human_forms_and_plain_seconds(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["-5m", "5 minutes", "soon", "1h-", "m", ""])
def test_malformed_or_negative_duration_is_a_readable_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"negative|not a duration"):
        parse_duration(text)


def test_duration_through_the_model_accepts_the_same_forms(tmp_path: Path) -> None:
    path = write(tmp_path, "collect_interval: 1h30m\ndemo:\n  capture_interval: 90\n")

    config = load_config(path, {})

    assert config.collect_interval == timedelta(seconds=5400)
    assert config.demo.capture_interval == timedelta(seconds=90)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (61, "1m1s"), (5400, "1h30m"), (36 * 3600, "36h"), (7 * 86400, "7d")],
)
def test_format_duration_gives_the_short_form(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("seconds", [1, 59, 60, 61, 3599, 3600, 5400, 86399, 86400, 90061, 129600, 7 * 86400])
def test_format_duration_round_trips_through_parse_duration(seconds: int) -> None:
    td = timedelta(seconds=seconds)

    assert parse_duration(format_duration(td)) == td


def test_format_duration_of_a_negative_duration_keeps_its_size() -> None:
    assert format_duration(timedelta(seconds=-90)) == "-1m30s"


# -- the CLI ----------------------------------------------------------------------------------------------

def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDIAN_") and k != "DATABASE_URL"
           and k not in EXAMPLE_ENV} | (env or {})
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=60)


def test_cli_config_validate_exits_0_for_a_valid_file(tmp_path: Path) -> None:
    path = write(tmp_path, f"databases:\n  - name: shop\n    url: {PG_URL}\n")

    result = run_cli("config", "validate", "--config", str(path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "shop" in result.stdout
    assert "pw-file" not in result.stdout + result.stderr


def test_cli_config_validate_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, """
        listen: localhost
        colour: blue
        databases:
          - name: shop
            url: mysql://guardian:hunter2-secret@db.example.com/shop
    """)

    result = run_cli("config", "validate", "--config", str(path), cwd=tmp_path)

    assert result.returncode == 3
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert "hunter2-secret" not in output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    problem_lines = [line for line in lines if str(path) in line]
    assert len(problem_lines) == 3, result.stderr
    assert {"listen", "colour", "databases[0].url"} == {line.split(": ")[1] for line in problem_lines}


def test_cli_config_validate_exits_2_for_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: [a\n  b: c\n")

    result = run_cli("config", "validate", "--config", str(path), cwd=tmp_path)

    assert result.returncode == 3
    assert "Traceback" not in result.stdout + result.stderr
    assert f"{path}:2:" in result.stderr


def test_cli_config_example_exits_0_and_its_output_validates(tmp_path: Path) -> None:
    example = run_cli("config", "example", cwd=tmp_path)

    assert example.returncode == 0, example.stderr
    assert example.stdout == example_yaml()
    path = write(tmp_path, example.stdout, name="example.yaml")
    assert run_cli("config", "validate", "--config", str(path), cwd=tmp_path, env=EXAMPLE_ENV).returncode == 0
    unset = run_cli("config", "validate", "--config", str(path), cwd=tmp_path)  # the variables it refers to unset
    assert unset.returncode == 3, unset.stderr
    for name in EXAMPLE_ENV:
        assert f"environment variable {name} is not set" in unset.stderr
    assert "Traceback" not in unset.stderr


# -- ${VAR} in the file ----------------------------------------------------------------------------------------

def test_a_variable_in_the_file_is_expanded_from_the_environment_and_its_value_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, """
        databases:
          - name: shop
            url: ${SHOP_URL}
        archive:
          kind: s3
          s3:
            bucket: backups-${STAGE}
            access_key_id: ${AWS_ACCESS_KEY_ID}
            secret_access_key: '${AWS_SECRET_ACCESS_KEY}'
        sentry:
          environment: 'literal $${STAGE} stays'
    """)
    env = {"SHOP_URL": "postgresql://guardian:pw-from-env@db.example.com/shop", "STAGE": "prod",
           "AWS_ACCESS_KEY_ID": "AKIAFROMENV", "AWS_SECRET_ACCESS_KEY": "s3cr3t-from-env"}
    config = load_config(path, env)
    s3 = config.archive.s3
    assert s3 is not None and s3.bucket == "backups-prod"
    assert s3.access_key_id is not None and s3.access_key_id.get_secret_value() == "AKIAFROMENV"
    assert s3.secret_access_key is not None and s3.secret_access_key.get_secret_value() == "s3cr3t-from-env"
    assert config.databases[0].url is not None
    assert config.databases[0].url.get_secret_value() == env["SHOP_URL"]
    assert config.sentry.environment == "literal ${STAGE} stays"
    from daemon.core.redact import REDACTOR

    shown = REDACTOR(f"key s3cr3t-from-env, url {env['SHOP_URL']}")  # secrets from the environment stay hidden
    assert "s3cr3t-from-env" not in shown and "pw-from-env" not in shown


def test_an_unset_variable_is_a_config_error_naming_the_field_and_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, """
        databases:
          - name: shop
            url: ${SHOP_URL}
        heroku:
          api_key: ${HEROKU_API_KEY}
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path, {"HEROKU_API_KEY": "set-but-the-other-is-not"})
    lines = err.value.problems
    assert any("databases[0].url: environment variable SHOP_URL is not set" in line for line in lines), lines
    assert not any("HEROKU_API_KEY is not set" in line for line in lines)
    assert not any("set-but-the-other-is-not" in line for line in lines)


# -- hostile input: every bad file or variable is a config error (exit 2), one bounded line, no traceback -----

def _billion_laughs() -> bytes:
    """Ten levels of nine aliases each: 20 lines that expand to 9**10 (3.4 billion) values."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * 9) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return ("\n".join(lines) + "\nheroku:\n  apps: *l9\n").encode()


#: name -> (file bytes, fragments the one problem line must hold; "<file>" stands for the file's path).
HOSTILE_FILES: dict[str, tuple[bytes, list[str]]] = {
    "non-utf8-byte": (b"listen: 127.0.0.1:9729\nlog_level: \xff\xfe\n",
                      [FILE, "not UTF-8", "byte 0xff at offset 34", "line 2"]),
    "nested-20000-deep-lists": (b"listen: " + b"[" * 20_000 + b"]" * 20_000 + b"\n",
                                [FILE + ":1:", "nested more than 64 levels"]),
    "nested-20000-deep-mappings": (b"{a: " * 20_000 + b"1" + b"}" * 20_000 + b"\n",
                                   [FILE + ":1:", "nested more than 64 levels"]),
    "duration-overflowing-timedelta": (b"collect_interval: 999999999999d\n", [FILE, "collect_interval", "too large"]),
    "duration-1e400s": (b"collect_interval: 1e400s\n", [FILE, "collect_interval", "not a duration"]),
    "duration-float-infinity": (b"collect_interval: 1.0e+400\n", [FILE, "collect_interval", "finite"]),
    "duration-huge-integer": (b"collect_interval: " + b"9" * 30 + b"\n", [FILE, "collect_interval", "too large"]),
    "duration-negative": (b"collect_interval: -5m\n", [FILE, "collect_interval", "negative"]),
    "duration-200k-characters": (b"collect_interval: " + b"1" * 200_000 + b"s\n",
                                 [FILE, "collect_interval", "200,001 characters long"]),
    "integer-of-5000-digits": (b"collect_interval: " + b"9" * 5000 + b"\n", [FILE + ":1:19", "cannot read"]),
    "impossible-date": (b"state_dir: 2026-02-30\n", [FILE + ":1:12", "cannot read", "day is out of range"]),
    "billion-laughs": (_billion_laughs(), [FILE, "expands to more than 100,000 values"]),
    "top-level-list": (b"- listen\n- 127.0.0.1:1\n", [FILE, "top level must be a mapping", "list"]),
    "top-level-scalar": (b"just some words\n", [FILE, "top level must be a mapping", "str"]),
    "raw-nul-byte": (b"listen: 127.0.0.1:1\x00\n", [FILE + ":1:20", "#x0000"]),
    "escaped-nul-character": (b'state_dir: "/var/lib/a\\0b"\n', [FILE, "state_dir", "NUL character"]),
    "very-long-key": (b"? " + b"k" * 200_000 + b"\n: 1\n", [FILE, "unknown key", "200,000 characters in all"]),
    "listen-200k-characters": (b"listen: " + b"a" * 200_000 + b"\n",
                               [FILE, "listen", "host:port", "200,000 characters in all"]),
    "listen-port-of-5000-digits": (b"listen: 127.0.0.1:" + b"9" * 5000 + b"\n", [FILE, "listen", "host:port"]),
    "file-too-large": (b"# " + b"x" * 300_000 + b"\n", [FILE, "larger than 262,144 bytes"]),
}

#: A problem line never needs more than this (a path, a field, a message and a shortened value).
MAX_LINE = 700


def run_cli_within(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None,
                   deadline: float = 30.0) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, killed at `deadline`: a hang is a failure, not a stuck test run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDIAN_") and k != "DATABASE_URL"}
    env["PYTHONPATH"] = str(REPO)
    env.update(env_extra or {})
    try:
        return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=env,
                              cwd=cwd, timeout=deadline)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(args)[:200]}` did not finish within {deadline:.0f} s")


def assert_one_config_error(result: subprocess.CompletedProcess[str], fragments: list[str]) -> str:
    """Exit 2, no traceback, bounded output, and exactly one problem line holding every fragment."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == 3, output[-3000:]
    assert len(output) < 2 * MAX_LINE, f"{len(output):,} characters of output"
    problems = [line.strip() for line in result.stderr.splitlines()[1:] if line.strip()]
    assert result.stderr.startswith("configuration error:"), result.stderr
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems[0]
    return problems[0]


@pytest.mark.parametrize(("content", "fragments"), list(HOSTILE_FILES.values()), ids=list(HOSTILE_FILES))
def test_hostile_config_file_is_one_config_error_line(tmp_path: Path, content: bytes, fragments: list[str]) -> None:
    path = tmp_path / "guardian.yaml"
    path.write_bytes(content)

    result = run_cli_within(["config", "validate", "--config", str(path)], cwd=tmp_path)

    assert_one_config_error(result, [f.replace(FILE, str(path)) for f in fragments])


@pytest.mark.parametrize("command", [["check"], ["run"], ["config", "validate"]])
@pytest.mark.parametrize("case", ["non-utf8-byte", "nested-20000-deep-lists", "duration-overflowing-timedelta",
                                  "billion-laughs", "listen-200k-characters"])
def test_check_and_run_exit_2_on_the_same_hostile_files(tmp_path: Path, command: list[str], case: str) -> None:
    content, fragments = HOSTILE_FILES[case]
    path = tmp_path / "guardian.yaml"
    path.write_bytes(content)

    result = run_cli_within([*command, "--config", str(path)], cwd=tmp_path)

    assert_one_config_error(result, [f.replace(FILE, str(path)) for f in fragments])


def test_config_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    result = run_cli_within(["check", "--config", str(tmp_path)], cwd=tmp_path)

    assert_one_config_error(result, [str(tmp_path), "cannot read the config file"])


def test_empty_config_file_is_the_defaults_and_check_says_there_is_no_database(tmp_path: Path) -> None:
    path = tmp_path / "guardian.yaml"
    path.write_bytes(b"")

    assert run_cli_within(["config", "validate", "--config", str(path)], cwd=tmp_path).returncode == 0
    assert_one_config_error(run_cli_within(["check", "--config", str(path)], cwd=tmp_path), ["no database to check"])


HOSTILE_ENVIRONMENT: dict[str, tuple[dict[str, str], list[str]]] = {
    "duration-overflowing-timedelta": ({"GUARDIAN_COLLECT_INTERVAL": "999999999999d"},
                                       ["environment variable GUARDIAN_COLLECT_INTERVAL", "collect_interval",
                                        "too large"]),
    "duration-1e400s": ({"DATABASE_URL": "postgresql://u:pw-env@h/app", "GUARDIAN_RPO": "1e400s"},
                        ["environment variable GUARDIAN_RPO", "databases[0].objectives.rpo", "not a duration"]),
    "listen-100k-characters": ({"GUARDIAN_LISTEN": "a" * 100_000},
                               ["environment variable GUARDIAN_LISTEN", "listen", "100,000 characters in all"]),
    "listen-port-of-5000-digits": ({"GUARDIAN_LISTEN": "127.0.0.1:" + "9" * 5000},
                                   ["environment variable GUARDIAN_LISTEN", "listen", "host:port"]),
    "unknown-variable-with-a-long-name": ({"GUARDIAN_" + "X" * 50_000: "1"},
                                          ["unknown setting", "characters in all"]),
    "heroku-app-that-is-no-name": ({"HEROKU_API_KEY": "hrku-0123456789abcdef", "GUARDIAN_HEROKU_APPS": "ok,no way"},
                                   ["environment variable GUARDIAN_HEROKU_APPS", "heroku.apps", "'no way'"]),
}


@pytest.mark.parametrize("command", [["check"], ["config", "validate"]])
@pytest.mark.parametrize(("environ", "fragments"), list(HOSTILE_ENVIRONMENT.values()), ids=list(HOSTILE_ENVIRONMENT))
def test_hostile_environment_variable_is_one_config_error_line(
    tmp_path: Path, command: list[str], environ: dict[str, str], fragments: list[str]
) -> None:
    result = run_cli_within(command, cwd=tmp_path, env_extra=environ)

    line = assert_one_config_error(result, fragments)
    assert "pw-env" not in line


def test_thousands_of_bad_entries_give_a_bounded_list_of_problems(tmp_path: Path) -> None:
    path = tmp_path / "guardian.yaml"
    path.write_text("databases:\n" + "".join(f"  - {{name: d{i}, url: 'mysql://h/x'}}\n" for i in range(2000)))

    result = run_cli_within(["config", "validate", "--config", str(path)], cwd=tmp_path)

    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    problems = [line.strip() for line in result.stderr.splitlines()[1:]]
    assert len(problems) == 51, problems[-3:]
    assert problems[-1] == "... and 1,950 more problems"
    assert all(len(line) < MAX_LINE for line in problems)


@pytest.mark.parametrize("text", ["999999999999d", "1e400s", "1" * 100_000 + "s"],
                         ids=["999999999999d", "1e400s", "100k-characters"])
def test_duration_out_of_range_or_too_long_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"too large|not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 10**30, 10**5000],
                         ids=["infinity", "nan", "10**30", "10**5000"])
def test_duration_that_is_not_a_finite_number_of_seconds_within_range_is_a_value_error(value: float) -> None:
    with pytest.raises(ValueError, match=r"finite|too large"):
        parse_duration(value)
