"""Fills against a real PostgreSQL: one row per execId, and the publication marker."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.pool import Pool
from workers.domain.fills import Fill
from workers.domain.orders import NewOrder, Order, OrderRequested, OrderState, OrderType, Side, TimeInForce
from workers.ports.outbox import OutboxMessage

pytestmark = pytest.mark.integration

EXECUTED_AT = datetime(2025, 3, 3, 14, 31, 5, tzinfo=UTC)


@pytest.fixture
def fills(pool: Pool) -> FillStore:
    return FillStore(pool)


@pytest.fixture
async def order_id(pool: Pool) -> str:
    order = OrderRequested(
        order_id=str(uuid.uuid4()),
        account="DU000002",
        instrument_id="ESH5",
        side=Side.SELL,
        quantity=Decimal("3"),
        order_type=OrderType.MARKET,
        limit_price=None,
        stop_price=None,
        time_in_force=TimeInForce.DAY,
        outside_rth=False,
        created_at=EXECUTED_AT - timedelta(seconds=5),
    )
    ledger = OrderLedger(pool)
    assert await ledger.record_new([NewOrder(order, OrderState.ACCEPTED)], 1, status_record)
    [(row, _)] = await ledger.reserve_ib_order_ids({order.order_id: 1}, 1)
    assert row.state is OrderState.PLACING
    return order.order_id


def status_record(order: Order, previous: OrderState | None) -> OutboxMessage:
    return OutboxMessage("orders.status", order.order_id, str(order.state).encode())


def a_fill(order_id: str, fill_id: str = "0000e0d5.67c5a1b2.01.01", **changes: object) -> Fill:
    fill = Fill(
        fill_id=fill_id,
        order_id=order_id,
        con_id=551601561,
        side=Side.SELL,
        quantity=Decimal("1"),
        price=Decimal("5712.25"),
        currency="USD",
        exchange="CME",
        executed_at=EXECUTED_AT,
        ib_order_id=1,
        ib_perm_id=1893456721,
        cumulative_quantity=Decimal("1"),
        avg_price=Decimal("5712.25"),
    )
    return replace(fill, **changes)  # type: ignore[arg-type]


async def test_fill_is_recorded_with_its_order_account_and_instrument(
    fills: FillStore, order_id: str
) -> None:
    fill = a_fill(order_id)

    inserted = await fills.insert(fill)
    row = await fills.get(fill.fill_id)

    assert inserted is True
    assert row is not None
    assert (row.account, row.instrument_id) == ("DU000002", "ESH5")
    assert (row.side, row.quantity, row.price) == (Side.SELL, Decimal("1"), Decimal("5712.25"))
    assert (row.ib_order_id, row.ib_perm_id, row.executed_at) == (1, 1893456721, EXECUTED_AT)
    assert (row.commission, row.commission_currency, row.published_at) == (None, None, None)


async def test_duplicate_fill_id_is_refused(fills: FillStore, order_id: str, database_url: str) -> None:
    fill = a_fill(order_id)
    assert await fills.insert(fill)

    again = await fills.insert(replace(fill, price=Decimal("1")))

    assert again is False
    row = await fills.get(fill.fill_id)
    assert row is not None
    assert row.price == Decimal("5712.25")
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.UniqueViolation):
            await conn.execute(
                """
                INSERT INTO fills (fill_id, order_id, con_id, side, quantity, price, currency, exchange,
                                   executed_at, ib_order_id, ib_perm_id, cumulative_quantity, avg_price)
                VALUES (%s, %s, 1, 'SELL', 1, 1, 'USD', 'CME', now(), 1, 1, 1, 1)
                """,
                (fill.fill_id, order_id),
            )


async def test_fill_of_an_order_not_in_the_ledger_is_refused(fills: FillStore) -> None:
    with pytest.raises(errors.ForeignKeyViolation):
        await fills.insert(a_fill(str(uuid.uuid4())))


@pytest.mark.parametrize("quantity", [Decimal("0"), Decimal("-1")])
async def test_fill_quantity_must_be_positive(fills: FillStore, order_id: str, quantity: Decimal) -> None:
    with pytest.raises(errors.CheckViolation, match="fills_quantity_positive"):
        await fills.insert(a_fill(order_id, quantity=quantity))

    assert await fills.for_order(order_id) == []


async def test_fill_stays_unpublished_until_marked(fills: FillStore, order_id: str) -> None:
    first = a_fill(order_id, "exec.1")
    second = a_fill(
        order_id, "exec.2", cumulative_quantity=Decimal("2"), executed_at=EXECUTED_AT + timedelta(1)
    )
    assert await fills.insert(first)
    assert await fills.insert(second)

    before = [row.fill_id for row in await fills.unpublished()]
    marked = await fills.mark_published(first.fill_id)
    marked_again = await fills.mark_published(first.fill_id)
    after = [row.fill_id for row in await fills.unpublished()]

    assert before == ["exec.1", "exec.2"]
    assert (marked, marked_again) == (True, False)
    assert after == ["exec.2"]
    published = await fills.get(first.fill_id)
    assert published is not None
    assert published.published_at is not None
    assert await fills.mark_published("no-such-exec") is False


async def test_unpublished_respects_the_limit(fills: FillStore, order_id: str) -> None:
    for n in range(3):
        assert await fills.insert(a_fill(order_id, f"exec.{n}", cumulative_quantity=Decimal(n + 1)))

    assert [row.fill_id for row in await fills.unpublished(limit=2)] == ["exec.0", "exec.1"]


async def test_commission_report_is_attached_to_its_fill(fills: FillStore, order_id: str) -> None:
    fill = a_fill(order_id)
    assert await fills.insert(fill)

    attached = await fills.set_commission(fill.fill_id, Decimal("2.25"), "USD")
    unknown = await fills.set_commission("no-such-exec", Decimal("1"), "USD")

    row = await fills.get(fill.fill_id)
    assert (attached, unknown) == (True, False)
    assert row is not None
    assert (row.commission, row.commission_currency) == (Decimal("2.25"), "USD")


async def test_fills_of_an_order_come_in_execution_order(fills: FillStore, order_id: str) -> None:
    late = a_fill(order_id, "exec.b", executed_at=EXECUTED_AT + timedelta(seconds=2))
    early = a_fill(order_id, "exec.a", executed_at=EXECUTED_AT)
    assert await fills.insert(late)
    assert await fills.insert(early)

    rows = await fills.for_order(order_id)

    assert [row.fill_id for row in rows] == ["exec.a", "exec.b"]
    assert await fills.for_order(str(uuid.uuid4())) == []
