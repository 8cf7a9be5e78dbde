"""The consume loop: decode, hand to a typed handler, dead-letter what cannot be decoded, commit.

Each subscribed topic has a :class:`Subscription`: its decoder (bytes to a command) and its handler, which
takes the topic's commands of a fetched batch at once. Handlers never see bytes or offsets.

Acknowledgement: a fetched batch is handled all or nothing. Its offsets are committed (in the background)
only after every topic's handler returned, so a crash re-delivers rather than loses. A handler that fails
with an infrastructure error (a database outage, say) makes the loop seek back to the batch's first records
and retry them after a back-off, for as long as it lasts. A failure caused by a record (see
:mod:`.failures`), or one of unknown cause that keeps coming back, narrows the batch down: its records are
handled one at a time, in order, and the one that fails goes to the dead-letter topic (its handler's
``reject`` announcing it where it has one) so the records behind it go on. A record is never skipped
unless it is on the dead-letter topic first.

A record batch the client cannot read (see :mod:`.unreadable`) arrives as one :class:`UnreadableBatch` in
its place: it is fetched again up to ``max_attempts`` times (health DEGRADED meanwhile), then dead-lettered
with its offsets and the error, and its offsets are committed past its last one.

Handling a record again is harmless: the ledger knows every order it recorded (an order of a batch that
failed after it was placed is only re-announced when its record comes again).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from workers.adapters.kafka.dead_letters import DeadLetters
from workers.adapters.kafka.failures import Classifier, ErrorKind, bounded, classify_error, describe
from workers.adapters.kafka.offset_commits import OffsetCommits
from workers.adapters.kafka.unreadable import UnreadableBatch, next_offset
from workers.domain.health import ConsumeCounts
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
Rejecter = Callable[[Any, str], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """A topic's decoder (raises :class:`Undecodable`) and the handler of its commands, a batch at a time.

    ``reject`` (optional) announces a decoded command its handler could not handle (it was dead-lettered
    at stage ``handle``), e.g. a REJECTED status for an order.
    """

    decode: Decoder
    handle: BatchHandler
    reject: Rejecter | None = None


__all__ = ["ConsumeLoop", "DeadLetters", "Decoder", "RecordSource", "Subscription", "Undecodable"]


class ConsumeLoop:
    """Runs ``handler`` over every record of the subscribed topics until ``stop`` is set."""

    def __init__(self, consumer: AIOKafkaConsumer, subscriptions: Mapping[str, Subscription],
                 dead_letters: DeadLetters, *, batch_size: int = 500, retry_delay: float = 0.5,
                 max_retry_delay: float = 10.0, gate: Callable[[], bool] = lambda: True,
                 commit_interval: float = 0.1, classify: Classifier = classify_error, max_attempts: int = 5,
                 on_retry: Callable[[ErrorKind], None] = lambda kind: None,
                 max_record_bytes: int | None = None) -> None:
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
        self.classify = classify
        # Attempts at a failure of unknown cause (the batch's, then the record's) before the record is
        # dead-lettered; infrastructure errors are retried for as long as they last.
        self.max_attempts = max_attempts
        self.on_retry = on_retry
        # A record larger than this (key and value) is dead-lettered before anything reads it.
        self.max_record_bytes = max_record_bytes
        self.retries = 0
        self.retries_by_kind: dict[str, int] = {}  # by ErrorKind value
        # Per partition, the first offset of the unreadable batch at its head and the attempts at it.
        self._unreadable: dict[TopicPartition, tuple[int, int]] = {}
        self._failures = 0  # failed attempts in a row at the batch now at the head of the partitions
        # Handled offsets are committed in the background, one commit at a time.
        self._commits = OffsetCommits(consumer, interval=commit_interval)
        # Records of a batch that failed after they were dead-lettered: its retry does not send them twice.
        self._dead_lettered: set[tuple[str, int, int]] = set()
        self._letters_sent: set[tuple[str, int, int]] = set()  # sent, not known to be written yet

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
        while not stop.is_set():
            await self._wait_for_gate(stop)
            if stop.is_set():
                break
            try:
                fetched = await self.consumer.getmany(timeout_ms=200, max_records=self.batch_size)
            except KafkaError as exc:
                # The broker away, or a batch whose very header cannot be parsed (its end is unknown, so
                # nothing can be skipped): the worker stays up and says so (DEGRADED) rather than restarting.
                self._failures += 1
                self.paused = True
                self.last_error = f"fetch failed: {describe(exc)}"
                self._count_retry(ErrorKind.INFRASTRUCTURE)
                log.error("fetch failed; will retry", error=self.last_error)
                await self._back_off(self._failures, stop)
                continue
            batches = [(partition, records) for partition, records in fetched.items() if records]
            unreadable_attempts = self._hold_back_unreadable(batches)
            batches = [(partition, records) for partition, records in batches if records]
            if not batches and not unreadable_attempts:
                continue
            if batches and not await self._handle_all(batches, stop) and self.last_failed_offset is not None:
                self._failures += 1
                self.paused = True
                await self._back_off(self._failures, stop)
            elif unreadable_attempts:
                self.paused = True
                await self._back_off(unreadable_attempts, stop)
            else:
                if self._failures:
                    log.info("consumer resumed", after_failures=self._failures)
                self._failures = 0
                self.paused = False
        await self.flush_commits()

    def _hold_back_unreadable(self, batches: list[tuple[TopicPartition, list[ConsumerRecord]]]) -> int:
        """Take out the unreadable batches to read again; the most attempts at one of them (0: none).

        An :class:`UnreadableBatch` ends its partition's records. Behind readable records it is only
        fetched again (it comes first next time). First in its partition, it counts as an attempt; after
        ``max_attempts`` of them it stays in the batch and is dead-lettered like an undecodable record.
        """
        most = 0
        for partition, records in batches:
            batch = records[-1]
            if not isinstance(batch, UnreadableBatch):
                continue
            if len(records) == 1:
                previous = self._unreadable.get(partition)
                attempts = previous[1] + 1 if previous is not None and previous[0] == batch.offset else 1
                self._unreadable[partition] = (batch.offset, attempts)
                self.last_error = bounded(batch.reason, 500)
                self._count_retry(ErrorKind.RECORD)
                if attempts >= self.max_attempts:
                    log.error("record batch cannot be read; dead-lettering it", topic=batch.topic,
                              partition=batch.partition, first_offset=batch.offset, last_offset=batch.last_offset,
                              attempts=attempts, error=batch.error)
                    continue
                log.warning("record batch cannot be read; will fetch it again", topic=batch.topic,
                            partition=batch.partition, first_offset=batch.offset, attempt=attempts,
                            error=batch.error)
                most = max(most, attempts)
            # Seeking back now is safe: the loop only ever seeks this partition back to an earlier record.
            records.pop()
            self.consumer.seek(partition, batch.offset)
        return most

    async def _back_off(self, failures: int, stop: asyncio.Event) -> None:
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** min(failures - 1, 6))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)

    async def _handle_all(self, batches: list[tuple[TopicPartition, list[ConsumerRecord]]],
                          stop: asyncio.Event) -> bool:
        """All partitions' records at once (one call of the batch handler per topic); one commit.

        All or nothing: on an infrastructure failure, a stop or a closed gate every partition is fetched
        again from its first record of the batch. A failure caused by a record, or one of unknown cause
        for the ``max_attempts``-th time, narrows the batch down (:meth:`_narrow`). Returns True when the
        batch was handled and committed.
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
            await self._flush_dead_letters()
            for topic, commands in by_topic.items():
                refused = await self.subscriptions[topic].handle(commands)
                await self._dead_letter_refused((r for _, rs in batches for r in rs), refused or ())
        except Exception as exc:
            kind = self._failed(exc, batches[0][1][0].offset)
            if kind is ErrorKind.RECORD or (kind is ErrorKind.UNKNOWN and self._failures + 1 >= self.max_attempts):
                log.warning("batch failed; handling its records one at a time", records=count, kind=kind.value,
                            error=self.last_error)
                return await self._narrow(batches, stop)
            log.exception("batch handler failed; will retry the batch", records=count, kind=kind.value)
            for partition, records in batches:
                self.consumer.seek(partition, records[0].offset)
            return False
        self.consumed += count
        self._dead_lettered.clear()  # the batch is handled: none of its records comes again
        self._commits.later({partition: next_offset(records[-1]) for partition, records in batches})
        return True

    def _failed(self, exc: Exception, offset: int) -> ErrorKind:
        kind = self.classify(exc)
        self.last_failed_offset = offset
        self.last_error = describe(exc)
        self._count_retry(kind)
        return kind

    def counts(self) -> ConsumeCounts:
        """The dead letters written, by stage, and the failed attempts, by kind, since the loop started."""
        return ConsumeCounts(dead_letters=MappingProxyType(dict(self.dead_letters.by_stage)),
                             retries=MappingProxyType(dict(self.retries_by_kind)))

    def _count_retry(self, kind: ErrorKind) -> None:
        self.retries += 1
        self.retries_by_kind[kind.value] = self.retries_by_kind.get(kind.value, 0) + 1
        self.on_retry(kind)

    async def _narrow(self, batches: list[tuple[TopicPartition, list[ConsumerRecord]]],
                      stop: asyncio.Event) -> bool:
        """Handle a failed batch a record at a time, in order; dead-letter the records that fail.

        Each partition's offsets are committed once its records are handled. An infrastructure error, a
        stop or a closed gate ends the narrowing: each partition is fetched again from its first record not
        handled, and False is returned (the loop backs off).
        """
        for n, (partition, records) in enumerate(batches):
            for i, record in enumerate(records):
                if stop.is_set() or not self.gate() or not await self._handle_alone(record, stop):
                    if i:
                        self._commits.later({partition: record.offset})
                    self.consumer.seek(partition, record.offset)
                    for later, rest in batches[n + 1:]:
                        self.consumer.seek(later, rest[0].offset)
                    return False
                self.consumed += 1
            self._commits.later({partition: next_offset(records[-1])})
        self._dead_lettered.clear()
        self.last_failed_offset = None
        return True

    async def _handle_alone(self, record: ConsumerRecord, stop: asyncio.Event) -> bool:
        """Handle one record; False when it failed for a reason of the infrastructure (or on a stop).

        A failure caused by the record dead-letters it at once; one of unknown cause after
        ``max_attempts`` attempts (with back-off between them).
        """
        attempts = 0
        while True:
            try:
                decoded = await self._decode_or_dead_letter(record)
                await self._flush_dead_letters()
                if decoded is None:
                    return True
                subscription = self.subscriptions[record.topic]
                try:
                    refused = await subscription.handle([decoded])
                    await self._dead_letter_refused([record], refused or ())
                    return True
                except Exception as exc:
                    attempts += 1
                    kind = self._failed(exc, record.offset)
                    if kind is ErrorKind.INFRASTRUCTURE:
                        log.warning("record failed: infrastructure; will retry", offset=record.offset,
                                    error=self.last_error)
                        return False
                    if kind is ErrorKind.UNKNOWN and attempts < self.max_attempts:
                        log.warning("record failed; will retry it", offset=record.offset, attempt=attempts,
                                    error=self.last_error)
                        await self._back_off(attempts, stop)
                        if stop.is_set():
                            return False
                        continue
                    reason = self.last_error or "handler failed"
                    if kind is ErrorKind.UNKNOWN:
                        reason = f"failed {attempts} times: {reason}"
                    await self._set_aside(record, decoded[0], subscription, reason)
                    return True
            except Exception as exc:  # the dead-letter topic or the broker is away
                self._failed(exc, record.offset)
                log.warning("record could not be set aside; will retry", offset=record.offset,
                            error=self.last_error)
                return False

    async def _set_aside(self, record: ConsumerRecord, command: Any, subscription: Subscription,
                         reason: str) -> None:
        """Dead-letter a record its handler cannot handle, then announce it (a REJECTED status)."""
        where = (record.topic, record.partition, record.offset)
        if where not in self._dead_lettered:
            await self.dead_letters.send(record, reason, "handle")
            self._letters_sent.add(where)
            await self._flush_dead_letters()
        if subscription.reject is None:
            return
        try:
            await subscription.reject(command, reason)
        except Exception as exc:
            # Dead-lettered already: the record is not retried for its announcement.
            log.warning("a dead-lettered command could not be announced", offset=record.offset,
                        error=describe(exc))

    async def _dead_letter_refused(self, records: Iterable[ConsumerRecord], refused: Sequence[Refusal]) -> None:
        """Dead-letter the records a handler refused (and wait for them, before the offsets are committed)."""
        if not refused:
            return
        by_place = {(r.topic, r.partition, r.offset): r for r in records}
        for refusal in refused:
            where = (refusal.source.topic, refusal.source.partition, refusal.source.offset)
            if where in by_place and where not in self._dead_lettered and where not in self._letters_sent:
                await self.dead_letters.send(by_place[where], refusal.reason, refusal.stage)
                self._letters_sent.add(where)
        await self._flush_dead_letters()

    async def _decode_or_dead_letter(self, record: ConsumerRecord) -> tuple[Any, RecordSource] | None:
        key = record.key.decode("utf-8", errors="replace") if record.key is not None else None
        source = RecordSource(record.topic, record.partition, record.offset, key,
                              record.timestamp / 1000 if record.timestamp is not None else None)
        try:
            if isinstance(record, UnreadableBatch):
                raise Undecodable(record.reason, stage=record.stage)
            if record.value is None:
                raise Undecodable("record has no value (tombstone)")
            size = len(record.value) + len(record.key or b"")
            if self.max_record_bytes is not None and size > self.max_record_bytes:
                raise Undecodable(f"record of {size} bytes, more than {self.max_record_bytes}", stage="size")
            subscription = self.subscriptions.get(record.topic)
            if subscription is None:
                raise Undecodable(f"no decoder for topic {record.topic}", stage="route")
            return await subscription.decode(record.value), source
        except Undecodable as exc:
            where = (record.topic, record.partition, record.offset)
            if where not in self._dead_lettered and where not in self._letters_sent:
                await self.dead_letters.send(record, exc.reason, exc.stage)
                self._letters_sent.add(where)
            return None

    async def _flush_dead_letters(self) -> None:
        """Wait for the dead letters sent; only then are they known to be written (and never sent again)."""
        try:
            await self.dead_letters.flush()
        finally:
            sent, self._letters_sent = self._letters_sent, set()
        self._dead_lettered |= sent

    async def flush_commits(self) -> None:
        """Commit every handled offset now and wait for it (or for its commit to fail)."""
        await self._commits.flush()
