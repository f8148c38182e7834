"""Throwaway PostgreSQL clusters for the benchmarks: started as the benchmark needs them, always destroyed.

Shared by the benchmarks that run real clusters (`bench_drill.py`, `bench_recover_rows.py`); `_sigterm` turns a
SIGTERM into an exit that runs their `finally` blocks, so a stopped benchmark leaves no cluster behind.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from daemon.adapters.postgres.cluster import LocalCluster


@dataclass
class Clusters:
    """The throwaway clusters and folders of one benchmark run; `destroy()` removes all of them."""

    work: Path
    started: list[tuple[LocalCluster, Path]] = field(default_factory=list)

    def new(self, label: str) -> LocalCluster:
        base = Path(tempfile.mkdtemp(prefix=f"guardian-bench-{label}-", dir="/tmp"))
        base.chmod(0o755)
        cluster = LocalCluster(base / "data", base / "run", tcp=True, superuser_password="pw-" + secrets.token_hex(12))
        self.started.append((cluster, base))
        cluster.init()
        cluster.start()
        return cluster

    def destroy(self) -> None:
        for cluster, base in reversed(self.started):
            with contextlib.suppress(Exception):
                cluster.destroy()
            shutil.rmtree(base, ignore_errors=True)
        self.started.clear()
        shutil.rmtree(self.work, ignore_errors=True)


def sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks: clusters are destroyed
