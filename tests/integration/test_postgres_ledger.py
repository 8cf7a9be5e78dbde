"""The order ledger against a real PostgreSQL: idempotent inserts, enforced life cycle, IBKR order ids."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from workers.adapters.postgres.errors import UnknownOrder
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.order_batches import OrderBatches, StatusChange
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import OrderRow, OutboxMessage
from workers.domain.orders import (
    IllegalTransition,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
)

pytestmark = pytest.mark.integration

RAW_INSERT = """
INSERT INTO orders (order_id, account, instrument_id, side, quantity, order_type, time_in_force,
                    created_at, state, remaining_quantity)
VALUES (%s, 'DU000001', 'AAPL', 'BUY', %s, 'MARKET', 'DAY', now(), %s, %s)
"""


@pytest.fixture
def ledger(pool: Pool) -> OrderLedger:
    return OrderLedger(pool)


def an_order(**changes: object) -> OrderRequested:
    order = OrderRequested(
        order_id=str(uuid.uuid4()),
        account="DU000001",
        instrument_id="AAPL",
        side=Side.BUY,
        quantity=Decimal("100"),
        order_type=OrderType.LIMIT,
        limit_price=Decimal("187.25"),
        stop_price=None,
        time_in_force=TimeInForce.DAY,
        outside_rth=False,
        created_at=datetime(2025, 3, 3, 14, 30, tzinfo=UTC),
        source="strategy-a",
    )
    return replace(order, **changes)  # type: ignore[arg-type]


async def placed(ledger: OrderLedger, pool: Pool, order: OrderRequested, ib_order_id: int = 1) -> None:
    assert await ledger.insert_accepted(order)
    [(row, reserved)] = await OrderBatches(pool).reserve_ib_order_ids({order.order_id: ib_order_id}, 1)
    assert (row.state, row.ib_client_id, reserved) == (OrderState.PLACING, 1, ib_order_id)


async def test_new_order_is_recorded_as_accepted(ledger: OrderLedger) -> None:
    order = an_order()

    inserted = await ledger.insert_accepted(
        order, source_topic="orders.requested", source_partition=2, source_offset=41
    )
    row = await ledger.get(order.order_id)

    assert inserted is True
    assert row is not None
    assert row.state is OrderState.ACCEPTED
    assert (row.side, row.order_type, row.time_in_force) == (Side.BUY, OrderType.LIMIT, TimeInForce.DAY)
    assert (row.quantity, row.limit_price, row.stop_price) == (Decimal("100"), Decimal("187.25"), None)
    assert (row.filled_quantity, row.remaining_quantity, row.avg_fill_price) == (
        Decimal(0),
        Decimal("100"),
        None,
    )
    assert (row.ib_client_id, row.ib_order_id, row.ib_perm_id) == (None, None, None)
    assert row.created_at == order.created_at
    assert (row.source_topic, row.source_partition, row.source_offset) == ("orders.requested", 2, 41)


async def test_redelivered_order_is_refused_and_the_first_record_kept(ledger: OrderLedger) -> None:
    order = an_order()
    assert await ledger.insert_accepted(order)
    first = await ledger.get(order.order_id)

    again = await ledger.insert_accepted(replace(order, quantity=Decimal("5")))

    assert again is False
    assert await ledger.get(order.order_id) == first


async def test_raw_duplicate_order_id_raises_unique_violation(ledger: OrderLedger, database_url: str) -> None:
    order = an_order()
    assert await ledger.insert_accepted(order)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.UniqueViolation):
            await conn.execute(RAW_INSERT, (order.order_id, 1, "ACCEPTED", 1))


@pytest.mark.parametrize("quantity", [Decimal("0"), Decimal("-1")])
async def test_quantity_must_be_positive(ledger: OrderLedger, database_url: str, quantity: Decimal) -> None:
    with pytest.raises(errors.CheckViolation):
        await ledger.insert_accepted(an_order(quantity=quantity))

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation) as refused:
            await conn.execute(RAW_INSERT, (str(uuid.uuid4()), quantity, "ACCEPTED", 0))
    # A negative quantity also breaks the filled-quantity range; either name proves the refusal.
    assert refused.value.diag.constraint_name in {"orders_quantity_positive", "orders_filled_quantity_range"}
    assert await ledger.open_orders() == []


async def test_zero_quantity_is_refused_by_its_own_constraint(database_url: str, ledger: OrderLedger) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation) as refused:
            await conn.execute(RAW_INSERT, (str(uuid.uuid4()), 0, "ACCEPTED", 0))

    assert refused.value.diag.constraint_name == "orders_quantity_positive"


async def test_unknown_state_is_refused(ledger: OrderLedger, database_url: str) -> None:
    order = an_order()
    assert await ledger.insert_accepted(order)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation, match="orders_state_known"):
            await conn.execute(RAW_INSERT, (str(uuid.uuid4()), 1, "LOST", 1))
        await conn.rollback()
        with pytest.raises(errors.CheckViolation, match="orders_state_known"):
            await conn.execute("UPDATE orders SET state = 'LOST' WHERE order_id = %s", (order.order_id,))


async def test_filled_quantity_cannot_exceed_quantity(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    await placed(ledger, pool, order)
    before = await ledger.get(order.order_id)

    with pytest.raises(errors.CheckViolation, match="orders_filled_quantity_range"):
        await ledger.transition(order.order_id, OrderState.PARTIALLY_FILLED, filled_quantity=Decimal("101"))

    assert await ledger.get(order.order_id) == before


async def test_unknown_order_is_none(ledger: OrderLedger) -> None:
    assert await ledger.get(str(uuid.uuid4())) is None


async def test_order_goes_through_its_life_cycle_to_filled(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    await placed(ledger, pool, order, ib_order_id=7)

    submitted = await ledger.transition(order.order_id, OrderState.SUBMITTED, ib_perm_id=99001, con_id=265598)
    partial = await ledger.transition(
        order.order_id,
        OrderState.PARTIALLY_FILLED,
        filled_quantity=Decimal("40"),
        remaining_quantity=Decimal("60"),
        avg_fill_price=Decimal("187.2"),
    )
    partial_again = await ledger.transition(
        order.order_id,
        OrderState.PARTIALLY_FILLED,
        filled_quantity=Decimal("70"),
        remaining_quantity=Decimal("30"),
        avg_fill_price=Decimal("187.21"),
    )
    filled = await ledger.transition(
        order.order_id,
        OrderState.FILLED,
        filled_quantity=Decimal("100"),
        remaining_quantity=Decimal("0"),
        avg_fill_price=Decimal("187.22"),
    )

    assert (submitted.state, submitted.ib_perm_id, submitted.con_id) == (OrderState.SUBMITTED, 99001, 265598)
    assert (partial.state, partial.filled_quantity) == (OrderState.PARTIALLY_FILLED, Decimal("40"))
    assert (partial_again.filled_quantity, partial_again.remaining_quantity) == (Decimal("70"), Decimal("30"))
    assert filled.state is OrderState.FILLED
    assert filled.is_final
    assert (filled.filled_quantity, filled.remaining_quantity) == (Decimal("100"), Decimal("0"))
    assert (filled.ib_client_id, filled.ib_order_id, filled.ib_perm_id) == (1, 7, 99001)
    assert await ledger.get(order.order_id) == filled


async def test_filled_order_cannot_go_back_to_submitted(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    await placed(ledger, pool, order)
    await ledger.transition(
        order.order_id, OrderState.FILLED, filled_quantity=Decimal("100"), remaining_quantity=Decimal("0")
    )
    before = await ledger.get(order.order_id)

    with pytest.raises(IllegalTransition) as refused:
        await ledger.transition(order.order_id, OrderState.SUBMITTED, reason="late status")

    assert (refused.value.current, refused.value.requested) == (OrderState.FILLED, OrderState.SUBMITTED)
    assert await ledger.get(order.order_id) == before


async def test_accepted_order_cannot_skip_placing(ledger: OrderLedger) -> None:
    order = an_order()
    assert await ledger.insert_accepted(order)

    with pytest.raises(IllegalTransition):
        await ledger.transition(order.order_id, OrderState.SUBMITTED)

    row = await ledger.get(order.order_id)
    assert row is not None
    assert row.state is OrderState.ACCEPTED


async def test_transition_of_unknown_order_raises(ledger: OrderLedger) -> None:
    with pytest.raises(UnknownOrder):
        await ledger.transition(str(uuid.uuid4()), OrderState.REJECTED)


async def test_racing_transitions_take_exactly_one_path(ledger: OrderLedger) -> None:
    order = an_order()
    assert await ledger.insert_accepted(order)

    outcomes = await asyncio.gather(
        ledger.transition(order.order_id, OrderState.REJECTED, reason="risk limit"),
        ledger.transition(order.order_id, OrderState.CANCELLED, reason="cancel requested"),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if isinstance(o, OrderRow)]
    losers = [o for o in outcomes if isinstance(o, IllegalTransition)]
    assert len(winners) == 1
    assert len(losers) == 1
    row = await ledger.get(order.order_id)
    assert row == winners[0]


async def test_update_sets_fields_without_changing_state(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    await placed(ledger, pool, order)

    row = await ledger.update(order.order_id, ib_perm_id=123456, con_id=265598)

    assert (row.state, row.ib_perm_id, row.con_id) == (OrderState.PLACING, 123456, 265598)
    assert await ledger.find_by_ib_perm_id(123456) == row


async def test_ib_order_ids_are_unique_per_client_id(ledger: OrderLedger, pool: Pool) -> None:
    batches = OrderBatches(pool)
    orders = [an_order() for _ in range(3)]
    for order in orders:
        assert await ledger.insert_accepted(order)

    await batches.reserve_ib_order_ids({orders[0].order_id: 5}, 7)
    await batches.reserve_ib_order_ids({orders[1].order_id: 5}, 8)  # the same number, another client id
    with pytest.raises(psycopg.errors.UniqueViolation):
        await batches.reserve_ib_order_ids({orders[2].order_id: 5}, 7)

    assert await ledger.find_by_ib_order_id(7, 5) == await ledger.get(orders[0].order_id)
    assert await ledger.find_by_ib_order_id(8, 5) == await ledger.get(orders[1].order_id)
    third = await ledger.get(orders[2].order_id)
    assert third is not None and (third.state, third.ib_order_id) == (OrderState.ACCEPTED, None)


async def test_an_order_is_reserved_an_ib_order_id_only_once(ledger: OrderLedger, pool: Pool) -> None:
    batches = OrderBatches(pool)
    order = an_order()
    assert await ledger.insert_accepted(order)
    assert [ib_id for _, ib_id in await batches.reserve_ib_order_ids({order.order_id: 50}, 1)] == [50]

    assert await batches.reserve_ib_order_ids({order.order_id: 60}, 1) == []  # PLACING already

    row = await ledger.get(order.order_id)
    assert row is not None
    assert (row.state, row.ib_order_id) == (OrderState.PLACING, 50)


async def test_reserving_for_an_unknown_order_reserves_nothing(ledger: OrderLedger, pool: Pool) -> None:
    unknown = str(uuid.uuid4())

    assert await OrderBatches(pool).reserve_ib_order_ids({unknown: 1}, 1) == []

    assert await ledger.get(unknown) is None


async def test_open_orders_leave_out_final_ones(ledger: OrderLedger, pool: Pool) -> None:
    accepted, placing, rejected = an_order(), an_order(), an_order()
    for order in (accepted, placing, rejected):
        assert await ledger.insert_accepted(order)
    await OrderBatches(pool).reserve_ib_order_ids({placing.order_id: 1}, 1)
    await ledger.transition(rejected.order_id, OrderState.REJECTED, reason="unknown instrument")

    open_ids = {row.order_id for row in await ledger.open_orders()}

    assert open_ids == {accepted.order_id, placing.order_id}


async def test_cancel_before_order_is_recorded_and_found(ledger: OrderLedger) -> None:
    order = an_order()
    cancel = OrderCancelRequested(
        order_id=order.order_id,
        account=order.account,
        requested_at=datetime(2025, 3, 3, 14, 29, tzinfo=UTC),
        reason="strategy stopped",
    )

    recorded = await ledger.record_cancel_request(cancel)
    recorded_again = await ledger.record_cancel_request(cancel)
    assert await ledger.insert_accepted(order)
    pending = await ledger.pending_cancel(order.order_id)

    assert recorded is True
    assert recorded_again is False
    assert pending is not None
    assert (pending.order_id, pending.account, pending.reason) == (
        order.order_id,
        "DU000001",
        "strategy stopped",
    )
    assert pending.requested_at == cancel.requested_at
    assert pending.handled_at is None


async def test_handled_cancel_is_no_longer_pending(ledger: OrderLedger) -> None:
    cancel = OrderCancelRequested(
        order_id=str(uuid.uuid4()), account="DU000001", requested_at=datetime.now(UTC)
    )
    assert await ledger.record_cancel_request(cancel)

    handled = await ledger.mark_cancel_handled(cancel.order_id)
    handled_again = await ledger.mark_cancel_handled(cancel.order_id)

    assert (handled, handled_again) == (True, False)
    assert await ledger.pending_cancel(cancel.order_id) is None


async def test_status_record_is_written_with_the_change_and_not_without_it(
    ledger: OrderLedger, pool: Pool
) -> None:
    order = an_order()
    outbox = Outbox(pool)

    def status(row: OrderRow) -> OutboxMessage:
        return OutboxMessage("orders.status", row.order_id, f"{row.state.published_status}".encode())

    assert await ledger.insert_accepted(order, outbox=status)
    assert not await ledger.insert_accepted(order, outbox=status)
    with pytest.raises(IllegalTransition):
        await ledger.transition(order.order_id, OrderState.FILLED, outbox=status)
    await ledger.transition(order.order_id, OrderState.CANCELLED, reason="cancel requested", outbox=status)

    pending = await outbox.unpublished()
    assert [(m.topic, m.key, m.payload) for m in pending] == [
        ("orders.status", order.order_id, b"ACCEPTED"),
        ("orders.status", order.order_id, b"CANCELLED"),
    ]


async def submitted(ledger: OrderLedger, pool: Pool) -> OrderRequested:
    order = an_order()
    await placed(ledger, pool, order)
    await ledger.transition(order.order_id, OrderState.SUBMITTED)
    return order


def cancel_pending_behind_the_ledgers_back(database_url: str, order_id: str) -> None:
    """What the order path does when a cancel comes, from another connection."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET state = 'CANCEL_PENDING' WHERE order_id = %s", (order_id,))


async def test_a_status_applied_while_the_order_changes_is_worked_out_again(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    order = await submitted(ledger, pool)
    outbox = Outbox(pool)
    encoded: list[tuple[OrderState | None, OrderState]] = []

    def status(row: OrderRow, previous: OrderState | None) -> OutboxMessage:
        if not encoded:
            # Between the read and the write, the order path asks for a cancel: the first write loses.
            cancel_pending_behind_the_ledgers_back(database_url, row.order_id)
        encoded.append((previous, row.state))
        return OutboxMessage("orders.status", row.order_id, f"{previous}->{row.state}".encode())

    applied = await OrderBatches(pool).apply([StatusChange(order.order_id, OrderState.FILLED,
                                                           filled=Decimal(100), remaining=Decimal(0))], status)

    assert encoded == [(OrderState.SUBMITTED, OrderState.FILLED), (OrderState.CANCEL_PENDING, OrderState.FILLED)]
    assert [(a.previous, a.row.state) for a in applied] == [(OrderState.CANCEL_PENDING, OrderState.FILLED)]
    row = await ledger.get(order.order_id)
    assert row is not None and row.state is OrderState.FILLED and row.filled_quantity == Decimal(100)
    # One status record: the one written with the change that was applied.
    assert [m.payload for m in await outbox.unpublished()
            if m.key == order.order_id and m.payload.startswith(b"CANCEL")] == [b"CANCEL_PENDING->FILLED"]
    assert not [m for m in await outbox.unpublished() if m.payload == b"SUBMITTED->FILLED"]


async def test_a_status_applied_from_rows_read_before_the_order_changed_is_worked_out_again(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    order = await submitted(ledger, pool)
    batches = OrderBatches(pool)
    read = await batches.read_versions([order.order_id, "not-in-the-ledger"])
    assert set(read) == {order.order_id} and read[order.order_id][0].state is OrderState.SUBMITTED
    # After the read, the order path asks for a cancel: the rows read are stale.
    cancel_pending_behind_the_ledgers_back(database_url, order.order_id)

    def status(row: OrderRow, previous: OrderState | None) -> OutboxMessage:
        return OutboxMessage("orders.status", row.order_id, f"{previous}->{row.state}".encode())

    applied = await batches.apply([StatusChange(order.order_id, OrderState.FILLED, filled=Decimal(100),
                                                remaining=Decimal(0))], status, read)

    assert [(a.previous, a.row.state) for a in applied] == [(OrderState.CANCEL_PENDING, OrderState.FILLED)]
    row = await ledger.get(order.order_id)
    assert row is not None and row.state is OrderState.FILLED
    payloads = [m.payload for m in await Outbox(pool).unpublished() if m.key == order.order_id]
    assert b"CANCEL_PENDING->FILLED" in payloads and b"SUBMITTED->FILLED" not in payloads


async def test_the_highest_ib_order_id_is_the_mark_or_the_ledgers_whichever_is_higher(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    batches = OrderBatches(pool)
    client_id = 40 + uuid.uuid4().int % 1000  # a client id no other test uses
    assert await batches.highest_ib_order_id(client_id) == 0
    orders = [an_order() for _ in range(3)]
    for order in orders:
        assert await ledger.insert_accepted(order)

    reserved = await batches.reserve_ib_order_ids({orders[0].order_id: 17, orders[1].order_id: 18}, client_id)

    assert [(row.order_id, row.state, ib_id) for row, ib_id in reserved] == [
        (orders[0].order_id, OrderState.PLACING, 17), (orders[1].order_id, OrderState.PLACING, 18)]
    assert await batches.highest_ib_order_id(client_id) == 18
    # The mark row lost (restored from an old backup, say): the ledger's own ids still count.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ib_order_ids WHERE client_id = %s", (client_id,))
    assert await batches.highest_ib_order_id(client_id) == 18
    # An id handed out again is refused by the ledger, whatever the mark says.
    with pytest.raises(psycopg.errors.UniqueViolation):
        await batches.reserve_ib_order_ids({orders[2].order_id: 18}, client_id)
