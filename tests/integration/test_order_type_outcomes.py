"""Each order type of OrderRequested version 4 triggered or filled by the sim's prices, and GTD expiry, end to
end: the order-consumer over Kafka and PostgreSQL, the sim gateway over the TWS socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.integration.harness import AAPL, Harness, order, running_harness
from workers.domain.orders import OrderRequested, OrderType, Side, TimeInForce
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


def at(harness: Harness, price: Decimal) -> None:
    harness.sim.set_price(AAPL.con_id, float(price))


async def working(harness: Harness, request: OrderRequested) -> None:
    await harness.send(request)
    await harness.wait_status(request.order_id, "SUBMITTED")


async def test_a_trailing_stop_follows_the_market_up_and_sells_when_it_falls_back_by_its_amount(
        harness: Harness) -> None:
    at(harness, Decimal(200))
    trailing = replace(order(side=Side.SELL, order_type=OrderType.TRAILING_STOP, quantity="3", tif=TimeInForce.GTC),
                       trailing_amount=Decimal(2))
    await working(harness, trailing)

    at(harness, Decimal(205))  # the stop follows to 203
    at(harness, Decimal("203.5"))  # above it: still working
    assert harness.observed.last_status(trailing.order_id) == "SUBMITTED"
    at(harness, Decimal("202.9"))  # through it

    filled = await harness.wait_status(trailing.order_id, "FILLED")
    assert filled["filled_quantity"] == Decimal(3)
    await harness.wait_for(lambda: bool(harness.observed.fills[trailing.order_id]), what="the fill")
    assert all(f["price"] < Decimal("203.5") for f in harness.observed.fills[trailing.order_id])


async def test_a_market_if_touched_buy_waits_for_its_touch_price_then_fills(harness: Harness) -> None:
    at(harness, Decimal(200))
    touched = order(order_type=OrderType.MARKET_IF_TOUCHED, stop="195", quantity="2")
    await working(harness, touched)

    at(harness, Decimal(197))
    assert harness.observed.last_status(touched.order_id) == "SUBMITTED"
    at(harness, Decimal("194.5"))

    await harness.wait_status(touched.order_id, "FILLED")


async def test_a_limit_if_touched_sell_is_triggered_by_its_touch_price_and_fills_at_its_limit(
        harness: Harness) -> None:
    at(harness, Decimal(200))
    touched = order(side=Side.SELL, order_type=OrderType.LIMIT_IF_TOUCHED, stop="204", limit="203.5", quantity="2")
    await working(harness, touched)

    at(harness, Decimal("204.25"))

    await harness.wait_status(touched.order_id, "FILLED")
    await harness.wait_for(lambda: bool(harness.observed.fills[touched.order_id]), what="the fill")
    assert all(f["price"] >= Decimal("203.5") for f in harness.observed.fills[touched.order_id])


async def test_on_close_orders_rest_until_the_session_closes_then_fill_at_the_close(harness: Harness) -> None:
    at(harness, Decimal(200))
    moc = order(order_type=OrderType.MARKET_ON_CLOSE, quantity="4")
    loc = order(side=Side.SELL, order_type=OrderType.LIMIT_ON_CLOSE, limit="199", quantity="4")
    for request in (moc, loc):
        await working(harness, request)

    harness.sim.close_session()

    for request in (moc, loc):
        await harness.wait_status(request.order_id, "FILLED")


async def test_a_gtd_order_is_cancelled_at_its_time_and_the_cancel_is_published(harness: Harness) -> None:
    at(harness, Decimal(200))
    good_till = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    gtd = replace(order(order_type=OrderType.LIMIT, limit="180", tif=TimeInForce.GTD), good_till=good_till)
    await working(harness, gtd)

    cancelled = await harness.wait_status(gtd.order_id, "CANCELLED", timeout=15)

    assert cancelled["filled_quantity"] == Decimal(0)
    assert datetime.now(UTC) >= good_till
    assert harness.sim.open_orders() == []
