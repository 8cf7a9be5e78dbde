"""Encodes the order-consumer's outgoing events (Avro single-object) as outbox messages."""

from __future__ import annotations

from datetime import UTC, datetime

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import (
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    modification_status_record,
    position_record,
    rejection_record,
    status_record,
)
from workers.domain.orders import Order, OrderRequested, OrderState
from workers.domain.positions import average_price
from workers.ports.ibkr import IbPosition
from workers.ports.outbox import OutboxMessage
from workers.settings import TopicNames

# The largest record the sink writes to the outbox: well under the producer's request limit and the output
# topics' max.message.bytes (1 MiB). Every text in these records is bounded; this is the last check.
MAX_EVENT_BYTES = 256 * 1024


class EventTooLarge(ValueError):
    """An encoded event larger than :data:`MAX_EVENT_BYTES` (it could never be published)."""


def _sized(payload: bytes, what: str, key: str) -> bytes:
    if len(payload) > MAX_EVENT_BYTES:
        raise EventTooLarge(f"{what} for {key[:64]!r} is {len(payload)} bytes, more than {MAX_EVENT_BYTES}")
    return payload


class AvroEventSink:
    """The ``EventSink`` of the order service: records for ``orders.status`` and ``positions.updated``."""

    def __init__(self, codec: AvroCodec, topics: TopicNames, writer: str | None = None) -> None:
        self.codec = codec
        self.topics = topics
        self.writer = writer

    def status(self, row: Order, previous: OrderState | None) -> OutboxMessage:
        payload = _sized(self.codec.encode(ORDER_STATUS_CHANGED, status_record(row, datetime.now(UTC), previous)),
                         "status", row.order_id)
        return OutboxMessage(topic=self.topics.orders_status, key=row.order_id, payload=payload, writer=self.writer)

    def modification(self, row: Order, modify_id: str, reason: str) -> OutboxMessage:
        record = modification_status_record(row, modify_id, reason, datetime.now(UTC))
        payload = _sized(self.codec.encode(ORDER_STATUS_CHANGED, record), "modification status", row.order_id)
        return OutboxMessage(topic=self.topics.orders_status, key=row.order_id, payload=payload, writer=self.writer)

    def rejection(self, order: OrderRequested, reason: str) -> OutboxMessage:
        payload = _sized(self.codec.encode(ORDER_STATUS_CHANGED, rejection_record(order, reason, datetime.now(UTC))),
                         "rejection", order.order_id)
        return OutboxMessage(topic=self.topics.orders_status, key=order.order_id, payload=payload,
                             writer=self.writer)

    def position(self, report: IbPosition, instrument_id: str | None) -> OutboxMessage:
        record = position_record(report.account, report.con_id, instrument_id, report.quantity,
                                 report.avg_cost, report.currency, datetime.now(UTC),
                                 average_price(report.avg_cost, report.multiplier))
        payload = _sized(self.codec.encode(POSITION_UPDATED, record), "position", report.account)
        return OutboxMessage(topic=self.topics.positions_updated, key=f"{report.account}:{report.con_id}",
                             payload=payload, writer=self.writer)
