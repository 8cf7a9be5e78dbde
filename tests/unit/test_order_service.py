"""The order service on in-memory ports: intake, redelivery, cancels, IBKR's reports, reconciliation and the
placement watchdog, without Kafka, PostgreSQL or a TWS socket (those are crossed in tests/integration)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tests.unit.order_service_fakes import (
    AAPL,
    ACCOUNT,
    FakeIbkr,
    FixedPrices,
    InMemoryCancelRequests,
    InMemoryLedger,
    InMemoryModifications,
    InMemoryOutbox,
    InMemoryPositions,
    KnownInstruments,
    PlainEvents,
    an_execution,
    an_order,
    ib_status,
)
from workers.domain.brackets import STOP_LOSS, TAKE_PROFIT, child_order_id
from workers.domain.guards import GuardPolicy, OrderLimits
from workers.domain.modifications import ModifyState, OrderModifyRequested
from workers.domain.orders import (
    NewOrder,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    StatusChange,
)
from workers.domain.risk import OrderRate
from workers.domain.trading_state import TradingState
from workers.ports.ibkr import ConnectionChanged, IbCommission, IbError, IbOrderTerms, IbPosition, IbTerms
from workers.service_layer.orders.intake import OrderSource
from workers.service_layer.orders.service import OrderService

CREATED = datetime(2026, 1, 5, 15, tzinfo=UTC)  # an_order's created_at


@dataclass
class World:
    """An order service wired to in-memory ports, and the switches a test flips."""

    service: OrderService
    ledger: InMemoryLedger
    modifications: InMemoryModifications
    cancels: InMemoryCancelRequests
    ibkr: FakeIbkr
    positions: InMemoryPositions
    trading: dict[str, TradingState]
    prices: FixedPrices
    clock: dict[str, Any]


def a_world(*, readonly: bool = False, next_valid_id: int = 1, policy: GuardPolicy | None = None,
            rate: OrderRate | None = None) -> World:
    cancels = InMemoryCancelRequests()
    ledger = InMemoryLedger(cancels)
    ibkr = FakeIbkr(next_valid_id_at_connect=next_valid_id)
    positions = InMemoryPositions()
    trading = {"state": TradingState.ACTIVE}
    base = policy or GuardPolicy(allowed_accounts=frozenset({ACCOUNT}))
    clock = {"now": CREATED + timedelta(seconds=1)}
    prices = FixedPrices(time.monotonic)
    modifications = InMemoryModifications(ledger)
    service = OrderService(
        ledger=ledger, cancel_requests=cancels, fills=ledger, outbox=InMemoryOutbox(ledger), positions=positions,
        instruments=KnownInstruments(AAPL), broker=ibkr, events=PlainEvents(), policy=lambda: base,
        readonly=readonly, prices=prices, rate=rate, clock=lambda: clock["now"],
        trading_state=lambda: trading["state"], modifications=modifications,
    )
    return World(service, ledger, modifications, cancels, ibkr, positions, trading, prices, clock)


async def receive(world: World, *orders: OrderRequested) -> None:
    await world.service.on_orders_requested([(order, OrderSource("orders.requested", 0, n))
                                             for n, order in enumerate(orders)])


@asynccontextmanager
async def placer_running(world: World) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(world.service.run_placer(stop))
    try:
        yield
    finally:
        stop.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(condition: object, what: str) -> None:
    for _ in range(200):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


# -- intake -----------------------------------------------------------------------------------------------


async def test_an_order_is_recorded_before_it_is_placed_and_placed_once() -> None:
    world = a_world(next_valid_id=100)
    await world.service.reconcile()
    order = an_order()

    await receive(world, order)

    stored = world.ledger.orders[order.order_id]
    assert (stored.state, stored.ib_client_id, stored.ib_order_id) == (OrderState.PLACING, 7, 100)
    assert world.ibkr.placed == [(order.order_id, 100)]
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED"]
    assert world.service.unanswered == 1


async def test_a_redelivered_order_is_not_placed_again_and_its_status_is_published_again() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)

    await receive(world, order)

    assert world.ibkr.placements_of(order.order_id) == [1]
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED", "ACCEPTED"]


async def test_a_redelivered_order_filled_while_its_status_was_read_is_not_announced_as_accepted_after(
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    read_versions = world.ledger.read_versions

    async def read_then_filled(order_ids: Any) -> Any:
        # IBKR's reports are handled while the redelivery is: the order fills between read and write.
        read = await read_versions(order_ids)
        await world.ledger.apply([StatusChange(order.order_id, OrderState.SUBMITTED),
                                  StatusChange(order.order_id, OrderState.FILLED, filled=Decimal(10),
                                               remaining=Decimal(0), avg_price=Decimal("187.2"))],
                                 PlainEvents().status)
        return read

    monkeypatch.setattr(world.ledger, "read_versions", read_then_filled)
    await receive(world, order)

    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED", "SUBMITTED", "FILLED"]


async def test_an_order_twice_in_one_batch_is_recorded_and_placed_once() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()

    await receive(world, order, order)

    assert world.ibkr.placements_of(order.order_id) == [1]
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED", "ACCEPTED"]


async def test_orders_of_one_batch_take_increasing_ib_order_ids_in_their_order() -> None:
    world = a_world(next_valid_id=40)
    await world.service.reconcile()
    orders = [an_order(n) for n in range(1, 6)]

    await receive(world, *orders)

    assert world.ibkr.placed == [(order.order_id, 40 + n) for n, order in enumerate(orders)]


async def test_an_order_for_an_account_not_allowed_is_rejected_and_never_placed() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order(account="DU9999999")

    await receive(world, order)

    stored = world.ledger.orders[order.order_id]
    assert stored.state is OrderState.REJECTED
    assert stored.reason is not None and stored.reason.startswith("ACCOUNT_NOT_ALLOWED")
    assert world.ibkr.placed == []
    assert world.ledger.statuses_of(order.order_id) == ["REJECTED"]


async def test_an_order_whose_id_is_not_a_uuid_is_announced_rejected_and_not_recorded() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order(order_id="not-a-uuid")

    await receive(world, order)

    assert order.order_id not in world.ledger.orders
    [record] = world.ledger.statuses_of(order.order_id)
    assert record.startswith("REJECTED INVALID_ORDER_ID")
    assert world.ibkr.placed == []


async def test_orders_received_before_reconciliation_are_placed_once_it_has_run() -> None:
    world = a_world(next_valid_id=5)
    order = an_order()
    async with placer_running(world):
        await receive(world, order)
        assert world.ledger.orders[order.order_id].state is OrderState.ACCEPTED
        await asyncio.sleep(0.02)
        assert world.ibkr.placed == []

        await world.service.reconcile()
        await until(lambda: world.ibkr.placed, "the order placed")

    assert world.ibkr.placed == [(order.order_id, 5)]


async def test_a_readonly_worker_records_orders_and_never_places_them() -> None:
    world = a_world(readonly=True)
    await world.service.reconcile()
    order = an_order()

    async with placer_running(world):
        await receive(world, order)
        await asyncio.sleep(0.02)

    assert world.ledger.orders[order.order_id].state is OrderState.ACCEPTED
    assert world.ibkr.placed == []


async def test_orders_reserved_when_trading_is_halted_are_cancelled_unsent() -> None:
    world = a_world()
    order = an_order()
    async with placer_running(world):
        await receive(world, order)  # not reconciled yet: queued ACCEPTED
        world.trading["state"] = TradingState.HALTED
        await world.service.reconcile()
        await until(lambda: world.ledger.orders[order.order_id].state is OrderState.CANCELLED, "the cancel")

    stored = world.ledger.orders[order.order_id]
    assert stored.reason is not None and stored.reason.startswith("TRADING_HALTED")
    assert world.ibkr.placed == []


@pytest.mark.parametrize(("state", "code"), [(TradingState.HALTED, "TRADING_HALTED"),
                                             (TradingState.REDUCING, "TRADING_REDUCING")])
async def test_new_orders_are_rejected_while_trading_is_not_active(state: TradingState, code: str) -> None:
    world = a_world()
    await world.service.reconcile()
    world.trading["state"] = state
    order = an_order()

    await receive(world, order)

    stored = world.ledger.orders[order.order_id]
    assert stored.state is OrderState.REJECTED
    assert stored.reason is not None and stored.reason.startswith(f"{code}: trading is {state}")
    assert world.ibkr.placed == []


# -- cancels ----------------------------------------------------------------------------------------------


def a_cancel(order: OrderRequested, account: str = ACCOUNT) -> OrderCancelRequested:
    return OrderCancelRequested(order.order_id, account, order.created_at, reason="strategy stopped")


async def test_a_cancel_before_its_order_cancels_the_order_when_it_arrives() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()

    await world.service.on_cancel_requested(a_cancel(order))
    await receive(world, order)

    assert world.ledger.orders[order.order_id].state is OrderState.CANCELLED
    assert world.ibkr.placed == []
    assert world.ledger.statuses_of(order.order_id) == ["CANCELLED"]


async def test_a_cancel_of_a_placed_order_goes_to_ibkr_after_the_order_is_cancel_pending() -> None:
    world = a_world(next_valid_id=30)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)

    await world.service.on_cancel_requested(a_cancel(order))

    assert world.ibkr.cancelled == [30]
    assert world.ledger.orders[order.order_id].state is OrderState.CANCEL_PENDING
    assert await world.cancels.pending(order.order_id) is None


async def test_a_cancel_naming_another_account_is_ignored() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)

    await world.service.on_cancel_requested(a_cancel(order, account="DU7777777"))

    assert world.ibkr.cancelled == []
    assert world.ledger.orders[order.order_id].state is OrderState.PLACING


async def test_a_cancel_of_another_workers_order_is_left_pending_for_its_owner() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()
    await world.ledger.record_new([NewOrder(order, OrderState.ACCEPTED)], 99, PlainEvents().status)
    await world.ledger.reserve_ib_order_ids({order.order_id: 500}, 99)

    await world.service.on_cancel_requested(a_cancel(order))
    await world.service.sweep_cancels()

    assert world.ibkr.cancelled == []
    assert await world.cancels.pending(order.order_id) is not None


async def test_a_cancel_while_ibkr_is_away_is_sent_by_the_sweep_once_connected() -> None:
    world = a_world(next_valid_id=60)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    world.ibkr.connected = False

    await world.service.on_cancel_requested(a_cancel(order))
    assert world.ibkr.cancelled == []
    world.ibkr.connected = True
    await world.service.sweep_cancels()

    assert world.ibkr.cancelled == [60]


async def test_a_global_cancel_is_sent_only_when_asked_for_never_on_halted() -> None:
    world = a_world()
    world.trading["state"] = TradingState.HALTED
    await world.service.reconcile()
    assert world.ibkr.global_cancels == 0

    await world.service.global_cancel()

    assert world.ibkr.global_cancels == 1


# -- IBKR's reports ---------------------------------------------------------------------------------------


async def test_ibkr_reports_take_an_order_to_filled_with_its_fill_recorded_once() -> None:
    world = a_world(next_valid_id=10)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    execution = an_execution(order.order_id, 10, "0001.01")

    await world.service.on_reports([
        ib_status(order.order_id, 10, StatusChange(order.order_id, OrderState.SUBMITTED, perm_id=9010)),
        execution, IbCommission("0001.01", Decimal("1.25"), "USD"),
        ib_status(order.order_id, 10, StatusChange(order.order_id, OrderState.FILLED, filled=Decimal(10),
                                                   remaining=Decimal(0), avg_price=Decimal("187.5")),
                  "Filled", Decimal(10), Decimal(0)),
    ])
    await world.service.on_reports([execution])  # replayed after a reconnect

    stored = world.ledger.orders[order.order_id]
    assert (stored.state, stored.filled_quantity, stored.ib_perm_id) == (OrderState.FILLED, Decimal(10), 9010)
    assert list(world.ledger.fills) == ["0001.01"]
    assert world.ledger.fills["0001.01"].commission == Decimal("1.25")
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED", "SUBMITTED", "FILLED"]
    assert world.service.unanswered == 0


async def test_a_late_status_never_takes_a_filled_order_back() -> None:
    world = a_world(next_valid_id=10)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    await world.service.on_reports([ib_status(order.order_id, 10, StatusChange(
        order.order_id, OrderState.FILLED, filled=Decimal(10), remaining=Decimal(0)), "Filled")])

    await world.service.on_reports([ib_status(order.order_id, 10, StatusChange(order.order_id,
                                                                                OrderState.SUBMITTED))])

    assert world.ledger.orders[order.order_id].state is OrderState.FILLED
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED", "FILLED"]


async def test_a_corrected_execution_names_the_fill_it_corrects() -> None:
    world = a_world(next_valid_id=10)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    await world.service.on_reports([an_execution(order.order_id, 10, "0002.01")])

    await world.service.on_reports([an_execution(order.order_id, 10, "0002.02")])

    assert world.ledger.fills["0002.02"].corrects_fill_id == "0002.01"
    assert world.ledger.fills["0002.01"].corrects_fill_id is None


async def test_executions_of_orders_not_in_the_ledger_are_not_recorded() -> None:
    world = a_world()
    await world.service.reconcile()

    await world.service.on_reports([an_execution("someone-elses", 3, "0003.01")])

    assert world.ledger.fills == {}


async def test_positions_are_stored_with_their_instrument() -> None:
    world = a_world()

    await world.service.on_reports([IbPosition(ACCOUNT, AAPL.con_id, Decimal(7), Decimal("187"), "USD"),
                                    IbPosition(ACCOUNT, 1, Decimal(2), Decimal("5"), "USD")])

    assert world.positions.positions[(ACCOUNT, AAPL.con_id)].instrument_id == AAPL.instrument_id
    assert world.positions.positions[(ACCOUNT, AAPL.con_id)].quantity == Decimal(7)
    assert world.positions.positions[(ACCOUNT, 1)].instrument_id is None


async def test_losing_the_connection_closes_placement_until_reconciled_again() -> None:
    world = a_world()
    await world.service.reconcile()
    assert world.service.reconciled

    await world.service.on_reports([ConnectionChanged(connected=False)])

    assert not world.service.reconciled


# -- reconciliation ---------------------------------------------------------------------------------------


async def test_ib_order_ids_start_above_every_id_ever_reserved_and_above_ibkrs_next_valid_id() -> None:
    world = a_world(next_valid_id=3)
    world.ledger.marks[7] = 41  # reserved before a restart, never used
    await world.service.reconcile()
    order = an_order()

    await receive(world, order)

    assert world.ibkr.placements_of(order.order_id) == [42]


async def test_reconciliation_places_again_under_a_new_id_an_order_ibkr_never_received() -> None:
    world = a_world(next_valid_id=20)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    assert world.ibkr.placements_of(order.order_id) == [20]
    world.ibkr.placed.clear()  # IBKR never got it (say the gateway restarted): it knows no such order

    async with placer_running(world):
        await world.service.reconcile()
        await until(lambda: world.ibkr.placed, "the order placed again")

    assert world.ibkr.placements_of(order.order_id) == [21]
    assert world.ledger.orders[order.order_id].ib_order_id == 21


async def test_reconciliation_applies_ibkrs_status_and_never_places_an_order_ibkr_knows() -> None:
    world = a_world(next_valid_id=20)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    world.ibkr.at_ibkr[order.order_id] = ib_status(order.order_id, 20, StatusChange(
        order.order_id, OrderState.FILLED, filled=Decimal(10), remaining=Decimal(0)), "Filled")
    world.ibkr.executions_at_ibkr.append(an_execution(order.order_id, 20, "0004.01"))

    async with placer_running(world):
        await world.service.reconcile()
        await asyncio.sleep(0.02)

    assert world.ibkr.placements_of(order.order_id) == [20]
    assert world.ledger.orders[order.order_id].state is OrderState.FILLED
    assert list(world.ledger.fills) == ["0004.01"]


async def test_a_working_order_ibkr_does_not_know_is_left_as_it_is_for_an_operator() -> None:
    world = a_world(next_valid_id=20)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    await world.service.on_reports([ib_status(order.order_id, 20, StatusChange(order.order_id,
                                                                                OrderState.SUBMITTED))])

    async with placer_running(world):
        await world.service.reconcile()
        await asyncio.sleep(0.02)

    assert world.ledger.orders[order.order_id].state is OrderState.SUBMITTED
    assert world.ibkr.placements_of(order.order_id) == [20]


# -- the placement watchdog -------------------------------------------------------------------------------


async def test_the_watchdog_places_again_an_order_ibkr_never_answered_nor_received() -> None:
    world = a_world(next_valid_id=70)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)

    async with placer_running(world):
        assert await world.service.check_unanswered(answer_within=0.0) == 1
        await until(lambda: len(world.ibkr.placed) == 2, "the order placed again")

    assert world.ibkr.placements_of(order.order_id) == [70, 71]


async def test_the_watchdog_applies_ibkrs_status_of_an_order_ibkr_received_but_did_not_answer() -> None:
    world = a_world(next_valid_id=70)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    world.ibkr.at_ibkr[order.order_id] = ib_status(order.order_id, 70, StatusChange(order.order_id,
                                                                                     OrderState.SUBMITTED))

    assert await world.service.check_unanswered(answer_within=0.0) == 0

    assert world.ledger.orders[order.order_id].state is OrderState.SUBMITTED
    assert world.ibkr.placements_of(order.order_id) == [70]
    assert world.service.unanswered == 0


async def test_a_redelivered_order_left_placing_and_unsent_goes_to_the_watchdog() -> None:
    world = a_world(next_valid_id=70)
    await world.service.reconcile()
    order = an_order()
    # Recorded PLACING by a statement whose answer was lost: never sent.
    await world.ledger.record_new([NewOrder(order, OrderState.ACCEPTED)], 7, PlainEvents().status,
                                  {order.order_id: 500})

    await receive(world, order)

    assert world.ibkr.placed == []
    assert world.service.unanswered == 1


async def test_an_error_100_makes_the_watchdog_look_soon() -> None:
    world = a_world(next_valid_id=70)
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)
    stop = asyncio.Event()
    watchdog = asyncio.create_task(world.service.run_placement_watchdog(stop, answer_within=0.01, every=60))
    async with placer_running(world):
        await world.service.on_reports([IbError(-1, 100, "Max rate of messages per second has been exceeded")])
        await until(lambda: len(world.ibkr.placed) == 2, "the order placed again")
    stop.set()
    watchdog.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watchdog

    assert world.ibkr.placements_of(order.order_id) == [70, 71]


# -- risk rules through the service -----------------------------------------------------------------------


async def test_a_fat_finger_limit_is_rejected_against_ibkrs_market_price_and_never_placed() -> None:
    world = a_world(policy=GuardPolicy(allowed_accounts=frozenset({ACCOUNT}),
                                       global_limits=OrderLimits(price_band=Decimal("0.10"))))
    world.prices.set(AAPL.con_id, bid="187.40", ask="187.50")
    await world.service.reconcile()
    fat = an_order(1, order_type=OrderType.LIMIT, limit_price=Decimal("562.50"))
    fine = an_order(2, order_type=OrderType.LIMIT, limit_price=Decimal("187.50"))

    await receive(world, fat, fine)

    stored = world.ledger.orders[fat.order_id]
    assert stored.state is OrderState.REJECTED
    assert stored.reason is not None and stored.reason.startswith("PRICE_OUT_OF_BAND: BUY limit_price 562.50")
    assert world.ibkr.placed == [(fine.order_id, 1)]
    assert world.prices.asked == [AAPL.con_id]  # one look at the market for the batch


async def test_an_order_that_waited_for_ibkr_past_the_maximum_age_is_rejected_not_placed() -> None:
    world = a_world(policy=GuardPolicy(allowed_accounts=frozenset({ACCOUNT}), max_order_age=timedelta(seconds=60)))
    order = an_order()
    async with placer_running(world):
        await receive(world, order)  # IBKR away: accepted, waiting
        assert world.ledger.orders[order.order_id].state is OrderState.ACCEPTED
        world.clock["now"] = CREATED + timedelta(minutes=10)
        await world.service.reconcile()
        await until(lambda: world.ledger.orders[order.order_id].state is OrderState.REJECTED, "the rejection")

    reason = world.ledger.orders[order.order_id].reason
    assert reason is not None and reason.startswith("STALE_ORDER")
    assert world.ibkr.placed == []


async def test_orders_of_one_batch_count_against_each_others_position_limit() -> None:
    world = a_world(policy=GuardPolicy(allowed_accounts=frozenset({ACCOUNT}),
                                       global_limits=OrderLimits(max_position=Decimal(25))))
    await world.service.reconcile()
    await world.service.on_reports([IbPosition(ACCOUNT, AAPL.con_id, Decimal(5), Decimal("187"), "USD")])
    first, second, third = (an_order(n, quantity=Decimal(10)) for n in (1, 2, 3))

    await receive(world, first, second, third)  # 5 + 10 + 10 = 25: the third would make 35

    states = [world.ledger.orders[o.order_id].state for o in (first, second, third)]
    assert states == [OrderState.PLACING, OrderState.PLACING, OrderState.REJECTED]
    reason = world.ledger.orders[third.order_id].reason
    assert reason is not None and reason.startswith("MAX_POSITION_EXCEEDED")
    closing = an_order(4, side=Side.SELL, quantity=Decimal(5))
    await receive(world, closing)  # reduces the position: passes whatever the limit
    assert world.ledger.orders[closing.order_id].state is OrderState.PLACING


async def test_orders_over_the_accounts_rate_are_rejected_at_once() -> None:
    world = a_world(rate=OrderRate(per_second=1, burst=2, clock=lambda: 0.0))
    await world.service.reconcile()
    orders = [an_order(n) for n in range(1, 5)]

    await receive(world, *orders)

    states = [world.ledger.orders[o.order_id].state for o in orders]
    assert states == [OrderState.PLACING, OrderState.PLACING, OrderState.REJECTED, OrderState.REJECTED]
    assert len(world.ibkr.placed) == 2


async def test_a_known_order_id_with_other_terms_is_a_conflict_and_the_order_is_left_as_it_is() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order(quantity=Decimal(1))
    await receive(world, order)
    before = world.ledger.orders[order.order_id]

    conflicts = await world.service.on_orders_requested(
        [(replace(order, quantity=Decimal(7), side=Side.SELL), OrderSource("orders.requested", 3, 99))])

    [conflict] = conflicts
    assert conflict.fields == ("side", "quantity")
    assert (conflict.source.partition, conflict.source.offset) == (3, 99)
    assert conflict.reason.startswith("ORDER_ID_CONFLICT: ") and "side, quantity" in conflict.reason
    assert world.ledger.orders[order.order_id] == before
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED"]  # no status for the conflicting request
    assert world.ibkr.placements_of(order.order_id) == [1]


async def test_the_same_order_again_with_a_new_created_at_and_source_is_a_redelivery() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()
    await receive(world, order)

    conflicts = await world.service.on_orders_requested(
        [(replace(order, created_at=CREATED + timedelta(seconds=5), source="retry"), OrderSource())])

    assert conflicts == []
    assert world.ledger.statuses_of(order.order_id) == ["ACCEPTED", "ACCEPTED"]


async def test_a_second_order_under_the_same_id_in_one_batch_is_a_conflict() -> None:
    world = a_world()
    await world.service.reconcile()
    order = an_order()

    conflicts = await world.service.on_orders_requested([
        (order, OrderSource("orders.requested", 0, 1)),
        (replace(order, limit_price=Decimal(5), order_type=OrderType.LIMIT), OrderSource("orders.requested", 0, 2)),
    ])

    assert [(c.source.offset, c.fields) for c in conflicts] == [(2, ("order_type", "limit_price"))]
    assert world.ibkr.placements_of(order.order_id) == [1]


async def test_a_redelivered_order_gives_back_the_rate_token_it_took() -> None:
    world = a_world(rate=OrderRate(per_second=0.001, burst=2, clock=lambda: 0.0))
    await world.service.reconcile()
    first = an_order(1)
    await receive(world, first)

    await receive(world, first)  # redelivered: its token comes back
    second = an_order(2)
    await receive(world, second)

    assert world.ledger.orders[second.order_id].state is OrderState.PLACING


# -- brackets ---------------------------------------------------------------------------------------------


def a_bracket(n: int = 1) -> OrderRequested:
    return an_order(n, order_type=OrderType.LIMIT, limit_price=Decimal("180"),
                    take_profit_price=Decimal("190"), stop_loss_price=Decimal("175"))


async def test_a_bracket_is_recorded_with_its_children_and_sent_as_one_group() -> None:
    world = a_world(next_valid_id=30)
    await world.service.reconcile()
    parent = a_bracket()
    take_profit, stop_loss = (child_order_id(parent.order_id, leg) for leg in (TAKE_PROFIT, STOP_LOSS))

    await receive(world, parent)

    assert world.ibkr.sent == [(parent.order_id, 30, None, False), (take_profit, 31, 30, False),
                               (stop_loss, 32, 30, True)]
    children = [world.ledger.orders[i] for i in (take_profit, stop_loss)]
    assert [(c.side, c.order_type, c.parent_order_id) for c in children] == [
        (Side.SELL, OrderType.LIMIT, parent.order_id), (Side.SELL, OrderType.STOP, parent.order_id)]
    assert (children[0].limit_price, children[1].stop_price) == (Decimal("190"), Decimal("175"))


async def test_a_bracket_that_waited_for_ibkr_is_sent_as_one_group_once_reconciled() -> None:
    world = a_world(next_valid_id=40)
    parent = a_bracket()
    async with placer_running(world):
        await receive(world, parent)
        await world.service.reconcile()
        await until(lambda: len(world.ibkr.sent) == 3, "the group sent")

    assert [(parent_id, transmit) for _, _, parent_id, transmit in world.ibkr.sent] == [
        (None, False), (40, False), (40, True)]


async def test_a_bracket_half_sent_before_a_crash_is_completed_and_its_parent_never_sent_twice() -> None:
    world = a_world(next_valid_id=50)
    await world.service.reconcile()
    parent = a_bracket()
    await receive(world, parent)
    # IBKR got the parent (held: not transmitted), never its children.
    world.ibkr.at_ibkr[parent.order_id] = ib_status(parent.order_id, 50, StatusChange(
        parent.order_id, OrderState.SUBMITTED), "PreSubmitted")
    world.ibkr.sent.clear()

    async with placer_running(world):
        await world.service.reconcile()
        await until(lambda: len(world.ibkr.sent) == 2, "the children sent again")

    (tp, tp_id, tp_parent, tp_transmit), (sl, sl_id, sl_parent, sl_transmit) = world.ibkr.sent
    assert (tp, sl) == tuple(child_order_id(parent.order_id, leg) for leg in (TAKE_PROFIT, STOP_LOSS))
    assert (tp_parent, sl_parent, tp_transmit, sl_transmit) == (50, 50, False, True)
    assert tp_id > 52 and sl_id == tp_id + 1  # new ids: the reserved ones are never reused
    assert parent.order_id not in {s[0] for s in world.ibkr.sent}


async def test_a_brackets_parent_rejected_before_placing_takes_its_children_with_it() -> None:
    world = a_world(policy=GuardPolicy(allowed_accounts=frozenset({ACCOUNT}), max_order_age=timedelta(seconds=60)))
    parent = a_bracket()
    async with placer_running(world):
        await receive(world, parent)  # IBKR away: the group waits
        world.clock["now"] = CREATED + timedelta(minutes=10)
        await world.service.reconcile()
        await until(lambda: all(o.state is OrderState.REJECTED for o in world.ledger.orders.values()),
                    "the group rejected")

    assert len(world.ledger.orders) == 3
    assert world.ibkr.sent == []


async def test_a_brackets_parent_cancelled_before_it_was_placed_cancels_its_children() -> None:
    world = a_world()
    parent = a_bracket()
    await receive(world, parent)  # not reconciled: ACCEPTED, unsent

    await world.service.on_cancel_requested(OrderCancelRequested(parent.order_id, ACCOUNT, CREATED))

    assert {o.state for o in world.ledger.orders.values()} == {OrderState.CANCELLED}
    assert world.ibkr.sent == []


async def test_a_bracket_child_rejected_by_ibkr_before_the_parent_filled_cancels_the_parent() -> None:
    world = a_world(next_valid_id=60)
    await world.service.reconcile()
    parent = a_bracket()
    await receive(world, parent)
    stop_loss = child_order_id(parent.order_id, STOP_LOSS)

    await world.service.on_reports([ib_status(stop_loss, 62, StatusChange(
        stop_loss, OrderState.REJECTED, reason="IBKR_REJECTED: no"), "Inactive")])
    await until(lambda: world.ibkr.cancelled, "the parent's cancel")

    assert world.ibkr.cancelled == [60]
    assert world.ledger.orders[parent.order_id].state is OrderState.CANCEL_PENDING


async def test_a_bracket_child_rejected_after_the_parent_filled_leaves_the_parent_alone() -> None:
    world = a_world(next_valid_id=70)
    await world.service.reconcile()
    parent = a_bracket()
    await receive(world, parent)
    stop_loss = child_order_id(parent.order_id, STOP_LOSS)
    await world.service.on_reports([ib_status(parent.order_id, 70, StatusChange(
        parent.order_id, OrderState.FILLED, filled=Decimal(10), remaining=Decimal(0)), "Filled", Decimal(10),
        Decimal(0))])

    await world.service.on_reports([ib_status(stop_loss, 72, StatusChange(
        stop_loss, OrderState.REJECTED, reason="IBKR_REJECTED: no"), "Inactive")])
    await asyncio.sleep(0.02)

    assert world.ibkr.cancelled == []


# -- modifications ----------------------------------------------------------------------------------------


def a_modification(order: OrderRequested, n: int = 1, **terms: object) -> OrderModifyRequested:
    request = OrderModifyRequested(modify_id=f"m-{n}", order_id=order.order_id, account=ACCOUNT,
                                   requested_at=CREATED + timedelta(seconds=1))
    return replace(request, **terms)  # type: ignore[arg-type]


async def working_limit_order(world: World, next_id: int) -> OrderRequested:
    await world.service.reconcile()
    order = an_order(order_type=OrderType.LIMIT, limit_price=Decimal("180"))
    await receive(world, order)
    await world.service.on_reports([ib_status(order.order_id, next_id, StatusChange(order.order_id,
                                                                                    OrderState.SUBMITTED))])
    return order


async def test_a_modification_is_sent_once_and_applied_when_ibkr_states_the_new_terms() -> None:
    world = a_world(next_valid_id=80)
    order = await working_limit_order(world, 80)
    request = a_modification(order, limit_price=Decimal("181"))

    await world.service.on_modify_requested(request)
    await world.service.on_modify_requested(request)  # redelivered while IBKR has not answered

    assert world.ibkr.modified == [(order.order_id, 80, Decimal(10), Decimal("181"))]
    assert world.modifications.modifications["m-1"].state is ModifyState.SENT
    await world.service.on_reports([IbOrderTerms(order.order_id, 80, IbTerms(Decimal(10), Decimal("181"), None,
                                                                             "DAY"))])
    assert world.modifications.modifications["m-1"].state is ModifyState.APPLIED
    assert world.ledger.orders[order.order_id].limit_price == Decimal("181")
    assert world.ledger.orders[order.order_id].as_requested.limit_price == Decimal("180")


async def test_the_next_modification_waits_for_ibkrs_answer_to_the_one_before() -> None:
    world = a_world(next_valid_id=90)
    order = await working_limit_order(world, 90)

    await world.service.on_modify_requested(a_modification(order, 1, limit_price=Decimal("181")))
    await world.service.on_modify_requested(a_modification(order, 2, quantity=Decimal(12)))
    assert len(world.ibkr.modified) == 1
    await world.service.on_reports([IbError(90, 201, "Order rejected - reason: no")])

    assert world.modifications.modifications["m-1"].state is ModifyState.REFUSED
    assert (world.modifications.modifications["m-1"].reason or "").startswith("MODIFY_REFUSED: IBKR_REFUSED")
    assert world.ibkr.modified[-1] == (order.order_id, 90, Decimal(12), Decimal("180"))


async def test_a_modification_of_an_order_ibkr_did_not_know_at_the_reconnect_is_refused_never_placed() -> None:
    world = a_world(next_valid_id=100)
    order = await working_limit_order(world, 100)
    await world.service.reconcile()  # IBKR's orders (at_ibkr) do not include it: left for an operator

    await world.service.on_modify_requested(a_modification(order, limit_price=Decimal("181")))

    assert world.ibkr.modified == []
    assert (world.modifications.modifications["m-1"].reason or "").startswith("MODIFY_REFUSED: NOT_CONFIRMED")
