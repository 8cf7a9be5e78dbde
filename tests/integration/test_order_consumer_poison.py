"""One bad record never stops the orders behind it: real Kafka, real PostgreSQL, the sim gateway."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.gzip_batches import send_as_one_gzip_batch
from tests.integration.harness import Harness, order, running_harness
from workers.adapters.kafka.compression import bound_gzip
from workers.adapters.kafka.records import order_requested_record
from workers.domain.health import HealthStatus
from workers.domain.orders import OrderRequested
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

POISON_ACCOUNT = "DU-POISON"


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


async def refuse_account_in_ledger(database_url: str, account: str, table: str = "orders") -> None:
    """Make PostgreSQL refuse any ``table`` row of ``account`` with a data exception (a value it cannot store)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"""
            CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.account = '{account}' THEN
                    RAISE EXCEPTION 'value refused for account %', NEW.account USING ERRCODE = '22023';
                END IF;
                RETURN NEW;
            END $$""")
        await conn.execute(f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION refuse_poison()")


async def test_an_order_the_ledger_refuses_is_dead_lettered_and_rejected_and_the_orders_around_it_fill_once(
        harness: Harness) -> None:
    await refuse_account_in_ledger(harness.database_url, POISON_ACCOUNT)
    assert harness.app is not None
    await harness.wait_for(lambda: harness.app is not None and harness.app.service.reconciled,
                           what="the worker running")
    before = [order(quantity="1") for _ in range(15)]
    poison = order(account=POISON_ACCOUNT)
    after = [order(quantity="2") for _ in range(15)]
    # Sent together so the poison shares fetched batches with good orders (placed before it fails).
    await asyncio.gather(*(harness.send(request) for request in [*before, poison, *after]))

    for request in [*before, *after]:
        await harness.wait_status(request.order_id, "FILLED")
    rejected = await harness.wait_status(poison.order_id, "REJECTED")
    assert rejected["reason"].startswith("UNPROCESSABLE: the request could not be processed (")
    assert "value refused for account" in rejected["reason"]
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    [letter] = harness.observed.dead_letters
    headers = dict(letter.headers)
    assert letter.key == poison.order_id.encode()
    assert headers["error.stage"] == b"handle"
    assert headers["error.reason"].startswith(b"InvalidParameterValue: value refused for account")
    for request in [*before, *after]:
        assert harness.sim.place_count(request.order_id) == 1
    assert harness.sim.place_count(poison.order_id) == 0
    metrics = harness.app.metrics.registry
    assert metrics.get_sample_value("ibkr_workers_dead_letters_total", {"stage": "handle"}) == 1
    assert (metrics.get_sample_value("ibkr_workers_consume_retries_total", {"kind": "record"}) or 0) >= 1


async def test_orders_placed_in_a_batch_that_then_failed_on_a_cancel_are_not_placed_again(harness: Harness) -> None:
    await refuse_account_in_ledger(harness.database_url, POISON_ACCOUNT, table="cancel_requests")
    assert harness.app is not None
    await harness.wait_for(lambda: harness.app is not None and harness.app.service.reconciled,
                           what="the worker running")
    requests = [order(quantity="1") for _ in range(20)]
    # Orders and a cancel the ledger refuses, fetched together: the orders' handler places them, then the
    # cancels' handler fails and the whole batch is handled again, a record at a time.
    await asyncio.gather(*(harness.send(request) for request in requests[:10]),
                         harness.cancel(requests[3].order_id, account=POISON_ACCOUNT),
                         *(harness.send(request) for request in requests[10:]))

    for request in requests:
        await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    [letter] = harness.observed.dead_letters
    headers = dict(letter.headers)
    assert headers["source.topic"] == harness.topics.orders_cancel_requested.encode()
    assert headers["error.stage"] == b"handle"
    for request in requests:
        assert harness.sim.place_count(request.order_id) == 1


@pytest.mark.parametrize(("field", "value"), [
    ("instrument_id", "STK:AAPL\x00:USD"),  # the record that stalled a partition (PostgreSQL refuses NUL)
    ("account", "DU\x1b[2J"),
    ("source", "s" * 129),
])
async def test_an_order_with_bad_text_is_rejected_naming_the_field_and_the_orders_around_it_fill(
        harness: Harness, field: str, value: str) -> None:
    good = [order(quantity="1") for _ in range(4)]
    bad = dataclasses.replace(order(), **{field: value})
    await asyncio.gather(*(harness.send(request) for request in [good[0], good[1], bad, good[2], good[3]]))

    for request in good:
        await harness.wait_status(request.order_id, "FILLED")
    rejected = await harness.wait_status(bad.order_id, "REJECTED")
    assert rejected["reason"].startswith(f"INVALID_TEXT: {field} ")
    assert "\x00" not in rejected["instrument_id"] and "\x1b" not in rejected["account"]
    assert harness.sim.place_count(bad.order_id) == 0
    assert harness.observed.dead_letters == []


async def test_records_whose_text_cannot_be_taken_go_to_the_dead_letter_topic_at_stage_validate(
        harness: Harness) -> None:
    good = order()
    long_id = order(order_id="o" * 65)
    nul_id = order(order_id="0b8f8c5e-3a1c-4c59-9f4e-8d2f7e1b6a0\x00")
    body = harness.codec.encode("OrderRequested", order_requested_record(order()))
    # A string field whose bytes are not UTF-8: the source (last field) "tests" becomes five bytes of 0xff.
    not_utf8 = body[:-5] + b"\xff" * 5
    await harness.send_raw(b"long", harness.codec.encode("OrderRequested", order_requested_record(long_id)))
    await harness.send_raw(b"nul", harness.codec.encode("OrderRequested", order_requested_record(nul_id)))
    await harness.send_raw(b"utf8", not_utf8)
    await harness.cancel(good.order_id, reason="stop\x00now")
    await harness.send(good)

    await harness.wait_status(good.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 4, what="four dead letters")
    stages = {record.key[:8]: dict(record.headers)["error.stage"] for record in harness.observed.dead_letters}
    assert stages == {b"long": b"validate", b"nul": b"validate", b"utf8": b"decode",
                      good.order_id.encode()[:8]: b"validate"}
    reasons = {dict(record.headers)["error.reason"] for record in harness.observed.dead_letters}
    assert b"order_id is 65 characters long, more than 64" in reasons
    assert b"reason contains the control character U+0000 at position 4" in reasons
    assert harness.sim.place_count(good.order_id) == 1  # its cancel was refused: the order filled


async def test_an_oversized_record_is_dead_lettered_before_it_is_decoded_and_the_orders_behind_it_fill(
        harness: Harness) -> None:
    good = order()
    huge_id = order(order_id="o" * 600_000)
    payload = harness.codec.encode("OrderRequested", order_requested_record(huge_id))
    await harness.send_raw(b"huge", payload)
    await harness.send(good)

    await harness.wait_status(good.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    [letter] = harness.observed.dead_letters
    headers = dict(letter.headers)
    assert headers["error.stage"] == b"size"
    assert headers["error.reason"] == f"record of {len(payload) + 4} bytes, more than 16384".encode()
    assert letter.value == payload


async def test_orders_sent_with_every_compression_type_fill(harness: Harness) -> None:
    requests = {codec: order(quantity="1") for codec in ("gzip", "snappy", "lz4", "zstd")}
    for codec, request in requests.items():
        producer = AIOKafkaProducer(bootstrap_servers=harness.bootstrap, compression_type=codec)
        await producer.start()
        try:
            payload = harness.codec.encode("OrderRequested", order_requested_record(request))
            await producer.send_and_wait(harness.topics.orders_requested, payload, key=request.order_id.encode())
        finally:
            await producer.stop()

    for request in requests.values():
        await harness.wait_status(request.order_id, "FILLED")
        assert harness.sim.place_count(request.order_id) == 1
    assert harness.observed.dead_letters == []


async def test_an_instrument_change_with_a_bad_id_is_dead_lettered_and_orders_go_on(harness: Harness) -> None:
    change = {"instrument_id": "STK:AAPL\x00", "con_id": 265598, "symbol": "AAPL", "sec_type": "STK",
              "exchange": "SMART", "primary_exchange": "NASDAQ", "currency": "USD", "local_symbol": "AAPL",
              "trading_class": "NMS", "multiplier": Decimal(1), "min_tick": Decimal("0.01"),
              "last_trade_date": None, "active": True, "change": "UPDATED", "updated_at": datetime.now(UTC)}
    await harness.send_raw(b"bad-id", harness.codec.encode("InstrumentUpdated", change),
                           topic=harness.topics.instruments_updated)
    good = order()
    await harness.send(good)

    await harness.wait_status(good.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    headers = dict(harness.observed.dead_letters[0].headers)
    assert headers["source.topic"] == harness.topics.instruments_updated.encode()
    assert headers["error.stage"] == b"validate"
    assert headers["error.reason"] == b"instrument_id contains the control character U+0000 at position 8"


async def test_a_gzip_batch_beyond_the_decompression_bound_is_dead_lettered_naming_its_offsets_and_the_orders_behind_it_fill(  # noqa: E501
        harness: Harness) -> None:
    assert harness.app is not None
    app = harness.app
    await harness.wait_for(lambda: app.service.reconciled, what="the worker running")
    bound_gzip(limit=1024 * 1024)  # after the worker set its own (64 MiB): a bomb of 1.2 MB does here
    try:
        before, after = [order(quantity="1") for _ in range(3)], [order(quantity="2") for _ in range(3)]
        topic = harness.topics.orders_requested

        async def send_to_partition_0(request: OrderRequested) -> None:
            payload = harness.codec.encode("OrderRequested", order_requested_record(request))
            await harness.producer.send_and_wait(topic, payload, key=request.order_id.encode(), partition=0)

        for request in before:
            await send_to_partition_0(request)
        bomb = await send_as_one_gzip_batch(harness.bootstrap, topic, [bytes(400_000)] * 3, partition=0)
        for request in after:
            await send_to_partition_0(request)

        for request in [*before, *after]:
            await harness.wait_status(request.order_id, "FILLED", timeout=40)
            assert harness.sim.place_count(request.order_id) == 1
        await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
        [letter] = harness.observed.dead_letters
        headers = dict(letter.headers)
        assert headers["error.stage"] == b"decompress"
        assert (headers["source.topic"], headers["source.partition"]) == (topic.encode(), b"0")
        assert headers["source.offset"] == str(bomb[0]).encode()
        reason = headers["error.reason"].decode()
        assert f"partition 0 at offsets {bomb[0]} to {bomb[-1]} cannot be read" in reason
        assert "expands beyond 1048576 bytes" in reason
        await harness.wait_for(lambda: app.monitor.status is HealthStatus.HEALTHY, what="HEALTHY again")
        assert any(h["status"] == "DEGRADED" and "cannot be read" in (h["last_error"] or "")
                   for h in harness.observed.health)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.probes.port}", timeout=5) as client:
            body = (await client.get("/healthz")).json()
        assert body["dead_letters"] == {"decompress": 1}
        assert body["consume_retries"] == {"record": 5}  # the loop's bounded attempts, then the dead letter
        assert body["status"] == "HEALTHY"
    finally:
        bound_gzip()
