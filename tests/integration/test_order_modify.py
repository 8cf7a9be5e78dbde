"""Modifications of working orders end to end: Kafka, PostgreSQL and the sim gateway over the TWS socket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.harness import AAPL, ACCOUNT, ES, Harness, order, running_harness
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.modifications import ModificationLedger
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.domain.modifications import ModifyState, OrderModifyRequested, WorkingTerms
from workers.domain.orders import OrderType, Side, TimeInForce
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


def market(harness: Harness) -> Decimal:
    return Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))


def placements(harness: Harness, order_id: str) -> int:
    """placeOrder messages the sim received for ``order_id`` (the first and every modification)."""
    return sum(1 for _, request in harness.sim.orders_seen if request.order_ref == order_id)


async def resting_buy(harness: Harness, quantity: str = "7") -> tuple[str, Decimal]:
    price = market(harness)
    request = order(order_type=OrderType.LIMIT, limit=str(price - 5), quantity=quantity, tif=TimeInForce.DAY)
    await harness.send(request)
    await harness.wait_status(request.order_id, "SUBMITTED")
    return request.order_id, price


async def test_a_resting_limit_order_modified_to_a_marketable_price_fills_at_the_new_price(
        harness: Harness) -> None:
    order_id, price = await resting_buy(harness)
    new_limit = price + 1

    modify = await harness.modify(order_id, limit=str(new_limit))

    outcome = await harness.wait_modification(order_id, modify.modify_id)
    assert (outcome["reason"] or "").startswith("MODIFIED: limit_price")
    assert outcome["limit_price"] == new_limit
    filled = await harness.wait_status(order_id, "FILLED")
    assert filled["limit_price"] == new_limit
    await harness.wait_for(lambda: len(harness.observed.fills[order_id]) >= 1, what="the fill")
    assert all(fill["price"] <= new_limit for fill in harness.observed.fills[order_id])
    assert len(harness.modification_statuses(order_id, modify.modify_id)) == 1
    assert placements(harness, order_id) == 2


async def test_the_quantity_of_a_resting_order_is_changed_at_ibkr_and_in_every_later_status(
        harness: Harness) -> None:
    order_id, price = await resting_buy(harness, quantity="7")

    modify = await harness.modify(order_id, quantity="12", tif=TimeInForce.GTC)

    outcome = await harness.wait_modification(order_id, modify.modify_id)
    assert (outcome["quantity"], outcome["remaining_quantity"], outcome["time_in_force"]) == (
        Decimal(12), Decimal(12), "GTC")
    assert outcome["status"] == "SUBMITTED"
    [at_sim] = [o for o in harness.sim.orders() if o.request.order_ref == order_id]
    assert (at_sim.total_quantity, at_sim.tif) == (12, "GTC")
    then = await harness.modify(order_id, limit=str(price + 1))
    await harness.wait_modification(order_id, then.modify_id)
    filled = await harness.wait_status(order_id, "FILLED")
    assert filled["filled_quantity"] == Decimal(12)


async def test_a_modification_of_a_filled_order_is_refused_and_never_reaches_ibkr(harness: Harness) -> None:
    request = order()
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")

    modify = await harness.modify(request.order_id, quantity="20")

    outcome = await harness.wait_modification(request.order_id, modify.modify_id)
    assert (outcome["reason"] or "").startswith("MODIFY_REFUSED: ORDER_DONE")
    assert outcome["status"] == "FILLED"
    assert outcome["quantity"] == Decimal(10)
    assert placements(harness, request.order_id) == 1


async def test_the_same_modify_id_twice_changes_the_order_once(harness: Harness) -> None:
    order_id, price = await resting_buy(harness)
    modify = await harness.modify(order_id, limit=str(price - 4))
    await harness.wait_modification(order_id, modify.modify_id)

    await harness.send_modify(modify)  # the same event again, as a redelivery would bring it
    follow_up = await harness.modify(order_id, limit=str(price - 3))
    await harness.wait_modification(order_id, follow_up.modify_id)

    assert len(harness.modification_statuses(order_id, modify.modify_id)) == 1
    assert placements(harness, order_id) == 3  # the order, the modification, the follow-up: nothing twice


async def test_a_reused_modify_id_with_other_terms_and_an_unknown_order_are_dead_lettered(
        harness: Harness) -> None:
    order_id, price = await resting_buy(harness)
    modify = await harness.modify(order_id, limit=str(price - 4))
    await harness.wait_modification(order_id, modify.modify_id)
    await harness.modify(order_id, modify_id=modify.modify_id, limit=str(price - 2))
    await harness.modify(str(uuid.uuid4()), limit=str(price))

    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 2, what="two dead letters")
    reasons = sorted(dict(r.headers)["error.reason"].decode() for r in harness.observed.dead_letters)
    assert reasons[0].startswith("MODIFY_ID_CONFLICT") and reasons[1].startswith("UNKNOWN_ORDER")
    assert {dict(r.headers)["error.stage"] for r in harness.observed.dead_letters} == {b"modify"}
    assert placements(harness, order_id) == 2


async def test_new_terms_pass_the_pre_trade_rules_again(harness: Harness) -> None:
    order_id, price = await resting_buy(harness)

    modify = await harness.modify(order_id, limit=str(price * 2))  # far outside the price band

    outcome = await harness.wait_modification(order_id, modify.modify_id)
    assert (outcome["reason"] or "").startswith("MODIFY_REFUSED: RISK_RULE: PRICE_OUT_OF_BAND")
    assert outcome["limit_price"] == price - 5
    assert placements(harness, order_id) == 1


async def test_what_ibkr_cannot_change_in_place_is_refused_with_a_reason(harness: Harness) -> None:
    order_id, _ = await resting_buy(harness)

    stop = await harness.modify(order_id, stop="1")
    refused_stop = await harness.wait_modification(order_id, stop.modify_id)
    tif = await harness.modify(order_id, tif=TimeInForce.IOC)
    refused_tif = await harness.wait_modification(order_id, tif.modify_id)

    assert (refused_stop["reason"] or "").startswith("MODIFY_REFUSED: NOT_MODIFIABLE: a LIMIT order has no stop")
    assert (refused_tif["reason"] or "").startswith("MODIFY_REFUSED: NOT_MODIFIABLE: time_in_force DAY -> IOC")
    assert placements(harness, order_id) == 1


async def test_modifications_of_one_order_are_applied_in_the_order_they_came(harness: Harness) -> None:
    order_id, price = await resting_buy(harness)

    first = await harness.modify(order_id, limit=str(price - 4))
    second = await harness.modify(order_id, limit=str(price - 3))
    third = await harness.modify(order_id, quantity="9")

    outcomes = [await harness.wait_modification(order_id, m.modify_id) for m in (first, second, third)]
    assert [o["limit_price"] for o in outcomes] == [price - 4, price - 3, price - 3]
    assert [o["quantity"] for o in outcomes] == [Decimal(7), Decimal(7), Decimal(9)]
    [at_sim] = [o for o in harness.sim.orders() if o.request.order_ref == order_id]
    assert (at_sim.lmt_price, at_sim.total_quantity) == (float(price - 3), 9)


async def _record_as_crashed(harness: Harness, request: OrderModifyRequested, target: WorkingTerms | None) -> None:
    """Leave the ledger as a worker killed after recording ``request`` leaves it: REQUESTED, or (with
    ``target``) SENT with placeOrder never sent."""
    pool = await open_pool(harness.database_url)
    try:
        store = ModificationLedger(pool)
        await store.record(request)
        if target is not None:
            assert await store.mark_sent(request.modify_id, target, 0)
    finally:
        await close_pool(pool)


@pytest.mark.parametrize("state", [ModifyState.REQUESTED, ModifyState.SENT])
async def test_a_modification_the_worker_died_on_is_applied_once_after_the_restart(
        harness: Harness, state: ModifyState) -> None:
    order_id, price = await resting_buy(harness)
    await harness.stop_consumer()
    request = OrderModifyRequested(modify_id=str(uuid.uuid4()), order_id=order_id, account=ACCOUNT,
                                   requested_at=datetime.now(UTC), limit_price=price - 2)
    target = WorkingTerms(Decimal(7), price - 2, None, TimeInForce.DAY) if state is ModifyState.SENT else None
    await _record_as_crashed(harness, request, target)

    await harness.start_consumer()

    outcome = await harness.wait_modification(order_id, request.modify_id)
    assert (outcome["reason"] or "").startswith("MODIFIED: limit_price")
    assert outcome["limit_price"] == price - 2
    [at_sim] = [o for o in harness.sim.orders() if o.request.order_ref == order_id]
    assert at_sim.lmt_price == float(price - 2)
    assert placements(harness, order_id) == 2
    assert len(harness.modification_statuses(order_id, request.modify_id)) == 1


async def test_a_modification_ibkr_applied_before_the_worker_died_is_settled_without_sending_it_again(
        harness: Harness) -> None:
    order_id, price = await resting_buy(harness)
    await harness.stop_consumer()
    request = OrderModifyRequested(modify_id=str(uuid.uuid4()), order_id=order_id, account=ACCOUNT,
                                   requested_at=datetime.now(UTC), limit_price=price - 2)
    await _record_as_crashed(harness, request, WorkingTerms(Decimal(7), price - 2, None, TimeInForce.DAY))
    [at_sim] = [o for o in harness.sim.orders() if o.request.order_ref == order_id]
    await _modify_at_the_sim(harness, at_sim.order_id, order_id, price - 2)

    await harness.start_consumer()

    outcome = await harness.wait_modification(order_id, request.modify_id)
    assert (outcome["reason"] or "").startswith("MODIFIED: limit_price")
    assert placements(harness, order_id) == 2  # the order and the one modification the dead worker sent


async def _modify_at_the_sim(harness: Harness, ib_order_id: int, order_id: str, limit: Decimal) -> None:
    """Re-place the order at the sim as the worker did before it died (with ib_insync, under its client id)."""
    from ib_insync import IB, LimitOrder, Stock

    ib = IB()
    await ib.connectAsync("127.0.0.1", harness.sim_port, clientId=7, timeout=5)
    try:
        contract = Stock(conId=AAPL.con_id, symbol="AAPL", exchange="SMART", currency="USD")
        again = LimitOrder(Side.BUY.value, 7, float(limit), orderId=ib_order_id, orderRef=order_id, tif="DAY",
                           account=ACCOUNT)
        ib.client.placeOrder(ib_order_id, contract, again)
        await harness.wait_for(lambda: any(o.lmt_price == float(limit) for o in harness.sim.orders()
                                           if o.request.order_ref == order_id), what="the sim's order modified")
    finally:
        ib.disconnect()


async def test_a_modification_ibkr_refuses_leaves_the_order_working_with_its_terms(harness: Harness) -> None:
    # The mapper thinks ES ticks in 0.05 (IBKR says 0.25): the guards pass a price IBKR then refuses.
    pool = await open_pool(harness.database_url)
    try:
        await InstrumentMapper(pool).upsert(replace(ES, min_tick=Decimal("0.05")))
    finally:
        await close_pool(pool)
    price = Decimal(str(harness.sim.price(ES.con_id))).quantize(Decimal("0.25"))
    request = order(ES.instrument_id, order_type=OrderType.LIMIT, limit=str(price - 5), quantity="2")
    await harness.send(request)
    await harness.wait_status(request.order_id, "SUBMITTED")

    off_tick = await harness.modify(request.order_id, limit=str(price - 4 - Decimal("0.05")))
    refused = await harness.wait_modification(request.order_id, off_tick.modify_id)
    on_tick = await harness.modify(request.order_id, limit=str(price - 4))
    applied = await harness.wait_modification(request.order_id, on_tick.modify_id)
    await harness.cancel(request.order_id)
    cancelled = await harness.wait_status(request.order_id, "CANCELLED")

    assert (refused["reason"] or "").startswith("MODIFY_REFUSED: IBKR_REFUSED:")
    assert "IBKR error 110" in (refused["reason"] or "")
    assert (refused["status"], refused["limit_price"]) == ("SUBMITTED", price - 5)
    assert (applied["status"], applied["limit_price"]) == ("SUBMITTED", price - 4)
    assert cancelled["limit_price"] == price - 4
    assert harness.status_trail(request.order_id).count("CANCELLED") >= 1
    assert "REJECTED" not in harness.status_trail(request.order_id)


async def test_a_trailing_stop_is_resized_in_place_though_its_stop_moves_with_the_market(harness: Harness) -> None:
    price = market(harness)
    trailing = replace(order(side=Side.SELL, order_type=OrderType.TRAILING_STOP, quantity="4",
                             tif=TimeInForce.GTC), trailing_amount=(price / 2).quantize(Decimal("0.01")))
    await harness.send(trailing)
    await harness.wait_status(trailing.order_id, "SUBMITTED")

    resize = await harness.modify(trailing.order_id, quantity="6")
    outcome = await harness.wait_modification(trailing.order_id, resize.modify_id)

    assert (outcome["reason"] or "").startswith("MODIFIED: quantity 4 -> 6")
    assert (outcome["quantity"], outcome["remaining_quantity"]) == (Decimal(6), Decimal(6))
    [at_sim] = [o for o in harness.sim.orders() if o.request.order_ref == trailing.order_id]
    assert (at_sim.total_quantity, at_sim.order_type) == (6, "TRAIL")


async def test_modifications_whose_text_cannot_be_taken_are_dead_lettered_and_the_order_keeps_its_terms(
        harness: Harness) -> None:
    order_id, price = await resting_buy(harness)
    bad_id = await harness.modify(order_id, limit=str(price - 4), modify_id="m" * 65)
    await harness.modify(order_id, limit=str(price - 4), modify_id="0b8f8c5e-3a1c-4c59-9f4e-8d2f7e1b6a0\x00")
    await harness.send_modify(replace(bad_id, modify_id=str(uuid.uuid4()), account="DU\x07"))
    good = await harness.modify(order_id, limit=str(price - 3))

    outcome = await harness.wait_modification(order_id, good.modify_id)
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 3, what="three dead letters")

    assert outcome["limit_price"] == price - 3
    assert {dict(r.headers)["error.stage"] for r in harness.observed.dead_letters} == {b"validate"}
    reasons = b" ".join(dict(r.headers)["error.reason"] for r in harness.observed.dead_letters)
    assert b"modify_id is 65 characters long" in reasons and b"account contains the control character" in reasons
    assert placements(harness, order_id) == 2


async def test_a_trailing_stops_trail_is_changed_in_place_and_it_sells_on_the_new_trail(harness: Harness) -> None:
    harness.sim.set_price(AAPL.con_id, 200.0)
    trailing = replace(order(side=Side.SELL, order_type=OrderType.TRAILING_STOP, quantity="3", tif=TimeInForce.GTC),
                       trailing_amount=Decimal(10))
    await harness.send(trailing)
    await harness.wait_status(trailing.order_id, "SUBMITTED")

    tighter = await harness.modify(trailing.order_id, trail="2")
    outcome = await harness.wait_modification(trailing.order_id, tighter.modify_id)
    assert (outcome["reason"] or "").startswith("MODIFIED: trailing_amount 10 -> 2")
    percent = await harness.modify(trailing.order_id, trail_percent="1")
    refused = await harness.wait_modification(trailing.order_id, percent.modify_id)
    assert (refused["reason"] or "").startswith("MODIFY_REFUSED: NOT_MODIFIABLE: a TRAILING_STOP order has no "
                                                "trailing_percent")
    harness.sim.set_price(AAPL.con_id, 197.5)  # 2.5 below the high: through the new trail, not the old one

    await harness.wait_status(trailing.order_id, "FILLED")
