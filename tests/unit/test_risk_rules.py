"""The risk rules of workers.domain.risk as pure functions: reference prices, the price band, stale orders,
the size increment, position limits and the order rate."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.unit.order_service_fakes import AAPL, an_order
from workers.domain.guards import GuardPolicy, OrderLimits, OrderRejected, RejectReason
from workers.domain.orders import OrderType, Side
from workers.domain.risk import MarketView, OrderRate, Quote, check_risk, reduces_position
from workers.domain.trading_state import TradingState

D = Decimal
NOW = datetime(2026, 1, 5, 15, 0, 30, tzinfo=UTC)
QUOTE = Quote(bid=D("99.90"), ask=D("100.10"), last=D("100"), close=D("98"), age_seconds=1.0)
POLICY = GuardPolicy(allowed_accounts=frozenset({"DU0000001"}))
NO_VIEW = MarketView()


def rejected(reason: RejectReason, order: object, policy: GuardPolicy = POLICY, view: MarketView = NO_VIEW,
             instrument: object = AAPL) -> OrderRejected:
    with pytest.raises(OrderRejected) as caught:
        check_risk(order, instrument, policy, view, NOW)  # type: ignore[arg-type]
    assert caught.value.reason is reason
    return caught.value


def passes(order: object, policy: GuardPolicy = POLICY, view: MarketView = NO_VIEW,
           instrument: object = AAPL) -> list[str]:
    return check_risk(order, instrument, policy, view, NOW)  # type: ignore[arg-type]


def limit(side: Side, price: str, **changes: object) -> object:
    return an_order(side=side, order_type=OrderType.LIMIT, limit_price=D(price), **changes)


def stop(side: Side, price: str) -> object:
    return an_order(side=side, order_type=OrderType.STOP, stop_price=D(price))


BANDED = replace(POLICY, global_limits=OrderLimits(price_band=D("0.10")))


# -- reference prices -------------------------------------------------------------------------------------


def test_the_reference_is_the_ask_for_a_buy_and_the_bid_for_a_sell_else_last_else_close() -> None:
    assert QUOTE.reference(Side.BUY) == D("100.10")
    assert QUOTE.reference(Side.SELL) == D("99.90")
    assert replace(QUOTE, ask=None).reference(Side.BUY) == D("100")
    assert replace(QUOTE, bid=D(-1), last=None).reference(Side.SELL) == D("98")
    assert Quote(None, None, None, None, 0.0).reference(Side.BUY) is None


# -- price band -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [
    limit(Side.BUY, "110.12"),   # above ask + 10 %
    limit(Side.SELL, "89.90"),   # below bid - 10 %
    stop(Side.BUY, "90.08"),     # a buy stop far below the market: a mistyped price
    stop(Side.SELL, "109.90"),   # a sell stop far above the market
])
def test_a_fat_finger_price_is_out_of_band(order: object) -> None:
    rejection = rejected(RejectReason.PRICE_OUT_OF_BAND, order, BANDED, MarketView(quote=QUOTE))
    assert "PRICE_BAND" in rejection.detail


@pytest.mark.parametrize("order", [
    limit(Side.BUY, "110.11"), limit(Side.BUY, "1"), limit(Side.SELL, "89.91"), limit(Side.SELL, "500"),
    stop(Side.BUY, "105"), stop(Side.SELL, "95"),
    stop(Side.BUY, "99"), stop(Side.SELL, "101"),  # just through the market: trigger at once, at the market
    stop(Side.BUY, "300"), stop(Side.SELL, "10"),  # far on their own side: wait for the market
])
def test_prices_within_the_band_or_on_the_passive_side_pass(order: object) -> None:
    assert passes(order, BANDED, MarketView(quote=QUOTE)) == []


def test_an_instruments_band_replaces_its_security_types_which_replaces_the_global_one() -> None:
    by_type = replace(BANDED, sec_type_price_bands={"STK": D("0.50")})
    assert passes(limit(Side.BUY, "140"), by_type, MarketView(quote=QUOTE)) == []
    own = replace(by_type, instrument_limits={AAPL.instrument_id: OrderLimits(price_band=D("0.01"))})
    rejected(RejectReason.PRICE_OUT_OF_BAND, limit(Side.BUY, "102"), own, MarketView(quote=QUOTE))


def test_without_a_fresh_reference_a_banded_order_is_rejected_and_names_what_to_fix() -> None:
    rejection = rejected(RejectReason.NO_REFERENCE_PRICE, limit(Side.BUY, "100"), BANDED, MarketView())
    assert "IBKR_MARKET_DATA_TYPE" in rejection.detail
    old = MarketView(quote=replace(QUOTE, age_seconds=61))
    rejected(RejectReason.NO_REFERENCE_PRICE, limit(Side.BUY, "100"), replace(BANDED, reference_max_age=60), old)


def test_failing_open_without_a_reference_passes_with_a_warning() -> None:
    warnings = passes(limit(Side.BUY, "100"), replace(BANDED, require_reference=False), MarketView())
    assert len(warnings) == 1 and warnings[0].startswith("NO_REFERENCE_PRICE")


def test_a_market_order_has_no_band_to_check() -> None:
    assert passes(an_order(), BANDED, MarketView()) == []


# -- notional of market orders ----------------------------------------------------------------------------


def test_a_market_order_over_the_notional_limit_at_the_reference_price_is_rejected() -> None:
    policy = replace(POLICY, global_limits=OrderLimits(max_notional=D(50_000)))
    rejection = rejected(RejectReason.MAX_NOTIONAL_EXCEEDED, an_order(quantity=D(1000)), policy,
                         MarketView(quote=QUOTE))
    assert "100100" in rejection.detail and "50000" in rejection.detail
    assert passes(an_order(quantity=D(400)), policy, MarketView(quote=QUOTE)) == []


def test_a_market_order_under_a_notional_limit_without_a_reference_is_rejected() -> None:
    policy = replace(POLICY, instrument_limits={AAPL.instrument_id: OrderLimits(max_notional=D(50_000))})
    rejected(RejectReason.NO_REFERENCE_PRICE, an_order(), policy, MarketView())


def test_the_multiplier_counts_in_a_market_orders_notional() -> None:
    future = replace(AAPL, multiplier=D(50))
    policy = replace(POLICY, global_limits=OrderLimits(max_notional=D(100_000)))
    rejected(RejectReason.MAX_NOTIONAL_EXCEEDED, an_order(quantity=D(21)), policy, MarketView(quote=QUOTE),
             future)


# -- stale orders -----------------------------------------------------------------------------------------


def test_an_order_older_than_the_maximum_age_is_stale() -> None:
    policy = replace(POLICY, max_order_age=timedelta(seconds=60))
    rejection = rejected(RejectReason.STALE_ORDER, an_order(created_at=NOW - timedelta(hours=1)), policy)
    assert "3600 s ago" in rejection.detail and "MAX_ORDER_AGE" in rejection.detail
    assert passes(an_order(created_at=NOW - timedelta(seconds=59)), policy) == []


# -- size increment ---------------------------------------------------------------------------------------


def test_half_a_share_is_not_a_whole_number_of_the_size_increment() -> None:
    rejection = rejected(RejectReason.INVALID_QUANTITY_INCREMENT, an_order(quantity=D("0.5")))
    assert "QUANTITY" in rejection.reason.value and "1" in rejection.detail


def test_ibkrs_size_increment_is_used_where_the_mapper_has_one() -> None:
    fractional = replace(AAPL, size_increment=D("0.0001"))
    assert passes(an_order(quantity=D("0.5")), instrument=fractional) == []
    lots = replace(AAPL, size_increment=D(100))
    rejected(RejectReason.INVALID_QUANTITY_INCREMENT, an_order(quantity=D(150)), instrument=lots)


# -- position limit ---------------------------------------------------------------------------------------


POSITION_LIMITED = replace(POLICY, global_limits=OrderLimits(max_position=D(100)))


def test_position_plus_working_orders_plus_the_order_over_the_limit_is_rejected() -> None:
    view = MarketView(position=D(60), working_buy=D(30))
    rejection = rejected(RejectReason.MAX_POSITION_EXCEEDED, an_order(quantity=D(11)), POSITION_LIMITED, view)
    assert "101" in rejection.detail
    assert passes(an_order(quantity=D(10)), POSITION_LIMITED, view) == []


def test_a_short_position_counts_as_much_as_a_long_one() -> None:
    view = MarketView(position=D(-95), working_sell=D(0))
    rejected(RejectReason.MAX_POSITION_EXCEEDED, an_order(side=Side.SELL, quantity=D(6)), POSITION_LIMITED, view)


def test_an_order_that_reduces_the_position_always_passes() -> None:
    view = MarketView(position=D(500))  # far over the limit already
    assert reduces_position(an_order(side=Side.SELL, quantity=D(200)), view)
    assert passes(an_order(side=Side.SELL, quantity=D(200)), POSITION_LIMITED, view) == []
    assert not reduces_position(an_order(side=Side.SELL, quantity=D(501)), view)
    rejected(RejectReason.MAX_POSITION_EXCEEDED, an_order(side=Side.SELL, quantity=D(700)), POSITION_LIMITED, view)


# -- order rate -------------------------------------------------------------------------------------------


def test_orders_over_the_rate_are_rejected_and_the_bucket_refills() -> None:
    now = [0.0]
    rate = OrderRate(per_second=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        rate.take("A")
    with pytest.raises(OrderRejected) as caught:
        rate.take("A")
    assert caught.value.reason is RejectReason.ORDER_RATE_EXCEEDED
    rate.take("B")  # another account has its own bucket
    now[0] = 0.5  # one token back
    rate.take("A")
    with pytest.raises(OrderRejected):
        rate.take("A")


def test_reducing_lets_through_only_orders_that_bring_the_position_towards_zero() -> None:
    reducing = replace(POLICY, trading_state=TradingState.REDUCING)
    long_50 = MarketView(position=D(50), working_sell=D(10))

    assert passes(an_order(side=Side.SELL, quantity=D(40)), reducing, long_50) == []
    rejection = rejected(RejectReason.TRADING_REDUCING, an_order(side=Side.SELL, quantity=D(41)), reducing, long_50)
    assert "REDUCING" in rejection.detail
    rejected(RejectReason.TRADING_REDUCING, an_order(side=Side.BUY, quantity=D(1)), reducing, long_50)
    rejected(RejectReason.TRADING_REDUCING, an_order(side=Side.SELL), reducing, MarketView())  # flat


def test_an_order_past_its_own_expiry_is_stale_and_its_expiry_replaces_the_maximum_age() -> None:
    policy = replace(POLICY, max_order_age=timedelta(seconds=60))
    expired = an_order(created_at=NOW - timedelta(seconds=5), expires_at=NOW - timedelta(seconds=1))
    rejection = rejected(RejectReason.STALE_ORDER, expired, policy)
    assert "expires_at" in rejection.detail
    rejected(RejectReason.STALE_ORDER, an_order(expires_at=NOW), policy)  # at the instant: expired
    # An hour old but wanted until later today: its own expiry decides, not MAX_ORDER_AGE.
    wanted = an_order(created_at=NOW - timedelta(hours=1), expires_at=NOW + timedelta(hours=1))
    assert passes(wanted, policy) == []
