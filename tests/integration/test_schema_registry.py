"""The workers, ``OrderClient`` and ``tail`` against a real schema registry (fixture ``schema_registry_url``).

The registry is the development one that ``scripts/dev-services up registry`` starts (Apicurio Registry, its
Confluent-compatible API), or the one ``SCHEMA_REGISTRY_URL`` names. Every test uses topics of its own, so
the subjects it registers (``<topic>-value``) are its own too.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from ibkr_sim.server import SimGateway
from tests.conftest import REGISTRY_RESTART_TEST_PORT, dev_services_registry, start_registry
from tests.integration.harness import AAPL, ACCOUNT, Harness, order
from workers.adapters.avro import AvroCodec, RegistryCodec, SchemaCatalog, SchemaRegistryClient, subject_for
from workers.adapters.avro.wire import RegistryFramedCodec
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    INSTRUMENT_UPDATED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    WORKER_HEALTH,
    order_requested_record,
)
from workers.adapters.postgres.migrate import migrate
from workers.client import OrderClient
from workers.domain.orders import OrderState
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

CATALOG = SchemaCatalog()


@pytest.fixture
async def registry(schema_registry_url: str) -> AsyncIterator[SchemaRegistryClient]:
    """A client of the test registry, to look at what the workers registered."""
    async with SchemaRegistryClient(schema_registry_url) as client:
        yield client


async def reading_harness(url: str, kafka_bootstrap: str, database_url: str, topics: TopicNames, *,
                          reads_requests: bool) -> Harness:
    """A harness reading the topics with a codec of its own that knows both framings; with
    ``reads_requests`` it registers the orders.requested schema itself, before anyone writes one."""
    harness = Harness(kafka_bootstrap, database_url, topics)
    schemas = {ORDER_STATUS_CHANGED: topics.orders_status, FILL_EXECUTED: topics.fills_executed,
               POSITION_UPDATED: topics.positions_updated, WORKER_HEALTH: topics.workers_health}
    if reads_requests:
        schemas[ORDER_REQUESTED] = topics.orders_requested
    reader = RegistryFramedCodec(RegistryCodec(SchemaRegistryClient(url)), schemas)
    await reader.prepare()
    harness.codec = reader
    return harness


@contextlib.asynccontextmanager
async def started(url: str, kafka_bootstrap: str, database_url: str, topics: TopicNames, *,
                  reads_requests: bool = True) -> AsyncIterator[Harness]:
    """A :func:`reading_harness` whose order-consumer runs with ``SCHEMA_REGISTRY_URL`` = ``url``."""
    harness = await reading_harness(url, kafka_bootstrap, database_url, topics, reads_requests=reads_requests)
    try:
        await harness.start(True, schema_registry_url=url)
        yield harness
    finally:
        await harness.stop()


async def test_events_are_confluent_framed_and_registered_under_topic_subjects(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames, schema_registry_url: str,
        registry: SchemaRegistryClient) -> None:
    async with started(schema_registry_url, kafka_bootstrap, database_url, kafka_topics) as harness:
        request = order()
        await harness.send(request)  # Confluent framed as well: the worker reads both framings
        await harness.wait_status(request.order_id, "FILLED")
        await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 1, what="the fill")
        for topic in (kafka_topics.orders_status, kafka_topics.fills_executed, kafka_topics.workers_health):
            assert await registry.versions(subject_for(topic)), topic
            assert await registry.compatibility(subject_for(topic)) == "BACKWARD"
        raw = await harness.raw_records(kafka_topics.orders_status)
        ids = {int.from_bytes(value[1:5], "big") for value in raw}
        assert raw and all(value[0] == 0 for value in raw) and len(ids) == 1
        assert json.loads(await registry.schema(ids.pop())) == CATALOG.current(ORDER_STATUS_CHANGED).schema


async def test_a_single_object_encoded_order_is_read_beside_confluent_framed_ones(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames, schema_registry_url: str) -> None:
    async with started(schema_registry_url, kafka_bootstrap, database_url, kafka_topics) as harness:
        framed, single = order(), order()
        await harness.send(framed)
        payload = AvroCodec(CATALOG).encode(ORDER_REQUESTED, order_requested_record(single))
        await harness.send_raw(single.order_id.encode(), payload)
        await harness.wait_status(framed.order_id, "FILLED")
        await harness.wait_status(single.order_id, "FILLED")
        assert harness.observed.dead_letters == []


async def test_the_order_client_from_settings_writes_the_confluent_framing(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames, schema_registry_url: str,
        registry: SchemaRegistryClient) -> None:
    # The client registers orders.requested: the reader must not have done it first.
    async with started(schema_registry_url, kafka_bootstrap, database_url, kafka_topics,
                       reads_requests=False) as harness:
        settings = harness.settings(schema_registry_url=schema_registry_url)
        async with OrderClient.from_settings(settings) as client:
            order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY",
                                           quantity=Decimal(2), order_type="MARKET")
            final = await client.wait_for_final(order_id, timeout=30)
        assert final.status is OrderState.FILLED
        assert await registry.versions(subject_for(kafka_topics.orders_requested))
        raw = await harness.raw_records(kafka_topics.orders_requested)
        assert raw and all(value[0] == 0 for value in raw)


@pytest.mark.parametrize("record", CATALOG.records())
async def test_a_new_subject_gets_every_version_in_order_under_the_backward_rule(
        record: str, schema_registry_url: str, registry: SchemaRegistryClient) -> None:
    topic = f"registry-history-{uuid.uuid4().hex[:10]}"
    codec = RegistryCodec(SchemaRegistryClient(schema_registry_url), CATALOG)
    try:
        registered = await codec.register_record(topic, record)
    finally:
        await codec.aclose()
    versions = [*CATALOG.history(record), CATALOG.current(record)]
    assert [version for version, _ in registered] == versions
    # Identical texts (a record unchanged between two releases) are one registry version.
    distinct = list(dict.fromkeys(schema_id for _, schema_id in registered))
    assert len(await registry.versions(subject_for(topic))) == len(distinct)
    assert await registry.compatibility(subject_for(topic)) == "BACKWARD"
    for version, schema_id in registered:
        assert json.loads(await registry.schema(schema_id)) == version.schema
    # The current version is the subject's latest: registered after the history, as its evolution.
    async with httpx.AsyncClient() as http:
        latest = (await http.get(f"{schema_registry_url}/subjects/{subject_for(topic)}/versions/latest")).json()
    assert latest["id"] == registered[-1][1]
    assert latest["version"] == len(distinct)


def without_a_required_field(record: str) -> dict[str, object]:
    """The current schema of ``record`` less one field that has no default: what it cannot evolve from.

    The field is a plain string, so no named type the rest of the schema refers to goes with it.
    """
    schema = copy.deepcopy(CATALOG.current(record).schema)
    required = next(f for f in schema["fields"] if "default" not in f and f["type"] == "string")
    schema["fields"] = [f for f in schema["fields"] if f is not required]
    return schema


# command, the topic (settings field) whose subject refuses, its record, the exit code
REFUSED = {
    "order-consumer": (("order-consumer",), "orders_status", ORDER_STATUS_CHANGED, 2),
    "instrument-sync": (("instrument-sync", "--once"), "instruments_updated", INSTRUMENT_UPDATED, 3),
}


@pytest.mark.parametrize("worker", list(REFUSED))
async def test_a_schema_the_subject_refuses_stops_the_worker_at_start_naming_the_subject(
        worker: str, database_url: str, kafka_bootstrap: str, kafka_topics: TopicNames,
        topic_env: dict[str, str], sim: SimGateway, schema_registry_url: str,
        registry: SchemaRegistryClient) -> None:
    command, topic_field, record, exit_code = REFUSED[worker]
    await migrate(database_url)
    subject = subject_for(getattr(kafka_topics, topic_field))
    # A version the current schema cannot read (it lacks a field the current one requires) already there.
    await registry.set_compatibility(subject, "BACKWARD")
    await registry.register(subject, json.dumps(without_a_required_field(record)))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "IBKR_", "TOPIC_"))},
           **topic_env, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url,
           "SCHEMA_REGISTRY_URL": schema_registry_url, "IBKR_HOST": "127.0.0.1",
           "IBKR_PORT": str(sim.address[1]), "IBKR_CLIENT_ID": "41", "IBKR_ACCOUNTS": ACCOUNT,
           "HEALTH_PORT": "0", "LOG_LEVEL": "WARNING"}

    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers", *command, env=env,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 60)

    assert process.returncode == exit_code, err.decode()
    (message,) = [line for line in err.decode().splitlines() if line.startswith(f"ibkr-workers {worker}:")]
    assert f"refused the schema under subject {subject}:" in message, message
    assert "Traceback" not in err.decode()


async def test_tail_decodes_confluent_framed_records_with_the_registry(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames, schema_registry_url: str) -> None:
    async with started(schema_registry_url, kafka_bootstrap, database_url, kafka_topics) as harness:
        request = order()
        await harness.send(request)
        await harness.wait_status(request.order_id, "FILLED")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
               "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", "SCHEMA_REGISTRY_URL": schema_registry_url,
               **{f"TOPIC_{name.upper()}": getattr(kafka_topics, name)
                  for name in kafka_topics.__dataclass_fields__}}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "tail", "orders.status", "--from-beginning", "--json", "--max", "2",
            "--timeout", "30", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        records = [json.loads(line) for line in out.decode().splitlines()]
        assert [r["value"]["status"] for r in records] == harness.status_trail(request.order_id)[:2]
        assert all(r["value"]["order_id"] == request.order_id for r in records)


@pytest.fixture
async def restartable_registry() -> AsyncIterator[str]:
    """A schema registry of this test's own (``REGISTRY_RESTART_TEST_PORT``), stopped when it ends."""
    url = await asyncio.to_thread(start_registry, REGISTRY_RESTART_TEST_PORT)
    probe = await asyncio.to_thread(dev_services_registry, "up", REGISTRY_RESTART_TEST_PORT)
    if "not started by this script" in probe.stderr:
        pytest.skip(f"the registry on port {REGISTRY_RESTART_TEST_PORT} belongs to another checkout: this test "
                    "would not stop it (set REGISTRY_RESTART_TEST_PORT)")
    try:
        yield url
    finally:
        await asyncio.to_thread(dev_services_registry, "down", REGISTRY_RESTART_TEST_PORT)


@pytest.mark.slow
async def test_the_registry_stopped_and_started_mid_stream_loses_no_order(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames, restartable_registry: str) -> None:
    url = restartable_registry
    async with started(url, kafka_bootstrap, database_url, kafka_topics, reads_requests=False) as harness:
        async with OrderClient.from_settings(harness.settings(schema_registry_url=url)) as client:
            # The client learns the orders.requested id now; the worker has not seen it yet.
            assert isinstance(client.codec, RegistryCodec)
            await client.codec.schema_id(kafka_topics.orders_requested, CATALOG.current(ORDER_REQUESTED))

            stopped = await asyncio.to_thread(dev_services_registry, "down", REGISTRY_RESTART_TEST_PORT)
            assert stopped.returncode == 0, stopped.stderr
            seen = len(harness.observed.health)
            order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY",
                                           quantity=Decimal(1), order_type="MARKET")
            # The worker needs the registry to read the order: it waits, and says so.
            await harness.wait_for(lambda: any(h["status"] == "DEGRADED" for h in harness.observed.health[seen:]),
                                   timeout=30, what="a DEGRADED health record while the registry is away")
            degraded = next(h for h in harness.observed.health[seen:] if h["status"] == "DEGRADED")
            assert degraded["last_error"].startswith("RegistryError: GET /schemas/ids/"), degraded["last_error"]
            assert harness.observed.last_status(order_id) is None

            await asyncio.to_thread(start_registry, REGISTRY_RESTART_TEST_PORT)
            final = await client.wait_for_final(order_id, timeout=60)
        assert final.status is OrderState.FILLED
        assert harness.sim.place_count(order_id) == 1
        assert harness.observed.dead_letters == []
        await harness.wait_for(lambda: harness.observed.health[-1]["status"] == "HEALTHY", timeout=30,
                               what="HEALTHY again")
