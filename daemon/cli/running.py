"""What is running in a state directory: `run` records its effective configuration there (the embedded demo's
database included), so `check`, `drill`, `capture`, `archive`, `actions` and `timeline`, run with no
configuration of their own, work on that guardian's databases instead of finding none.

The record (`running.json`, mode 0600 in the state directory, which also holds the archive's dumps) holds the
configuration with its secrets, the process id, host, version and start time. It is removed when `run` stops; a
record whose process is gone (a crash, a `kill -9`) is ignored and said so. Only a guardian on this host counts:
another host's state directory is another guardian's.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import SecretStr, ValidationError

from daemon import __version__
from daemon.config import GuardianConfig

RUNNING_FILE = "running.json"


def record(config: GuardianConfig) -> Path:
    """Write the running record of this process (atomically, mode 0600); returns its path."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    path = config.state_dir / RUNNING_FILE
    doc = {"pid": os.getpid(), "host": socket.gethostname(), "version": __version__,
           "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "config": _revealed(config)}
    fd, tmp = tempfile.mkstemp(prefix=".running-", dir=config.state_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp creates it 0600
            json.dump(doc, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove(config: GuardianConfig) -> None:
    """Remove this process's record (another process's is left alone)."""
    path = config.state_dir / RUNNING_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and doc.get("pid") == os.getpid() and doc.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def attach(state_dir: Path) -> tuple[GuardianConfig, str] | None:
    """The configuration of the guardian running with `state_dir`, and a line saying which one, or None when
    none runs there (no record, a record of a process that is gone or of another host, or one unreadable)."""
    path = state_dir / RUNNING_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        pid, host = int(doc["pid"]), str(doc["host"])
        config = GuardianConfig.model_validate(doc["config"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        logger.warning("{} is unreadable ({}); ignored", path, type(exc).__name__)
        return None
    if host != socket.gethostname() or not _alive(pid):
        logger.info("{} names pid {} on {}, which is not running here; ignored", path, pid, host)
        return None
    return config, f"using the configuration of the guardian running in {state_dir} (pid {pid}, since " \
                   f"{doc.get('started_at', '?')})"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


def _revealed(config: GuardianConfig) -> Any:
    """The configuration as JSON that `GuardianConfig.model_validate` reads back, secrets included."""
    return _reveal(config.model_dump(mode="json"), config.model_dump(mode="python"))


def _reveal(shown: Any, raw: Any) -> Any:
    if isinstance(raw, SecretStr):
        return raw.get_secret_value()
    if isinstance(shown, dict) and isinstance(raw, dict):
        return {k: _reveal(v, raw.get(k)) for k, v in shown.items()}
    if isinstance(shown, list) and isinstance(raw, list | tuple) and len(shown) == len(raw):
        return [_reveal(v, r) for v, r in zip(shown, raw, strict=True)]
    return shown
