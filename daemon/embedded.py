"""The embedded demo: a throwaway local PostgreSQL with sample invoicing data, watched and captured.

Used by `backup-guardian run` when no database is configured at all, so a newcomer sees backups,
metrics and status within a minute on one machine, with no cloud account.
"""

from __future__ import annotations

import hashlib
import os
import pwd
from importlib import resources
from pathlib import Path

import psycopg
from loguru import logger

from daemon.config import CaptureConfig, DatabaseConfig, GuardianConfig
from daemon.errors import GuardianError
from daemon.localpg import LocalCluster

DEMO_DB = "invoicing_demo"
DEMO_NAME = "demo/invoicing"


class DemoDatabase:
    """Owns the demo cluster under `<state_dir>/demo-pg`."""

    def __init__(self, state_dir: Path) -> None:
        base = state_dir.absolute() / "demo-pg"
        self.cluster = LocalCluster(base / "data", base / "run")

    def _relocate_for_postgres_user(self) -> None:
        """As root, PostgreSQL runs as 'postgres', which cannot enter a private folder such as /root. Then the
        demo cluster lives in that user's home instead (said in the log), keyed by the state directory."""
        base = self.cluster.data_dir.parent
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
        if self.cluster.owner_can("x", base):
            return
        home = Path(pwd.getpwnam("postgres").pw_dir)
        key = hashlib.sha256(str(base).encode()).hexdigest()[:8]
        new = home / "pg-backup-guardian-demo" / key
        logger.info("demo: {} is private to root and PostgreSQL runs as 'postgres', so the demo cluster lives in "
                    "{} instead", base, new)
        new.mkdir(parents=True, exist_ok=True)
        for folder in (new.parent, new):
            os.chown(folder, *_ids("postgres"))
            folder.chmod(0o755)
        self.cluster = LocalCluster(new / "data", new / "run")

    def start(self) -> str:
        """Create (first time) and start the cluster, load the sample schema; returns the demo URL."""
        if os.geteuid() == 0:
            self._relocate_for_postgres_user()
        if not self.cluster.initialized:
            logger.info("demo: creating a throwaway PostgreSQL cluster in {}", self.cluster.data_dir)
            self.cluster.init()
        self.cluster.start()
        logger.info("demo: PostgreSQL started on unix socket {} (port {})", self.cluster.socket_dir,
                    self.cluster.port)
        admin = self.cluster.url("postgres")
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DEMO_DB,)).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DEMO_DB}"')
            url = self.cluster.url(DEMO_DB)
            sql = resources.files("daemon").joinpath("sample_schema.sql").read_text()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql)
        except psycopg.Error as exc:
            raise GuardianError(f"demo: loading the sample schema failed: {exc}") from None
        logger.info("demo: sample invoicing data (users, invoices, payments) loaded into {}", DEMO_DB)
        return url

    def add_activity(self, url: str) -> None:
        """Insert one invoice, so the demo database changes between captures like a real one."""
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                "INSERT INTO invoices (user_id, number, amount_cents) "
                "SELECT 1 + floor(random() * 200)::int, 'INV-' || gen_random_uuid(), "
                "1000 + floor(random() * 90000)::int"
            )

    def stop(self) -> None:
        self.cluster.stop()
        logger.info("demo: PostgreSQL stopped")


def _ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


def demo_config(config: GuardianConfig, url: str) -> GuardianConfig:
    """The config with the demo database added (captured every `demo.capture_interval`, last 30 kept)."""
    db = DatabaseConfig(
        name=DEMO_NAME, url=url,
        capture=CaptureConfig(interval=config.demo.capture_interval, keep_last=30),
    )
    return config.model_copy(update={"databases": [db]})
