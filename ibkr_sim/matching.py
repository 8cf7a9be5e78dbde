"""Pure order-matching rules: validation, stop triggers, marketability, time in force, clips.

No I/O and no state: the broker asks :func:`plan_fill` what an order does at a price and applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

ORDER_TYPES = frozenset({"MKT", "LMT", "STP", "STP LMT"})
STOP_TYPES = frozenset({"STP", "STP LMT"})
LIMIT_TYPES = frozenset({"LMT", "STP LMT"})
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
    if order_type in LIMIT_TYPES and (lmt is None or lmt <= 0):
        return Rejection(201, "Order rejected - reason:The limit price must be specified")
    if order_type in STOP_TYPES and (aux is None or aux <= 0):
        return Rejection(201, "Order rejected - reason:The stop price must be specified")
    return None


def stop_triggered(side: int, stop: float, price: float) -> bool:
    """A buy stop triggers at or above its stop price, a sell stop at or below."""
    return price >= stop if side > 0 else price <= stop


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

    IOC fills what can fill now and cancels the rest; FOK fills everything now or cancels everything.
    """
    immediate = order.tif in IMMEDIATE_TIFS
    triggered = order.triggered
    if order.order_type in STOP_TYPES and not triggered:
        if order.aux_price is None or not stop_triggered(order.side, order.aux_price, price):
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


def opening_plan(order: Matchable, price: float) -> FillPlan:
    """An OPG order at the opening auction: all at the opening price if marketable, else cancelled."""
    fill_price = execution_price(order.side, order.order_type, order.lmt_price, price)
    if fill_price is None:
        return FillPlan(cancel_rest=True)
    return FillPlan(order.remaining, fill_price)
