"""The pre-trade risk rules over the real stack (Kafka, PostgreSQL, the sim gateway): what a desk's risk
officer expects never reaches IBKR."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import generate_latest

from tests.integration.harness import AAPL, ES, order, running_harness
from workers.domain.orders import OrderType, Side
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


async def test_an_hour_old_order_is_rejected_stale_and_never_placed(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, max_order_age=60) as h:
        old = replace(order(), created_at=datetime.now(UTC) - timedelta(hours=1))
        fresh = order()

        await h.send(old)
        await h.send(fresh)

        rejected = await h.wait_status(old.order_id, "REJECTED")
        assert rejected["reason"].startswith("STALE_ORDER")
        await h.wait_status(fresh.order_id, "FILLED")
        assert h.sim.place_count(old.order_id) == 0
        assert h.app is not None
        assert 'orders_rejected_total{reason="STALE_ORDER"} 1.0' in generate_latest(h.app.metrics.registry).decode()


async def test_half_a_share_of_a_stock_is_rejected_and_never_placed(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as h:
        half = order(quantity="0.5")

        await h.send(half)

        rejected = await h.wait_status(half.order_id, "REJECTED")
        assert rejected["reason"].startswith("INVALID_QUANTITY_INCREMENT")
        assert "QUANTITY" in rejected["reason"]
        assert h.sim.place_count(half.order_id) == 0


async def test_a_burst_over_the_accounts_rate_is_rejected_not_delayed(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, max_orders_per_second=1,
                               max_order_burst=3) as h:
        burst = [order(quantity="1") for _ in range(8)]
        for request in burst:
            await h.send(request)

        for request in burst:
            await h.wait_for(lambda r=request: h.observed.last_status(r.order_id) in {"FILLED", "REJECTED"},  # type: ignore[misc]
                             what=f"{request.order_id} final")
        rejected = [r for r in burst if h.observed.last_status(r.order_id) == "REJECTED"]
        # The bucket holds 3 and refills at 1/s: most of a burst sent within a second is refused.
        assert 3 <= len(burst) - len(rejected) <= 5
        for request in rejected:
            assert h.observed.statuses[request.order_id][-1]["reason"].startswith("ORDER_RATE_EXCEEDED")
            assert h.sim.place_count(request.order_id) == 0


async def test_a_position_limit_is_reached_through_fills_and_then_only_reducing_orders_pass(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, max_position=10) as h:
        first = order(ES.instrument_id, quantity="6")
        await h.send(first)
        await h.wait_status(first.order_id, "FILLED")
        await h.wait_for(lambda: any(p["quantity"] == 6 for p in h.observed.positions), what="the position of 6")
        await asyncio.sleep(0.5)  # the worker noted IBKR's position report too

        over = order(ES.instrument_id, quantity="5")  # 6 + 5 > 10
        await h.send(over)
        rejected = await h.wait_status(over.order_id, "REJECTED")
        assert rejected["reason"].startswith("MAX_POSITION_EXCEEDED")

        reducing = order(ES.instrument_id, side=Side.SELL, quantity="4")
        await h.send(reducing)
        await h.wait_status(reducing.order_id, "FILLED")
        assert h.sim.place_count(over.order_id) == 0


async def test_a_known_order_id_with_other_content_is_dead_lettered_and_the_original_untouched(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as h:
        original = order(quantity="1")
        await h.send(original)
        await h.wait_status(original.order_id, "FILLED")
        trail = h.status_trail(original.order_id)

        await h.send(replace(original, quantity=Decimal(7)))  # the same order_id, another order
        await h.wait_for(lambda: len(h.observed.dead_letters) == 1, what="the conflict's dead letter")
        await h.send(replace(original, source="a producer's retry"))  # the same order again
        await h.wait_for(lambda: len(h.status_trail(original.order_id)) > len(trail), what="the redelivery's status")

        [letter] = h.observed.dead_letters
        headers = dict(letter.headers)
        assert headers["error.reason"].startswith(b"ORDER_ID_CONFLICT: ")
        assert b"quantity" in headers["error.reason"]
        assert letter.key == original.order_id.encode()
        assert h.sim.place_count(original.order_id) == 1
        assert h.status_trail(original.order_id) == [*trail, "FILLED"]  # the redelivery re-published it


async def test_fat_finger_limits_on_each_side_are_rejected_against_the_sims_market_price(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, price_band="0.10") as h:
        price = Decimal(str(h.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
        buy_high = order(order_type=OrderType.LIMIT, limit=str(price * 3))
        sell_low = order(side=Side.SELL, order_type=OrderType.LIMIT, limit=str((price / 3).quantize(Decimal("0.01"))))
        near = order(order_type=OrderType.LIMIT, limit=str(price + 1))

        for request in (buy_high, sell_low, near):
            await h.send(request)

        for request in (buy_high, sell_low):
            rejected = await h.wait_status(request.order_id, "REJECTED")
            assert rejected["reason"].startswith("PRICE_OUT_OF_BAND")
            assert h.sim.place_count(request.order_id) == 0
        await h.wait_status(near.order_id, "FILLED")


async def test_a_market_order_over_the_notional_limit_at_the_sims_price_is_rejected(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, max_order_notional=50_000) as h:
        price = Decimal(str(h.sim.price(AAPL.con_id)))
        too_big = order(quantity=str(int(100_000 / price)))  # about 100,000 at the market
        small = order(quantity="10")

        await h.send(too_big)
        await h.send(small)

        rejected = await h.wait_status(too_big.order_id, "REJECTED")
        assert rejected["reason"].startswith("MAX_NOTIONAL_EXCEEDED")
        assert "at the market price" in rejected["reason"]
        await h.wait_status(small.order_id, "FILLED")
        assert h.sim.place_count(too_big.order_id) == 0


async def test_without_market_data_a_rule_that_needs_a_price_rejects_the_order(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, max_order_notional=50_000) as h:
        h.sim.config.market_data_subscribed = False  # live data asked for, no subscription: error 354
        request = order(quantity="1")

        await h.send(request)

        rejected = await h.wait_status(request.order_id, "REJECTED")
        assert rejected["reason"].startswith("NO_REFERENCE_PRICE")
        assert "IBKR_MARKET_DATA_TYPE" in rejected["reason"]
        assert h.sim.place_count(request.order_id) == 0


async def test_an_order_past_its_expires_at_is_rejected_stale_and_never_placed(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as h:
        expired = replace(order(), expires_at=datetime.now(UTC) - timedelta(seconds=1))
        wanted = replace(order(), created_at=datetime.now(UTC) - timedelta(hours=2),
                         expires_at=datetime.now(UTC) + timedelta(hours=1))

        await h.send(expired)
        await h.send(wanted)

        rejected = await h.wait_status(expired.order_id, "REJECTED")
        assert rejected["reason"].startswith("STALE_ORDER") and "expires_at" in rejected["reason"]
        await h.wait_status(wanted.order_id, "FILLED")  # its own expiry replaces the maximum age
        assert h.sim.place_count(expired.order_id) == 0
