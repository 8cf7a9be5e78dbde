"""The dead-letter topic: records set aside, verbatim, with why and where from in their headers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord

from workers.adapters.kafka.failures import bounded, printable
from workers.logs import get_logger

log = get_logger(__name__)

# error.reason is for a person to read: a few hundred characters name the field and the problem; a reason
# that repeats a huge value must not make the dead letter too large to write.
REASON_LIMIT = 1000


class DeadLetters:
    """Writes records, verbatim, to the dead-letter topic with the contract's headers.

    :meth:`send` hands a record to the producer and returns; :meth:`flush` waits until every record sent
    is on the topic (the consume loop flushes before it commits the offsets of a batch). One round trip a
    batch, however many of its records are dead letters.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str,
                 on_sent: Callable[[str], None] = lambda stage: None) -> None:
        self.producer = producer
        self.topic = topic
        self.count = 0
        self.by_stage: dict[str, int] = {}
        self.on_sent = on_sent
        self._pending: list[tuple[ConsumerRecord, list[tuple[str, bytes]], str, asyncio.Future[Any] | None]] = []

    async def send(self, record: ConsumerRecord, reason: str, stage: str) -> None:
        """Hand ``record`` to the producer (see :meth:`flush`)."""
        reason = bounded(printable(reason), REASON_LIMIT)
        headers = [
            ("error.reason", reason.encode()),
            ("error.stage", stage.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        # A record that stands for a batch that could not be read has neither key nor value; the client
        # needs one of them, so its dead letter carries an empty value (the headers say what it stands for).
        value = b"" if record.value is None and record.key is None else record.value
        try:
            future: asyncio.Future[Any] | None = await self.producer.send(self.topic, value=value,
                                                                          key=record.key, headers=headers)
        except MessageSizeTooLargeError:
            future = None  # refused by the client before sending: flush writes its placeholder
        self._pending.append((record, headers, stage, future))

    async def flush(self) -> None:
        """Wait until every record sent is on the topic; raises (the records stay pending) if one is not."""
        while self._pending:
            record, headers, stage, future = self._pending[0]
            try:
                if future is None:
                    raise MessageSizeTooLargeError()
                await future
            except MessageSizeTooLargeError:
                await self._placeholder(record, headers)
            except BaseException:
                # Not written: sent again (a duplicate at worst) the next time the batch comes.
                self._pending.clear()
                raise
            self._pending.pop(0)
            self.count += 1
            self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
            self.on_sent(stage)
            log.warning("record dead-lettered", source_topic=record.topic, partition=record.partition,
                        offset=record.offset, reason=headers[0][1].decode(), stage=stage)

    async def _placeholder(self, record: ConsumerRecord, headers: list[tuple[str, bytes]]) -> None:
        # The record fitted its own topic but not the dead-letter topic with the headers: its place is kept
        # (no value, the same headers) so the records behind it go on and an operator finds it at its source.
        reason = headers[0][1].decode()
        headers = [("error.reason", f"record of {len(record.value or b'')} bytes too large for the "
                                    f"dead-letter topic; {reason}"[:REASON_LIMIT].encode()), *headers[1:]]
        await self.producer.send_and_wait(self.topic, value=None, key=record.key[:1024] if record.key else record.key,
                                          headers=headers)
