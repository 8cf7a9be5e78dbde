"""Pre-trade guards: every rejection reason, and an order that passes them all."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from workers.domain.guards import GuardPolicy, OrderLimits, OrderRejected, RejectReason, check_order
from workers.domain.instruments import Instrument
from workers.domain.orders import OrderRequested, OrderType, Side, TimeInForce
from workers.domain.trading_state import TradingState

AAPL = Instrument(instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK",
                  exchange="SMART", currency="USD", min_tick=Decimal("0.01"))
ES = Instrument(instrument_id="FUT:ES:202612", con_id=1001, symbol="ES", sec_type="FUT", exchange="CME",
                currency="USD", multiplier=Decimal(50), min_tick=Decimal("0.25"))
POLICY = GuardPolicy(allowed_accounts=frozenset({"DU0000001"}))


def limit_order(**changes: object) -> OrderRequested:
    base = OrderRequested(
        order_id=str(uuid.uuid4()), account="DU0000001", instrument_id="STK:AAPL:USD", side=Side.BUY,
        quantity=Decimal(10), order_type=OrderType.LIMIT, limit_price=Decimal("187.25"), stop_price=None,
        time_in_force=TimeInForce.DAY, outside_rth=False, created_at=datetime.now(UTC),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def reason_of(order: OrderRequested, instrument: Instrument | None = AAPL,
              policy: GuardPolicy = POLICY) -> RejectReason:
    with pytest.raises(OrderRejected) as caught:
        check_order(order, instrument, policy)
    assert caught.value.detail  # a sentence a person can act on
    return caught.value.reason


def test_a_valid_order_of_each_type_passes() -> None:
    check_order(limit_order(), AAPL, POLICY)
    check_order(limit_order(order_type=OrderType.MARKET, limit_price=None), AAPL, POLICY)
    check_order(limit_order(order_type=OrderType.STOP, limit_price=None, stop_price=Decimal("180")), AAPL,
                POLICY)
    check_order(limit_order(order_type=OrderType.STOP_LIMIT, stop_price=Decimal("186")), AAPL, POLICY)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"order_id": "not-a-uuid"}, RejectReason.INVALID_ORDER_ID),
    ({"quantity": Decimal(0)}, RejectReason.INVALID_QUANTITY),
    ({"quantity": Decimal(-5)}, RejectReason.INVALID_QUANTITY),
    ({"quantity": Decimal("NaN")}, RejectReason.INVALID_QUANTITY),
    ({"limit_price": None}, RejectReason.MISSING_LIMIT_PRICE),
    ({"order_type": OrderType.MARKET}, RejectReason.UNEXPECTED_LIMIT_PRICE),
    ({"order_type": OrderType.STOP_LIMIT}, RejectReason.MISSING_STOP_PRICE),
    ({"stop_price": Decimal(1)}, RejectReason.UNEXPECTED_STOP_PRICE),
    ({"limit_price": Decimal(-1)}, RejectReason.INVALID_PRICE),
    ({"limit_price": Decimal("187.255")}, RejectReason.PRICE_OFF_TICK),
    ({"account": "DU9999999"}, RejectReason.ACCOUNT_NOT_ALLOWED),
])
def test_each_malformed_order_is_rejected_with_its_reason(changes: dict[str, object],
                                                         reason: RejectReason) -> None:
    assert reason_of(limit_order(**changes)) is reason


def test_unknown_and_inactive_instruments_are_rejected() -> None:
    assert reason_of(limit_order(), instrument=None) is RejectReason.UNKNOWN_INSTRUMENT
    assert reason_of(limit_order(), instrument=replace(AAPL, active=False)) is RejectReason.INACTIVE_INSTRUMENT


def test_a_halted_deployment_rejects_every_new_order() -> None:
    halted = replace(POLICY, trading_state=TradingState.HALTED)
    assert reason_of(limit_order(), policy=halted) is RejectReason.TRADING_HALTED
    # REDUCING needs the position: the risk rules decide (workers.domain.risk), not these guards.
    check_order(limit_order(), AAPL, replace(POLICY, trading_state=TradingState.REDUCING))


def test_global_and_per_instrument_limits() -> None:
    capped = replace(POLICY, global_limits=OrderLimits(max_quantity=Decimal(5)))
    assert reason_of(limit_order(), policy=capped) is RejectReason.MAX_QUANTITY_EXCEEDED
    notional = replace(POLICY, global_limits=OrderLimits(max_notional=Decimal(1000)))
    assert reason_of(limit_order(), policy=notional) is RejectReason.MAX_NOTIONAL_EXCEEDED
    per_instrument = replace(POLICY, instrument_limits={"STK:AAPL:USD": OrderLimits(max_quantity=Decimal(9))})
    assert reason_of(limit_order(), policy=per_instrument) is RejectReason.MAX_QUANTITY_EXCEEDED
    check_order(limit_order(quantity=Decimal(9)), AAPL, per_instrument)


def test_notional_counts_the_contract_multiplier() -> None:
    policy = replace(POLICY, global_limits=OrderLimits(max_notional=Decimal(100_000)))
    es_order = limit_order(instrument_id="FUT:ES:202612", quantity=Decimal(1), limit_price=Decimal("5000.25"))
    with pytest.raises(OrderRejected) as caught:
        check_order(es_order, ES, policy)  # 1 x 5000.25 x 50 = 250,012.50
    assert caught.value.reason is RejectReason.MAX_NOTIONAL_EXCEEDED
    assert "250012.50" in caught.value.detail
