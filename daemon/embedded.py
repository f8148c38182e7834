"""The embedded demo: a throwaway local PostgreSQL with sample invoicing data, watched and captured.

Used by `backup-guardian run` when no database is configured at all, so a newcomer sees backups,
metrics and status within a minute on one machine, with no cloud account.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import psycopg
from loguru import logger

from daemon.adapters.postgres.cluster import LocalCluster, cluster_in
from daemon.config import CaptureConfig, DatabaseConfig, GuardianConfig
from daemon.core.errors import GuardianError

DEMO_DB = "invoicing_demo"
DEMO_NAME = "demo/invoicing"


class DemoDatabase:
    """Owns the demo cluster under `<state_dir>/demo-pg`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.cluster = LocalCluster(state_dir.absolute() / "demo-pg" / "data", state_dir.absolute() / "demo-pg" / "run")

    def start(self) -> str:
        """Create (first time) and start the cluster, load the sample schema; returns the demo URL."""
        self.cluster = cluster_in(self.state_dir, "demo-pg")
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


def demo_config(config: GuardianConfig, url: str) -> GuardianConfig:
    """The config with the demo database added (captured every `demo.capture_interval`, last 30 kept)."""
    db = DatabaseConfig(
        name=DEMO_NAME, url=url,
        capture=CaptureConfig(interval=config.demo.capture_interval, keep_last=30),
    )
    return config.model_copy(update={"databases": [db]})
