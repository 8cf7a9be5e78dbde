"""The outbox relay's passes over a real broker and PostgreSQL: how often it reads and publishes.

On a busy worker the relay publishes statuses in fewer, bigger passes (``pass_interval``), except when a
pass was full; and a pass waits its turn while orders are on their way to IBKR (orders first).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import noted_topic
from tests.integration.topic_reading import records_on_partition
from workers.adapters.kafka.publishing import OutboxRelay
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.ports.outbox import OutboxMessage
from workers.service_layer.orders_first import OrdersFirst

pytestmark = pytest.mark.integration


@dataclass
class Relaying:
    """A topic of the test's own, the outbox and a producer; relays made here are run until the test ends."""

    topic: str
    bootstrap: str
    outbox: Outbox
    producer: AIOKafkaProducer
    stop: asyncio.Event
    tasks: list[asyncio.Task[None]]

    def relay(self, *, pass_interval: float = 0.0, batch: int = 500,
              turn: Callable[[], Awaitable[None]] | None = None) -> OutboxRelay:
        relay = OutboxRelay(self.outbox, self.producer, batch=batch, idle=30.0, pass_interval=pass_interval,
                            turn=turn)
        self.tasks.append(asyncio.create_task(relay.run(self.stop)))
        return relay

    async def add(self, key: str) -> None:
        await self.outbox.add(OutboxMessage(self.topic, key, key.encode()))

    async def keys_on_topic(self) -> list[str]:
        return [record.key.decode() for record in await records_on_partition(self.bootstrap, self.topic)]


@pytest.fixture
async def relaying(kafka_bootstrap: str, pool: Pool) -> AsyncIterator[Relaying]:
    topic = noted_topic(f"outbox.relay.{uuid.uuid4().hex[:10]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    world = Relaying(topic, kafka_bootstrap, Outbox(pool), producer, asyncio.Event(), [])
    try:
        yield world
    finally:
        world.stop.set()
        for task in world.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await producer.stop()
        with contextlib.suppress(Exception):
            await admin.delete_topics([topic])
        await admin.close()


async def published(relay: OutboxRelay, count: int, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while relay.published < count:
        assert asyncio.get_running_loop().time() < deadline, f"{relay.published} of {count} published"
        await asyncio.sleep(0.01)


async def test_records_noted_one_by_one_within_the_interval_go_out_in_one_pass(relaying: Relaying) -> None:
    # Written before the relay starts: its first pass (which runs at once) publishes it. Written after,
    # it could miss that pass's read and wait for the interval, in a second pass.
    await relaying.add("first")
    relay = relaying.relay(pass_interval=2.0)
    await published(relay, 1)
    assert relay.passes == 1

    for n in range(5):  # five changes, each announced as it is written, 20 ms apart
        await relaying.add(f"next-{n}")
        relay.notify()
        await asyncio.sleep(0.02)
    await published(relay, 6)

    assert relay.passes == 2
    assert await relaying.keys_on_topic() == ["first", *(f"next-{n}" for n in range(5))]


async def test_a_full_pass_goes_again_at_once_whatever_the_interval(relaying: Relaying) -> None:
    for n in range(5):
        await relaying.add(f"backlog-{n}")
    relay = relaying.relay(pass_interval=60.0, batch=2)
    relay.notify()

    await published(relay, 5)  # three passes: 2 + 2 + 1, none waiting for the interval

    assert relay.passes == 3
    assert await relaying.keys_on_topic() == [f"backlog-{n}" for n in range(5)]


async def test_a_pass_waits_while_orders_are_on_their_way_to_ibkr(relaying: Relaying) -> None:
    orders_first = OrdersFirst(max_wait=60.0)
    placing = asyncio.Event()
    placed = asyncio.Event()

    async def order_batch() -> None:
        with orders_first.order_batch():
            placing.set()
            await placed.wait()

    batch = asyncio.create_task(order_batch())
    await placing.wait()
    await relaying.add("status")
    relay = relaying.relay(turn=orders_first.turn)
    relay.notify()
    await asyncio.sleep(0.3)
    assert relay.published == 0
    assert await relaying.keys_on_topic() == []

    placed.set()
    await batch
    await published(relay, 1)

    assert await relaying.keys_on_topic() == ["status"]


async def test_a_record_kafka_refuses_is_set_aside_with_its_error_and_the_records_behind_it_go_out(
        relaying: Relaying) -> None:
    await relaying.add("before")
    # Larger than the producer's request limit (1 MiB): no pass could ever send it.
    await relaying.outbox.add(OutboxMessage(relaying.topic, "huge", b"x" * (2 * 1024 * 1024)))
    await relaying.add("after")
    relay = relaying.relay()
    await published(relay, 2)
    await relaying.add("later")
    relay.notify()
    await published(relay, 3)

    assert await relaying.keys_on_topic() == ["before", "after", "later"]
    [error] = (await relaying.outbox.set_aside_errors()).values()
    assert error.startswith("MessageSizeTooLargeError")
    assert relay.set_aside == 1
    assert await relaying.outbox.unpublished() == []
