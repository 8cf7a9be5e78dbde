"""The consume loop over a real broker: failures are retried, never skipped; a closed gate consumes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from tests.conftest import noted_topic
from tests.integration.gzip_batches import send_as_one_gzip_batch
from workers.adapters.kafka.compression import bound_gzip
from workers.adapters.kafka.consuming import ConsumeLoop, DeadLetters, RecordSource, Subscription, Undecodable
from workers.adapters.kafka.unreadable import read_unreadable_batches_in_place

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


async def dead_letters_on(bootstrap: str, topic: str, count: int) -> list[Any]:
    """The first ``count`` records of ``topic`` (waits up to 10 s for them)."""
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                              enable_auto_commit=False)
    await reader.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while len(records) < count and asyncio.get_running_loop().time() < deadline:
            batches = await reader.getmany(timeout_ms=500)
            records.extend(r for batch in batches.values() for r in batch)
    finally:
        await reader.stop()
    return records


async def committed(bootstrap: str, group: str, partition: TopicPartition) -> int | None:
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        return await reader.committed(partition)
    finally:
        await reader.stop()


async def run_to_the_end(bootstrap: str, topic: str, values: list[bytes], handler: Any, done: asyncio.Event, *,
                         reject: Any = None, seen: list[ConsumeLoop] | None = None,
                         **loop_options: Any) -> tuple[ConsumeLoop, str]:
    """Write ``values`` to ``topic`` (one partition), run a consume loop until ``done`` is set; its group id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    for value in values:
        await producer.send_and_wait(topic, value, key=b"k")
    group = f"g-{uuid.uuid4().hex[:6]}"
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    loop = ConsumeLoop(consumer, {topic: Subscription(decode, handler, reject=reject)},
                       DeadLetters(producer, topic + ".dlq"), **{"retry_delay": 0.02, **loop_options})
    if seen is not None:
        seen.append(loop)
    try:
        await run_until_set(loop, done)
    finally:
        await consumer.stop()
        await producer.stop()
    return loop, group


async def test_a_record_its_handler_refuses_is_dead_lettered_and_the_records_around_it_go_on(
        kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 1)
    values = [f"m{n}".encode() for n in range(20)]
    values[7] = b"poison \x00 value"
    handled: list[str] = []
    rejected: list[tuple[str, str]] = []
    all_handled = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        if any("\x00" in command for command, _ in commands):  # all or nothing, as the ledger's statements
            raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        handled.extend(command for command, _ in commands)
        if len(handled) == 19:
            all_handled.set()

    async def reject(command: str, reason: str) -> None:
        rejected.append((command, reason))

    loop, group = await run_to_the_end(kafka_bootstrap, topic, values, handler, all_handled, reject=reject)

    assert handled == [v.decode() for n, v in enumerate(values) if n != 7]  # in order, each once
    [letter] = await dead_letters_on(kafka_bootstrap, topic + ".dlq", 1)
    headers = dict(letter.headers)
    assert letter.value == values[7]
    assert headers["error.stage"] == b"handle"
    assert headers["source.offset"] == b"7"
    assert headers["error.reason"].startswith(b"ValueError: PostgreSQL text fields cannot contain NUL")
    assert rejected == [("poison \x00 value", headers["error.reason"].decode())]
    assert loop.dead_letters.by_stage == {"handle": 1}
    assert await committed(kafka_bootstrap, group, TopicPartition(topic, 0)) == 20
    assert not loop.paused


async def test_a_record_failing_for_an_unknown_reason_is_dead_lettered_after_a_bounded_number_of_attempts(
        kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 1)
    values = [b"m0", b"stuck", b"m2"]
    handled: list[str] = []
    attempts_at_stuck = {"n": 0}
    both_handled = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        if any(command == "stuck" for command, _ in commands):
            attempts_at_stuck["n"] += 1
            raise RuntimeError("something nobody foresaw")
        handled.extend(command for command, _ in commands)
        if len(handled) == 2:
            both_handled.set()

    _, group = await run_to_the_end(kafka_bootstrap, topic, values, handler, both_handled, max_attempts=3)

    assert handled == ["m0", "m2"]
    # Three attempts at the batch, then three at the record alone.
    assert attempts_at_stuck["n"] == 6
    [letter] = await dead_letters_on(kafka_bootstrap, topic + ".dlq", 1)
    assert letter.value == b"stuck"
    assert dict(letter.headers)["error.reason"] == b"failed 3 times: RuntimeError: something nobody foresaw"
    assert await committed(kafka_bootstrap, group, TopicPartition(topic, 0)) == 3


async def test_an_infrastructure_error_is_retried_while_it_lasts_and_nothing_is_dead_lettered(
        kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 1)
    handled: list[str] = []
    outage = {"left": 12}  # far more failures than max_attempts
    paused_during_outage: list[bool] = []
    loop_ref: list[ConsumeLoop] = []
    all_handled = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        if outage["left"] > 0:
            outage["left"] -= 1
            if loop_ref:
                paused_during_outage.append(loop_ref[0].paused)
            raise ConnectionError("the database is away")
        handled.extend(command for command, _ in commands)
        if len(handled) == 3:
            all_handled.set()

    loop, _ = await run_to_the_end(kafka_bootstrap, topic, [b"m0", b"m1", b"m2"], handler,
                                   all_handled, seen=loop_ref, max_attempts=2, max_retry_delay=0.05)

    assert handled == ["m0", "m1", "m2"]
    assert loop.dead_letters.count == 0
    assert paused_during_outage[1:] and all(paused_during_outage[1:])  # DEGRADED while retrying
    assert loop.retries == 12 and not loop.paused


async def test_a_gzip_batch_beyond_the_decompression_bound_is_dead_lettered_after_bounded_attempts_and_the_records_behind_it_go_on(  # noqa: E501
        kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 1)
    read_unreadable_batches_in_place()
    bound_gzip(limit=1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in (b"m0", b"m1"):
            await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()
    # Three records of 400 KB of zeros in one batch of a few KB: 1.2 MB once inflated, beyond the 1 MiB bound.
    await send_as_one_gzip_batch(kafka_bootstrap, topic, [bytes(400_000)] * 3)
    handled: list[str] = []
    paused_while_retrying: list[bool] = []
    loops: list[ConsumeLoop] = []
    all_handled = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        if loops and loops[0].retries_by_kind:
            paused_while_retrying.append(loops[0].paused)
        handled.extend(command for command, _ in commands)
        if len(handled) == 4:
            all_handled.set()

    try:
        loop, group = await run_to_the_end(kafka_bootstrap, topic, [b"m5", b"m6"], handler, all_handled,
                                           seen=loops, max_attempts=3, max_retry_delay=0.05)
    finally:
        bound_gzip()

    assert handled == ["m0", "m1", "m5", "m6"]
    [letter] = await dead_letters_on(kafka_bootstrap, topic + ".dlq", 1)
    headers = dict(letter.headers)
    assert letter.value == b"" and letter.key is None
    assert headers["error.stage"] == b"decompress"
    assert headers["source.topic"] == topic.encode()
    assert (headers["source.partition"], headers["source.offset"]) == (b"0", b"2")
    reason = headers["error.reason"].decode()
    assert reason.startswith(f"record batch of {topic} partition 0 at offsets 2 to 4 cannot be read (")
    assert "expands beyond 1048576 bytes" in reason and "bytes are not available" in reason
    assert loop.retries_by_kind == {"record": 3}  # the bounded attempts, then the dead letter
    assert loop.dead_letters.by_stage == {"decompress": 1}
    assert await committed(kafka_bootstrap, group, TopicPartition(topic, 0)) == 7
    assert not loop.paused


async def test_records_of_other_partitions_fetched_with_an_unreadable_batch_are_all_handled(
        kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 2)
    read_unreadable_batches_in_place()
    bound_gzip(limit=1024 * 1024)
    await send_as_one_gzip_batch(kafka_bootstrap, topic, [bytes(400_000)] * 3, partition=0)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(20):
            await producer.send_and_wait(topic, f"p1-{n}".encode(), key=b"k", partition=1)
        await producer.send_and_wait(topic, b"p0-after", key=b"k", partition=0)
    finally:
        await producer.stop()
    handled: list[str] = []
    all_handled = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        handled.extend(command for command, _ in commands)
        if len(handled) == 21:
            all_handled.set()

    try:
        loop, group = await run_to_the_end(kafka_bootstrap, topic, [], handler, all_handled, max_attempts=2,
                                           max_retry_delay=0.05)
    finally:
        bound_gzip()

    assert [v for v in handled if v.startswith("p1-")] == [f"p1-{n}" for n in range(20)]  # each once, in order
    assert [v for v in handled if v.startswith("p0-")] == ["p0-after"]
    assert loop.dead_letters.by_stage == {"decompress": 1}
    assert await committed(kafka_bootstrap, group, TopicPartition(topic, 0)) == 4
    assert await committed(kafka_bootstrap, group, TopicPartition(topic, 1)) == 20


class FailingFetches(AIOKafkaConsumer):
    """A real consumer whose first ``failures`` fetches fail as they do while the broker is away."""

    def __init__(self, *topics: str, failures: int, **kwargs: Any) -> None:
        super().__init__(*topics, **kwargs)
        self.failures = failures
        self.loop: ConsumeLoop | None = None
        self.paused_while_failing: list[bool] = []

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        if self.failures > 0:
            self.failures -= 1
            if self.loop is not None:
                self.paused_while_failing.append(self.loop.paused)
            raise KafkaConnectionError("the broker is away")
        return await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)


async def test_a_fetch_failing_because_the_broker_is_away_is_retried_while_it_lasts_and_nothing_is_dead_lettered(
        kafka_bootstrap: str) -> None:
    topic = await make_topic(kafka_bootstrap, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for value in (b"m0", b"m1", b"m2"):
        await producer.send_and_wait(topic, value, key=b"k")
    handled: list[str] = []
    all_handled = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        handled.extend(command for command, _ in commands)
        if len(handled) == 3:
            all_handled.set()

    consumer = FailingFetches(topic, failures=8, bootstrap_servers=kafka_bootstrap,
                              group_id=f"g-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
                              auto_offset_reset="earliest")
    await consumer.start()
    # Far fewer attempts allowed at a record than the outage lasts: an outage is no record's fault.
    loop = ConsumeLoop(consumer, {topic: Subscription(decode, handler)}, DeadLetters(producer, topic + ".dlq"),
                       retry_delay=0.01, max_retry_delay=0.05, max_attempts=2)
    consumer.loop = loop
    try:
        await run_until_set(loop, all_handled)
    finally:
        await consumer.stop()
        await producer.stop()

    assert handled == ["m0", "m1", "m2"]
    assert consumer.paused_while_failing[1:] and all(consumer.paused_while_failing[1:])  # DEGRADED meanwhile
    assert loop.retries_by_kind == {"infrastructure": 8}
    assert loop.last_error is not None and loop.last_error.startswith("fetch failed: KafkaConnectionError")
    assert loop.dead_letters.count == 0 and not loop.paused


async def test_a_record_too_large_for_the_dead_letter_topic_keeps_its_place_there_with_its_headers(
        kafka_bootstrap: str) -> None:
    name = noted_topic(f"loop.{uuid.uuid4().hex[:10]}")
    noted_topic(name + ".dlq")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1), NewTopic(name + ".dlq", 1, 1,
                                                                   topic_configs={"max.message.bytes": "4096"})])
    finally:
        await admin.close()
    big = b"bad " + b"x" * 20_000
    handled: list[str] = []
    done = asyncio.Event()

    async def handler(commands: list[tuple[str, RecordSource]]) -> None:
        handled.extend(command for command, _ in commands)
        done.set()

    loop, _ = await run_to_the_end(kafka_bootstrap, name, [big, b"m1"], handler, done)

    assert handled == ["m1"]
    [letter] = await dead_letters_on(kafka_bootstrap, name + ".dlq", 1)
    headers = dict(letter.headers)
    assert letter.value is None
    assert headers["source.offset"] == b"0" and headers["error.stage"] == b"decode"
    assert headers["error.reason"].startswith(b"record of 20004 bytes too large for the dead-letter topic; ")
    assert loop.dead_letters.count == 1
