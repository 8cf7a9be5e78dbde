"""OrderClient against a running order-consumer: real Kafka, real PostgreSQL, the sim gateway."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from tests.integration.harness import AAPL, ACCOUNT, ES, Harness, order, running_harness
from workers.client import (
    ClientEvent,
    FillExecuted,
    OrderClient,
    OrderStatusChanged,
    OrderTimeout,
    PositionUpdated,
    TopicMissing,
)
from workers.domain.orders import OrderState
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


@pytest.fixture
async def client(harness: Harness) -> AsyncIterator[OrderClient]:
    async with OrderClient(harness.bootstrap, topics=harness.topics, watch_positions=True) as running:
        yield running


def aapl_price(harness: Harness) -> Decimal:
    return Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))


async def test_submitted_limit_order_is_filled_and_its_fills_arrive(harness: Harness,
                                                                   client: OrderClient) -> None:
    seen: list[ClientEvent] = []
    client.listen(seen.append)
    order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY",
                                   quantity=Decimal(10), order_type="LIMIT",
                                   limit_price=aapl_price(harness) + 1, tif="DAY")
    final = await client.wait_for_final(order_id, timeout=20)
    assert final.status is OrderState.FILLED
    assert final.filled_quantity == Decimal(10) and final.remaining_quantity == 0
    fills = await client.wait_for_fills(order_id, timeout=10)
    assert sum(f.quantity for f in fills) == Decimal(10)
    assert all(f.order_id == order_id and f.con_id == AAPL.con_id for f in fills)
    statuses = [e.status for e in seen if isinstance(e, OrderStatusChanged)]
    assert statuses[0] is OrderState.ACCEPTED and statuses[-1] is OrderState.FILLED
    await harness.wait_for(lambda: any(isinstance(e, PositionUpdated) and e.con_id == AAPL.con_id
                                       for e in seen), what="the AAPL position")
    assert harness.sim.place_count(order_id) == 1


async def test_events_yield_statuses_and_fills_until_final_with_every_fill(harness: Harness,
                                                                          client: OrderClient) -> None:
    harness.sim.config.clip_size = 4
    harness.sim.config.clip_interval = 0.05
    order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="SELL",
                                   quantity="10")
    events = [event async for event in client.events(order_id, timeout=20)]
    fills = [e for e in events if isinstance(e, FillExecuted)]
    changes = [e for e in events if isinstance(e, OrderStatusChanged)]
    assert [f.quantity for f in fills] == [Decimal(4), Decimal(4), Decimal(2)]
    assert OrderState.PARTIALLY_FILLED in {c.status for c in changes}
    assert changes[-1].status is OrderState.FILLED
    assert not any(a.same_state(b) for a, b in itertools.pairwise(changes))  # repeats dropped


async def test_resting_order_is_cancelled_through_the_client(harness: Harness, client: OrderClient) -> None:
    order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY",
                                   quantity=5, order_type="LIMIT", limit_price=aapl_price(harness) - 20,
                                   tif="GTC")
    await client.wait_for_status(order_id, {"SUBMITTED"}, timeout=20)
    await client.cancel(order_id, account=ACCOUNT, reason="test")
    final = await client.wait_for_final(order_id, timeout=20)
    assert final.status is OrderState.CANCELLED
    assert final.filled_quantity == 0
    assert client.fills(order_id) == []
    assert harness.sim.open_orders() == []


async def test_an_invalid_order_comes_back_rejected_with_its_reason(client: OrderClient) -> None:
    order_id = await client.submit(account="DU0009999", instrument_id=ES.instrument_id, side="BUY",
                                   quantity=1)
    final = await client.wait_for_final(order_id, timeout=20)
    assert final.status is OrderState.REJECTED
    assert (final.reason or "").startswith("ACCOUNT_NOT_ALLOWED")


async def test_waiting_past_the_timeout_raises_with_the_last_status(harness: Harness,
                                                                   client: OrderClient) -> None:
    order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY",
                                   quantity=1, order_type="LIMIT", limit_price=aapl_price(harness) - 30,
                                   tif="GTC")
    await client.wait_for_status(order_id, {OrderState.SUBMITTED}, timeout=20)
    with pytest.raises(OrderTimeout) as raised:
        await client.wait_for_final(order_id, timeout=0.5)
    assert raised.value.last is not None and raised.value.last.status is OrderState.SUBMITTED
    await client.cancel(order_id, account=ACCOUNT)
    assert (await client.wait_for_final(order_id, timeout=20)).status is OrderState.CANCELLED


async def test_history_is_not_read_and_other_orders_are_not_followed(harness: Harness) -> None:
    before = order()
    await harness.send(before)
    await harness.wait_status(before.order_id, "FILLED")
    async with OrderClient(harness.bootstrap, topics=harness.topics) as client:
        seen: list[ClientEvent] = []
        client.listen(seen.append)
        client.watch(before.order_id)
        other = order()
        await harness.send(other)  # sent around the client: not followed
        mine = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY", quantity=1)
        await client.wait_for_fills(mine, timeout=20)
        await harness.wait_status(other.order_id, "FILLED")
        await asyncio.sleep(0.3)
    assert {e.order_id for e in seen if not isinstance(e, PositionUpdated)} == {mine}


async def test_a_missing_topic_is_reported_before_anything_is_sent(kafka_bootstrap: str,
                                                                  kafka_topics: TopicNames) -> None:
    with pytest.raises(TopicMissing, match="ibkr-workers topics"):
        async with OrderClient(kafka_bootstrap, topics=kafka_topics):
            pass
