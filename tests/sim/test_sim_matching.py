"""Matching rules (pure): triggers, marketability, time in force, clips."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibkr_sim.matching import FillPlan, auction_plan, plan_fill, side_of, validate


@dataclass
class Working:
    side: int = 1
    order_type: str = "MKT"
    lmt_price: float | None = None
    aux_price: float | None = None
    tif: str = "DAY"
    remaining: float = 100.0
    triggered: bool = False


def test_market_order_fills_everything_at_the_price() -> None:
    assert plan_fill(Working(), 10.0, None) == FillPlan(100.0, 10.0)


@pytest.mark.parametrize(
    ("side", "limit", "price", "fills"),
    [(1, 10.0, 10.0, True), (1, 10.0, 10.01, False), (-1, 10.0, 10.0, True), (-1, 10.0, 9.99, False)],
)
def test_limit_orders_fill_only_when_marketable(side: int, limit: float, price: float, fills: bool) -> None:
    plan = plan_fill(Working(side=side, order_type="LMT", lmt_price=limit), price, None)
    assert (plan.quantity > 0) is fills
    assert plan.cancel_rest is False


@pytest.mark.parametrize(("side", "stop", "price", "triggers"), [(1, 10, 10, True), (1, 10, 9.99, False),
                                                                  (-1, 10, 10, True), (-1, 10, 10.01, False)])
def test_stop_triggers_at_its_price(side: int, stop: float, price: float, triggers: bool) -> None:
    plan = plan_fill(Working(side=side, order_type="STP", aux_price=stop), price, None)
    assert plan.triggered is triggers
    assert (plan.quantity == 100) is triggers


def test_triggered_stop_limit_waits_for_its_limit() -> None:
    order = Working(side=-1, order_type="STP LMT", aux_price=10.0, lmt_price=9.5)
    plan = plan_fill(order, 9.0, None)
    assert plan == FillPlan(triggered=True)
    order.triggered = True
    assert plan_fill(order, 9.6, None) == FillPlan(100.0, 9.6, triggered=True)


def test_clip_limits_each_pass() -> None:
    assert plan_fill(Working(), 10.0, 30).quantity == 30
    assert plan_fill(Working(remaining=20), 10.0, 30).quantity == 20


def test_ioc_cancels_what_cannot_fill_now() -> None:
    assert plan_fill(Working(tif="IOC"), 10.0, 30) == FillPlan(30, 10.0, cancel_rest=True)
    assert plan_fill(Working(tif="IOC", order_type="LMT", lmt_price=9.0), 10.0, None) == FillPlan(
        cancel_rest=True
    )
    assert plan_fill(Working(tif="IOC"), 10.0, None) == FillPlan(100, 10.0)


def test_fok_is_all_or_nothing() -> None:
    assert plan_fill(Working(tif="FOK"), 10.0, 30) == FillPlan(cancel_rest=True)
    assert plan_fill(Working(tif="FOK"), 10.0, 100) == FillPlan(100, 10.0)


def test_opening_auction() -> None:
    assert auction_plan(Working(tif="OPG"), 10.0) == FillPlan(100, 10.0)
    assert auction_plan(Working(tif="OPG", order_type="LMT", lmt_price=9.0), 10.0) == FillPlan(cancel_rest=True)


@given(
    total=st.integers(1, 10_000),
    clip=st.one_of(st.none(), st.integers(1, 5_000)),
)
def test_repeated_clips_sum_to_the_order(total: int, clip: int | None) -> None:
    order = Working(remaining=float(total))
    filled = 0.0
    for _ in range(total + 1):
        plan = plan_fill(order, 10.0, clip)
        if plan.quantity == 0:
            break
        filled += plan.quantity
        order.remaining -= plan.quantity
    assert filled == total


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("HOLD", 1, "MKT", "DAY", None, None), 201),
        (("BUY", 0, "MKT", "DAY", None, None), 201),
        (("BUY", 1, "PEG MID", "DAY", None, None), 387),
        (("BUY", 1, "MOC", "GTC", None, None), 113),
        (("BUY", 1, "MIT", "DAY", None, None), 201),
        (("BUY", 1, "MKT", "XYZ", None, None), 111),
        (("BUY", 1, "STP", "OPG", None, 5.0), 111),
        (("BUY", 1, "LMT", "DAY", None, None), 201),
        (("BUY", 1, "STP", "DAY", None, None), 201),
    ],
)
def test_invalid_orders(args: tuple[str, float, str, str, float | None, float | None], code: int) -> None:
    action, qty, order_type, tif, lmt, aux = args
    rejection = validate(action, qty, order_type, tif, lmt=lmt, aux=aux)
    assert rejection is not None
    assert rejection.code == code


def test_valid_order_and_sides() -> None:
    assert validate("SELL", 5, "STP LMT", "GTC", lmt=9.0, aux=9.5) is None
    assert (side_of("BUY"), side_of("sell"), side_of("SSHORT"), side_of("x")) == (1, -1, -1, 0)
