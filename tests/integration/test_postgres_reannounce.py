"""A redelivered order's status goes out again only while the order is as read: never behind a newer one."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from tests.integration.test_postgres_ledger import an_order, changed, placed, status
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.domain.orders import OrderState

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger(pool: Pool) -> OrderLedger:
    return OrderLedger(pool)


async def statuses(pool: Pool, order_id: str) -> list[str]:
    """The status records written for ``order_id``, in the order they will be published."""
    return [row.payload.decode() for row in await Outbox(pool).unpublished(limit=1000) if row.key == order_id]


async def test_an_order_still_as_read_is_announced_again(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    await placed(ledger, order)
    read = await ledger.read_versions([order.order_id])

    written = await ledger.reannounce(read, status)

    assert written == 1
    assert await statuses(pool, order.order_id) == ["ACCEPTED", "ACCEPTED"]


async def test_an_order_changed_since_it_was_read_is_not_announced_again(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    await placed(ledger, order)
    read = await ledger.read_versions([order.order_id])
    assert await changed(ledger, order.order_id, OrderState.SUBMITTED) is not None
    assert await changed(ledger, order.order_id, OrderState.FILLED, filled=order.quantity, remaining=0) is not None

    written = await ledger.reannounce(read, status)

    assert written == 0
    assert await statuses(pool, order.order_id) == ["ACCEPTED", "SUBMITTED", "FILLED"]


async def test_an_order_a_change_in_flight_holds_is_not_announced_again(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    order = an_order()
    await placed(ledger, order)
    read = await ledger.read_versions([order.order_id])

    async with await psycopg.AsyncConnection.connect(database_url) as other:
        # Another path's change, written and not committed yet: it holds the order's row, and its record
        # (of the newer status) is on its way.
        await other.execute("UPDATE orders SET state = 'SUBMITTED' WHERE order_id = %s", (order.order_id,))
        written = await asyncio.wait_for(ledger.reannounce(read, status), 5)
        await other.commit()

    assert written == 0
    assert await statuses(pool, order.order_id) == ["ACCEPTED"]
