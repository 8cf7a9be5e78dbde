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

from workers.adapters.postgres.cancel_requests import CancelRequests
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import Pool
from workers.domain.orders import (
    Algo,
    AlgoPriority,
    NewOrder,
    Order,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    StatusChange,
    TimeInForce,
    differing_terms,
)
from workers.ports.outbox import OutboxMessage

pytestmark = pytest.mark.integration

RAW_INSERT = """
INSERT INTO orders (order_id, account, instrument_id, side, quantity, order_type, time_in_force,
                    created_at, state, remaining_quantity)
VALUES (%s, 'DU000001', 'AAPL', 'BUY', %s, 'MARKET', 'DAY', now(), %s, %s)
"""
CLIENT_ID = 1


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


def status(order: Order, previous: OrderState | None) -> OutboxMessage:
    return OutboxMessage("orders.status", order.order_id, f"{order.state.published_status}".encode())


async def accepted(ledger: OrderLedger, order: OrderRequested, **source: object) -> list[Order]:
    """Record ``order`` ACCEPTED; the orders inserted (none when its ``order_id`` is known)."""
    return await ledger.record_new([NewOrder(order, OrderState.ACCEPTED, **source)],  # type: ignore[arg-type]
                                   CLIENT_ID, status)


async def changed(ledger: OrderLedger, order_id: str, state: OrderState, **fields: object) -> Order | None:
    """Apply one status change; the order as written, or None when the ledger refused it."""
    applied = await ledger.apply([StatusChange(order_id, state, **fields)], status)  # type: ignore[arg-type]
    return applied[0].order if applied else None


async def placed(ledger: OrderLedger, order: OrderRequested, ib_order_id: int = 1) -> None:
    assert await accepted(ledger, order)
    [(row, reserved)] = await ledger.reserve_ib_order_ids({order.order_id: ib_order_id}, CLIENT_ID)
    assert (row.state, row.ib_client_id, reserved) == (OrderState.PLACING, CLIENT_ID, ib_order_id)


async def test_new_order_is_recorded_as_accepted(ledger: OrderLedger) -> None:
    order = an_order()

    inserted = await accepted(ledger, order, source_topic="orders.requested", source_partition=2,
                              source_offset=41)
    row = await ledger.get(order.order_id)

    assert [o.order_id for o in inserted] == [order.order_id]
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
    assert row.owner_client_id == CLIENT_ID


async def test_the_terms_of_orderrequested_v4_are_recorded_and_read_back_as_sent(ledger: OrderLedger) -> None:
    trailing = an_order(order_type=OrderType.TRAILING_STOP_LIMIT, limit_price=None, stop_price=Decimal("180"),
                        trailing_amount=Decimal("1.25"), limit_offset=Decimal("0.10"),
                        time_in_force=TimeInForce.GTD, good_till=datetime(2025, 3, 5, 21, tzinfo=UTC))
    adaptive = an_order(algo=Algo.ADAPTIVE, algo_priority=AlgoPriority.URGENT)
    # A bracket the guards refused is recorded with the terms it was sent with.
    bracket = an_order(take_profit_price=Decimal("190"), stop_loss_price=Decimal("185"), oca_group="g-1",
                       trailing_percent=Decimal("2.5"))
    assert await accepted(ledger, trailing) and await accepted(ledger, adaptive)
    assert await ledger.record_new([NewOrder(bracket, OrderState.REJECTED, "INVALID_BRACKET: no")], CLIENT_ID,
                                   status)
    for sent in (trailing, adaptive, bracket):
        row = await ledger.get(sent.order_id)
        assert row is not None
        assert row.request == sent
        assert differing_terms(row.request, sent) == ()


async def test_redelivered_order_is_refused_and_the_first_record_kept(ledger: OrderLedger) -> None:
    order = an_order()
    assert await accepted(ledger, order)
    first = await ledger.get(order.order_id)

    again = await accepted(ledger, replace(order, quantity=Decimal("5")))

    assert again == []
    assert await ledger.get(order.order_id) == first


async def test_raw_duplicate_order_id_raises_unique_violation(ledger: OrderLedger, database_url: str) -> None:
    order = an_order()
    assert await accepted(ledger, order)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.UniqueViolation):
            await conn.execute(RAW_INSERT, (order.order_id, 1, "ACCEPTED", 1))


@pytest.mark.parametrize("quantity", [Decimal("0"), Decimal("-1")])
async def test_quantity_must_be_positive(ledger: OrderLedger, database_url: str, quantity: Decimal) -> None:
    order = an_order(quantity=quantity)
    with pytest.raises(errors.CheckViolation):
        await accepted(ledger, order)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation) as refused:
            await conn.execute(RAW_INSERT, (str(uuid.uuid4()), quantity, "ACCEPTED", 0))
    # A negative quantity also breaks the filled-quantity range; either name proves the refusal.
    assert refused.value.diag.constraint_name in {"orders_quantity_positive", "orders_filled_quantity_range"}
    assert await ledger.get(order.order_id) is None


async def test_zero_quantity_is_refused_by_its_own_constraint(database_url: str, ledger: OrderLedger) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation) as refused:
            await conn.execute(RAW_INSERT, (str(uuid.uuid4()), 0, "ACCEPTED", 0))

    assert refused.value.diag.constraint_name == "orders_quantity_positive"


async def test_unknown_state_is_refused(ledger: OrderLedger, database_url: str) -> None:
    order = an_order()
    assert await accepted(ledger, order)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation, match="orders_state_known"):
            await conn.execute(RAW_INSERT, (str(uuid.uuid4()), 1, "LOST", 1))
        await conn.rollback()
        with pytest.raises(errors.CheckViolation, match="orders_state_known"):
            await conn.execute("UPDATE orders SET state = 'LOST' WHERE order_id = %s", (order.order_id,))


async def test_filled_quantity_cannot_exceed_quantity(ledger: OrderLedger) -> None:
    order = an_order()
    await placed(ledger, order)
    before = await ledger.get(order.order_id)

    with pytest.raises(errors.CheckViolation, match="orders_filled_quantity_range"):
        await changed(ledger, order.order_id, OrderState.PARTIALLY_FILLED, filled=Decimal("101"))

    assert await ledger.get(order.order_id) == before


async def test_unknown_order_is_none(ledger: OrderLedger) -> None:
    assert await ledger.get(str(uuid.uuid4())) is None


async def test_order_goes_through_its_life_cycle_to_filled(ledger: OrderLedger) -> None:
    order = an_order()
    await placed(ledger, order, ib_order_id=7)

    submitted = await changed(ledger, order.order_id, OrderState.SUBMITTED, perm_id=99001)
    partial = await changed(ledger, order.order_id, OrderState.PARTIALLY_FILLED, filled=Decimal("40"),
                            remaining=Decimal("60"), avg_price=Decimal("187.2"))
    partial_again = await changed(ledger, order.order_id, OrderState.PARTIALLY_FILLED, filled=Decimal("70"),
                                  remaining=Decimal("30"), avg_price=Decimal("187.21"))
    filled = await changed(ledger, order.order_id, OrderState.FILLED, filled=Decimal("100"),
                           remaining=Decimal("0"), avg_price=Decimal("187.22"))

    assert submitted is not None and partial is not None and partial_again is not None and filled is not None
    assert (submitted.state, submitted.ib_perm_id) == (OrderState.SUBMITTED, 99001)
    assert (partial.state, partial.filled_quantity) == (OrderState.PARTIALLY_FILLED, Decimal("40"))
    assert (partial_again.filled_quantity, partial_again.remaining_quantity) == (Decimal("70"), Decimal("30"))
    assert filled.state is OrderState.FILLED
    assert filled.is_final
    assert (filled.filled_quantity, filled.remaining_quantity) == (Decimal("100"), Decimal("0"))
    assert (filled.ib_client_id, filled.ib_order_id, filled.ib_perm_id) == (CLIENT_ID, 7, 99001)
    stored = await ledger.get(order.order_id)
    assert stored is not None
    assert replace(stored, updated_at=filled.updated_at) == filled


async def test_filled_order_cannot_go_back_to_submitted(ledger: OrderLedger) -> None:
    order = an_order()
    await placed(ledger, order)
    assert await changed(ledger, order.order_id, OrderState.FILLED, filled=Decimal("100"), remaining=Decimal("0"))
    before = await ledger.get(order.order_id)

    refused = await changed(ledger, order.order_id, OrderState.SUBMITTED, reason="late status")

    assert refused is None
    assert await ledger.get(order.order_id) == before


async def test_accepted_order_cannot_skip_placing(ledger: OrderLedger) -> None:
    order = an_order()
    assert await accepted(ledger, order)

    assert await changed(ledger, order.order_id, OrderState.SUBMITTED) is None

    row = await ledger.get(order.order_id)
    assert row is not None
    assert row.state is OrderState.ACCEPTED


async def test_a_change_of_an_unknown_order_changes_nothing(ledger: OrderLedger, pool: Pool) -> None:
    unknown = str(uuid.uuid4())

    assert await changed(ledger, unknown, OrderState.REJECTED) is None

    assert await ledger.get(unknown) is None
    assert [m for m in await Outbox(pool).unpublished() if m.key == unknown] == []


async def test_racing_changes_take_exactly_one_path(pool: Pool) -> None:
    order = an_order()
    assert await accepted(OrderLedger(pool), order)

    # Two workers' ledgers (no shared memory), racing on the same order.
    outcomes = await asyncio.gather(
        changed(OrderLedger(pool), order.order_id, OrderState.REJECTED, reason="risk limit"),
        changed(OrderLedger(pool), order.order_id, OrderState.CANCELLED, reason="cancel requested"),
    )

    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1
    row = await OrderLedger(pool).get(order.order_id)
    assert row is not None
    assert (row.state, row.reason) == (winners[0].state, winners[0].reason)
    # One status record for the one change made, none for the refused one.
    records = [m.payload for m in await Outbox(pool).unpublished() if m.key == order.order_id]
    assert records == [b"ACCEPTED", str(row.state).encode()]


async def test_ib_order_ids_are_unique_per_client_id(ledger: OrderLedger) -> None:
    orders = [an_order() for _ in range(3)]
    for order in orders:
        assert await accepted(ledger, order)

    await ledger.reserve_ib_order_ids({orders[0].order_id: 5}, 7)
    await ledger.reserve_ib_order_ids({orders[1].order_id: 5}, 8)  # the same number, another client id
    with pytest.raises(psycopg.errors.UniqueViolation):
        await ledger.reserve_ib_order_ids({orders[2].order_id: 5}, 7)

    first, second, third = [await ledger.get(order.order_id) for order in orders]
    assert first is not None and (first.ib_client_id, first.ib_order_id) == (7, 5)
    assert second is not None and (second.ib_client_id, second.ib_order_id) == (8, 5)
    assert third is not None and (third.state, third.ib_order_id) == (OrderState.ACCEPTED, None)


async def test_an_order_is_reserved_an_ib_order_id_only_once(ledger: OrderLedger) -> None:
    order = an_order()
    assert await accepted(ledger, order)
    assert [ib_id for _, ib_id in await ledger.reserve_ib_order_ids({order.order_id: 50}, 1)] == [50]

    assert await ledger.reserve_ib_order_ids({order.order_id: 60}, 1) == []  # PLACING already

    row = await ledger.get(order.order_id)
    assert row is not None
    assert (row.state, row.ib_order_id) == (OrderState.PLACING, 50)


async def test_reserving_for_an_unknown_order_reserves_nothing(ledger: OrderLedger) -> None:
    unknown = str(uuid.uuid4())

    assert await ledger.reserve_ib_order_ids({unknown: 1}, 1) == []

    assert await ledger.get(unknown) is None


async def test_open_orders_leave_out_final_ones_and_other_workers_orders(ledger: OrderLedger) -> None:
    client_id = 2000 + uuid.uuid4().int % 1000  # a client id no other test uses
    accepted_, placing, rejected = an_order(), an_order(), an_order()
    for order in (accepted_, placing, rejected):
        assert await ledger.record_new([NewOrder(order, OrderState.ACCEPTED)], client_id, status)
    assert await accepted(ledger, an_order())  # another worker's
    await ledger.reserve_ib_order_ids({placing.order_id: 1}, client_id)
    assert await changed(ledger, rejected.order_id, OrderState.REJECTED, reason="unknown instrument")

    open_ids = {row.order_id for row in await ledger.open_orders_owned_by(client_id)}

    assert open_ids == {accepted_.order_id, placing.order_id}
    assert await ledger.count_open_owned_by(client_id) == 2


async def test_an_order_released_as_never_placed_is_accepted_again_without_its_ib_order_id(
        ledger: OrderLedger) -> None:
    order = an_order()
    await placed(ledger, order, ib_order_id=31)

    assert await ledger.release_unplaced(order.order_id) is True
    assert await ledger.release_unplaced(order.order_id) is False  # ACCEPTED now: nothing to release

    row = await ledger.get(order.order_id)
    assert row is not None
    assert (row.state, row.ib_client_id, row.ib_order_id) == (OrderState.ACCEPTED, None, None)
    assert await ledger.highest_ib_order_id(CLIENT_ID) >= 31  # the released id stays spent


async def test_cancel_before_order_is_recorded_and_found(ledger: OrderLedger, pool: Pool) -> None:
    requests = CancelRequests(pool)
    order = an_order()
    cancel = OrderCancelRequested(
        order_id=order.order_id,
        account=order.account,
        requested_at=datetime(2025, 3, 3, 14, 29, tzinfo=UTC),
        reason="strategy stopped",
    )

    recorded = await requests.record(cancel)
    recorded_again = await requests.record(cancel)
    pending = await requests.pending(order.order_id)

    assert recorded is True
    assert recorded_again is False
    assert pending == cancel


async def test_an_order_whose_cancel_came_first_is_recorded_cancelled(ledger: OrderLedger, pool: Pool) -> None:
    order = an_order()
    cancel = OrderCancelRequested(order_id=order.order_id, account=order.account,
                                  requested_at=datetime.now(UTC))
    assert await CancelRequests(pool).record(cancel)

    [row] = await accepted(ledger, order)

    assert row.state is OrderState.CANCELLED
    assert row.reason is not None and row.reason.startswith("CANCELLED_BEFORE_PLACED")
    assert await CancelRequests(pool).pending(order.order_id) is None  # handled with the insert
    assert [m.payload for m in await Outbox(pool).unpublished() if m.key == order.order_id] == [b"CANCELLED"]


async def test_open_orders_with_a_pending_cancel_are_found_until_it_is_handled(
        ledger: OrderLedger, pool: Pool) -> None:
    client_id = 3000 + uuid.uuid4().int % 1000
    requests = CancelRequests(pool)
    order, other = an_order(), an_order()
    for request in (order, other):
        assert await ledger.record_new([NewOrder(request, OrderState.ACCEPTED)], client_id, status)
    await ledger.reserve_ib_order_ids({order.order_id: 1}, client_id)
    assert await requests.record(OrderCancelRequested(order.order_id, order.account, datetime.now(UTC)))

    assert [o.order_id for o in await ledger.open_with_pending_cancel(client_id)] == [order.order_id]

    assert await requests.mark_handled(order.order_id) is True
    assert await requests.mark_handled(order.order_id) is False
    assert await ledger.open_with_pending_cancel(client_id) == []
    assert await requests.pending(order.order_id) is None


async def test_status_record_is_written_with_the_change_and_not_without_it(
    ledger: OrderLedger, pool: Pool
) -> None:
    order = an_order()
    outbox = Outbox(pool)

    assert await accepted(ledger, order)
    assert not await accepted(ledger, order)
    assert await changed(ledger, order.order_id, OrderState.FILLED) is None
    assert await changed(ledger, order.order_id, OrderState.CANCELLED, reason="cancel requested")

    pending = await outbox.unpublished()
    assert [(m.topic, m.key, m.payload) for m in pending if m.key == order.order_id] == [
        ("orders.status", order.order_id, b"ACCEPTED"),
        ("orders.status", order.order_id, b"CANCELLED"),
    ]


async def submitted(ledger: OrderLedger) -> OrderRequested:
    order = an_order()
    await placed(ledger, order)
    assert await changed(ledger, order.order_id, OrderState.SUBMITTED)
    return order


def cancel_pending_behind_the_ledgers_back(database_url: str, order_id: str) -> None:
    """What the order path does when a cancel comes, from another connection."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE orders SET state = 'CANCEL_PENDING' WHERE order_id = %s", (order_id,))


async def test_a_status_applied_while_the_order_changes_is_worked_out_again(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    order = await submitted(ledger)
    outbox = Outbox(pool)
    encoded: list[tuple[OrderState | None, OrderState]] = []

    def status(row: Order, previous: OrderState | None) -> OutboxMessage:
        if not encoded:
            # Between the read and the write, the order path asks for a cancel: the first write loses.
            cancel_pending_behind_the_ledgers_back(database_url, row.order_id)
        encoded.append((previous, row.state))
        return OutboxMessage("orders.status", row.order_id, f"{previous}->{row.state}".encode())

    applied = await OrderLedger(pool).apply([StatusChange(order.order_id, OrderState.FILLED,
                                                           filled=Decimal(100), remaining=Decimal(0))], status)

    assert encoded == [(OrderState.SUBMITTED, OrderState.FILLED), (OrderState.CANCEL_PENDING, OrderState.FILLED)]
    assert [(a.previous, a.order.state) for a in applied] == [(OrderState.CANCEL_PENDING, OrderState.FILLED)]
    row = await ledger.get(order.order_id)
    assert row is not None and row.state is OrderState.FILLED and row.filled_quantity == Decimal(100)
    # One status record: the one written with the change that was applied.
    assert [m.payload for m in await outbox.unpublished()
            if m.key == order.order_id and m.payload.startswith(b"CANCEL")] == [b"CANCEL_PENDING->FILLED"]
    assert not [m for m in await outbox.unpublished() if m.payload == b"SUBMITTED->FILLED"]


async def test_a_status_applied_from_rows_read_before_the_order_changed_is_worked_out_again(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    order = await submitted(ledger)
    batches = OrderLedger(pool)
    read = await batches.read_versions([order.order_id, "not-in-the-ledger"])
    assert set(read) == {order.order_id} and read[order.order_id][0].state is OrderState.SUBMITTED
    # After the read, the order path asks for a cancel: the rows read are stale.
    cancel_pending_behind_the_ledgers_back(database_url, order.order_id)

    def status(row: Order, previous: OrderState | None) -> OutboxMessage:
        return OutboxMessage("orders.status", row.order_id, f"{previous}->{row.state}".encode())

    applied = await batches.apply([StatusChange(order.order_id, OrderState.FILLED, filled=Decimal(100),
                                                remaining=Decimal(0))], status, read)

    assert [(a.previous, a.order.state) for a in applied] == [(OrderState.CANCEL_PENDING, OrderState.FILLED)]
    row = await ledger.get(order.order_id)
    assert row is not None and row.state is OrderState.FILLED
    payloads = [m.payload for m in await Outbox(pool).unpublished() if m.key == order.order_id]
    assert b"CANCEL_PENDING->FILLED" in payloads and b"SUBMITTED->FILLED" not in payloads


async def test_the_highest_ib_order_id_is_the_mark_or_the_ledgers_whichever_is_higher(
        ledger: OrderLedger, pool: Pool, database_url: str) -> None:
    client_id = 40 + uuid.uuid4().int % 1000  # a client id no other test uses
    assert await ledger.highest_ib_order_id(client_id) == 0
    orders = [an_order() for _ in range(3)]
    for order in orders:
        assert await accepted(ledger, order)

    reserved = await ledger.reserve_ib_order_ids({orders[0].order_id: 17, orders[1].order_id: 18}, client_id)

    assert [(row.order_id, row.state, ib_id) for row, ib_id in reserved] == [
        (orders[0].order_id, OrderState.PLACING, 17), (orders[1].order_id, OrderState.PLACING, 18)]
    assert await ledger.highest_ib_order_id(client_id) == 18
    # The mark row lost (restored from an old backup, say): the ledger's own ids still count.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM ib_order_ids WHERE client_id = %s", (client_id,))
    assert await ledger.highest_ib_order_id(client_id) == 18
    # An id handed out again is refused by the ledger, whatever the mark says.
    with pytest.raises(psycopg.errors.UniqueViolation):
        await ledger.reserve_ib_order_ids({orders[2].order_id: 18}, client_id)
