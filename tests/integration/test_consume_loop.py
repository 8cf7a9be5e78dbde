"""The consume loop over a real broker: failures are retried, never skipped; a closed gate consumes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import noted_topic
from workers.adapters.kafka.consuming import ConsumeLoop, DeadLetters, RecordSource, Subscription, Undecodable

pytestmark = pytest.mark.integration


async def decode(value: bytes) -> str:
    if value.startswith(b"bad"):
        raise Undecodable("starts with bad")
    return value.decode()


async def make_topic(bootstrap: str, partitions: int) -> str:
    name = noted_topic(f"loop.{uuid.uuid4().hex[:10]}")
    noted_topic(name + ".dlq")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1), NewTopic(name + ".dlq", 1, 1)])
    finally:
        await admin.close()
    return name


async def run_loop(bootstrap: str, topic: str, handler: Any, gate: Any = lambda: True,
                   until: Any = None) -> tuple[ConsumeLoop, AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}",
                                enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=7)
    await consumer.start()
    loop = ConsumeLoop(consumer, {topic: Subscription(decode, handler)}, DeadLetters(producer, topic + ".dlq"),
                       retry_delay=0.05, batch_size=7, gate=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not until():
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await consumer.stop()
    return loop, producer


async def run_until_set(loop: ConsumeLoop, done: asyncio.Event) -> None:
    """Run ``loop`` until ``done`` is set, then stop it (it commits what it handled before returning)."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def test_a_failing_record_is_retried_and_nothing_after_it_is_skipped(kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 3)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    sent = [f"m{i}" for i in range(60)]
    for i, value in enumerate(sent):
        await producer.send_and_wait(topic, value.encode(), key=str(i % 5).encode())
    await producer.send_and_wait(topic, b"bad record", key=b"x")
    await producer.stop()

    seen: dict[int, list[str]] = defaultdict(list)
    failures = {"m17": 2, "m33": 3}

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        # All or nothing, as the ledger's batch statements are: a failure leaves no trace of the batch.
        for command, _ in commands:
            if failures.get(command, 0) > 0:
                failures[command] -= 1
                raise RuntimeError(f"transient failure on {command}")
        for command, source in commands:
            seen[source.partition].append(command)

    loop, dlq_producer = await run_loop(kafka_bootstrap, topic, handler,
                                        until=lambda: sum(len(v) for v in seen.values()) >= 60)
    await dlq_producer.stop()
    handled = [v for values in seen.values() for v in values]
    assert sorted(handled) == sorted(sent)  # every record, none twice, none skipped
    for values in seen.values():  # order kept within each partition
        assert values == sorted(values, key=lambda v: int(v[1:]))
    assert loop.dead_letters.count == 1
    assert failures == {"m17": 0, "m33": 0}


async def test_a_closed_gate_consumes_nothing_until_it_opens(kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for i in range(10):
        await producer.send_and_wait(topic, f"m{i}".encode(), key=str(i).encode())
    await producer.stop()
    handled: list[str] = []
    gate = {"open": False}
    opened_at: list[float] = []

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        assert gate["open"], "a record was handled while the gate was closed"
        handled.extend(command for command, _ in commands)

    async def open_later() -> None:
        await asyncio.sleep(1.0)
        assert handled == []
        gate["open"] = True
        opened_at.append(1.0)

    opener = asyncio.create_task(open_later())
    loop, dlq_producer = await run_loop(kafka_bootstrap, topic, handler, gate=lambda: gate["open"],
                                        until=lambda: len(handled) >= 10)
    await dlq_producer.stop()
    await opener
    assert sorted(handled) == sorted(f"m{i}" for i in range(10))
    assert opened_at == [1.0]
    assert not loop.gate_closed


async def test_a_batch_retried_after_a_failure_dead_letters_its_bad_record_once(kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for value in (b"m0", b"bad one", b"m2"):
        await producer.send_and_wait(topic, value, key=b"k")
    await producer.stop()
    handled: list[str] = []
    calls = {"n": 0}
    both_handled = asyncio.Event()

    async def batch_handler(commands: list[tuple[str, RecordSource]]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the ledger is away")  # after the bad record went to the DLQ
        handled.extend(command for command, _ in commands)
        if handled == ["m0", "m2"]:
            both_handled.set()

    dlq_producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await dlq_producer.start()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"g-{uuid.uuid4().hex[:6]}",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    loop = ConsumeLoop(consumer, {topic: Subscription(decode, batch_handler)},
                       DeadLetters(dlq_producer, topic + ".dlq"), retry_delay=0.05)
    try:
        await run_until_set(loop, both_handled)
    finally:
        await consumer.stop()
        await dlq_producer.stop()

    assert calls["n"] >= 2 and loop.dead_letters.count == 1
    reader = AIOKafkaConsumer(topic + ".dlq", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await reader.start()
    try:
        await asyncio.sleep(0.5)
        records = [r for batch in (await reader.getmany(timeout_ms=2000)).values() for r in batch]
    finally:
        await reader.stop()
    assert [r.value for r in records] == [b"bad one"]


class GatedCommits(AIOKafkaConsumer):
    """A real consumer whose offset commits wait for ``gate`` (a slow group coordinator)."""

    def __init__(self, *topics: str, gate: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(*topics, **kwargs)
        self.gate = gate
        self.commits: list[dict[Any, int]] = []

    async def commit(self, offsets: Any = None) -> None:
        self.commits.append(dict(offsets))
        await self.gate.wait()
        await super().commit(offsets)


@pytest.mark.parametrize("commit_interval", [0.0, 60.0])
async def test_a_slow_commit_holds_up_no_batch_and_the_offsets_handled_meanwhile_go_in_one(
        kafka_bootstrap: str, commit_interval: float) -> None:
    """With no interval between commits, and with one far longer than the test: stopping commits at once."""
    topic = await make_topic(kafka_bootstrap, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for n in range(30):
        await producer.send_and_wait(topic, f"m{n}".encode(), key=b"k")
    handled: list[str] = []
    commits_may_complete = asyncio.Event()

    async def batch_handler(commands: list[tuple[str, RecordSource]]) -> None:
        await asyncio.sleep(0)  # like a real handler's I/O: lets the commit of the batch before start
        handled.extend(command for command, _ in commands)
        if len(handled) == 30:
            commits_may_complete.set()  # only now: had the loop waited for the first commit, never

    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = GatedCommits(topic, gate=commits_may_complete, bootstrap_servers=kafka_bootstrap, group_id=group,
                            enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    loop = ConsumeLoop(consumer, {topic: Subscription(decode, batch_handler)}, DeadLetters(producer, topic + ".dlq"),
                       batch_size=5, commit_interval=commit_interval)
    try:
        await run_until_set(loop, commits_may_complete)
    finally:
        await consumer.stop()
        await producer.stop()

    assert handled == [f"m{n}" for n in range(30)]
    # The first batch's commit waited while the other batches were handled; their offsets went together.
    assert [list(c.values()) for c in consumer.commits] == [[5], [30]]
    reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        assert await reader.committed(TopicPartition(topic, 0)) == 30
    finally:
        await reader.stop()
