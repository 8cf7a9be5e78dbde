"""Relays from PostgreSQL to Kafka: the outbox (statuses, positions) and the fills table.

Both follow the same rule: a record is written to PostgreSQL first, in the transaction of the change it
announces; a relay produces it and marks it published once Kafka acknowledged it.

* The outbox is *at least once*: a crash between the acknowledgement and the mark publishes a status
  again, which consumers of ``orders.status`` tolerate (it is the same state).
* Fills are *exactly once per execId*: before its first pass the fill relay reads back the tail of
  ``fills.executed`` (from a little before the oldest unpublished fill) and marks every fill it finds
  there as published, so a crash between acknowledgement and mark does not publish it twice. A pass that
  fails once it may have published (a send whose outcome is unknown, a mark that PostgreSQL refused) is
  followed by the same read-back before the next pass. The producer is idempotent, so its own retries
  add no duplicates either.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
    for_code,
)

from workers.adapters.avro import AvroCodec, DecodeError
from workers.adapters.kafka.failures import describe
from workers.adapters.kafka.records import FILL_EXECUTED, fill_record
from workers.adapters.kafka.unreadable import next_offset
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.rows import FillRow
from workers.logs import get_logger

log = get_logger(__name__)

# Kafka refusing a record for what it is (not for the state of the broker): sending it again fails again.
_REFUSED_RECORD = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class _Relay:
    """A loop woken by :meth:`notify` (or every ``idle`` seconds) that publishes what is pending.

    ``pass_interval``: at least this many seconds between the starts of two passes, unless the last pass
    left more behind (a full batch), so a busy worker publishes in fewer, bigger passes.
    ``turn``: awaited before each pass (the worker's orders-first rule: a pass waits while orders are on
    their way to IBKR).
    """

    def __init__(self, idle: float, *, pass_interval: float = 0.0,
                 turn: Callable[[], Awaitable[None]] | None = None) -> None:
        self._wake = asyncio.Event()
        self.idle = idle
        self.pass_interval = pass_interval
        self.turn = turn
        self.passes = 0
        self.published = 0
        self.last_error: str | None = None

    def notify(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            self._wake.clear()
            if self.turn is not None:
                await self.turn()
            started = loop.time()
            self.passes += 1
            try:
                more = await self.publish_pending()
            except Exception as exc:  # Kafka or PostgreSQL away: keep the records, try again
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("relay could not publish; will retry", relay=type(self).__name__,
                            error=self.last_error)
                more = False
                await asyncio.sleep(1.0)
            if more:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.idle)
            rest = started + self.pass_interval - loop.time()
            if rest > 0 and not stop.is_set():
                await asyncio.sleep(rest)

    async def publish_pending(self) -> bool:
        """Publish one batch; True when there may be more right away."""
        raise NotImplementedError


class OutboxRelay(_Relay):
    """Publishes the ``outbox`` table's records in id order (at least once)."""

    def __init__(self, outbox: Outbox, producer: AIOKafkaProducer, *, batch: int = 500,
                 idle: float = 0.5, pass_interval: float = 0.0,
                 turn: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(idle, pass_interval=pass_interval, turn=turn)
        self.outbox = outbox
        self.producer = producer
        self.batch = batch
        self.set_aside = 0

    async def publish_pending(self) -> bool:
        rows = await self.outbox.unpublished(self.batch)
        if not rows:
            return False
        refused: dict[int, str] = {}
        sends: list[Awaitable[Any]] = []
        sent: list[int] = []
        for row in rows:
            try:
                sends.append(await self.producer.send(row.topic, value=row.payload, key=row.key.encode()))
                sent.append(row.id)
            except _REFUSED_RECORD as exc:  # checked by the client before sending
                refused[row.id] = describe(exc)
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for row_id, outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, _REFUSED_RECORD):
                refused[row_id] = describe(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # the broker or the connection: the pass is retried, in order
        if refused:
            # Set aside so the records behind them go out; retrying them would fail every pass.
            await self.outbox.set_aside(refused)
            self.set_aside += len(refused)
            log.error("outbox records refused by Kafka; set aside", ids=sorted(refused),
                      error=next(iter(refused.values())))
        await self.outbox.mark_many_published([row.id for row in rows if row.id not in refused])
        self.published += len(rows) - len(refused)
        return len(rows) == self.batch


class FillRelay(_Relay):
    """Publishes each recorded fill to ``fills.executed`` exactly once, with its commission.

    A fill waits up to ``commission_wait`` seconds for its commission report, then goes without one.
    """

    def __init__(self, fills: FillStore, producer: AIOKafkaProducer, codec: AvroCodec, topic: str, *,
                 owner_client_id: int | None = None, commission_wait: float = 2.0, batch: int = 500,
                 idle: float = 0.25, pass_interval: float = 0.0,
                 turn: Callable[[], Awaitable[None]] | None = None) -> None:
        super().__init__(idle, pass_interval=pass_interval, turn=turn)
        self.fills = fills
        self.producer = producer
        self.codec = codec
        self.topic = topic
        self.commission_wait = timedelta(seconds=commission_wait)
        self.batch = batch
        self.owner_client_id = owner_client_id
        self.on_published_fill: Callable[[FillRow], None] = lambda row: None
        # Where recovery reads the topic from (given to recover); and whether a pass failed after it may
        # have published, so that the topic must be read back before anything is published again.
        self._consumer_kwargs: dict[str, Any] | None = None
        self._unsure = False

    async def publish_pending(self) -> bool:
        if self._unsure:
            if self._consumer_kwargs is None:
                raise RuntimeError("a fill relay pass failed and there is no topic to read back: call recover() first")
            await self.recover(self._consumer_kwargs)
            self._unsure = False
        rows = await self.fills.unpublished(self.batch, owner_client_id=self.owner_client_id)
        now = datetime.now(UTC)
        ready = [r for r in rows if r.commission is not None or now - r.recorded_at >= self.commission_wait]
        if not ready:
            if rows:  # some wait for their commission: look again when one arrives, or soon
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(0.1, self.commission_wait.total_seconds()))
                return True
            return False
        try:
            sends = [await self._send(row) for row in ready]
            await asyncio.gather(*sends)
            await self.fills.mark_many_published([row.fill_id for row in ready])
        except BaseException:
            self._unsure = True  # some may be on the topic, unmarked: read it back before the next pass
            raise
        self.published += len(ready)
        for row in ready:
            self.on_published_fill(row)
            log.info("fill published", fill_id=row.fill_id, order_id=row.order_id,
                     quantity=str(row.quantity), price=str(row.price))
        return len(rows) == self.batch

    async def _send(self, row: FillRow) -> Any:
        payload = self.codec.encode(FILL_EXECUTED, fill_record(row))
        return await self.producer.send(self.topic, value=payload, key=row.order_id.encode())

    async def recover(self, consumer_kwargs: dict[str, Any], margin: timedelta = timedelta(minutes=5)) -> int:
        """Mark as published every unpublished fill already on the topic; return how many.

        ``consumer_kwargs`` (bootstrap servers, security) are kept for the read-back after a failed pass.
        """
        self._consumer_kwargs = consumer_kwargs
        pending = await self.fills.unpublished(100_000, owner_client_id=self.owner_client_id)
        if not pending:
            return 0
        since = min(row.recorded_at for row in pending) - margin
        on_topic = await fill_ids_on_topic(self.topic, since, self.codec, consumer_kwargs)
        found = [row.fill_id for row in pending if row.fill_id in on_topic]
        if found:
            await self.fills.mark_many_published(found)
            log.warning("fills found on the topic but not marked published; marked now", count=len(found))
        return len(found)


async def topic_partitions(topic: str, client_kwargs: dict[str, Any]) -> list[int]:
    """The partition ids of ``topic``, asked of the brokers ([] when the topic does not exist).

    Not from a new consumer's metadata, which may hold no topic it was not subscribed to: read back from
    no partition, a recovery would find nothing on the topic and publish every pending fill again.
    Raises ``KafkaError`` when the brokers cannot say.
    """
    admin = AIOKafkaAdminClient(**client_kwargs)
    await admin.start()
    try:
        # Described only once listed: describing names the topic in a metadata request that lets a broker
        # with auto.create.topics.enable create it.
        if topic not in await admin.list_topics():
            return []
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    code = int(described["error_code"])
    if code == UnknownTopicOrPartitionError.errno:
        return []
    if code:
        raise for_code(code)(f"cannot describe topic {topic}")
    return sorted(int(p["partition"]) for p in described["partitions"])


async def fill_ids_on_topic(topic: str, since: datetime, codec: AvroCodec,
                            consumer_kwargs: dict[str, Any]) -> set[str]:
    """The ``fill_id`` of every record on ``topic`` written at or after ``since`` (read to the end)."""
    found: set[str] = set()
    partitions = await topic_partitions(topic, consumer_kwargs)
    if not partitions:
        return found  # no such topic: nothing was ever published to it
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **consumer_kwargs)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        remaining = {}
        for tp in tps:
            start = starts.get(tp)
            offset = start.offset if start is not None else ends[tp]
            consumer.seek(tp, offset)
            if offset < ends[tp]:
                remaining[tp] = ends[tp]
        while remaining:
            batch = await consumer.getmany(*remaining.keys(), timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    with contextlib.suppress(DecodeError):
                        if record.value is not None:
                            found.add(codec.decode(record.value, FILL_EXECUTED)["fill_id"])
                    # An unreadable batch (see .unreadable) ends at its last offset, not its first.
                    if next_offset(record) >= remaining.get(tp, 0):
                        remaining.pop(tp, None)
    finally:
        await consumer.stop()
    return found
