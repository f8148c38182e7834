"""Dyno scaling: the pure planner (up after N failures, down to the person's quantity after M healthy minutes,
a person's change adopted), the probe against a real loopback HTTP server, and the formation calls against
the Heroku double."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from actions.scale import (
    HerokuScaler,
    ProbeResult,
    ProbeState,
    ScaleMemory,
    ScaleStep,
    advance,
    plan_scale,
    probe,
    remember,
    safe_url,
)
from daemon.adapters.heroku import HerokuClient, HerokuNotFound, HerokuProtocolError
from daemon.config import ScaleTarget
from tests.doubles.heroku import HerokuDouble

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(hours=1)


def target(**kw: Any) -> ScaleTarget:
    fields: dict[str, Any] = {"name": "api", "url": "http://127.0.0.1:9/health", "app": "shop", "failures": 3,
                              "max_quantity": 4, "healthy_for": timedelta(minutes=15)}
    return ScaleTarget(**(fields | kw))


def failed(at: datetime = T0, error: str = "HTTP 503 (expected 200)", status: int | None = 503) -> ProbeResult:
    return ProbeResult(ok=False, status=status, latency_seconds=0.01, error=error, at=at)


def passed(at: datetime = T0) -> ProbeResult:
    return ProbeResult(ok=True, status=200, latency_seconds=0.01, error=None, at=at)


def failing(n: int) -> ProbeState:
    return ProbeState(consecutive_failures=n, last=failed())


def healthy_for(span: timedelta) -> ProbeState:
    return ProbeState(healthy_since=T0 - span, last=passed())


# -- planner -------------------------------------------------------------------------------------------------
PERSON_AT_1 = ScaleMemory()
OURS_2_OVER_1 = ScaleMemory(baseline=1, ours=2, changed_at=T0 - timedelta(hours=1))
OURS_3_OVER_1 = ScaleMemory(baseline=1, ours=3, changed_at=T0 - timedelta(hours=1))
OURS_3_OVER_2 = ScaleMemory(baseline=2, ours=3, changed_at=T0 - timedelta(hours=1))


@pytest.mark.parametrize(
    ("probe_state", "current", "memory", "want", "reason_has"),
    [
        pytest.param(failing(3), 1, PERSON_AT_1, ScaleStep("up", 1, 2, "", None), ["3 consecutive", "HTTP 503"],
                     id="b-scales_up_from_1_to_2_after_n_failures"),
        pytest.param(failing(2), 1, PERSON_AT_1, ScaleStep("none", 1, 1, "", None), ["2 of 3 failures"],
                     id="d-no_scale_up_before_n_failures"),
        pytest.param(failing(1), 2, OURS_2_OVER_1, ScaleStep("none", 2, 2, "", None), ["1 of 3 failures"],
                     id="d-one_failure_neither_scales_up_nor_down"),
        pytest.param(failing(7), 2, OURS_2_OVER_1, ScaleStep("up", 2, 3, "", None), ["7 consecutive"],
                     id="b-keeps_scaling_up_one_dyno_at_a_time_while_failing"),
        pytest.param(failing(3), 4, ScaleMemory(baseline=1, ours=4), ScaleStep("none", 4, 4, "", "max"),
                     ["max of 4"], id="b-blocked_at_max_quantity"),
        pytest.param(failing(3), 6, PERSON_AT_1, ScaleStep("none", 6, 6, "", "max"), ["max of 4"],
                     id="b-blocked_when_a_person_set_more_than_the_max"),
        pytest.param(failing(3), 0, PERSON_AT_1, ScaleStep("none", 0, 0, "", "zero"), ["scaled to 0"],
                     id="b-does_not_start_a_process_a_person_scaled_to_zero"),
        pytest.param(healthy_for(timedelta(minutes=15)), 3, OURS_3_OVER_1, ScaleStep("down", 3, 1, "", None),
                     ["healthy for 15m"], id="c-scales_down_to_the_baseline_in_one_step_after_m_healthy"),
        pytest.param(healthy_for(timedelta(minutes=14, seconds=59)), 3, OURS_3_OVER_1,
                     ScaleStep("none", 3, 3, "", None), ["healthy for 14m59s of 15m"],
                     id="d-no_scale_down_before_m_healthy"),
        pytest.param(healthy_for(timedelta(hours=5)), 3, OURS_3_OVER_2, ScaleStep("down", 3, 2, "", None),
                     ["healthy for 5h"], id="c-never_scales_below_the_persons_baseline"),
        pytest.param(healthy_for(timedelta(hours=5)), 3, PERSON_AT_1, ScaleStep("none", 3, 3, "", None),
                     ["healthy"], id="c-never_scales_down_a_quantity_a_person_set"),
        pytest.param(ProbeState(), 1, PERSON_AT_1, ScaleStep("none", 1, 1, "", None), ["no probe yet"],
                     id="d-nothing_before_the_first_probe"),
    ],
)
def test_plan_scale_rules(probe_state: ProbeState, current: int, memory: ScaleMemory, want: ScaleStep,
                          reason_has: list[str]) -> None:
    step, _ = plan_scale(target(), probe_state, current, memory, T0)
    assert (step.direction, step.from_quantity, step.to_quantity, step.blocked) == (
        want.direction, want.from_quantity, want.to_quantity, want.blocked)
    for fragment in reason_has:
        assert fragment in step.reason


@pytest.mark.parametrize(
    ("probe_state", "current", "memory", "want_direction", "want_to", "want_memory"),
    [
        pytest.param(healthy_for(timedelta(hours=5)), 2, OURS_3_OVER_1, "none", 2,
                     ScaleMemory(baseline=2, ours=None, changed_at=OURS_3_OVER_1.changed_at),
                     id="a-person_scaled_down_is_adopted_and_not_scaled_further_down"),
        pytest.param(healthy_for(timedelta(hours=5)), 5, OURS_2_OVER_1, "none", 5,
                     ScaleMemory(baseline=5, ours=None, changed_at=OURS_2_OVER_1.changed_at),
                     id="a-person_scaled_up_is_adopted_and_never_undone"),
        pytest.param(failing(3), 3, OURS_2_OVER_1, "up", 4,
                     ScaleMemory(baseline=3, ours=None, changed_at=OURS_2_OVER_1.changed_at),
                     id="a-person_change_adopted_then_failing_scales_up_from_it"),
        pytest.param(healthy_for(timedelta(hours=5)), 3, OURS_3_OVER_1, "down", 1, OURS_3_OVER_1,
                     id="a-our_own_quantity_is_not_a_person_change"),
    ],
)
def test_plan_scale_adopts_a_persons_change(probe_state: ProbeState, current: int, memory: ScaleMemory,
                                            want_direction: str, want_to: int, want_memory: ScaleMemory) -> None:
    step, memory_after = plan_scale(target(), probe_state, current, memory, T0)
    assert (step.direction, step.to_quantity) == (want_direction, want_to)
    assert memory_after == want_memory


def test_plan_scale_is_pure_and_takes_now_for_the_healthy_span() -> None:
    state = ProbeState(healthy_since=T0, last=passed())
    early, _ = plan_scale(target(), state, 3, OURS_3_OVER_1, T0 + timedelta(minutes=3))
    late, _ = plan_scale(target(), state, 3, OURS_3_OVER_1, T0 + timedelta(minutes=15))
    assert (early.direction, early.reason) == ("none", "healthy for 3m of 15m")
    assert (late.direction, late.to_quantity) == ("down", 1)


# -- remember ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("memory", "step", "want"),
    [
        pytest.param(ScaleMemory(), ScaleStep("up", 1, 2, ""), ScaleMemory(baseline=1, ours=2, changed_at=LATER),
                     id="first_scale_up_records_the_persons_quantity_as_baseline"),
        pytest.param(OURS_2_OVER_1, ScaleStep("up", 2, 3, ""), ScaleMemory(baseline=1, ours=3, changed_at=LATER),
                     id="second_scale_up_keeps_the_baseline"),
        pytest.param(ScaleMemory(baseline=3, ours=None, changed_at=T0), ScaleStep("up", 3, 4, ""),
                     ScaleMemory(baseline=3, ours=4, changed_at=LATER),
                     id="scale_up_after_an_adopted_change_starts_from_it"),
        pytest.param(ScaleMemory(baseline=1, ours=None, changed_at=T0), ScaleStep("up", 2, 3, ""),
                     ScaleMemory(baseline=2, ours=3, changed_at=LATER),
                     id="scale_up_after_we_handed_back_uses_the_current_quantity"),
        pytest.param(OURS_3_OVER_1, ScaleStep("down", 3, 1, ""), ScaleMemory(baseline=1, ours=None, changed_at=LATER),
                     id="scale_down_hands_the_formation_back"),
        pytest.param(OURS_3_OVER_1, ScaleStep("none", 3, 3, "", "max"), OURS_3_OVER_1,
                     id="no_step_changes_nothing"),
    ],
)
def test_remember_transitions(memory: ScaleMemory, step: ScaleStep, want: ScaleMemory) -> None:
    assert remember(memory, step, LATER) == want


def test_a_full_episode_scales_up_to_the_max_then_back_to_the_persons_quantity() -> None:
    # No cooldown here (the guard layer's job): every failed probe from the Nth on proposes one more dyno.
    tgt, memory, state, current, now = target(), ScaleMemory(), ProbeState(), 1, T0
    steps = []
    for i in range(6):
        now = T0 + timedelta(seconds=30 * i)
        state = advance(state, failed(now))
        step, memory = plan_scale(tgt, state, current, memory, now)
        steps.append((step.direction, step.to_quantity, step.blocked))
        if step.direction != "none":
            current, memory = step.to_quantity, remember(memory, step, now)
    state = advance(state, passed(now + timedelta(seconds=30)))
    done = now + timedelta(seconds=30) + timedelta(minutes=15)
    step, memory = plan_scale(tgt, state, current, memory, done)
    memory = remember(memory, step, done)
    assert steps == [("none", 1, None), ("none", 1, None), ("up", 2, None), ("up", 3, None), ("up", 4, None),
                     ("none", 4, "max")]
    assert (step.direction, step.from_quantity, step.to_quantity) == ("down", 4, 1)
    assert memory == ScaleMemory(baseline=1, ours=None, changed_at=done)


# -- advance ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "result", "want"),
    [
        pytest.param(ProbeState(), failed(T0), ProbeState(1, None, failed(T0)), id="first_failure_counts_one"),
        pytest.param(ProbeState(2, None, failed()), failed(LATER), ProbeState(3, None, failed(LATER)),
                     id="failure_extends_the_streak"),
        pytest.param(ProbeState(0, T0, passed()), failed(LATER), ProbeState(1, None, failed(LATER)),
                     id="failure_ends_the_healthy_period"),
        pytest.param(ProbeState(5, None, failed()), passed(LATER), ProbeState(0, LATER, passed(LATER)),
                     id="success_clears_the_streak_and_starts_the_healthy_period"),
        pytest.param(ProbeState(0, T0, passed()), passed(LATER), ProbeState(0, T0, passed(LATER)),
                     id="success_keeps_when_the_healthy_period_started"),
    ],
)
def test_advance_transitions(state: ProbeState, result: ProbeResult, want: ProbeState) -> None:
    assert advance(state, result) == want


# -- memory persistence --------------------------------------------------------------------------------------
def test_scale_memory_round_trips_through_json_text() -> None:
    memory = ScaleMemory(baseline=1, ours=3, changed_at=T0)
    doc = json.loads(json.dumps(memory.to_json()))
    assert doc == {"baseline": 1, "ours": 3, "changed_at": "2026-11-25T12:00:00+00:00"}
    assert ScaleMemory.from_json(doc) == memory
    assert ScaleMemory.from_json({}) == ScaleMemory() == ScaleMemory.from_json(ScaleMemory().to_json())


def test_scale_memory_reads_a_naive_time_as_utc() -> None:
    assert ScaleMemory.from_json({"changed_at": "2026-11-25T12:00:00"}).changed_at == T0


@pytest.mark.parametrize("doc", [[], {"baseline": "1"}, {"ours": True}, {"ours": -1}, {"changed_at": 5},
                                 {"changed_at": "yesterday"}])
def test_scale_memory_rejects_a_malformed_document(doc: Any) -> None:
    with pytest.raises(ValueError):
        ScaleMemory.from_json(doc)


# -- probe against a real loopback server ----------------------------------------------------------------
SLOW_SECONDS = 0.25


class _Health(BaseHTTPRequestHandler):
    release: threading.Event  # set at teardown: lets the never-answering handler return

    def do_GET(self) -> None:  # the stdlib's name
        path = self.path.split("?", 1)[0]
        if path == "/never":
            self.release.wait()
            return  # nothing answered; the connection closes with the handler
        if path == "/slow":
            time.sleep(SLOW_SECONDS)  # the latency under test, not a race fix
        status = 503 if path == "/down" else 200
        body = b"ok" if status == 200 else b"down"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def health_url() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_Health,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False) as client:  # no proxy from the environment between us and loopback
        yield client


def probe_target(url: str, **kw: Any) -> ScaleTarget:
    return target(url=url, **({"timeout": timedelta(seconds=2), "max_latency": timedelta(seconds=1)} | kw))


def test_probe_ok_on_an_expected_status_in_time(health_url: str, http: httpx.Client) -> None:
    got = probe(http, probe_target(f"{health_url}/health"), T0)
    assert (got.ok, got.status, got.error, got.at) == (True, 200, None, T0)
    assert 0 <= got.latency_seconds < 1


def test_probe_fails_on_an_unexpected_status(health_url: str, http: httpx.Client) -> None:
    got = probe(http, probe_target(f"{health_url}/down"), T0)
    assert (got.ok, got.status) == (False, 503)
    assert got.error == "HTTP 503 (expected 200)"


def test_probe_accepts_any_configured_status(health_url: str, http: httpx.Client) -> None:
    assert probe(http, probe_target(f"{health_url}/down", expect_status=[200, 503]), T0).ok


def test_probe_fails_an_answer_slower_than_max_latency(health_url: str, http: httpx.Client) -> None:
    got = probe(http, probe_target(f"{health_url}/slow", max_latency=timedelta(milliseconds=100)), T0)
    assert (got.ok, got.status) == (False, 200)
    assert got.latency_seconds >= SLOW_SECONDS * 0.9 and got.error and got.error.startswith("slow: ")


def test_probe_times_out_without_raising(health_url: str, http: httpx.Client) -> None:
    got = probe(http, probe_target(f"{health_url}/never", timeout=timedelta(milliseconds=300)), T0)
    assert (got.ok, got.status) == (False, None)
    assert got.error and "Timeout" in got.error and f"{health_url}/never" in got.error
    assert got.latency_seconds >= 0.25


def test_probe_timeout_error_keeps_url_credentials_and_query_out(health_url: str, http: httpx.Client) -> None:
    url = health_url.replace("http://", "http://watcher:s3cr3t-pw@") + "/never?token=tok-9f8e7d"
    got = probe(http, probe_target(url, timeout=timedelta(milliseconds=300)), T0)
    assert not got.ok and got.error
    for leak in ("s3cr3t-pw", "watcher", "tok-9f8e7d", "token="):
        assert leak not in got.error
    assert f"{health_url}/never" in got.error


def test_probe_refused_connection_is_a_failure_without_credentials(http: httpx.Client) -> None:
    with socket.socket() as bound:  # bound, never listening: connections are refused, and the port stays ours
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        got = probe(http, probe_target(f"http://watcher:s3cr3t-pw@127.0.0.1:{port}/health?token=tok-9f8e7d"), T0)
    assert (got.ok, got.status) == (False, None)
    assert got.error and got.error.startswith("ConnectError GET ")
    for leak in ("s3cr3t-pw", "watcher", "tok-9f8e7d"):
        assert leak not in got.error


def test_probe_of_a_malformed_url_is_a_failure_without_credentials(http: httpx.Client) -> None:
    got = probe(http, probe_target("http://watcher:s3cr3t-pw@[::1/health?token=tok-9f8e7d"), T0)
    assert (got.ok, got.status) == (False, None)
    assert got.error and got.error.startswith("InvalidURL GET <invalid url>: ")
    for leak in ("s3cr3t-pw", "watcher", "tok-9f8e7d"):
        assert leak not in got.error


@pytest.mark.parametrize(("url", "want"), [
    ("https://u:p@example.com:8443/health?key=1#frag", "https://example.com:8443/health"),
    ("http://example.com/", "http://example.com/"),
    ("http://[::1]:8080/x", "http://[::1]:8080/x"),
    ("http://example.com:notaport/x", "<invalid url>"),
])
def test_safe_url_drops_userinfo_query_and_fragment(url: str, want: str) -> None:
    assert safe_url(url) == want


# -- formation calls against the Heroku double ---------------------------------------------------------------
@pytest.fixture
def heroku() -> Iterator[HerokuDouble]:
    with HerokuDouble(token="hrku-SCALE-token-0123456789") as double:
        double.add_app("shop")
        yield double


def heroku_client(double: HerokuDouble, **kw: Any) -> HerokuClient:
    slept: list[float] = []
    return HerokuClient(double.token, platform_url=double.platform_url, data_url=double.data_url,
                        sleep=slept.append, **kw)


def test_scaler_reads_and_sets_the_formation_quantity(heroku: HerokuDouble) -> None:
    client = heroku_client(heroku)
    scaler = HerokuScaler(client)
    assert scaler.quantity("shop", "web") == 1
    assert scaler.scale("shop", "web", 3) == 3
    assert scaler.quantity("shop", "web") == 3
    assert client.formation("shop", "web")["quantity"] == 3
    seen = httpx.get(f"{heroku.platform_url}/apps/shop/formation/web",
                     headers={"Authorization": f"Bearer {heroku.token}"}, trust_env=False)
    assert seen.status_code == 200 and seen.json()["quantity"] == 3
    assert scaler.quantity("shop", "worker") == 1  # only the one process type changed


def test_update_formation_sends_only_the_absolute_quantity(heroku: HerokuDouble) -> None:
    formation = heroku_client(heroku).update_formation("shop", "web", 3)
    assert formation["type"] == "web" and formation["quantity"] == 3
    [patch] = [r for r in heroku.requests if r.method == "PATCH"]
    assert patch.path == "/apps/shop/formation/web" and patch.host == "platform"
    assert json.loads(patch.body) == {"quantity": 3}


def test_update_formation_is_retried_after_a_5xx_because_it_is_absolute(heroku: HerokuDouble) -> None:
    heroku.inject(r"PATCH /apps/shop/formation/web$", "503", times=1)
    assert HerokuScaler(heroku_client(heroku)).scale("shop", "web", 2) == 2
    assert [r.status for r in heroku.requests if r.method == "PATCH"] == [503, 200]


@pytest.mark.parametrize("call", ["quantity", "scale"])
def test_unknown_process_type_is_not_found(heroku: HerokuDouble, call: str) -> None:
    scaler = HerokuScaler(heroku_client(heroku))
    with pytest.raises(HerokuNotFound, match="Couldn't find that formation"):
        scaler.quantity("shop", "clock") if call == "quantity" else scaler.scale("shop", "clock", 2)


@pytest.mark.parametrize("answer", [{"type": "web"}, {"type": "web", "quantity": "3"},
                                    {"type": "web", "quantity": True}, [{"quantity": 3}]])
def test_formation_without_an_integer_quantity_is_a_protocol_error(answer: Any) -> None:
    # A transport double (the client's own injection point) for shapes the faithful double never sends.
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))
    client = HerokuClient("hrku-SCALE-token-0123456789", transport=transport)
    with pytest.raises(HerokuProtocolError):
        client.update_formation("shop", "web", 3)
    with pytest.raises(HerokuProtocolError):
        client.formation("shop", "web")
    client.close()
