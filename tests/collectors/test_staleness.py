"""Stale facts are never shown as fresh: a collector that has not succeeded within its expected interval turns
`pgbackup_collector_stale` to 1 and keeps `collector_down` active, with the real guardian, a real PostgreSQL
whose database refuses connections for real, and an injected clock."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from collectors.freshness import stale_after
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.status import status_document
from tests.support import FakeClock, allow_connections, create_database, shop_config


def _samples(g: Guardian) -> dict[tuple[str, str], float]:
    """(metric name, collector) -> value for shop's collector families."""
    body = g.exposition.render()[0].decode()
    return {(s.name, s.labels["collector"]): s.value for fam in text_string_to_metric_families(body)
            for s in fam.samples if s.name.startswith("pgbackup_collector_") and s.labels.get("database") == "shop"}


def test_a_collector_late_beyond_its_interval_is_exported_stale_and_keeps_collector_down(
    pg_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster)
    clock = FakeClock()
    config = GuardianConfig.model_validate(shop_config(tmp_path, url, collect_interval="1m"))
    g = Guardian(config, clock=clock)
    try:
        g.collect_all(one_shot=True)
        m = _samples(g)
        assert m[("pgbackup_collector_stale", "database")] == 0
        assert m[("pgbackup_collector_stale_after_seconds", "database")] == 300  # 3 x 1m, at least 5m
        succeeded = clock.now

        allow_connections(pg_cluster, url, False)
        clock.now += timedelta(minutes=2)
        g.collect_all(one_shot=True)  # down, but its facts are still within the interval
        assert _samples(g)[("pgbackup_collector_stale", "database")] == 0

        clock.now += timedelta(minutes=4)  # 6 minutes since the last success: stale
        snap = g.collect_all(one_shot=True)
        m = _samples(g)
        assert m[("pgbackup_collector_stale", "database")] == 1
        assert m[("pgbackup_collector_stale", "archive")] == 0
        finding = {f.check: f for f in snap.databases["shop"].findings}["collector_down"]
        assert finding.active and f"stale: database since {succeeded.isoformat()}" in finding.hint
        doc = status_document(snap, clock.now)
        assert [c["stale"] for c in doc["collectors"] if c["collector"] == "database"] == [True]
        [db] = doc["databases"]
        assert db["status"] != "ok"

        allow_connections(pg_cluster, url, True)
        snap = g.collect_all(one_shot=True)  # fresh again
        assert _samples(g)[("pgbackup_collector_stale", "database")] == 0
        assert not {f.check: f for f in snap.databases["shop"].findings}["collector_down"].active
    finally:
        allow_connections(pg_cluster, url, True)
        g.stop()


def test_heroku_facts_go_stale_only_after_the_fleet_slow_poll_interval_is_missed() -> None:
    config = GuardianConfig.model_validate({"collect_interval": "30s", "heroku": {"polling": {"slow": "30m"}}})
    assert stale_after(config, "heroku") == timedelta(minutes=90)  # a quiet database is polled every 30 min
    assert stale_after(config, "archive") == timedelta(minutes=5)  # 3 x 30s, but never under the floor
