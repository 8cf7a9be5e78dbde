"""Pure order-matching rules: validation, stop triggers, marketability, time in force, clips.

No I/O and no state: the broker asks :func:`plan_fill` what an order does at a price and applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

ORDER_TYPES = frozenset({
    "MKT", "LMT", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIT", "LIT", "MOC", "LOC",
})
TRAILING_TYPES = frozenset({"TRAIL", "TRAIL LIMIT"})
# Orders that wait for their trigger: stops (and trailing stops) above a buy's market, touched orders below.
STOP_TYPES = frozenset({"STP", "STP LMT", *TRAILING_TYPES})
TOUCHED_TYPES = frozenset({"MIT", "LIT"})
TRIGGERED_TYPES = STOP_TYPES | TOUCHED_TYPES
LIMIT_TYPES = frozenset({"LMT", "STP LMT", "TRAIL LIMIT", "LIT", "LOC"})
ON_CLOSE_TYPES = frozenset({"MOC", "LOC"})
# The trigger price travels in auxPrice, except for trailing stops where auxPrice is the trailing amount.
AUX_TRIGGER_TYPES = frozenset({"STP", "STP LMT", "MIT", "LIT"})
TIFS = frozenset({"DAY", "GTC", "IOC", "FOK", "OPG", "GTD"})
IMMEDIATE_TIFS = frozenset({"IOC", "FOK"})


class Matchable(Protocol):
    """What matching needs to know about a working order."""

    @property
    def side(self) -> int: ...  # +1 buy, -1 sell
    @property
    def order_type(self) -> str: ...
    @property
    def lmt_price(self) -> float | None: ...
    @property
    def aux_price(self) -> float | None: ...
    @property
    def tif(self) -> str: ...
    @property
    def remaining(self) -> float: ...
    @property
    def triggered(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an order is refused, with IB's error code."""

    code: int
    text: str


@dataclass(frozen=True, slots=True)
class FillPlan:
    """What an order does now: fill ``quantity`` at ``price``, become triggered, cancel what is left."""

    quantity: float = 0.0
    price: float | None = None
    triggered: bool = False
    cancel_rest: bool = False


def side_of(action: str) -> int:
    """+1 for BUY, -1 for SELL (SSHORT counts as a sell); 0 for anything else."""
    action = action.upper()
    if action == "BUY":
        return 1
    if action in ("SELL", "SSHORT"):
        return -1
    return 0


def validate(
    action: str, quantity: float, order_type: str, tif: str, *, lmt: float | None, aux: float | None
) -> Rejection | None:
    """Check the order's own fields; ``None`` when acceptable."""
    if side_of(action) == 0:
        return Rejection(201, f"Order rejected - reason:Invalid action {action!r}")
    if quantity <= 0:
        return Rejection(201, "Order rejected - reason:The order size must be positive")
    if order_type not in ORDER_TYPES:
        return Rejection(387, f"Unsupported order type for this exchange and security type: {order_type}")
    if tif not in TIFS:
        return Rejection(111, "The time in force (tif type) and the order type are incompatible.")
    if tif == "OPG" and order_type not in ("MKT", "LMT"):
        return Rejection(111, "The time in force (tif type) and the order type are incompatible.")
    if order_type in ON_CLOSE_TYPES and tif != "DAY":
        return Rejection(113, "The Tif option should be set to DAY for MOC and LOC orders.")
    if order_type in LIMIT_TYPES and order_type != "TRAIL LIMIT" and (lmt is None or lmt <= 0):
        return Rejection(201, "Order rejected - reason:The limit price must be specified")
    if order_type in AUX_TRIGGER_TYPES and (aux is None or aux <= 0):
        return Rejection(201, "Order rejected - reason:The stop price must be specified")
    return None


def validate_trailing(
    order_type: str, *, amount: float | None, percent: float | None, lmt: float | None, offset: float | None
) -> Rejection | None:
    """A trailing stop needs one trailing amount or percent; a trailing stop limit also a limit or offset."""
    if order_type not in TRAILING_TYPES:
        return None
    if (amount is None or amount <= 0) == (percent is None or percent <= 0):
        return Rejection(201, "Order rejected - reason:Specify either a trailing amount or a trailing percent")
    if order_type == "TRAIL LIMIT" and offset is None and (lmt is None or lmt <= 0):
        return Rejection(201, "Order rejected - reason:The limit price offset must be specified")
    return None


def trail_stop(side: int, price: float, amount: float | None, percent: float | None) -> float:
    """The trailing stop price for a market price: a sell trails below it, a buy above it."""
    distance = amount if amount is not None and amount > 0 else price * (percent or 0.0) / 100.0
    return price - distance if side < 0 else price + distance


def trail_follows(side: int, stop: float, candidate: float) -> float:
    """The stop after the market moved: it only ever moves in the order's favour (up for a sell)."""
    return max(stop, candidate) if side < 0 else min(stop, candidate)


def stop_triggered(side: int, stop: float, price: float) -> bool:
    """A buy stop triggers at or above its stop price, a sell stop at or below."""
    return price >= stop if side > 0 else price <= stop


def touched(side: int, trigger: float, price: float) -> bool:
    """A buy if-touched order triggers at or below its trigger price, a sell at or above."""
    return price <= trigger if side > 0 else price >= trigger


def trigger_reached(order_type: str, side: int, trigger: float, price: float) -> bool:
    """Whether a stop or touched order's trigger is reached at ``price``."""
    if order_type in TOUCHED_TYPES:
        return touched(side, trigger, price)
    return stop_triggered(side, trigger, price)


def execution_price(side: int, order_type: str, lmt: float | None, price: float) -> float | None:
    """The price the (active) order trades at now, or ``None`` if it is not marketable."""
    if order_type in LIMIT_TYPES:
        if lmt is None:
            return None
        if (side > 0 and price <= lmt) or (side < 0 and price >= lmt):
            return price
        return None
    return price


def plan_fill(order: Matchable, price: float, clip: float | None) -> FillPlan:
    """Decide what ``order`` does at ``price`` when at most ``clip`` can trade in one go.

    ``order.aux_price`` is the order's trigger (the current trailing stop for trailing orders) and
    ``order.lmt_price`` its limit once triggered.

    IOC fills what can fill now and cancels the rest; FOK fills everything now or cancels everything.
    """
    immediate = order.tif in IMMEDIATE_TIFS
    triggered = order.triggered
    if order.order_type in TRIGGERED_TYPES and not triggered:
        trigger = order.aux_price
        if trigger is None or not trigger_reached(order.order_type, order.side, trigger, price):
            return FillPlan(cancel_rest=immediate)
        triggered = True
    fill_price = execution_price(order.side, order.order_type, order.lmt_price, price)
    if fill_price is None or order.remaining <= 0:
        return FillPlan(triggered=triggered, cancel_rest=immediate)
    quantity = order.remaining if clip is None or clip <= 0 else min(clip, order.remaining)
    if order.tif == "FOK" and quantity < order.remaining:
        return FillPlan(triggered=triggered, cancel_rest=True)
    rest = order.remaining - quantity
    return FillPlan(quantity, fill_price, triggered, cancel_rest=immediate and rest > 0)


def auction_plan(order: Matchable, price: float) -> FillPlan:
    """An order in an auction (OPG at the open, MOC/LOC at the close): all at the auction price if
    marketable, else cancelled."""
    fill_price = execution_price(order.side, order.order_type, order.lmt_price, price)
    if fill_price is None:
        return FillPlan(cancel_rest=True)
    return FillPlan(order.remaining, fill_price)
