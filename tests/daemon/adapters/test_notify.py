"""Apprise notifications over real HTTP: Apprise's json:// scheme posts to a loopback webhook receiver that records
every request. The notifier is the real one `make_notifier` builds; the clock is the evaluation's `now`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from daemon.adapters.notify import AppriseNotifier
from daemon.adapters.sentry import LogNotifier, make_notifier
from daemon.config import NotificationsConfig, SentryConfig
from daemon.config.loading import load_config
from daemon.core.errors import ConfigError
from daemon.core.snapshot import DatabaseState, Finding
from tests.doubles.sentry import EnvelopeServer
from tests.support import DaemonProcess, wait_for

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
TOKEN = "tok3nS3cretValue9876"


class Receiver:
    """A webhook endpoint on 127.0.0.1: records (path, headers, JSON body) of each POST; answers `status`."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.status = 200
        self.release = threading.Event()  # cleared: each request is held until it is set again
        self.release.set()
        self.held = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not outer.release.is_set():
                    outer.held += 1
                    outer.release.wait(30)
                if outer.status == 200:
                    outer.requests.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str = "hook") -> str:
        return f"json://guardian:{TOKEN}@127.0.0.1:{self.port}/{path}"

    def titles(self) -> list[str]:
        return [body["title"] for _, _, body in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def notifier(receiver: Receiver, tmp_path: Path) -> Iterator[LogNotifier]:
    n = make_notifier(SentryConfig(reminder="6h", flap_window="15m"), tmp_path, lambda: T0,
                      notifications=NotificationsConfig(urls=[receiver.url()]))
    yield n
    n.close()


def sink(notifier: LogNotifier) -> AppriseNotifier:
    found = [s for s in notifier.sinks if isinstance(s, AppriseNotifier)]
    assert len(found) == 1
    return found[0]


def breach(active: bool = True, database: str = "shop") -> Finding:
    return Finding(database, "rpo_breach", "critical", active, "no good backup for 25h; RPO 24h", T0,
                   value=90000.0, threshold=86400.0)


def state(*findings: Finding, name: str = "shop") -> dict[str, DatabaseState]:
    return {name: DatabaseState(name=name, rpo_seconds=86400, rto_seconds={}, findings=findings, evaluated_at=T0)}


def evaluate(notifier: LogNotifier, receiver: Receiver, databases: dict[str, DatabaseState],
             now: datetime) -> list[str]:
    """One evaluation; the titles it delivered (every queued message sent or failed before this returns)."""
    before = len(receiver.requests)
    notifier.on_evaluation(databases, now)
    assert sink(notifier).flush(10)
    return receiver.titles()[before:]


def test_a_finding_opens_once_is_reminded_and_resolves_once(notifier: LogNotifier, receiver: Receiver) -> None:
    assert evaluate(notifier, receiver, state(breach()), T0) == ["[CRITICAL] shop: Data at risk is past the RPO"]
    path, headers, body = receiver.requests[0]
    assert path == "/hook" and headers["Content-Type"].startswith("application/json")
    assert "no good backup for 25h" in body["message"] and "value: 90000, threshold: 86400" in body["message"]
    assert "Database: shop" in body["message"] and "pg-backup-guardian 0." in body["message"]
    assert body["type"] == "failure"

    assert evaluate(notifier, receiver, state(breach()), T0 + timedelta(minutes=1)) == []  # still open: nothing new
    assert evaluate(notifier, receiver, state(breach()), T0 + timedelta(hours=5)) == []
    assert evaluate(notifier, receiver, state(breach()), T0 + timedelta(hours=6, minutes=1)) == [
        "[CRITICAL] Still open: shop: Data at risk is past the RPO"]

    inactive = state(breach(active=False))
    assert evaluate(notifier, receiver, inactive, T0 + timedelta(hours=7)) == []  # closing, inside the flap window
    assert evaluate(notifier, receiver, inactive, T0 + timedelta(hours=7, minutes=15)) == [
        "[RESOLVED] shop: Data at risk is past the RPO"]
    assert receiver.requests[-1][2]["type"] == "success"


def test_a_flap_inside_the_window_sends_nothing_new(notifier: LogNotifier, receiver: Receiver) -> None:
    assert len(evaluate(notifier, receiver, state(breach()), T0)) == 1
    now = T0
    for _ in range(3):  # closes and opens again minutes apart: the same incident
        now += timedelta(minutes=4)
        assert evaluate(notifier, receiver, state(breach(active=False)), now) == []
        now += timedelta(minutes=4)
        assert evaluate(notifier, receiver, state(breach()), now) == []


def test_many_findings_opening_together_are_one_message_per_database(notifier: LogNotifier,
                                                                        receiver: Receiver) -> None:
    failed = Finding("shop", "last_attempt_failed", "critical", True, "pg_dump exited 1", T0)
    size = Finding("shop", "size_anomaly", "warning", True, "40% of the median", T0)
    other = breach(database="crm")
    databases = {**state(breach(), failed, size), **state(other, name="crm")}
    titles = evaluate(notifier, receiver, databases, T0)
    assert sorted(titles) == ["[CRITICAL] crm: Data at risk is past the RPO",
                              "[CRITICAL] shop: Data at risk is past the RPO (+2 more)"]
    shop = next(body for _, _, body in receiver.requests if body["title"].startswith("[CRITICAL] shop"))
    assert "pg_dump exited 1" in shop["message"] and "40% of the median" in shop["message"]


def test_a_failing_endpoint_is_logged_without_its_token_and_the_next_transition_gets_through(
        notifier: LogNotifier, receiver: Receiver) -> None:
    lines: list[str] = []
    handle = logger.add(lambda m: lines.append(str(m)), level="DEBUG", format="{message} {exception}")
    try:
        receiver.status = 500
        before = datetime.now(UTC)
        notifier.on_evaluation(state(breach()), T0)  # the evaluation goes on: nothing raised, nothing waited
        assert (datetime.now(UTC) - before).total_seconds() < 1
        assert sink(notifier).flush(10)
        assert receiver.requests == []
        assert any("notification to json:// not sent" in line for line in lines)

        receiver.status = 200
        assert evaluate(notifier, receiver, state(breach(active=False)), T0 + timedelta(minutes=20)) == []  # closing
        assert evaluate(notifier, receiver, state(breach(active=False)), T0 + timedelta(minutes=40)) == [
            "[RESOLVED] shop: Data at risk is past the RPO"]
    finally:
        logger.remove(handle)
    assert not [line for line in lines if TOKEN in line]


def test_a_hanging_endpoint_does_not_hold_the_evaluation(notifier: LogNotifier, receiver: Receiver) -> None:
    receiver.release.clear()
    try:
        started = time.monotonic()
        notifier.on_evaluation(state(breach()), T0)
        returned = time.monotonic() - started
        wait_for(lambda: receiver.held == 1)  # the message is on the wire, unanswered
        assert returned < 2  # a send in the evaluation would wait for Apprise's 4 s read timeout
    finally:
        receiver.release.set()
    assert sink(notifier).flush(10)
    assert receiver.titles() == ["[CRITICAL] shop: Data at risk is past the RPO"]


def test_sentry_and_apprise_both_get_the_open_from_one_tracker(receiver: Receiver, tmp_path: Path) -> None:
    sentry = EnvelopeServer()
    n = make_notifier(SentryConfig(dsn=sentry.dsn), tmp_path, lambda: T0,
                      notifications=NotificationsConfig(urls=[receiver.url()]))
    try:
        n.on_evaluation(state(breach()), T0)
        n.on_evaluation(state(breach()), T0 + timedelta(minutes=1))
        assert sink(n).flush(10)
        import sentry_sdk

        sentry_sdk.flush(timeout=5)
        assert receiver.titles() == ["[CRITICAL] shop: Data at risk is past the RPO"]
        assert [e["tags"]["check"] for e in sentry.events()] == ["rpo_breach"]
    finally:
        n.close()
        sentry.stop()


def test_the_daily_digest_is_sent_once_at_its_time(receiver: Receiver, tmp_path: Path) -> None:
    n = make_notifier(SentryConfig(), tmp_path, lambda: T0,
                      notifications=NotificationsConfig(urls=[receiver.url()], digest="08:00"))
    try:
        day = T0.replace(hour=7, minute=0)
        for now in (day, day + timedelta(minutes=59), day + timedelta(hours=1), day + timedelta(hours=2)):
            n.on_evaluation(state(breach()), now)
        assert sink(n).flush(10)
        digests = [b for _, _, b in receiver.requests if b["title"].startswith("[DIGEST]")]
        assert [d["title"] for d in digests] == ["[DIGEST] 1 database, 1 with open findings"]
        assert "shop: no good backup; rpo_breach (critical)" in digests[0]["message"]
    finally:
        n.close()


# -- configuration ----------------------------------------------------------------------------------------

def test_an_url_apprise_cannot_read_is_a_config_error_naming_the_field_without_its_token(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text(f"notifications:\n  urls:\n    - json://127.0.0.1:9/ok\n    - slack://{TOKEN}\n"
                   f"    - hooks.slack.com/services/{TOKEN}\n")  # a webhook address pasted without its scheme
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        load_config(cfg, {})
    text = str(err.value)
    assert "notifications.urls[1]: Apprise cannot read this URL (slack://;" in text
    assert "notifications.urls[2]: Apprise cannot read this URL (no scheme;" in text
    assert TOKEN not in text
    out, errors = capfd.readouterr()
    assert TOKEN not in caplog.text + out + errors  # Apprise's own log of the unreadable URL is silenced


def test_notify_urls_from_the_environment_whitespace_or_comma_separated() -> None:
    env = {"GUARDIAN_NOTIFY_URLS": "json://127.0.0.1:9/a  mailto://u:pw12@example.com?to=a@x.io,b@x.io,"
                                   "json://127.0.0.1:9/c\n"}
    urls = [u.get_secret_value() for u in load_config(None, env).notifications.urls]
    assert urls == ["json://127.0.0.1:9/a", "mailto://u:pw12@example.com?to=a@x.io,b@x.io", "json://127.0.0.1:9/c"]


# -- the real daemon ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_daemon_sends_the_open_message_to_the_webhook(
        run_daemon: Callable[..., DaemonProcess], fresh_db: str, receiver: Receiver) -> None:
    d = run_daemon("collect_interval: 1s\n"
                   f"notifications:\n  urls: ['{receiver.url('daemon')}']\n"
                   f"databases:\n  - name: shop\n    url: '{fresh_db}'\n    capture: {{enabled: false}}\n")
    # rpo_breach and no_schedule open in the same evaluation: one message, the critical one in its title
    wait_for(lambda: receiver.titles() == ["[CRITICAL] shop: Data at risk is past the RPO (+1 more)"], 60)
    path, _, body = receiver.requests[0]
    assert path == "/daemon" and "Database: shop (no good backup, RPO 1d)" in body["message"]
    assert "No backup schedule is configured (no_schedule, warning)" in body["message"]
    log = d.log()
    assert TOKEN not in log and "pg-backup-guardian 0." in log  # the token masked, and only the token


def test_the_finding_history_names_who_was_told_by_channel_never_by_url(receiver: Receiver, tmp_path: Path) -> None:
    from daemon.adapters.statestore import open_state_store

    store = open_state_store(None, tmp_path / "state")
    n = make_notifier(SentryConfig(reminder="6h", flap_window="15m"), tmp_path, lambda: T0, store=store,
                      notifications=NotificationsConfig(urls=[receiver.url()]))
    try:
        evaluate(n, receiver, state(breach()), T0)
        evaluate(n, receiver, state(breach(active=False)), T0 + timedelta(hours=1))
        evaluate(n, receiver, state(breach(active=False)), T0 + timedelta(hours=1, minutes=15))
        history = store.finding_history()
    finally:
        n.close()
        store.close()
    assert [(e.kind, e.details.get("transition")) for e in history] == [
        ("opened", None), ("notified", "opened"), ("resolved", None), ("notified", "resolved")]
    assert history[1].details["channels"] == ["log", "json"]
    assert history[2].time == T0 + timedelta(hours=1)  # when it stopped, not when the flap window ended
    assert TOKEN not in json.dumps([e.details for e in history]) + "".join(e.hint for e in history)
