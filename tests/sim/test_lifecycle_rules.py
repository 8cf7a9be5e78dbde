"""The pure rules behind trailing stops, touched orders, trailing validation and GTD dates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibkr_sim.admission import good_till
from ibkr_sim.matching import trail_follows, trail_stop, trigger_reached, validate, validate_trailing

prices = st.floats(min_value=1.0, max_value=10_000.0, allow_nan=False)


def test_a_sell_trails_below_the_price_and_a_buy_above_it() -> None:
    assert trail_stop(-1, 100.0, 2.0, None) == 98.0
    assert trail_stop(1, 100.0, 2.0, None) == 102.0
    assert trail_stop(-1, 100.0, None, 5.0) == 95.0
    assert trail_stop(1, 100.0, None, 5.0) == 105.0


@given(side=st.sampled_from([1, -1]), stop=prices, candidates=st.lists(prices, max_size=20))
def test_a_trailing_stop_only_ever_moves_in_the_orders_favour(side: int, stop: float, candidates: list[float]) -> None:
    for candidate in candidates:
        moved = trail_follows(side, stop, candidate)
        assert (moved >= stop) if side < 0 else (moved <= stop)
        stop = moved


@pytest.mark.parametrize(
    ("order_type", "side", "trigger", "price", "reached"),
    [
        ("STP", 1, 10.0, 10.0, True), ("STP", 1, 10.0, 9.99, False),
        ("STP", -1, 10.0, 10.0, True), ("STP", -1, 10.0, 10.01, False),
        ("MIT", 1, 10.0, 10.0, True), ("MIT", 1, 10.0, 10.01, False),
        ("MIT", -1, 10.0, 10.0, True), ("MIT", -1, 10.0, 9.99, False),
        ("LIT", 1, 10.0, 9.0, True), ("TRAIL", -1, 10.0, 9.0, True),
    ],
)
def test_stops_trigger_beyond_their_price_and_touched_orders_on_the_near_side(
    order_type: str, side: int, trigger: float, price: float, reached: bool
) -> None:
    assert trigger_reached(order_type, side, trigger, price) is reached


@pytest.mark.parametrize(
    ("order_type", "amount", "percent", "lmt", "offset", "accepted"),
    [
        ("TRAIL", 1.0, None, None, None, True),
        ("TRAIL", None, 1.0, None, None, True),
        ("TRAIL", None, None, None, None, False),
        ("TRAIL", 1.0, 1.0, None, None, False),
        ("TRAIL LIMIT", 1.0, None, None, 0.1, True),
        ("TRAIL LIMIT", 1.0, None, 99.0, None, True),
        ("TRAIL LIMIT", 1.0, None, None, None, False),
        ("LMT", None, None, 99.0, None, True),
    ],
)
def test_a_trailing_order_needs_one_trailing_distance_and_a_trailing_limit_its_limit(
    order_type: str, amount: float | None, percent: float | None, lmt: float | None, offset: float | None,
    accepted: bool,
) -> None:
    rejection = validate_trailing(order_type, amount=amount, percent=percent, lmt=lmt, offset=offset)
    assert (rejection is None) is accepted
    if rejection is not None:
        assert rejection.code == 201


def test_on_close_orders_must_be_day_orders() -> None:
    assert validate("BUY", 1, "MOC", "DAY", lmt=None, aux=None) is None
    rejection = validate("BUY", 1, "LOC", "GTC", lmt=10.0, aux=None)
    assert rejection is not None and rejection.code == 113


@pytest.mark.parametrize(
    "text",
    ["20261207 10:00:00 US/Eastern", "20261207-15:00:00", "20261207 10:00:00", "20261207 15:00:00 UTC"],
)
def test_a_good_till_date_is_read_in_every_form_ib_takes(text: str) -> None:
    assert good_till(text, "US/Eastern") == (1796655600.0, None)


@pytest.mark.parametrize("text", ["tomorrow", "20261307 10:00:00", "20261207 10:00:00 Nowhere/City", ""])
def test_a_good_till_date_the_sim_cannot_read_is_error_201(text: str) -> None:
    expires, rejection = good_till(text, "US/Eastern")
    assert expires is None
    assert rejection is not None and rejection.code == 201
