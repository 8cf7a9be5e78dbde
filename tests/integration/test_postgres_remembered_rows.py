"""OrderLedger remembering the rows it wrote (real PostgreSQL): reports about an order it just wrote need
no read, and a remembered row that went stale never lets a change through unchecked."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest

from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.domain.orders import (
    NewOrder,
    Order,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    StatusChange,
    TimeInForce,
)
from workers.ports.outbox import OutboxMessage

pytestmark = pytest.mark.integration

CLIENT_ID = 7


def an_order() -> OrderRequested:
    return OrderRequested(
        order_id=str(uuid.uuid4()), account="DU000001", instrument_id="AAPL", side=Side.BUY,
        quantity=Decimal(10), order_type=OrderType.MARKET, limit_price=None, stop_price=None,
        time_in_force=TimeInForce.DAY, outside_rth=False, created_at=datetime(2025, 3, 3, 14, 30, tzinfo=UTC),
    )


def status(row: Order, previous: OrderState | None) -> OutboxMessage:
    return OutboxMessage("orders.status", row.order_id, f"{previous}->{row.state}".encode())


def behind_its_back(database_url: str, query: str, order_id: str) -> None:
    """A change made by another connection (another path of the worker, or an operator)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(query, (order_id,))


async def recorded(batches: OrderLedger, ib_order_id: int) -> OrderRequested:
    order = an_order()
    [row] = await batches.record_new([NewOrder(order, OrderState.ACCEPTED)], CLIENT_ID, status,
                                     {order.order_id: ib_order_id})
    assert row.state is OrderState.PLACING
    return order


async def fresh(pool: Pool, order_id: str) -> tuple[Order, str]:
    """The order's row and version as the ledger has them, read by a store that remembers nothing."""
    row, version = (await OrderLedger(pool).read_versions([order_id]))[order_id]
    return without_clock(row), version


async def remembered(batches: OrderLedger, order_id: str) -> tuple[Order, str]:
    row, version = (await batches.read_versions([order_id]))[order_id]
    return without_clock(row), version


def without_clock(row: Order) -> Order:
    """``row`` but its ``updated_at`` (the worker's clock in a row it changed, the database's in one read)."""
    return replace(row, updated_at=datetime.min.replace(tzinfo=UTC))


async def test_rows_it_recorded_and_changed_are_remembered_with_their_current_version(pool: Pool) -> None:
    batches = OrderLedger(pool, remember=100)
    order = await recorded(batches, ib_order_id=11)

    assert batches.remembers(order.order_id)
    assert await remembered(batches, order.order_id) == await fresh(pool, order.order_id)

    applied = await batches.apply([StatusChange(order.order_id, OrderState.SUBMITTED, perm_id=5)], status,
                                  await batches.read_versions([order.order_id]))
    assert [a.order.state for a in applied] == [OrderState.SUBMITTED]
    row, version = await remembered(batches, order.order_id)
    assert (row, version) == await fresh(pool, order.order_id)
    assert row.state is OrderState.SUBMITTED and row.ib_perm_id == 5

    # The next change goes from the remembered row and version, and is written.
    applied = await batches.apply([StatusChange(order.order_id, OrderState.FILLED, filled=Decimal(10),
                                                remaining=Decimal(0))], status,
                                  await batches.read_versions([order.order_id]))
    assert [(a.previous, a.order.state) for a in applied] == [(OrderState.SUBMITTED, OrderState.FILLED)]
    assert (await fresh(pool, order.order_id))[0].state is OrderState.FILLED


async def test_a_remembered_row_changed_elsewhere_is_caught_and_the_change_worked_out_on_the_fresh_row(
        pool: Pool, database_url: str) -> None:
    batches = OrderLedger(pool, remember=100)
    order = await recorded(batches, ib_order_id=12)
    await batches.apply([StatusChange(order.order_id, OrderState.SUBMITTED)], status)
    behind_its_back(database_url, "UPDATE orders SET state = 'CANCEL_PENDING' WHERE order_id = %s", order.order_id)
    stale = await batches.read_versions([order.order_id])
    assert stale[order.order_id][0].state is OrderState.SUBMITTED  # from memory: it did not read

    applied = await batches.apply([StatusChange(order.order_id, OrderState.FILLED, filled=Decimal(10),
                                                remaining=Decimal(0))], status, stale)

    assert [(a.previous, a.order.state) for a in applied] == [(OrderState.CANCEL_PENDING, OrderState.FILLED)]
    payloads = [m.payload for m in await Outbox(pool).unpublished() if m.key == order.order_id]
    assert b"CANCEL_PENDING->FILLED" in payloads and b"SUBMITTED->FILLED" not in payloads
    # What it remembers now is the row as written.
    assert await remembered(batches, order.order_id) == await fresh(pool, order.order_id)


async def test_a_forgotten_row_is_read_again(pool: Pool, database_url: str) -> None:
    batches = OrderLedger(pool, remember=100)
    order = await recorded(batches, ib_order_id=13)
    behind_its_back(database_url, "UPDATE orders SET state = 'ACCEPTED', ib_client_id = NULL, ib_order_id = NULL "
                                  "WHERE order_id = %s", order.order_id)

    batches.forget([order.order_id])

    assert not batches.remembers(order.order_id)
    row, version = await remembered(batches, order.order_id)
    assert row.state is OrderState.ACCEPTED and (row, version) == await fresh(pool, order.order_id)


async def test_it_remembers_the_latest_rows_up_to_its_bound_and_nothing_without_one(pool: Pool) -> None:
    bounded = OrderLedger(pool, remember=2)
    orders = [await recorded(bounded, ib_order_id=20 + n) for n in range(3)]
    assert bounded.remembered == 2
    assert [bounded.remembers(o.order_id) for o in orders] == [False, True, True]  # the oldest went
    # Reading it finds it in the ledger, and does not remember a row it only read.
    assert orders[0].order_id in await bounded.read_versions([orders[0].order_id])
    assert not bounded.remembers(orders[0].order_id)

    unbounded_off = OrderLedger(pool)
    await recorded(unbounded_off, ib_order_id=30)
    assert unbounded_off.remembered == 0


async def test_reserving_ids_remembers_the_rows_made_placing(pool: Pool) -> None:
    batches = OrderLedger(pool, remember=100)
    order = an_order()
    [row] = await batches.record_new([NewOrder(order, OrderState.ACCEPTED)], CLIENT_ID, status)
    assert row.state is OrderState.ACCEPTED

    [(reserved, ib_order_id)] = await batches.reserve_ib_order_ids({order.order_id: 40}, CLIENT_ID)

    assert ib_order_id == 40 and reserved.state is OrderState.PLACING
    assert await remembered(batches, order.order_id) == await fresh(pool, order.order_id)
