"""What the command line prints on a terminal (rich tables, colours, a progress bar) and anywhere else (plain
columns, no escape codes, no carriage returns): the real CLI in a real pseudo-terminal, and through a pipe."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster
from tests.support import create_database

ESC = "\x1b["


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GUARDIAN_", "DATABASE_URL", "NO_COLOR", "FORCE_COLOR", "TTY_"))}
    return {**env, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50", **extra}


def in_terminal(args: list[str], timeout: float = 120, **env: str) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a new pseudo-terminal; its exit code and all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "daemon", *args], stdin=slave, stdout=slave, stderr=slave,
                            env=_env(**env), close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal (it exited)
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, b"".join(chunks).decode(errors="replace")


def through_pipe(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", *args], capture_output=True, text=True, timeout=120,
                          env=_env(), check=False)


def _config(tmp_path: Path, url: str) -> Path:
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\narchive:\n  path: {tmp_path / 'archive'}\n"
                   f"databases:\n  - name: shop\n    url: '{url}'\n")
    return cfg


def test_check_and_archive_list_are_rich_tables_on_a_terminal_and_plain_columns_elsewhere(
    pg_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster)
    record = Capturer(LocalDirectoryStore(tmp_path / "archive")).capture(CaptureRequest(database="shop", url=url))
    cfg = str(_config(tmp_path, url))

    code, screen = in_terminal(["check", "--config", cfg])
    assert code == 0, screen
    assert ESC in screen  # colours: the OK in green
    assert "\x1b[32mOK" in screen or "\x1b[32m" in screen.split("OK")[0][-20:]
    assert "━" in screen or "─" in screen  # rich's rule under the header
    assert "DATABASE" in screen and record.backup_id in screen

    piped = through_pipe(["check", "--config", cfg])
    assert piped.returncode == 0, piped.stderr
    assert ESC not in piped.stdout and "\r" not in piped.stdout and "━" not in piped.stdout
    mode, head, rule = piped.stdout.splitlines()[:3]
    assert mode.startswith("remedial actions: DRY RUN")
    assert head.split() == ["DATABASE", "STATUS", "NEWEST", "GOOD", "BACKUP", "DATA", "AT", "RISK", "RPO"]
    assert set(rule) == {"-"} and len(rule) == len(head)

    code, screen = in_terminal(["check", "--config", cfg], TERM="dumb")  # a terminal that cannot show it
    assert code == 0 and ESC not in screen and "━" not in screen and "─" not in screen
    assert "DATABASE  STATUS" in screen

    code, screen = in_terminal(["archive", "list", "--config", cfg])
    assert code == 0, screen
    assert ESC in screen and "TIER" in screen and record.backup_id in screen
    piped = through_pipe(["archive", "list", "--config", cfg])
    assert piped.returncode == 0 and ESC not in piped.stdout
    lines = piped.stdout.splitlines()
    assert lines[0].startswith("shop  (") and lines[1].split() == ["TIER", "COPIES", "BYTES", "NEWEST", "RECOVERY",
                                                                    "POINT"]
    copy = next(line for line in lines if line.startswith(record.backup_id))
    assert copy.split()[4] == "-"  # the ENCRYPTION column: a local directory's copy has none to tell


def test_a_drill_shows_a_progress_bar_on_a_terminal_and_nothing_of_it_through_a_pipe(
    pg_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster)
    Capturer(LocalDirectoryStore(tmp_path / "archive")).capture(CaptureRequest(database="shop", url=url))
    cfg = str(_config(tmp_path, url))

    code, screen = in_terminal(["drill", "--config", cfg, "--database", "shop"])
    assert code == 0, screen
    assert "drill succeeded" in screen
    assert "\x1b[?25l" in screen  # rich hides the cursor while its live progress display runs
    assert "download" in screen or "restore" in screen  # a phase was shown

    piped = through_pipe(["drill", "--config", cfg, "--database", "shop"])
    assert piped.returncode == 0, piped.stdout + piped.stderr
    assert "drill succeeded" in piped.stdout
    assert "\r" not in piped.stderr and "\x1b[?25l" not in piped.stderr and "━" not in piped.stderr


def test_a_recovery_plan_is_coloured_on_a_terminal_and_plain_through_a_pipe(pg_cluster: LocalCluster,
                                                                             tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    record = Capturer(LocalDirectoryStore(tmp_path / "archive")).capture(CaptureRequest(database="shop", url=url))
    args = ["recovery-plan", "--config", str(_config(tmp_path, url)), "--database", "shop", "--scenario", "outage"]

    code, screen = in_terminal(args)
    assert code == 0, screen
    assert "\x1b[33m  NEVER MEASURED" in screen  # no drill yet: yellow
    assert "\x1b[36m" in screen and f"{record.backup_id}.dump" in screen  # the commands in cyan

    piped = through_pipe(args)
    assert piped.returncode == 0, piped.stderr
    assert ESC not in piped.stdout and "NEVER MEASURED" in piped.stdout
    assert url.split(":")[2].split("@")[0] not in screen + piped.stdout + piped.stderr  # the password
