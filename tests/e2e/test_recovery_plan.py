"""End to end: the running daemon serves each database's recovery plan at /api/recovery-plan, from what it
collected, behind its authentication, with no secret in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from daemon.adapters.postgres.cluster import LocalCluster
from daemon.core.redact import url_password
from tests.support import create_database, shop_config

TOKEN = "plan-e2e-SECRET-token-0123456789"


def test_the_running_daemon_serves_the_plan_of_its_newest_capture(pg_cluster: LocalCluster, tmp_path: Path,
                                                                  run_daemon: Any) -> None:
    url = create_database(pg_cluster)
    password = url_password(url)
    assert password
    cfg = shop_config(tmp_path, url, web={"bearer_token": TOKEN})
    cfg.pop("state_dir")  # the fixture gives the daemon its own
    d = run_daemon(yaml.safe_dump(cfg))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    path = f"/api/recovery-plan?database={quote('shop')}&scenario=corruption"
    assert d.get(path)[0] == 401

    def planned() -> dict[str, Any] | None:
        code, body, _ = d.get(path, auth)
        doc = json.loads(body)
        return doc if code == 200 and doc["newest_good_backup"] else None

    doc = d.wait_for("a plan with the first capture", planned, timeout=60)
    newest = doc["newest_good_backup"]
    assert newest["sources"] == ["archive"] and Path(newest["location"]).exists()
    assert newest["location"].startswith(str(tmp_path / "archive"))
    commands = [c for s in doc["steps"] for c in s["commands"]]
    assert any(c.startswith("pg_restore ") and c.endswith(newest["location"]) for c in commands)
    body = d.get(path, auth)[1].decode()
    assert password not in body and TOKEN not in body
    assert password not in d.log()
