"""instrument-sync's operations surface: WorkerHealth on workers.health, /healthz, /readyz and /metrics.

Real PostgreSQL and Kafka, the sim gateway in this process; the worker runs in-process (long-running mode)
or as a subprocess (SIGTERM, exit codes), its probe server on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import WORKER_HEALTH
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.universe import UniverseStore
from workers.bootstrap import build_instrument_sync
from workers.domain.universe import entries_from_document
from workers.runtime.instrument_sync import InstrumentSyncApp
from workers.settings import Settings, TopicNames

pytestmark = pytest.mark.integration

STOCKS = ["AAPL", "MSFT", "AMZN", "GOOGL", "META", "NVDA", "TSLA", "INTC", "AMD", "CSCO"]
# Nothing here expires, whatever day the tests run.
UNIVERSE: list[dict[str, Any]] = [{"instrument_id": f"STK:{s}:USD"} for s in STOCKS] + [
    {"instrument_id": "CASH:EUR.USD"}, {"instrument_id": "CASH:GBP.USD"}]


# -- fixtures and helpers -----------------------------------------------------------------------------------


@dataclass
class HealthEvent:
    key: str
    value: dict[str, Any]


@dataclass
class HealthWatch:
    """Every WorkerHealth record on the topic, decoded, in order."""

    events: list[HealthEvent] = field(default_factory=list)

    def statuses(self) -> list[str]:
        return [e.value["status"] for e in self.events]

    async def until(self, condition: Callable[[list[HealthEvent]], bool], what: str,
                    timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.events):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; statuses seen: {self.statuses()}")
            await asyncio.sleep(0.05)


@dataclass
class Stack:
    db: str
    sim: SimGateway
    topics: TopicNames
    bootstrap: str
    health: HealthWatch


@pytest.fixture
async def stack(database_url: str, kafka_bootstrap: str, kafka_topics: TopicNames) -> AsyncIterator[Stack]:
    await migrate(database_url)
    pool = await open_pool(database_url, max_size=1)
    try:
        await UniverseStore(pool).replace(entries_from_document(UNIVERSE))
    finally:
        await close_pool(pool)
    names = [kafka_topics.instruments_updated, kafka_topics.workers_health]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1) for name in names])
    sim = SimGateway(SimConfig(pacing=False))
    await sim.start("127.0.0.1", 0)
    watch = HealthWatch()
    watcher = asyncio.create_task(_watch(kafka_bootstrap, kafka_topics.workers_health, watch))
    try:
        yield Stack(database_url, sim, kafka_topics, kafka_bootstrap, watch)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await sim.stop()
        with contextlib.suppress(Exception):
            await admin.delete_topics(names)
        await admin.close()


async def _watch(bootstrap: str, topic: str, watch: HealthWatch) -> None:
    codec = AvroCodec()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", metadata_max_age_ms=1000)
    await consumer.start()
    try:
        async for record in consumer:
            assert record.key is not None and record.value is not None
            watch.events.append(HealthEvent(record.key.decode(), codec.decode(record.value, WORKER_HEALTH)))
    finally:
        await consumer.stop()


def settings_for(stack: Stack, **overrides: Any) -> Settings:
    topics = stack.topics
    host, port = stack.sim.address
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": stack.bootstrap, "database_url": stack.db, "ibkr_host": host,
        "ibkr_port": port, "ibkr_client_id": 31, "ibkr_pacing_per_second": 1000, "ibkr_connect_timeout": 5,
        "health_port": 0, "health_interval": 1, "ibkr_heartbeat_interval": 0.3,
        "ibkr_heartbeat_timeout": 2, "instrument_sync_interval": 3600,
        **{f"topic_{name}": getattr(topics, name) for name in topics.__dataclass_fields__},
    }
    values.update(overrides)
    return Settings(**values)


def environment(stack: Stack, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("IBKR_", "TOPIC_", "INSTRUMENT_", "LOG_", "HEALTH_"))}
    host, port = stack.sim.address
    topics = {f"TOPIC_{name.upper()}": getattr(stack.topics, name) for name in stack.topics.__dataclass_fields__}
    return {**inherited, "DATABASE_URL": stack.db, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
            "IBKR_HOST": host, "IBKR_PORT": str(port), "IBKR_CLIENT_ID": "32", "IBKR_PACING_PER_SECOND": "1000",
            "IBKR_CONNECT_TIMEOUT": "5", "HEALTH_INTERVAL": "1", "INSTRUMENT_SYNC_INTERVAL": "3600",
            "LOG_LEVEL": "INFO", **topics, **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_status(client: httpx.AsyncClient, path: str, code: int, timeout: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await client.get(path)
            if last.status_code == code:
                return last  # type: ignore[no-any-return]
        except httpx.TransportError as exc:
            last = exc
        await asyncio.sleep(0.05)
    pytest.fail(f"{path} never answered {code}; last: {getattr(last, 'text', last)}")


def started(app: InstrumentSyncApp) -> bool:
    with contextlib.suppress(RuntimeError):
        return app.probes.port > 0
    return False


def after(events: list[HealthEvent], status: str, then: str) -> bool:
    """``then`` was reported some time after ``status``."""
    statuses = [e.value["status"] for e in events]
    return status in statuses and then in statuses[statuses.index(status) + 1:]


# -- tests --------------------------------------------------------------------------------------------------


async def test_long_running_worker_reports_health_serves_probes_and_degrades_while_ibkr_is_away(
        stack: Stack) -> None:
    app = await build_instrument_sync(settings_for(stack), instance_id="it-health")
    task = asyncio.create_task(app.run_forever())
    try:
        await wait_for(lambda: started(app), "the probe server")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.probes.port}", timeout=5.0) as client:
            await stack.health.until(lambda events: "HEALTHY" in [e.value["status"] for e in events],
                                     "a HEALTHY report")
            first = stack.health.events[0]
            assert first.key == "instrument-sync:it-health"
            assert first.value["status"] == "STARTING"
            assert first.value["worker"] == "instrument-sync"
            assert first.value["instance_id"] == "it-health"
            await wait_for(lambda: app.sync.counters.passes_completed >= 1, "the first pass")

            assert (await client.get("/healthz")).status_code == 200
            ready = await wait_for_status(client, "/readyz", 200)
            assert ready.json()["ready"] is True
            text = (await client.get("/metrics")).text
            assert metric(text, "ibkr_workers_instruments_synced_total", change="CREATED") == len(UNIVERSE)
            assert metric(text, "ibkr_workers_instruments_sync_failed_total") == 0
            assert metric(text, "ibkr_workers_instrument_sync_pass_seconds_count") == 1
            assert (metric(text, "ibkr_workers_instrument_sync_last_success_timestamp_seconds") or 0) > 0
            assert metric(text, "ibkr_workers_ibkr_connected") == 1
            assert (await client.post("/kill-switch", content="on")).status_code in (404, 405)

            await stack.health.until(
                lambda events: any(e.value["status"] == "HEALTHY" and e.value["ibkr_rtt_ms"] is not None
                                   for e in events), "a report with the heartbeat's round trip")
            healthy = [e.value for e in stack.health.events if e.value["status"] == "HEALTHY"][-1]
            assert healthy["ibkr_connected"] and healthy["kafka_connected"] and healthy["database_connected"]
            assert healthy["consumer_lag"] is None
            assert healthy["orders_in_flight"] == 0

            stack.sim.refuse_connections(3.0)
            down = await wait_for_status(client, "/readyz", 503, timeout=5)
            assert down.json()["ready"] is False
            await stack.health.until(lambda events: "DEGRADED" in [e.value["status"] for e in events],
                                     "a DEGRADED report", timeout=10)
            degraded = next(e.value for e in stack.health.events if e.value["status"] == "DEGRADED")
            assert degraded["ibkr_connected"] is False
            await stack.health.until(lambda events: after(events, "DEGRADED", "HEALTHY"),
                                     "HEALTHY again after the gateway came back", timeout=30)
            await wait_for_status(client, "/readyz", 200)
            text = (await client.get("/metrics")).text
            assert (metric(text, "ibkr_workers_ibkr_reconnects_total") or 0) >= 1
            assert metric(text, "ibkr_workers_health_status", status="HEALTHY") == 1

        app.stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        app.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        await app.close()
    await stack.health.until(lambda events: events[-1].value["status"] == "STOPPING", "a STOPPING report")
    assert {e.key for e in stack.health.events} == {"instrument-sync:it-health"}
    statuses = stack.health.statuses()
    assert statuses.index("STARTING") < statuses.index("HEALTHY")


async def test_subprocess_worker_stops_on_sigterm_with_a_stopping_report(stack: Stack) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "instrument-sync", env=environment(stack, HEALTH_PORT=str(port)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as client:
            await wait_for_status(client, "/healthz", 200, timeout=30)
            await wait_for_status(client, "/readyz", 200, timeout=30)
            deadline = time.monotonic() + 20
            synced: float | None = None
            while time.monotonic() < deadline:
                text = (await client.get("/metrics")).text
                synced = metric(text, "ibkr_workers_instruments_synced_total", change="CREATED")
                if synced == len(UNIVERSE):
                    break
                await asyncio.sleep(0.1)
            assert synced == len(UNIVERSE)
        await stack.health.until(lambda events: "HEALTHY" in [e.value["status"] for e in events],
                                 "a HEALTHY report")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        _, err = await asyncio.wait_for(process.communicate(), 10)
    assert time.monotonic() - sent < 10
    assert process.returncode == 0, err.decode()[-2000:]
    await stack.health.until(lambda events: events[-1].value["status"] == "STOPPING", "a STOPPING report")
    keys = {e.key for e in stack.health.events}
    assert keys == {f"instrument-sync:{socket.gethostname()}-{process.pid}"}
    statuses = stack.health.statuses()
    assert statuses[0] == "STARTING" and "HEALTHY" in statuses


async def test_once_publishes_health_and_runs_without_a_probe_port_that_is_taken(stack: Stack) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        env = environment(stack, HEALTH_PORT=port)
        once = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "instrument-sync", "--once", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(once.communicate(), 60)
        assert once.returncode == 0, err.decode()[-2000:]
        assert f"{len(UNIVERSE)}/{len(UNIVERSE)} entries, 0 failed" in out.decode()
        assert "no probe server for this run" in err.decode()

        forever = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "instrument-sync", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(forever.communicate(), 30)
    assert forever.returncode == 3
    message = [line for line in err.decode().splitlines() if line.startswith("ibkr-workers instrument-sync:")]
    assert len(message) == 1 and f"cannot listen on HEALTH_PORT {port}" in message[0]
    await stack.health.until(lambda events: "STOPPING" in [e.value["status"] for e in events],
                             "the --once run's STOPPING report")
    once_key = f"instrument-sync:{socket.gethostname()}-{once.pid}"
    once_statuses = [e.value["status"] for e in stack.health.events if e.key == once_key]
    assert once_statuses[0] == "STARTING" and once_statuses[-1] == "STOPPING"
    assert {"HEALTHY", "DEGRADED"} & set(once_statuses)
