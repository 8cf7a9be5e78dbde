"""Brackets and OCA groups end to end: Kafka, PostgreSQL and the sim gateway over the TWS socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from tests.integration.harness import AAPL, Harness, order, running_harness
from workers.domain.brackets import STOP_LOSS, TAKE_PROFIT, bracket_oca_group, child_order_id
from workers.domain.orders import OrderRequested, OrderType, Side, TimeInForce
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


def market(harness: Harness) -> Decimal:
    return Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))


def bracket(parent: OrderRequested, take_profit: Decimal | None, stop_loss: Decimal | None) -> OrderRequested:
    return replace(parent, take_profit_price=take_profit, stop_loss_price=stop_loss)


def children(parent: OrderRequested) -> tuple[str, str]:
    return child_order_id(parent.order_id, TAKE_PROFIT), child_order_id(parent.order_id, STOP_LOSS)


def sent(harness: Harness, order_id: str) -> list[object]:
    return [request for _, request in harness.sim.orders_seen if request.order_ref == order_id]


async def test_a_bracket_is_sent_as_one_group_and_its_take_profit_fill_cancels_its_stop_loss(
        harness: Harness) -> None:
    price = market(harness)
    # A market buy; its take-profit sells below the market (marketable once active), its stop far below.
    parent = bracket(order(quantity="5"), take_profit=price - 1, stop_loss=price - 20)
    take_profit, stop_loss = children(parent)

    await harness.send(parent)

    await harness.wait_status(parent.order_id, "FILLED")
    tp = await harness.wait_status(take_profit, "FILLED")
    sl = await harness.wait_status(stop_loss, "CANCELLED")
    assert tp["parent_order_id"] == sl["parent_order_id"] == parent.order_id
    assert (tp["limit_price"], tp["quantity"]) == (price - 1, Decimal(5))
    assert (sl["stop_price"], sl["quantity"]) == (price - 20, Decimal(5))
    [p], [t], [s] = sent(harness, parent.order_id), sent(harness, take_profit), sent(harness, stop_loss)
    assert (p.transmit, t.transmit, s.transmit) == (False, False, True)  # type: ignore[attr-defined]
    assert t.parent_id == s.parent_id == p.order_id  # type: ignore[attr-defined]
    assert t.action == s.action == "SELL"  # type: ignore[attr-defined]
    assert t.oca_group == s.oca_group == bracket_oca_group(parent.order_id)  # type: ignore[attr-defined]
    assert harness.observed.statuses[parent.order_id][0]["parent_order_id"] is None
    await harness.wait_for(lambda: len(harness.observed.fills[take_profit]) >= 1, what="the take-profit's fill")
    assert sum(f["quantity"] for f in harness.observed.fills[take_profit]) == Decimal(5)


async def test_cancelling_a_brackets_resting_parent_takes_its_children_with_it(harness: Harness) -> None:
    price = market(harness)
    parent = bracket(order(order_type=OrderType.LIMIT, limit=str(price - 10), tif=TimeInForce.GTC),
                     take_profit=price + 5, stop_loss=price - 15)
    take_profit, stop_loss = children(parent)
    await harness.send(parent)
    for order_id in (parent.order_id, take_profit, stop_loss):
        await harness.wait_status(order_id, "SUBMITTED")

    await harness.cancel(parent.order_id)

    for order_id in (parent.order_id, take_profit, stop_loss):
        await harness.wait_status(order_id, "CANCELLED")
    assert harness.sim.open_orders() == []
    assert harness.sim.executions() == []


async def test_a_bracket_cancelled_before_it_arrives_records_its_children_cancelled_and_sends_nothing(
        harness: Harness) -> None:
    price = market(harness)
    parent = bracket(order(), take_profit=price + 5, stop_loss=price - 15)
    take_profit, stop_loss = children(parent)
    await harness.cancel(parent.order_id)
    await harness.wait_for(lambda: harness.app is not None and harness.app.loop.consumed >= 1, what="cancel")

    await harness.send(parent)

    for order_id in (parent.order_id, take_profit, stop_loss):
        await harness.wait_status(order_id, "CANCELLED")
    assert [sent(harness, i) for i in (parent.order_id, take_profit, stop_loss)] == [[], [], []]


async def test_a_redelivered_bracket_sends_nothing_again(harness: Harness) -> None:
    price = market(harness)
    parent = bracket(order(order_type=OrderType.LIMIT, limit=str(price - 10)), take_profit=price + 5,
                     stop_loss=None)
    take_profit, _ = children(parent)
    await harness.send(parent)
    await harness.wait_status(take_profit, "SUBMITTED")

    await harness.send(parent)
    await harness.wait_for(lambda: harness.status_trail(parent.order_id).count("SUBMITTED") >= 2,
                           what="the parent's status published again")

    assert len(sent(harness, parent.order_id)) == len(sent(harness, take_profit)) == 1
    assert harness.observed.dead_letters == []


async def test_an_oca_pair_one_fill_cancels_the_other(harness: Harness) -> None:
    price = market(harness)
    resting = replace(order(order_type=OrderType.LIMIT, limit=str(price - 10), tif=TimeInForce.GTC),
                      oca_group="pair-1")
    await harness.send(resting)
    await harness.wait_status(resting.order_id, "SUBMITTED")
    marketable = replace(order(side=Side.BUY, order_type=OrderType.LIMIT, limit=str(price + 1)), oca_group="pair-1")

    await harness.send(marketable)

    await harness.wait_status(marketable.order_id, "FILLED")
    await harness.wait_status(resting.order_id, "CANCELLED")
    [first], [second] = sent(harness, resting.order_id), sent(harness, marketable.order_id)
    assert first.oca_group == second.oca_group == "pair-1"  # type: ignore[attr-defined]
    assert first.oca_type == second.oca_type == 1  # type: ignore[attr-defined]


async def test_a_brackets_child_is_modified_by_its_own_id(harness: Harness) -> None:
    price = market(harness)
    parent = bracket(order(order_type=OrderType.LIMIT, limit=str(price - 10), tif=TimeInForce.GTC),
                     take_profit=price + 5, stop_loss=price - 15)
    _, stop_loss = children(parent)
    await harness.send(parent)
    await harness.wait_status(stop_loss, "SUBMITTED")

    modify = await harness.modify(stop_loss, stop=str(price - 14))
    outcome = await harness.wait_modification(stop_loss, modify.modify_id)

    assert (outcome["reason"] or "").startswith("MODIFIED: stop_price")
    assert outcome["parent_order_id"] == parent.order_id
    [original, again] = sent(harness, stop_loss)
    assert again.parent_id == original.parent_id  # type: ignore[attr-defined]
    assert again.aux_price == float(price - 14)  # type: ignore[attr-defined]
