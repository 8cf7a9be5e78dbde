"""``ensure_topics`` against a real broker: names, partitions, topic configs, idempotence, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import astuple
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import MessageSizeTooLargeError

from workers.adapters.kafka.connection import kafka_client_kwargs
from workers.adapters.kafka.topics import TopicCreationError, ensure_topics, topic_specs
from workers.settings import TopicNames, load_settings

pytestmark = pytest.mark.integration

DAY_MS = 24 * 60 * 60 * 1000


@pytest.fixture
async def topics(kafka_topics: TopicNames, kafka_admin: Any) -> AsyncIterator[TopicNames]:
    """This test's unique topic names; whichever of them exist afterwards are deleted."""
    yield kafka_topics
    existing = set(await kafka_admin.list_topics())
    leftovers = [name for name in astuple(kafka_topics) if name in existing]
    if leftovers:
        await kafka_admin.delete_topics(leftovers)


async def partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    # Metadata of all topics (None): naming topics could auto-create them on a broker that allows it.
    described = await admin.describe_topics(None)
    return {
        entry["topic"]: len(entry["partitions"])
        for entry in described
        if entry["topic"] in names and entry["error_code"] == 0
    }


async def topic_config(admin: Any, name: str) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    config: dict[str, str] = {}
    for response in responses:
        for error_code, _message, _type, resource_name, entries, *_ in response.resources:
            assert error_code == 0, f"describe_configs({resource_name}) failed with code {error_code}"
            for entry in entries:
                config[entry[0]] = entry[1]
    return config


async def test_creates_every_contract_topic_with_partitions_and_configs(
    kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any
) -> None:
    created = await ensure_topics(kafka_bootstrap, topics, partitions=3, replication_factor=1)

    expected = list(astuple(topics))
    assert sorted(created) == sorted(expected)
    assert len(expected) == 9
    assert await partition_counts(kafka_admin, expected) == dict.fromkeys(expected, 3)

    policies = {name: (await topic_config(kafka_admin, name))["cleanup.policy"] for name in expected}
    compacted = {topics.positions_updated, topics.instruments_updated}
    assert {name for name, policy in policies.items() if policy == "compact"} == compacted
    assert all(policies[name] == "delete" for name in expected if name not in compacted)

    health = await topic_config(kafka_admin, topics.workers_health)
    dlq = await topic_config(kafka_admin, topics.orders_requested_dlq)
    assert int(health["retention.ms"]) == 3 * DAY_MS
    assert int(dlq["retention.ms"]) == 90 * DAY_MS
    assert int(dlq["retention.ms"]) > int(health["retention.ms"])


async def test_every_contract_topic_has_a_record_size_limit_and_the_dead_letters_take_any_input_record(
    kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any
) -> None:
    await ensure_topics(kafka_bootstrap, topics, partitions=1, replication_factor=1)

    limits = {name: int((await topic_config(kafka_admin, name))["max.message.bytes"]) for name in astuple(topics)}
    inputs = [topics.orders_requested, topics.orders_cancel_requested, topics.instruments_updated]
    assert all(limits[name] == 256 * 1024 for name in inputs)
    assert all(limits[name] == 1024 * 1024 for name in (topics.orders_status, topics.fills_executed,
                                                          topics.positions_updated, topics.workers_health))
    assert limits[topics.orders_requested_dlq] > max(limits[name] for name in inputs)
    # The broker refuses a record over the limit before any consumer sees it.
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await producer.send_and_wait(topics.orders_requested, b"x" * (300 * 1024), key=b"k")
        await producer.send_and_wait(topics.orders_requested, b"x" * (200 * 1024), key=b"k")
    finally:
        await producer.stop()


async def test_running_twice_is_harmless(kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any) -> None:
    first = await ensure_topics(kafka_bootstrap, topics, partitions=2, replication_factor=1)
    second = await ensure_topics(kafka_bootstrap, topics, partitions=2, replication_factor=1)

    assert len(first) == 9
    assert second == []
    names = list(astuple(topics))
    assert await partition_counts(kafka_admin, names) == dict.fromkeys(names, 2)
    assert (await topic_config(kafka_admin, topics.positions_updated))["cleanup.policy"] == "compact"


async def test_concurrent_runs_create_each_topic_once(
    kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any
) -> None:
    results = await asyncio.gather(
        ensure_topics(kafka_bootstrap, topics, partitions=1, replication_factor=1),
        ensure_topics(kafka_bootstrap, topics, partitions=1, replication_factor=1),
    )

    created = [name for result in results for name in result]
    assert sorted(created) == sorted(astuple(topics))
    assert set(await kafka_admin.list_topics()) >= set(astuple(topics))


async def test_existing_topic_is_left_untouched(
    kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any
) -> None:
    await kafka_admin.create_topics([NewTopic(topics.orders_status, num_partitions=1, replication_factor=1)])

    created = await ensure_topics(kafka_bootstrap, topics, partitions=4, replication_factor=1)

    assert topics.orders_status not in created
    assert len(created) == 8
    counts = await partition_counts(kafka_admin, [topics.orders_status, topics.orders_requested])
    assert counts == {topics.orders_status: 1, topics.orders_requested: 4}


async def test_settings_security_kwargs_reach_the_broker(
    kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any
) -> None:
    settings = load_settings(kafka_bootstrap_servers=kafka_bootstrap, kafka_security_protocol="PLAINTEXT")
    kwargs = kafka_client_kwargs(settings)

    created = await ensure_topics(
        settings.kafka_bootstrap_servers, topics, partitions=1, replication_factor=1, **kwargs
    )

    assert kwargs == {"security_protocol": "PLAINTEXT"}
    assert sorted(created) == sorted(astuple(topics))


async def test_broker_refusal_is_reported(kafka_bootstrap: str, topics: TopicNames, kafka_admin: Any) -> None:
    with pytest.raises(TopicCreationError, match="InvalidReplicationFactor") as caught:
        await ensure_topics(kafka_bootstrap, topics, partitions=1, replication_factor=100)

    assert topics.orders_requested in str(caught.value)
    assert not set(astuple(topics)) & set(await kafka_admin.list_topics())


@pytest.mark.parametrize(("partitions", "replication_factor"), [(0, 1), (1, 0), (-1, 1)])
async def test_nonsense_counts_are_refused_before_any_call(
    partitions: int, replication_factor: int, kafka_topics: TopicNames
) -> None:
    with pytest.raises(ValueError, match="must be at least 1"):
        # An address nothing listens on: the check must come before connecting.
        await ensure_topics("127.0.0.1:1", kafka_topics, partitions, replication_factor)


def test_specs_cover_every_topic_name_once(kafka_topics: TopicNames) -> None:
    names = [spec.name for spec in topic_specs(kafka_topics)]

    assert sorted(names) == sorted(astuple(kafka_topics))
    assert len(set(names)) == len(names)
