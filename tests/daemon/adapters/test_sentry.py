"""The real sentry-sdk pointed at a loopback DSN; a small server (tests.doubles.sentry) reads the envelopes it
sends."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from actions.capture import Capturer, CaptureRequest
from daemon.adapters.archive.local import LocalDirectoryStore
from daemon.adapters.postgres.cluster import LocalCluster
from daemon.app import Guardian
from daemon.config import GuardianConfig
from daemon.core.redact import url_password
from tests.doubles.sentry import EnvelopeServer
from tests.support import FakeClock, allow_connections, create_database, shop_config


@pytest.fixture
def sentry() -> Iterator[EnvelopeServer]:
    server = EnvelopeServer()
    yield server
    server.stop()


def flush() -> None:
    import sentry_sdk

    sentry_sdk.flush(timeout=5)


def test_findings_open_once_remind_later_and_check_ins_close_the_breach(
    sentry: EnvelopeServer, pg_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster)
    clock = FakeClock()
    config = GuardianConfig.model_validate(shop_config(tmp_path, url, sentry={"dsn": sentry.dsn, "reminder": "6h"}))
    g = Guardian(config, clock=clock)
    try:
        g.collect_all()  # no backup at all: rpo_breach opens
        logger.error("a loud log line that must not become a Sentry event")
        g.collect_all()
        g.collect_all()  # still open: nothing new
        flush()
        events = sentry.events()
        breach = [e for e in events if e["tags"]["check"] == "rpo_breach"]
        assert len(breach) == 1
        event = breach[0]
        assert event["fingerprint"] == ["pg-backup-guardian", "shop", "rpo_breach"]
        assert event["level"] == "error" and event["tags"]["database"] == "shop"
        assert event["contexts"]["backup"]["rpo_seconds"] == 86400
        assert not [e for e in events if "loud log line" in json.dumps(e.get("logentry") or e.get("message"))]
        assert [c["status"] for c in sentry.checkins("pgbackup-rpo-shop")] == ["error"]

        clock.now += timedelta(hours=6, seconds=1)  # the reminder interval passes
        g.collect_all()
        flush()
        reminders = [e for e in sentry.events() if e["tags"].get("reminder") == "yes"]
        assert len(reminders) == 1 and reminders[0]["fingerprint"] == event["fingerprint"]

        # a good backup: the breach closes through an ok check-in, never through another event; the ok comes
        # only once the breach stayed closed for the flap window (15m by default)
        before = len(sentry.events())
        Capturer(LocalDirectoryStore(tmp_path / "archive"), clock=clock).capture(
            CaptureRequest(database="shop", url=url))
        g.collect_all()
        flush()
        assert {c["status"] for c in sentry.checkins("pgbackup-rpo-shop")} == {"error"}
        clock.now += timedelta(minutes=15)
        g.collect_all()
        flush()
        statuses = [c["status"] for c in sentry.checkins("pgbackup-rpo-shop")]
        assert statuses[-1] == "ok" and set(statuses[:-1]) == {"error"}  # error while breached (repeated
        # every few minutes so the monitor stays fed), ok once met
        assert len(sentry.events()) == before

        # the capture job reports through its own monitor
        g.captures.capture("shop", "manual")
        flush()
        statuses = [c["status"] for c in sentry.checkins("pgbackup-capture-shop")]
        assert statuses == ["in_progress", "ok"]

        password = url_password(url)
        assert password and not any(password.encode() in raw for raw in sentry.raw)
    finally:
        g.stop()


def _collector_down_events(sentry: EnvelopeServer) -> list[dict[str, Any]]:
    flush()
    return [e for e in sentry.events() if e["tags"]["check"] == "collector_down"]


def test_a_finding_flapping_within_the_window_pages_once_and_again_after_it(
    sentry: EnvelopeServer, pg_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = create_database(pg_cluster)
    clock = FakeClock()
    config = GuardianConfig.model_validate(shop_config(tmp_path, url, sentry={"dsn": sentry.dsn, "flap_window": "15m"}))
    g = Guardian(config, clock=clock)
    try:
        g.collect_all()
        assert _collector_down_events(sentry) == []
        allow_connections(pg_cluster, url, False)
        g.collect_all()  # opens: one event
        assert len(_collector_down_events(sentry)) == 1
        for _ in range(2):  # closes and opens again, twice, minutes apart: the same incident
            allow_connections(pg_cluster, url, True)
            clock.now += timedelta(minutes=3)
            g.collect_all()
            allow_connections(pg_cluster, url, False)
            clock.now += timedelta(minutes=3)
            g.collect_all()
        events = _collector_down_events(sentry)
        assert len(events) == 1

        # closed for longer than the window: the next open is a new incident, told again, same fingerprint
        allow_connections(pg_cluster, url, True)
        g.collect_all()
        clock.now += timedelta(minutes=15)
        g.collect_all()
        allow_connections(pg_cluster, url, False)
        clock.now += timedelta(minutes=1)
        g.collect_all()
        events = _collector_down_events(sentry)
        assert len(events) == 2
        assert events[0]["fingerprint"] == events[1]["fingerprint"] == ["pg-backup-guardian", "shop", "collector_down"]
        assert events[1]["tags"]["reminder"] == "no"
    finally:
        allow_connections(pg_cluster, url, True)
        g.stop()


def test_without_a_dsn_findings_go_to_the_log_once(pg_cluster: LocalCluster, tmp_path: Path) -> None:
    url = create_database(pg_cluster)
    (tmp_path / "archive").mkdir()  # read and empty: no good backup, a breach
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO", format="{message}")
    try:
        config = GuardianConfig.model_validate({
            "state_dir": str(tmp_path / "state"), "archive": {"path": str(tmp_path / "archive")},
            "databases": [{"name": "shop", "url": url, "capture": {"interval": "1h"}}]})
        g = Guardian(config)
        try:
            g.collect_all()
            g.collect_all()
        finally:
            g.stop()
    finally:
        logger.remove(sink)
    assert len([line for line in lines if line.startswith("rpo_breach on shop")]) == 1


def test_an_unachievable_rpo_is_said_once_and_not_reminded_daily() -> None:
    """A standing condition of the configuration (rpo_unachievable) opens once and is reminded monthly, while an
    incident (rpo_breach) is reminded at the configured interval."""
    from daemon.adapters.sentry import FindingTracker
    from daemon.core.snapshot import Finding

    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    tracker = FindingTracker(None, timedelta(hours=24))

    def findings(at: datetime) -> list[Finding]:
        return [Finding("shop", "rpo_unachievable", "warning", True, "daily schedule, 24h RPO", at),
                Finding("shop", "rpo_breach", "critical", True, "data at risk 25h", at)]

    opened, _, _ = tracker.changes(findings(t0), t0)
    assert sorted(f.check for f in opened) == ["rpo_breach", "rpo_unachievable"]
    reminded: dict[str, int] = {}
    for day in range(1, 31):
        _, remind, _ = tracker.changes(findings(t0 + timedelta(days=day)), t0 + timedelta(days=day))
        for f in remind:
            reminded[f.check] = reminded.get(f.check, 0) + 1
    assert reminded == {"rpo_breach": 30, "rpo_unachievable": 1}  # the standing one: once, on day 30


def test_the_finding_history_is_pruned_beyond_its_keep(tmp_path: Path) -> None:
    """Each transition is kept once; entries older than history_keep go as new ones are written."""
    from daemon.adapters.sentry import FindingTracker
    from daemon.adapters.statestore import open_state_store
    from daemon.core.snapshot import Finding

    t0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    store = open_state_store(None, tmp_path / "state")
    tracker = FindingTracker(None, timedelta(hours=24), store, timedelta(0), history_keep=timedelta(days=30))

    def breach(active: bool, at: datetime) -> list[Finding]:
        return [Finding("shop", "rpo_breach", "critical", active, "data at risk 25h", at)]

    try:
        tracker.changes(breach(True, t0), t0)
        tracker.changes(breach(True, t0 + timedelta(hours=1)), t0 + timedelta(hours=1))  # still open: nothing
        tracker.changes(breach(False, t0 + timedelta(hours=2)), t0 + timedelta(hours=2))
        first = store.finding_history()
        assert [(e.kind, e.time) for e in first] == [("opened", t0), ("resolved", t0 + timedelta(hours=2))]
        assert first[1].details == {"open_seconds": 7200} and first[1].severity == "critical"
        later = t0 + timedelta(days=31, hours=1)
        tracker.changes(breach(True, later), later)
        assert [(e.kind, e.time) for e in store.finding_history()] == [("opened", later)]
    finally:
        store.close()
