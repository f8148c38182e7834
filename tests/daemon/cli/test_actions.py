"""`backup-guardian capture` and `backup-guardian actions`, run as a person would, against a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from daemon.adapters.archive.local import LocalDirectoryStore


def cli(tmp_path: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\narchive: {{path: {tmp_path / 'archive'}}}\n"
                   f"databases:\n  - name: shop\n    url: {url}\n")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "DATABASE_URL"))}
    full.update(env, GUARDIAN_CONFIG=str(cfg))
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, env=full,
                          timeout=120, cwd=tmp_path)


def test_a_manual_capture_is_dry_run_on_a_new_install_and_real_once_enabled(tmp_path: Path, fresh_db: str) -> None:
    dry = cli(tmp_path, fresh_db, "capture", "--database", "shop", "--reason", "before the v2 migration")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dry_run: dry run: would capture a backup of shop because before the v2 migration")
    assert LocalDirectoryStore(tmp_path / "archive").list_records("shop") == []

    real = cli(tmp_path, fresh_db, "capture", "--database", "shop", GUARDIAN_DRY_RUN="false")
    assert real.returncode == 0, real.stderr
    assert real.stdout.startswith("done: capture ") and "succeeded" in real.stdout
    [record] = LocalDirectoryStore(tmp_path / "archive").list_records("shop")
    assert record.outcome == "succeeded" and record.kind == "manual"

    table = cli(tmp_path, fresh_db, "actions")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["TIME", "(UTC)", "ACTION", "TARGET", "OUTCOME"]
    assert [line.split()[4] for line in lines[2:]] == ["dry_run", "started", "done"]
    as_json = [json.loads(line) for line in cli(tmp_path, fresh_db, "actions", "--json").stdout.splitlines()]
    assert as_json[-1]["action"] == "capture" and as_json[-1]["target"] == "shop" and as_json[-1]["outcome"] == "done"
    assert fresh_db.split(":")[2].split("@")[0] not in table.stdout + real.stdout + real.stderr  # the password


def test_pause_stops_actions_everywhere_until_resumed(tmp_path: Path, fresh_db: str) -> None:
    paused = cli(tmp_path, fresh_db, "actions", "pause", "--reason", "restoring by hand")
    assert paused.returncode == 0, paused.stderr
    refused = cli(tmp_path, fresh_db, "capture", "--database", "shop", GUARDIAN_DRY_RUN="false")
    assert refused.returncode == 1
    assert refused.stdout.startswith("skipped_paused: actions are paused: restoring by hand")
    assert LocalDirectoryStore(tmp_path / "archive").list_records("shop") == []
    assert cli(tmp_path, fresh_db, "actions", "resume").returncode == 0
    ok = cli(tmp_path, fresh_db, "capture", "--database", "shop", GUARDIAN_DRY_RUN="false")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    listed = cli(tmp_path, fresh_db, "actions", "--json").stdout.splitlines()
    outcomes = [json.loads(line)["outcome"] for line in listed]
    assert outcomes == ["paused", "skipped_paused", "resumed", "started", "done"]


def test_an_unknown_database_is_a_configuration_error_naming_it(tmp_path: Path, fresh_db: str) -> None:
    out = cli(tmp_path, fresh_db, "capture", "--database", "nope")
    assert out.returncode == 3
    assert "--database 'nope': not a configured database (known: shop)" in out.stderr
