"""The dead-letter topic: records set aside, verbatim, with why and where from in their headers."""

from __future__ import annotations

from collections.abc import Callable

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
    """Writes records, verbatim, to the dead-letter topic with the contract's headers."""

    def __init__(self, producer: AIOKafkaProducer, topic: str,
                 on_sent: Callable[[str], None] = lambda stage: None) -> None:
        self.producer = producer
        self.topic = topic
        self.count = 0
        self.by_stage: dict[str, int] = {}
        self.on_sent = on_sent

    async def send(self, record: ConsumerRecord, reason: str, stage: str) -> None:
        reason = bounded(printable(reason), REASON_LIMIT)
        headers = [
            ("error.reason", reason.encode()),
            ("error.stage", stage.encode()),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode()),
        ]
        try:
            await self.producer.send_and_wait(self.topic, value=record.value, key=record.key, headers=headers)
        except MessageSizeTooLargeError:
            # The record fitted its own topic but not the dead-letter topic with the headers: its place is
            # kept (empty value, the same headers) so the records behind it go on and an operator can find
            # it at its source offset.
            headers[0] = ("error.reason", f"record of {len(record.value or b'')} bytes too large for the "
                                          f"dead-letter topic; {reason}"[:REASON_LIMIT].encode())
            await self.producer.send_and_wait(self.topic, value=None, key=record.key[:1024] if record.key
                                              else record.key, headers=headers)
        self.count += 1
        self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
        self.on_sent(stage)
        log.warning("record dead-lettered", source_topic=record.topic, partition=record.partition,
                    offset=record.offset, reason=reason, stage=stage)
