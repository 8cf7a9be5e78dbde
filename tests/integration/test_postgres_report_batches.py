"""A batch of IBKR's reports recorded in one statement (real PostgreSQL): its fills, the commissions of
fills recorded before and its orders' status changes, with the same rules as each written apart."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from tests.integration.test_postgres_fills import a_fill
from tests.integration.test_postgres_remembered_rows import recorded as placed_order
from tests.integration.test_postgres_remembered_rows import status
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.domain.orders import OrderState, StatusChange

pytestmark = pytest.mark.integration

async def statuses_of(pool: Pool, order_id: str) -> list[bytes]:
    return [m.payload for m in await Outbox(pool).unpublished(1000) if m.key == order_id]


async def test_fills_commissions_and_statuses_of_a_batch_are_written_together(pool: Pool) -> None:
    batches = OrderLedger(pool, remember=100)
    order_id = (await placed_order(batches, ib_order_id=1)).order_id
    first = a_fill(order_id, "0000e0d5.0001.01.01")
    assert await batches.insert_fills([first]) == [first.fill_id]  # recorded earlier, commission to come
    second = a_fill(order_id, "0000e0d5.0002.01.01", cumulative_quantity=Decimal(2), commission=Decimal("1.05"),
                    commission_currency="USD")

    recorded = await batches.record_reports(
        [second], [(first.fill_id, Decimal("1.00"), "USD")],
        [StatusChange(order_id, OrderState.SUBMITTED, perm_id=99),
         StatusChange(order_id, OrderState.FILLED, filled=Decimal(2), remaining=Decimal(0),
                      avg_price=Decimal("187.25"))],
        status, await batches.read_versions([order_id]))

    assert recorded.new_fill_ids == [second.fill_id]
    assert [(a.previous, a.order.state) for a in recorded.applied] == [
        (OrderState.PLACING, OrderState.SUBMITTED), (OrderState.SUBMITTED, OrderState.FILLED)]
    fills = {f.fill_id: f for f in await FillStore(pool).for_order(order_id)}
    assert (fills[first.fill_id].commission, fills[second.fill_id].commission) == (Decimal("1.00"), Decimal("1.05"))
    [row] = (await OrderLedger(pool).get_many([order_id])).values()
    assert row.state is OrderState.FILLED and row.filled_quantity == Decimal(2) and row.ib_perm_id == 99
    assert b"PLACING->SUBMITTED" in await statuses_of(pool, order_id)
    assert b"SUBMITTED->FILLED" in await statuses_of(pool, order_id)
    # What it remembers is the row written: the next report needs no read and is checked all the same.
    assert (await batches.read_versions([order_id]))[order_id][0].state is OrderState.FILLED


async def test_a_replayed_execution_is_not_new_and_illegal_changes_are_skipped(pool: Pool) -> None:
    batches = OrderLedger(pool)
    order_id = (await placed_order(batches, ib_order_id=2)).order_id
    fill = a_fill(order_id, "0000e0d5.0003.01.01")
    await batches.record_reports([fill], [], [StatusChange(order_id, OrderState.FILLED, filled=Decimal(2),
                                                           remaining=Decimal(0))], status)

    again = await batches.record_reports([fill], [], [StatusChange(order_id, OrderState.SUBMITTED)], status)

    assert again.new_fill_ids == [] and again.applied == []  # FILLED never goes back to SUBMITTED
    assert [f.fill_id for f in await FillStore(pool).for_order(order_id)] == [fill.fill_id]
    assert [p for p in await statuses_of(pool, order_id) if p.endswith(b"SUBMITTED")] == []


async def test_a_status_change_of_an_order_changed_meanwhile_is_worked_out_again_and_its_fill_kept_once(
        pool: Pool, database_url: str) -> None:
    batches = OrderLedger(pool, remember=100)
    order_id = (await placed_order(batches, ib_order_id=3)).order_id
    read = await batches.read_versions([order_id])
    with psycopg.connect(database_url, autocommit=True) as conn:  # the order path asks for a cancel
        conn.execute("UPDATE orders SET state = 'CANCEL_PENDING' WHERE order_id = %s", (order_id,))
    fill = a_fill(order_id, "0000e0d5.0004.01.01", cumulative_quantity=Decimal(2), quantity=Decimal(2))

    recorded = await batches.record_reports(
        [fill], [], [StatusChange(order_id, OrderState.FILLED, filled=Decimal(2), remaining=Decimal(0))],
        status, read)

    assert recorded.new_fill_ids == [fill.fill_id]
    assert [(a.previous, a.order.state) for a in recorded.applied] == [(OrderState.CANCEL_PENDING, OrderState.FILLED)]
    assert b"CANCEL_PENDING->FILLED" in await statuses_of(pool, order_id)
    assert b"PLACING->FILLED" not in await statuses_of(pool, order_id)
    assert [f.fill_id for f in await FillStore(pool).for_order(order_id)] == [fill.fill_id]


async def test_a_batch_of_fills_only_or_of_statuses_only(pool: Pool) -> None:
    batches = OrderLedger(pool)
    order_id = (await placed_order(batches, ib_order_id=4)).order_id

    only_fill = await batches.record_reports([a_fill(order_id, "0000e0d5.0005.01.01")], [], [], status)
    only_status = await batches.record_reports([], [], [StatusChange(order_id, OrderState.SUBMITTED)], status)

    assert only_fill.new_fill_ids == ["0000e0d5.0005.01.01"] and only_fill.applied == []
    assert only_status.new_fill_ids == [] and [a.order.state for a in only_status.applied] == [OrderState.SUBMITTED]
