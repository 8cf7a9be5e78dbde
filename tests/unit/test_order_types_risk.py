"""The risk rules for the order types of OrderRequested version 4: what the price band and the notional
limit measure for each, GTD's good_till, and failing closed without a reference price."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from tests.unit.order_service_fakes import AAPL, an_order
from tests.unit.test_risk_rules import BANDED, NOW, POLICY, QUOTE, passes, rejected
from workers.domain.guards import OrderLimits, RejectReason
from workers.domain.orders import OrderType, Side, TimeInForce
from workers.domain.risk import MarketView
from workers.service_layer.orders.market_views import needs_quote

D = Decimal
QUOTED = MarketView(quote=QUOTE)  # ask 100.10, bid 99.90
NOTIONAL_CAPPED = replace(POLICY, global_limits=OrderLimits(max_notional=D(900)))  # 10 shares: 90 a share


@pytest.mark.parametrize("order_type", [OrderType.MARKET_ON_CLOSE, OrderType.TRAILING_STOP,
                                        OrderType.TRAILING_STOP_LIMIT])
def test_an_order_without_a_fixed_price_has_its_notional_measured_at_the_market(order_type: OrderType) -> None:
    order = an_order(order_type=order_type, trailing_amount=D(1) if order_type.is_trailing else None,
                     limit_offset=D("0.1") if order_type is OrderType.TRAILING_STOP_LIMIT else None)
    rejection = rejected(RejectReason.MAX_NOTIONAL_EXCEEDED, order, NOTIONAL_CAPPED, QUOTED)
    assert "100.10" in rejection.detail
    passes(replace(order, quantity=D(8)), NOTIONAL_CAPPED, QUOTED)
    rejected(RejectReason.NO_REFERENCE_PRICE, order, NOTIONAL_CAPPED)  # no quote: fail closed


def test_a_trailing_stop_with_an_initial_stop_is_still_measured_at_the_market() -> None:
    # Its stop_price is where it starts, not what it trades at: a low initial stop does not hide the notional.
    order = an_order(order_type=OrderType.TRAILING_STOP, trailing_amount=D(1), stop_price=D(50))
    rejected(RejectReason.MAX_NOTIONAL_EXCEEDED, order, NOTIONAL_CAPPED, QUOTED)


def test_a_touched_orders_trigger_is_banded_as_the_mirror_of_a_stop() -> None:
    # A BUY if touched waits below the market: far below is fine, far above is a mistyped price.
    buy = an_order(order_type=OrderType.MARKET_IF_TOUCHED, stop_price=D(80))
    passes(buy, BANDED, QUOTED)
    rejection = rejected(RejectReason.PRICE_OUT_OF_BAND, replace(buy, stop_price=D(111)), BANDED, QUOTED)
    assert "BUY stop_price 111 is above" in rejection.detail
    sell = an_order(side=Side.SELL, order_type=OrderType.MARKET_IF_TOUCHED, stop_price=D(120))
    passes(sell, BANDED, QUOTED)
    rejected(RejectReason.PRICE_OUT_OF_BAND, replace(sell, stop_price=D(89)), BANDED, QUOTED)


def test_a_limit_if_touched_has_its_limit_banded_like_a_limit() -> None:
    order = an_order(order_type=OrderType.LIMIT_IF_TOUCHED, stop_price=D(95), limit_price=D(111))
    rejected(RejectReason.PRICE_OUT_OF_BAND, order, BANDED, QUOTED)
    passes(replace(order, limit_price=D(96)), BANDED, QUOTED)


def test_a_limit_on_close_is_banded_like_a_limit_and_a_market_on_close_needs_no_band() -> None:
    rejected(RejectReason.PRICE_OUT_OF_BAND, an_order(order_type=OrderType.LIMIT_ON_CLOSE, limit_price=D(111)),
             BANDED, QUOTED)
    assert passes(an_order(order_type=OrderType.MARKET_ON_CLOSE), BANDED) == []  # no price: no reference needed


def test_a_trailing_stop_limits_offset_may_not_reach_past_the_band() -> None:
    order = an_order(order_type=OrderType.TRAILING_STOP_LIMIT, trailing_amount=D(1), limit_offset=D(11))
    rejection = rejected(RejectReason.PRICE_OUT_OF_BAND, order, BANDED, QUOTED)
    assert "limit_offset 11" in rejection.detail
    passes(replace(order, limit_offset=D("0.5")), BANDED, QUOTED)
    rejected(RejectReason.NO_REFERENCE_PRICE, order, BANDED)  # the band cannot be evaluated: fail closed


def test_a_trailing_stops_initial_stop_is_banded_like_a_stop() -> None:
    order = an_order(order_type=OrderType.TRAILING_STOP, trailing_amount=D(1), stop_price=D(80))
    rejected(RejectReason.PRICE_OUT_OF_BAND, order, BANDED, QUOTED)  # a BUY stop far below the market
    passes(replace(order, stop_price=D(101)), BANDED, QUOTED)


def test_a_gtd_order_whose_good_till_has_passed_is_rejected() -> None:
    order = an_order(time_in_force=TimeInForce.GTD, good_till=NOW)
    assert "good_till" in rejected(RejectReason.GOOD_TILL_PASSED, order).detail
    passes(replace(order, good_till=NOW + timedelta(minutes=1)))


def test_the_quote_is_asked_for_exactly_when_a_rule_measures_the_new_types_against_it() -> None:
    trailing_limit = an_order(order_type=OrderType.TRAILING_STOP_LIMIT, trailing_amount=D(1), limit_offset=D("0.1"))
    on_close = an_order(order_type=OrderType.MARKET_ON_CLOSE)
    trailing_from = an_order(order_type=OrderType.TRAILING_STOP, trailing_amount=D(1), stop_price=D(101))
    assert needs_quote(trailing_limit, AAPL, BANDED)  # its offset is banded
    assert not needs_quote(on_close, AAPL, BANDED)
    assert needs_quote(on_close, AAPL, NOTIONAL_CAPPED)
    assert needs_quote(trailing_from, AAPL, NOTIONAL_CAPPED)  # measured at the market despite its stop_price
    assert not needs_quote(an_order(order_type=OrderType.LIMIT_ON_CLOSE, limit_price=D(100)), AAPL, NOTIONAL_CAPPED)
