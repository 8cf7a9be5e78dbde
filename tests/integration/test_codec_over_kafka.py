"""A record written by the codec crosses the real broker and is decoded by a second consumer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tests.conftest import noted_topic
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import FILL_EXECUTED, ORDER_REQUESTED

pytestmark = pytest.mark.integration


async def test_codec_records_survive_the_broker_byte_for_byte_and_decode(kafka_admin: AIOKafkaAdminClient,
                                                                         kafka_bootstrap: str) -> None:
    codec = AvroCodec()
    topic = noted_topic(f"codec.{uuid.uuid4().hex[:10]}")
    now = datetime(2026, 11, 28, 9, 30, 15, 123456, tzinfo=UTC)
    order = {"order_id": str(uuid.uuid4()), "account": "DU0000001", "instrument_id": "STK:AAPL:USD",
             "side": "BUY", "quantity": Decimal("12.5"), "order_type": "TRAILING_STOP_LIMIT", "limit_price": None,
             "stop_price": Decimal("180.5"), "time_in_force": "GTD", "outside_rth": True, "created_at": now,
             "source": "t", "expires_at": now + timedelta(hours=8), "trailing_amount": Decimal("1.25"),
             "trailing_percent": None, "limit_offset": Decimal("0.05"), "good_till": now + timedelta(days=3),
             "algo": "ADAPTIVE", "algo_priority": "URGENT", "take_profit_price": Decimal("190"),
             "stop_loss_price": Decimal("175.00000001"), "oca_group": "pair-1"}
    fill = {"fill_id": "0000e0d5.1.01.01", "order_id": order["order_id"], "account": "DU0000001",
            "instrument_id": "STK:AAPL:USD", "con_id": 265598, "side": "BUY", "quantity": Decimal("12.5"),
            "price": Decimal("187.24999999"), "currency": "USD", "exchange": "ISLAND", "executed_at": now,
            "commission": Decimal("1.00000001"), "commission_currency": "USD", "ib_order_id": 7,
            "ib_perm_id": 1_000_000_001, "cumulative_quantity": Decimal("12.5"), "avg_price": Decimal("187.25"),
            "corrects_fill_id": None}
    payloads = [codec.encode(ORDER_REQUESTED, order), codec.encode(FILL_EXECUTED, fill)]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for payload in payloads:
            await producer.send_and_wait(topic, payload, key=order["order_id"].encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"second-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        received = [await consumer.getone(), await consumer.getone()]
    finally:
        await consumer.stop()
        await kafka_admin.delete_topics([topic])
    assert [r.value for r in received] == payloads
    assert codec.decode(received[0].value, ORDER_REQUESTED) == order
    decoded_fill = codec.decode(received[1].value, FILL_EXECUTED)
    assert decoded_fill == fill
    assert decoded_fill["executed_at"].tzinfo is not None
    assert decoded_fill["price"] == Decimal("187.24999999")
