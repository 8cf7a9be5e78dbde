"""The probe server over real HTTP: /healthz, /readyz, /metrics; the admin endpoints behind their token."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from workers.adapters.http import AdminServer, LoopHeartbeat, ProbeServer, parse_switch
from workers.domain.guards import RejectReason
from workers.domain.health import (
    ConsumeCounts,
    HealthFacts,
    HealthMonitor,
    HealthStatus,
    HealthThresholds,
    ProgressWatch,
)
from workers.domain.trading_state import TradingState
from workers.metrics import Metrics

pytestmark = pytest.mark.integration

ALL_UP = HealthFacts(ibkr_connected=True, kafka_connected=True, database_connected=True)


@dataclass
class FakeGateway:
    connected: bool = True
    reconnects: int = 0
    errors_by_code: dict[int, int] = field(default_factory=dict)
    rtt_ms: float | None = None
    heartbeat_failures: int = 0


@dataclass
class FakeLimiter:
    waits: int = 0
    waited_seconds: float = 0.0
    queued: int = 0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by (name, sorted labels)."""
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def monitor() -> HealthMonitor:
    return HealthMonitor(HealthThresholds(down_after=30, max_lag=100))


StartServer = Callable[..., Awaitable[ProbeServer]]
"""Starts a probe server on 127.0.0.1, a free port; keyword arguments override the defaults."""


@pytest.fixture
async def start_server(metrics: Metrics, monitor: HealthMonitor) -> AsyncIterator[StartServer]:
    started: list[ProbeServer] = []

    async def start(**kwargs: object) -> ProbeServer:
        options: dict[str, object] = {"monitor": monitor, "metrics": metrics, "host": "127.0.0.1",
                                      "port": 0, "heartbeat": LoopHeartbeat(interval=0.02, window=5.0)}
        options.update(kwargs)
        server = ProbeServer(**options)  # type: ignore[arg-type]  # options is a kwargs bag
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def client_for(server: ProbeServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5.0)


# -- /metrics ---------------------------------------------------------------------------------------------


async def test_metrics_shows_the_counters_incremented(start_server: StartServer,
                                                      metrics: Metrics) -> None:
    server = await start_server()
    for _ in range(3):
        metrics.order_consumed()
    metrics.order_rejected(RejectReason.TRADING_HALTED)
    metrics.order_rejected(RejectReason.TRADING_HALTED)
    metrics.order_rejected(RejectReason.ACCOUNT_NOT_ALLOWED)
    metrics.order_placed(latency=0.02)
    metrics.order_placed()
    metrics.order_cancelled()
    metrics.fill_published(latency=1.5)
    metrics.instrument_synced("CREATED")
    metrics.instrument_sync_failed()
    metrics.instrument_sync_pass(12.0)
    async with await client_for(server) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("ibkr_workers_orders_consumed_total", ())] == 3
    assert found[("ibkr_workers_orders_rejected_total", (("reason", "TRADING_HALTED"),))] == 2
    assert found[("ibkr_workers_orders_rejected_total", (("reason", "ACCOUNT_NOT_ALLOWED"),))] == 1
    assert found[("ibkr_workers_orders_placed_total", ())] == 2
    assert found[("ibkr_workers_orders_cancelled_total", ())] == 1
    assert found[("ibkr_workers_fills_total", ())] == 1
    assert found[("ibkr_workers_consume_to_place_seconds_count", ())] == 1
    assert found[("ibkr_workers_consume_to_place_seconds_bucket", (("le", "0.025"),))] == 1
    assert found[("ibkr_workers_consume_to_place_seconds_bucket", (("le", "0.01"),))] == 0
    assert found[("ibkr_workers_execution_to_fill_published_seconds_sum", ())] == 1.5
    assert found[("ibkr_workers_instruments_synced_total", (("change", "CREATED"),))] == 1
    assert found[("ibkr_workers_instruments_sync_failed_total", ())] == 1
    assert found[("ibkr_workers_instrument_sync_pass_seconds_count", ())] == 1
    assert found[("ibkr_workers_instrument_sync_last_success_timestamp_seconds", ())] > 0
    assert all(name.startswith("ibkr_workers_") for name, _ in found)


async def test_metrics_reads_the_adapters_counters_at_scrape_time(start_server: StartServer,
                                                                  metrics: Metrics) -> None:
    server = await start_server()
    gateway = FakeGateway(connected=True, reconnects=1, errors_by_code={201: 2})
    limiter = FakeLimiter(waits=4, waited_seconds=0.75, queued=2)
    metrics.watch_ibkr(gateway)
    metrics.watch_pacing(limiter)
    async with await client_for(server) as client:
        first = samples((await client.get("/metrics")).text)
        gateway.reconnects = 3
        gateway.errors_by_code[1100] = 1
        gateway.connected = False
        limiter.waits = 5
        second = samples((await client.get("/metrics")).text)
    assert first[("ibkr_workers_ibkr_reconnects_total", ())] == 1
    assert first[("ibkr_workers_ibkr_errors_total", (("code", "201"),))] == 2
    assert first[("ibkr_workers_ibkr_connected", ())] == 1
    assert first[("ibkr_workers_pacing_waits_total", ())] == 4
    assert first[("ibkr_workers_pacing_wait_seconds_total", ())] == 0.75
    assert first[("ibkr_workers_pacing_queued", ())] == 2
    assert second[("ibkr_workers_ibkr_reconnects_total", ())] == 3
    assert second[("ibkr_workers_ibkr_errors_total", (("code", "1100"),))] == 1
    assert second[("ibkr_workers_ibkr_connected", ())] == 0
    assert second[("ibkr_workers_pacing_waits_total", ())] == 5


async def test_metrics_follow_the_health_assessments(start_server: StartServer,
                                                     metrics: Metrics, monitor: HealthMonitor) -> None:
    server = await start_server()
    metrics.observe_health(monitor.observe(ALL_UP))
    monitor.mark_started()
    metrics.observe_health(monitor.observe(replace(ALL_UP, consumer_lag=7, orders_in_flight=2)))
    metrics.observe_health(monitor.observe(replace(ALL_UP, paused=True, consumer_lag=None)))
    async with await client_for(server) as client:
        found = samples((await client.get("/metrics")).text)
    transitions = "ibkr_workers_health_status_transitions_total"
    assert found[(transitions, (("from", "STARTING"), ("to", "HEALTHY")))] == 1
    assert found[(transitions, (("from", "HEALTHY"), ("to", "DEGRADED")))] == 1
    assert found[("ibkr_workers_health_status", (("status", "DEGRADED"),))] == 1
    assert found[("ibkr_workers_health_status", (("status", "HEALTHY"),))] == 0
    assert found[("ibkr_workers_orders_in_flight", ())] == 0
    assert found[("ibkr_workers_ibkr_connected", ())] == 1
    assert math.isnan(found[("ibkr_workers_consumer_lag", ())])  # unknown


async def test_metrics_speaks_openmetrics_when_asked(start_server: StartServer, metrics: Metrics) -> None:
    server = await start_server()
    metrics.order_cancelled()
    async with await client_for(server) as client:
        response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert "ibkr_workers_orders_cancelled_total 1.0" in response.text
    assert response.text.endswith("# EOF\n")


def test_each_metrics_object_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.order_consumed()
    assert one.registry.get_sample_value("ibkr_workers_orders_consumed_total") == 1
    assert two.registry.get_sample_value("ibkr_workers_orders_consumed_total") == 0


# -- /readyz ----------------------------------------------------------------------------------------------


async def test_readyz_is_503_while_starting_and_200_once_healthy(start_server: StartServer,
                                                                 monitor: HealthMonitor) -> None:
    server = await start_server()
    async with await client_for(server) as client:
        before = await client.get("/readyz")
        monitor.observe(ALL_UP)
        starting = await client.get("/readyz")
        monitor.mark_started()
        monitor.observe(ALL_UP)
        healthy = await client.get("/readyz")
        monitor.observe(replace(ALL_UP, paused=True))
        degraded = await client.get("/readyz")
    assert before.status_code == 503
    assert before.json()["reason"] == "no health assessment yet"
    assert starting.status_code == 503
    assert starting.json() == {"ready": False, "status": "STARTING", "reason": "status STARTING: starting"}
    assert healthy.status_code == 200
    assert healthy.json() == {"ready": True, "status": "HEALTHY", "reason": "status HEALTHY"}
    assert degraded.status_code == 200
    assert degraded.json()["status"] == "DEGRADED"


async def test_readyz_is_503_when_ibkr_is_not_connected(start_server: StartServer,
                                                        monitor: HealthMonitor) -> None:
    gateway = FakeGateway(connected=True)
    server = await start_server(ibkr_connected=lambda: gateway.connected)
    monitor.mark_started()
    monitor.observe(ALL_UP)
    async with await client_for(server) as client:
        assert (await client.get("/readyz")).status_code == 200
        gateway.connected = False  # live reading, before the next health sample notices
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"] == "IBKR not connected"


async def test_readyz_is_503_when_unhealthy_or_stopping(start_server: StartServer) -> None:
    monitor = HealthMonitor(HealthThresholds(down_after=0))
    server = await start_server(monitor=monitor)
    monitor.mark_started()
    monitor.observe(replace(ALL_UP, database_connected=False))
    async with await client_for(server) as client:
        unhealthy = await client.get("/readyz")
        monitor.mark_stopping()
        monitor.observe(ALL_UP)
        stopping = await client.get("/readyz")
    assert unhealthy.status_code == 503
    assert unhealthy.json()["status"] == "UNHEALTHY"
    assert "database down" in unhealthy.json()["reason"]
    assert stopping.status_code == 503
    assert stopping.json()["status"] == "STOPPING"


# -- /healthz ---------------------------------------------------------------------------------------------


async def test_healthz_answers_200_while_the_loop_keeps_time(start_server: StartServer) -> None:
    server = await start_server()
    await asyncio.sleep(0.1)
    async with await client_for(server) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["alive"] is True
    assert body["loop_lag_seconds"] < 0.5
    assert body["status"] == "STARTING"
    assert server.heartbeat.beats > 0


async def test_healthz_fails_after_the_event_loop_was_blocked(start_server: StartServer) -> None:
    server = await start_server(max_loop_lag=0.2)
    async with await client_for(server) as client:
        await asyncio.sleep(0.1)
        assert (await client.get("/healthz")).status_code == 200
        time.sleep(0.5)  # noqa: ASYNC251 -- blocking the event loop is what this test is about
        response = await client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["alive"] is False
    assert body["loop_lag_seconds"] >= 0.4
    assert body["reason"].startswith("event loop blocked for")
    assert server.heartbeat.lag() >= 0.4


async def test_healthz_recovers_once_the_block_leaves_the_window(start_server: StartServer) -> None:
    heartbeat = LoopHeartbeat(interval=0.02, window=0.3)
    server = await start_server(max_loop_lag=0.2, heartbeat=heartbeat)
    async with await client_for(server) as client:
        time.sleep(0.3)  # noqa: ASYNC251 -- a deliberate stall of the event loop
        assert (await client.get("/healthz")).status_code == 503
        await asyncio.sleep(0.5)
        response = await client.get("/healthz")
    assert response.status_code == 200


async def test_healthz_fails_when_the_heartbeat_stopped(start_server: StartServer) -> None:
    server = await start_server()
    await server.heartbeat.stop()
    async with await client_for(server) as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["reason"] == "event loop heartbeat is not running"


async def test_healthz_fails_when_the_consume_loop_stalls_with_records_waiting(
        start_server: StartServer) -> None:
    backlog = {"lag": 0}
    watch = ProgressWatch(lambda: backlog["lag"], stall_after=0.2)
    server = await start_server(progress=watch)
    async with await client_for(server) as client:
        await asyncio.sleep(0.3)
        idle = await client.get("/healthz")  # nothing to read: idle is fine
        backlog["lag"] = 10
        assert (await client.get("/healthz")).status_code == 200
        await asyncio.sleep(0.3)
        stalled = await client.get("/healthz")
        watch.progress()
        moving = await client.get("/healthz")
    assert idle.status_code == 200
    assert stalled.status_code == 503
    assert "consume loop made no progress" in stalled.json()["reason"]
    assert moving.status_code == 200


# -- admin endpoints -------------------------------------------------------------------------------------

TOKEN = "a-test-token-of-some-length"


@dataclass
class FakeActions:
    """Records what the admin endpoints asked for."""

    changes: list[tuple[TradingState, str, str]] = field(default_factory=list)
    global_cancels: list[tuple[str, str]] = field(default_factory=list)

    async def trading_state(self) -> dict[str, Any]:
        state = self.changes[-1][0] if self.changes else TradingState.ACTIVE
        return {"state": state.value}

    async def set_trading_state(self, state: TradingState, *, reason: str, changed_by: str) -> dict[str, Any]:
        self.changes.append((state, reason, changed_by))
        return {"state": state.value}

    async def global_cancel(self, *, reason: str, changed_by: str) -> dict[str, Any]:
        self.global_cancels.append((reason, changed_by))
        return {"global_cancel": "sent"}


@pytest.fixture
async def admin_server(start_server: StartServer) -> AsyncIterator[tuple[ProbeServer, AdminServer, FakeActions]]:
    actions = FakeActions()
    admin = AdminServer(actions=actions, token=TOKEN, host="127.0.0.1", port=0)
    server = await start_server(admin=admin)
    yield server, admin, actions


def admin_client(admin: AdminServer, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin.port}", timeout=5.0, headers=headers)


async def test_without_a_configured_token_the_admin_endpoints_answer_403_and_change_nothing(
        start_server: StartServer) -> None:
    actions = FakeActions()
    admin = AdminServer(actions=actions, token=None, host="127.0.0.1", port=0)
    await start_server(admin=admin)
    async with admin_client(admin, token="anything") as client:
        answers = [await client.post("/kill-switch", content="on"),
                   await client.post("/trading-state", json={"state": "HALTED", "reason": "x"}),
                   await client.post("/global-cancel", json={"reason": "x"}),
                   await client.get("/trading-state")]
    assert [a.status_code for a in answers] == [403, 403, 403, 403]
    assert actions.changes == [] and actions.global_cancels == []


@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", TOKEN[:-1]])
async def test_a_missing_or_wrong_token_gets_401_a_warning_and_changes_nothing(
        admin_server: tuple[ProbeServer, AdminServer, FakeActions], token: str | None) -> None:
    _, admin, actions = admin_server
    with structlog.testing.capture_logs() as logs:
        async with admin_client(admin, token) as client:
            response = await client.post("/kill-switch", content="on")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert actions.changes == []
    assert any(e["log_level"] == "warning" and "token" in e["event"] for e in logs)


async def test_the_right_token_changes_the_trading_state(
        admin_server: tuple[ProbeServer, AdminServer, FakeActions]) -> None:
    _, admin, actions = admin_server
    async with admin_client(admin) as client:
        on = await client.post("/kill-switch", content="on")
        off = await client.post("/kill-switch", json={"kill_switch": False})
        reduce = await client.post("/trading-state", json={"state": "reducing", "reason": "risk review",
                                                           "by": "desk lead"})
        current = await client.get("/trading-state")
        cancel = await client.post("/global-cancel", json={"reason": "gateway orders left over"})
    assert [r.status_code for r in (on, off, reduce, current, cancel)] == [200] * 5
    assert on.json()["kill_switch"] is True
    assert [(state, reason) for state, reason, _ in actions.changes] == [
        (TradingState.HALTED, "kill switch on"), (TradingState.ACTIVE, "kill switch off"),
        (TradingState.REDUCING, "risk review")]
    assert actions.changes[2][2].startswith("desk lead (HTTP from 127.0.0.1")
    assert current.json() == {"state": "REDUCING"}
    assert actions.global_cancels[0][0] == "gateway orders left over"


@pytest.mark.parametrize(("path", "body"), [
    ("/kill-switch", "maybe"), ("/trading-state", '{"state": "HALTED"}'),
    ("/trading-state", '{"state": "PAUSED", "reason": "x"}'),
    ("/trading-state", '{"state": "HALTED", "reason": "x", "extra": "y"}'),
    ("/trading-state", '{"state": "HALTED", "reason": ""}'), ("/trading-state", '["HALTED"]'),
    ("/trading-state", "HALTED"), ("/global-cancel", "{}"), ("/global-cancel", '{"reason": 1}'),
])
async def test_only_the_documented_bodies_are_accepted(
        admin_server: tuple[ProbeServer, AdminServer, FakeActions], path: str, body: str) -> None:
    _, admin, actions = admin_server
    async with admin_client(admin) as client:
        response = await client.post(path, content=body)
    assert response.status_code == 400
    assert actions.changes == [] and actions.global_cancels == []


async def test_a_large_body_is_refused(admin_server: tuple[ProbeServer, AdminServer, FakeActions]) -> None:
    _, admin, actions = admin_server
    async with admin_client(admin) as client:
        response = await client.post("/trading-state", json={"state": "HALTED", "reason": "x" * 5000})
    assert response.status_code == 413
    assert actions.changes == []


async def test_health_endpoints_stay_open_and_carry_no_admin_route(
        admin_server: tuple[ProbeServer, AdminServer, FakeActions]) -> None:
    server, admin, _ = admin_server
    assert admin.port != server.port
    async with await client_for(server) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/readyz")).status_code in (200, 503)
        assert (await client.post("/kill-switch", content="on",
                                  headers={"Authorization": f"Bearer {TOKEN}"})).status_code in (404, 405)


@pytest.mark.parametrize(("body", "expected"), [
    ("on", True), ("OFF", False), (" true ", True), ("0", False), ("true", True), ("false", False),
    ('{"kill_switch": false}', False), ('{"enabled": true}', True), ('"on"', True),
])
def test_parse_switch_reads_the_accepted_bodies(body: str, expected: bool) -> None:
    assert parse_switch(body) is expected


@pytest.mark.parametrize("body", ["", "maybe", "{}", "[true]", '{"kill_switch": 1}', "2"])
def test_parse_switch_refuses_anything_else(body: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_switch(body)


# -- life cycle -------------------------------------------------------------------------------------------


async def test_the_server_binds_a_free_port_and_releases_it(metrics: Metrics, monitor: HealthMonitor) -> None:
    server = ProbeServer(monitor=monitor, metrics=metrics, host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    async with server:
        port = server.port
        assert port > 0
        assert server.heartbeat.running
        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    assert not server.heartbeat.running
    async with httpx.AsyncClient(timeout=2.0) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/healthz")


async def test_statuses_other_than_starting_show_in_healthz(start_server: StartServer,
                                                            monitor: HealthMonitor) -> None:
    server = await start_server()
    monitor.mark_started()
    monitor.observe(replace(ALL_UP, pacing_limited=True))
    async with await client_for(server) as client:
        body = (await client.get("/healthz")).json()
    assert body["status"] == HealthStatus.DEGRADED.value
    assert body["alive"] is True


async def test_healthz_shows_the_dead_letters_by_stage_and_the_retries_by_kind_as_they_are_now(
        start_server: StartServer) -> None:
    counts = {"dead_letters": {"decode": 2}, "retries": {"record": 1}}
    server = await start_server(consume_counts=lambda: ConsumeCounts(dead_letters=dict(counts["dead_letters"]),
                                                                     retries=dict(counts["retries"])))
    async with await client_for(server) as client:
        before = (await client.get("/healthz")).json()
        counts["dead_letters"]["decompress"] = 1
        counts["retries"]["infrastructure"] = 4
        after = (await client.get("/healthz")).json()
    assert (before["dead_letters"], before["consume_retries"]) == ({"decode": 2}, {"record": 1})
    assert after["dead_letters"] == {"decode": 2, "decompress": 1}
    assert after["consume_retries"] == {"infrastructure": 4, "record": 1}
    assert after["alive"] is True


async def test_healthz_of_a_worker_without_a_consume_loop_shows_no_counts(start_server: StartServer) -> None:
    server = await start_server()
    async with await client_for(server) as client:
        body = (await client.get("/healthz")).json()
    assert "dead_letters" not in body and "consume_retries" not in body
