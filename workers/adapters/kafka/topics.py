"""The contract's Kafka topics and their creation (``ibkr-workers topics``).

Creation is idempotent: a topic that exists already is left as it is (its partitions and configuration are
not changed), so running the command again, or two instances racing, is harmless. When
:func:`ensure_topics` returns, every topic is in the broker's metadata with a leader for each partition,
so producers and consumers started right after find them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from workers.adapters.kafka.connection import start_kafka_client
from workers.settings import TopicNames

DAY_MS = 24 * 60 * 60 * 1000
# How long the broker may take to create the topics, and then to serve them.
TIMEOUT_MS = 30_000

# The largest record batch a topic takes. The input topics' records are small (the order-consumer refuses
# one over 16 KiB); the limit keeps a producer from putting a huge one in front of the orders. The
# dead-letter topic takes any input record with its headers.
INPUT_MAX_MESSAGE_BYTES = str(256 * 1024)
OUTPUT_MAX_MESSAGE_BYTES = str(1024 * 1024)
DEAD_LETTER_MAX_MESSAGE_BYTES = str(2 * 1024 * 1024)

INPUT: Mapping[str, str] = MappingProxyType({"max.message.bytes": INPUT_MAX_MESSAGE_BYTES})
OUTPUT: Mapping[str, str] = MappingProxyType({"max.message.bytes": OUTPUT_MAX_MESSAGE_BYTES})
# Latest value per key is what consumers need: the current position, the current instrument.
COMPACTED: Mapping[str, str] = MappingProxyType({"cleanup.policy": "compact",
                                                 "max.message.bytes": OUTPUT_MAX_MESSAGE_BYTES})
COMPACTED_INPUT: Mapping[str, str] = MappingProxyType({"cleanup.policy": "compact",
                                                       "max.message.bytes": INPUT_MAX_MESSAGE_BYTES})
# Health beats are only interesting while they are recent.
HEALTH: Mapping[str, str] = MappingProxyType({"cleanup.policy": "delete", "retention.ms": str(3 * DAY_MS),
                                              "max.message.bytes": OUTPUT_MAX_MESSAGE_BYTES})
# Dead letters wait for a person: keep them long.
DEAD_LETTERS: Mapping[str, str] = MappingProxyType(
    {"cleanup.policy": "delete", "retention.ms": str(90 * DAY_MS),
     "max.message.bytes": DEAD_LETTER_MAX_MESSAGE_BYTES}
)


class TopicCreationError(Exception):
    """The broker refused to create a topic for a reason other than "it exists already"."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic to create: its name and the topic-level configuration it gets."""

    name: str
    configs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


def topic_specs(topics: TopicNames) -> list[TopicSpec]:
    """Every topic of the contract, with compaction and retention where the contract asks for them."""
    return [
        TopicSpec(topics.orders_requested, INPUT),
        TopicSpec(topics.orders_cancel_requested, INPUT),
        TopicSpec(topics.orders_modify_requested, INPUT),
        TopicSpec(topics.orders_status, OUTPUT),
        TopicSpec(topics.fills_executed, OUTPUT),
        TopicSpec(topics.positions_updated, COMPACTED),
        TopicSpec(topics.instruments_updated, COMPACTED_INPUT),
        TopicSpec(topics.workers_health, HEALTH),
        TopicSpec(topics.orders_requested_dlq, DEAD_LETTERS),
    ]


async def ensure_topics(
    bootstrap_servers: str,
    topics: TopicNames,
    partitions: int = 6,
    replication_factor: int = 1,
    **client_kwargs: object,
) -> list[str]:
    """Create the contract's topics that do not exist yet; return the names of those it created.

    ``client_kwargs`` go to ``AIOKafkaAdminClient`` (the security settings of
    :func:`workers.adapters.kafka.connection.kafka_client_kwargs`). Raises :class:`ValueError` for a
    non-positive ``partitions`` or ``replication_factor`` and :class:`TopicCreationError` when the broker
    refuses a topic (a replication factor above the number of brokers, a bad config value, ...) or when the
    topics are not served within :data:`TIMEOUT_MS`.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    if replication_factor < 1:
        raise ValueError(f"replication_factor must be at least 1, not {replication_factor}")
    specs = topic_specs(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_kwargs)
    await start_kafka_client(admin, bootstrap_servers, client_kwargs)
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(
            [
                NewTopic(
                    name=spec.name,
                    num_partitions=partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(spec.configs),
                )
                for spec in missing
            ],
            timeout_ms=TIMEOUT_MS,
        )
        created = _created(response.topic_errors)
        await _wait_until_served(admin, [spec.name for spec in missing], TIMEOUT_MS / 1000)
    finally:
        await admin.close()
    return created


async def _wait_until_served(admin: Any, names: list[str], timeout_s: float) -> None:
    """Return once every topic of ``names`` is in the metadata with a leader for each partition.

    The controller answers CreateTopics once the topics are in its log; the broker that serves clients may
    learn about them a moment later. Metadata is asked for all topics (``None``): asking for named topics
    would let a broker with ``auto.create.topics.enable`` create them.
    """
    pending = set(names)
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                for entry in await admin.describe_topics(None):
                    partitions = entry.get("partitions") or []
                    if (
                        entry.get("error_code") == 0
                        and partitions
                        and all(partition.get("leader", -1) >= 0 for partition in partitions)
                    ):
                        pending.discard(entry.get("topic"))
                if not pending:
                    return
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TopicCreationError(
            f"Kafka topics created but not served within {timeout_s:g}s: {', '.join(sorted(pending))}"
        ) from None


def _created(topic_errors: list[tuple[Any, ...]]) -> list[str]:
    """Names created according to a CreateTopics response; "already exists" (a race) is not an error."""
    created: list[str] = []
    failures: list[str] = []
    for entry in topic_errors:
        name, code = str(entry[0]), int(entry[1])
        message = entry[2] if len(entry) > 2 and entry[2] else ""
        if code == 0:
            created.append(name)
            continue
        error = for_code(code)
        if error is TopicAlreadyExistsError:
            continue
        failures.append(f"{name}: {error.__name__}{f' ({message})' if message else ''}")
    if failures:
        raise TopicCreationError("could not create Kafka topics: " + "; ".join(failures))
    return created
