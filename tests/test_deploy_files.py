"""The deploy files say only what the guardian understands: every config var app.json offers is one the
configuration reads, its fixed values load, and the Procfile runs the daemon."""

from __future__ import annotations

import json

from daemon.config import load_config
from daemon.config.loading import ENV_VARS, LIST_ENV_VARS
from tests.support import REPO

APP = json.loads((REPO / "app.json").read_text(encoding="utf-8"))


def test_every_config_var_of_app_json_is_read_by_the_guardian_and_described() -> None:
    known = set(ENV_VARS) | set(LIST_ENV_VARS)
    for name, spec in APP["env"].items():
        assert name in known, f"app.json offers {name}, which the guardian does not read"
        assert len(spec["description"]) > 20, name


def test_app_json_fixed_values_and_required_vars_make_a_valid_configuration() -> None:
    env = {name: spec["value"] for name, spec in APP["env"].items() if "value" in spec}
    env |= {"HEROKU_API_KEY": "token-for-the-test",
            "GUARDIAN_HEROKU_APPS": "billing-api,reports::HEROKU_POSTGRESQL_RED"}
    config = load_config(None, environ=env)
    assert config.demo.enabled is False and config.log_format == "json"
    assert [db.name for db in config.all_databases] == ["billing-api/DATABASE", "reports/HEROKU_POSTGRESQL_RED"]
    assert APP["formation"] == {"worker": {"quantity": 1, "size": "basic"}}
    assert (REPO / "Procfile").read_text().strip() == "worker: backup-guardian run"


def test_docker_compose_mounts_files_that_exist_and_its_prometheus_config_passes_promtool() -> None:
    """`docker compose config` needs the compose plugin (not installed by the test command); what it would
    catch that matters here, a mounted file that is not there or a Prometheus config that does not load, is
    checked directly, the latter with the real promtool."""
    import shutil
    import subprocess

    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    assert set(compose["services"]) == {"guardian", "prometheus", "alertmanager", "grafana"}
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name} mounts {source}, which is not in the repository"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool (Debian package prometheus) is needed"
    out = subprocess.run([promtool, "check", "config", "alerts/compose/prometheus.yml"], cwd=REPO,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
