"""Several replicas sharing a PostgreSQL state store: one leader acts, the others collect and export; when the
leader is killed another takes over within the leader interval and does not repeat what the first one did.

Real daemon processes, the real Heroku double, a real PostgreSQL for the shared store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from daemon.adapters.postgres.cluster import LocalCluster
from daemon.adapters.statestore import open_state_store
from daemon.leadership import in_shard, shard_of
from tests.doubles.heroku import HerokuDouble
from tests.support import DaemonProcess, create_database

TOKEN = "hrku-replicas-SECRET-0123456789"


@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token=TOKEN) as double:
        yield double


def config(heroku: HerokuDouble, state_url: str) -> str:
    return f"""collect_interval: 1s
heroku:
  platform_url: {heroku.platform_url}
  status: {{url: {heroku.status_url}}}
  data_url: {heroku.data_url}
  rate_budget_share: 1.0
  polling: {{fast: 1s, slow: 2s, window: 1m}}
state:
  url: {state_url}
  leader_interval: 1s
actions:
  dry_run: false
  capture: {{poll_interval: 0.2s, cooldown: 1h}}
databases:
  - heroku: {{app: shop}}
    objectives: {{rpo: 48h}}
"""


def metric(d: DaemonProcess, name: str, **labels: str) -> float | None:
    return d.metrics().get((name, tuple(sorted(labels.items()))))


def posts(heroku: HerokuDouble) -> int:
    return sum(1 for r in heroku.requests if r.method == "POST" and r.path.endswith("/backups"))


def test_only_the_leader_acts_and_a_successor_does_not_repeat_its_capture(
    heroku: HerokuDouble, run_daemon: Any, pg_cluster: LocalCluster
) -> None:
    heroku.add_app("shop")  # its DATABASE_URL is fake: the capture fails, so the trigger stays active
    due = datetime.now(UTC) - timedelta(hours=3)
    heroku.add_schedule("shop", hour=due.hour, timezone="UTC")
    yesterday = due - timedelta(days=1)
    heroku.add_transfer("shop", created_at=yesterday, started_at=yesterday,
                        finished_at=yesterday + timedelta(minutes=2))
    state_url = create_database(pg_cluster, with_schema=False)
    env = {"HEROKU_API_KEY": TOKEN}

    a: DaemonProcess = run_daemon(config(heroku, state_url), env=env)
    a.wait_for("replica a to lead", lambda: metric(a, "pgbackup_leader") == 1)
    b: DaemonProcess = run_daemon(config(heroku, state_url), env=env)
    b.wait_for("replica b to collect", lambda: metric(b, "pgbackup_last_success_timestamp_seconds",
                                                      database="shop/DATABASE", source="heroku"))
    assert metric(b, "pgbackup_leader") == 0

    a.wait_for("the leader's capture to fail", lambda: metric(a, "pgbackup_actions_total", action="capture",
                                                              outcome="failed") == 1)
    assert posts(heroku) == 1
    b.wait_for("the follower to see the failed capture", lambda: metric(
        b, "pgbackup_finding_active", database="shop/DATABASE", check="last_attempt_failed", severity="critical"))
    m = b.metrics()
    assert all(v == 0 for (name, labels), v in m.items()
               if name == "pgbackup_actions_total" and ("action", "capture") in labels)  # b did nothing

    a.proc.kill()  # SIGKILL: no goodbye, its session (and advisory lock) dies with it
    a.proc.wait()
    t0 = time.monotonic()
    b.wait_for("replica b to take over", lambda: metric(b, "pgbackup_leader") == 1, timeout=15)
    took = time.monotonic() - t0
    print(f"leadership moved {took:.2f}s after the leader was killed (leader_interval 1s)")
    assert took < 5, f"leadership moved after {took:.1f}s (leader_interval 1s)"
    b.wait_for("the new leader to decline the repeat", lambda: (metric(
        b, "pgbackup_actions_total", action="capture", outcome="skipped_cooldown") or 0) >= 1)
    assert posts(heroku) == 1

    store = open_state_store(state_url, b.state_dir)
    try:
        records = [(r["outcome"], r["reason"]) for r in store.audit(action="capture")]
        taken = store.actions(action="capture")
    finally:
        store.close()
    assert [o for o, _ in records][:2] == ["started", "failed"]
    outcome, reason = records[-1]
    assert outcome == "skipped_cooldown"
    assert any(words in reason for words in ("on-request backup b002 at heroku (failed)",
                                             "the guardian's capture (failed"))
    assert len(taken) == 1 and taken[0].outcome == "failed"
    assert TOKEN not in a.log() + b.log()


@pytest.mark.parametrize("count", [2, 3, 7])
def test_sharding_puts_every_database_in_exactly_one_group_the_same_on_every_run(count: int) -> None:
    from daemon.config import DatabaseConfig

    names = [f"app-{i}/DATABASE" for i in range(200)]
    dbs = [DatabaseConfig(name=n, heroku={"app": n.split("/")[0]}) for n in names]
    groups = [[d.name for d in dbs if in_shard(d, count, i)] for i in range(count)]
    assert sorted(n for g in groups for n in g) == sorted(names)  # each in exactly one group
    assert all(len(g) > 200 / count / 2 for g in groups)  # and spread, not piled up
    # a known answer: the hash must never change, or a fleet's databases would move between replica groups
    assert [shard_of(f"app-{i}/DATABASE", 7) for i in range(6)] == [2, 0, 3, 0, 4, 6]
    assert shard_of("suoops-backend/DATABASE", 3) == 2
