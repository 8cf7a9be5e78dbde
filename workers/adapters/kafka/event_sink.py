"""Encodes the order-consumer's outgoing events (Avro single-object) as outbox messages."""

from __future__ import annotations

from datetime import UTC, datetime

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import (
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    position_record,
    rejection_record,
    status_record,
)
from workers.domain.orders import Order, OrderRequested, OrderState
from workers.domain.positions import average_price
from workers.ports.ibkr import IbPosition
from workers.ports.outbox import OutboxMessage
from workers.settings import TopicNames


class AvroEventSink:
    """The ``EventSink`` of the order service: records for ``orders.status`` and ``positions.updated``."""

    def __init__(self, codec: AvroCodec, topics: TopicNames, writer: str | None = None) -> None:
        self.codec = codec
        self.topics = topics
        self.writer = writer

    def status(self, row: Order, previous: OrderState | None) -> OutboxMessage:
        payload = self.codec.encode(ORDER_STATUS_CHANGED, status_record(row, datetime.now(UTC), previous))
        return OutboxMessage(topic=self.topics.orders_status, key=row.order_id, payload=payload, writer=self.writer)

    def rejection(self, order: OrderRequested, reason: str) -> OutboxMessage:
        payload = self.codec.encode(ORDER_STATUS_CHANGED, rejection_record(order, reason, datetime.now(UTC)))
        return OutboxMessage(topic=self.topics.orders_status, key=order.order_id, payload=payload,
                             writer=self.writer)

    def position(self, report: IbPosition, instrument_id: str | None) -> OutboxMessage:
        record = position_record(report.account, report.con_id, instrument_id, report.quantity,
                                 report.avg_cost, report.currency, datetime.now(UTC),
                                 average_price(report.avg_cost, report.multiplier))
        payload = self.codec.encode(POSITION_UPDATED, record)
        return OutboxMessage(topic=self.topics.positions_updated, key=f"{report.account}:{report.con_id}",
                             payload=payload, writer=self.writer)
