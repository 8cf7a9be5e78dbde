"""The consume loop: decode, hand to a typed handler, dead-letter what cannot be decoded, commit.

Each subscribed topic has a :class:`Subscription`: its decoder (bytes to a command) and its handler, which
takes the topic's commands of a fetched batch at once. Handlers never see bytes or offsets.

Acknowledgement: a fetched batch is handled all or nothing. Its offsets are committed (in the background)
only after every topic's handler returned, so a crash re-delivers rather than loses. A handler that fails
(a database outage, say) makes the loop seek back to the batch's first records and retry them after a
back-off: a record is never skipped unless it is undecodable, and then it is on the dead-letter topic first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from workers.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class RecordSource:
    """Where a record came from (for logs, the ledger and dead-letter headers)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp: float | None = None  # seconds since the epoch (the record's CreateTime or LogAppendTime)


class Undecodable(Exception):
    """A record that cannot become a command; it goes to the dead-letter topic verbatim."""

    def __init__(self, reason: str, stage: str = "decode") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage


@dataclass(frozen=True)
class Refusal:
    """A record its handler refused (it decoded, but what it asks cannot be done): dead-lettered."""

    source: RecordSource
    reason: str
    stage: str = "handle"


Decoder = Callable[[bytes], Awaitable[Any]]
# Handles a topic's commands of a batch; returns the records it refused (None: none).
BatchHandler = Callable[[list[tuple[Any, RecordSource]]], Awaitable[Sequence[Refusal] | None]]


@dataclass(frozen=True)
class Subscription:
    """A topic's decoder (raises :class:`Undecodable`) and the handler of its commands, a batch at a time."""

    decode: Decoder
    handle: BatchHandler


class DeadLetters:
    """Writes undecodable records, verbatim, to the dead-letter topic with the contract's headers."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.count = 0

    async def send(self, record: ConsumerRecord, reason: str, stage: str) -> None:
        headers = [
            ("error.reason", reason.encode()[:4000]),
            ("error.stage", stage.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        await self.producer.send_and_wait(self.topic, value=record.value, key=record.key, headers=headers)
        self.count += 1
        log.warning("record dead-lettered", source_topic=record.topic, partition=record.partition,
                    offset=record.offset, reason=reason, stage=stage)


class ConsumeLoop:
    """Runs ``handler`` over every record of the subscribed topics until ``stop`` is set."""

    def __init__(self, consumer: AIOKafkaConsumer, subscriptions: Mapping[str, Subscription],
                 dead_letters: DeadLetters, *, batch_size: int = 500, retry_delay: float = 0.5,
                 max_retry_delay: float = 10.0, gate: Callable[[], bool] = lambda: True,
                 commit_interval: float = 0.1) -> None:
        self.consumer = consumer
        self.subscriptions = subscriptions
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.consumed = 0
        self.paused = False
        self.gate = gate
        self.gate_closed = False
        self.last_error: str | None = None
        self.last_failed_offset: int | None = None
        # Offsets handled but not committed yet, and the task committing them (one commit at a time).
        self._offsets_to_commit: dict[TopicPartition, int] = {}
        self._committer: asyncio.Task[None] | None = None
        self.commit_interval = commit_interval
        self._last_commit = float("-inf")
        self._commit_now = asyncio.Event()  # set while flushing: the interval is not waited for
        # Records of a batch that failed after they were dead-lettered: its retry does not send them twice.
        self._dead_lettered: set[tuple[str, int, int]] = set()

    async def _wait_for_gate(self, stop: asyncio.Event) -> None:
        """While the gate is closed (IBKR down), pause every partition: consume nothing we cannot place."""
        if self.gate():
            if self.gate_closed:
                self.consumer.resume(*self.consumer.assignment())
                self.gate_closed = False
                log.info("consumer resumed: the gate is open again")
            return
        if not self.gate_closed:
            self.gate_closed = True
            log.warning("consumer paused until the gate opens (IBKR not connected)")
        while not stop.is_set() and not self.gate():
            # Keep the group membership alive (getmany heartbeats) while fetching nothing. Should a
            # record still arrive (fetched before the pause), seek back to it: it is never dropped.
            self.consumer.pause(*self.consumer.assignment())
            stray = await self.consumer.getmany(timeout_ms=100)
            for partition, records in stray.items():
                if records:
                    self.consumer.seek(partition, records[0].offset)
        if not stop.is_set():
            self.consumer.resume(*self.consumer.assignment())
            self.gate_closed = False
            log.info("consumer resumed: the gate is open again")

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            await self._wait_for_gate(stop)
            if stop.is_set():
                break
            batches = list((await self.consumer.getmany(timeout_ms=200, max_records=self.batch_size)).items())
            if not batches:
                continue
            if not await self._handle_all(batches, stop) and self.last_failed_offset is not None:
                failures += 1
                self.paused = True
                delay = min(self.max_retry_delay, self.retry_delay * 2 ** min(failures - 1, 6))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            else:
                if failures:
                    log.info("consumer resumed", after_failures=failures)
                failures = 0
                self.paused = False
        await self.flush_commits()

    async def _handle_all(self, batches: list[tuple[TopicPartition, list[ConsumerRecord]]],
                          stop: asyncio.Event) -> bool:
        """All partitions' records at once (one call of the batch handler per topic); one commit.

        All or nothing: on a failure, a stop or a closed gate every partition is fetched again from its
        first record of the batch. Returns True when the batch was handled and committed.
        """
        self.last_failed_offset = None
        if stop.is_set() or not self.gate():
            for partition, records in batches:
                self.consumer.seek(partition, records[0].offset)
            return False
        by_topic: dict[str, list[tuple[Any, RecordSource]]] = {}
        count = sum(len(records) for _, records in batches)
        try:
            for _, records in batches:
                for record in records:
                    decoded = await self._decode_or_dead_letter(record)
                    if decoded is not None:
                        by_topic.setdefault(record.topic, []).append(decoded)
            for topic, commands in by_topic.items():
                refused = await self.subscriptions[topic].handle(commands)
                await self._dead_letter_refused(batches, refused or ())
        except Exception as exc:
            self.last_failed_offset = batches[0][1][0].offset
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("batch handler failed; will retry the batch", records=count)
            for partition, records in batches:
                self.consumer.seek(partition, records[0].offset)
            return False
        self.consumed += count
        self._dead_lettered.clear()  # the batch is handled: none of its records comes again
        self._commit_later({partition: records[-1].offset + 1 for partition, records in batches})
        return True

    def _commit_later(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` in the background, without holding up the next batch.

        One commit is in flight at a time, and commits are at least ``commit_interval`` seconds apart;
        offsets handled meanwhile wait and go together in the next one (the latest offset of each
        partition). So commits never go backwards, a slow group coordinator never stalls consumption,
        and the broker gets a few commits a second rather than one per batch. A crash or a rebalance
        before a commit completes only redelivers records the ledger already holds.
        """
        for partition, offset in offsets.items():
            self._offsets_to_commit[partition] = max(offset, self._offsets_to_commit.get(partition, 0))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_pending(), name="offset-commit")

    async def _commit_pending(self) -> None:
        loop = asyncio.get_running_loop()
        while self._offsets_to_commit:
            wait = self._last_commit + self.commit_interval - loop.time()
            if wait > 0 and not self._commit_now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._commit_now.wait(), wait)
            offsets, self._offsets_to_commit = self._offsets_to_commit, {}
            self._last_commit = loop.time()
            await self._commit_many(offsets)

    async def _dead_letter_refused(self, batches: list[tuple[TopicPartition, list[ConsumerRecord]]],
                                   refused: Sequence[Refusal]) -> None:
        records = {(r.topic, r.partition, r.offset): r for _, rs in batches for r in rs}
        for refusal in refused:
            where = (refusal.source.topic, refusal.source.partition, refusal.source.offset)
            if where in records and where not in self._dead_lettered:
                await self.dead_letters.send(records[where], refusal.reason, refusal.stage)
                self._dead_lettered.add(where)

    async def _decode_or_dead_letter(self, record: ConsumerRecord) -> tuple[Any, RecordSource] | None:
        key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
        source = RecordSource(record.topic, record.partition, record.offset, key,
                              record.timestamp / 1000 if record.timestamp is not None else None)
        try:
            if record.value is None:
                raise Undecodable("record has no value (tombstone)")
            subscription = self.subscriptions.get(record.topic)
            if subscription is None:
                raise Undecodable(f"no decoder for topic {record.topic}", stage="route")
            return await subscription.decode(record.value), source
        except Undecodable as exc:
            where = (record.topic, record.partition, record.offset)
            if where not in self._dead_lettered:
                await self.dead_letters.send(record, exc.reason, exc.stage)
                self._dead_lettered.add(where)
            return None

    async def flush_commits(self) -> None:
        """Commit every handled offset now and wait for it (or for its commit to fail)."""
        self._commit_now.set()
        try:
            if self._offsets_to_commit and (self._committer is None or self._committer.done()):
                self._committer = asyncio.create_task(self._commit_pending(), name="offset-commit")
            if self._committer is not None:
                await self._committer
        finally:
            self._commit_now.clear()

    async def _commit_many(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance moved the partition, or the coordinator was away: the records come again,
            # and the ledger makes the redelivery harmless.
            log.warning("offset commit failed; the records will be redelivered", partitions=len(offsets),
                        error=str(exc))
