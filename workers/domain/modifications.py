"""Modifications of working orders: the request, what IBKR changes in place, and the terms a request asks for.

IBKR modifies an order when the same order id is placed again with new terms. Only the size, the prices
the order type already has and the time in force between DAY and GTC change reliably in place; anything
else (side, instrument, order type, IOC / FOK / OPG) is refused here with a reason, never tried. A request
gives the new value of each term it changes (None keeps the term): the terms are absolute, so sending the
same modification twice leaves IBKR's order as sending it once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from workers.domain.orders import Order, OrderRequested, OrderState, TimeInForce

# Times in force IBKR changes in place (an IOC, FOK or OPG order is not working long enough to modify).
MODIFIABLE_TIME_IN_FORCE = frozenset({TimeInForce.DAY, TimeInForce.GTC})
# The reason of every refused modification starts with this; an applied one's with MODIFIED_PREFIX.
REFUSED_PREFIX = "MODIFY_REFUSED"
MODIFIED_PREFIX = "MODIFIED"


@dataclass(frozen=True)
class OrderModifyRequested:
    """An upstream service asks to change a working order (``orders.modify-requested``)."""

    modify_id: str
    order_id: str
    account: str
    requested_at: datetime
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: TimeInForce | None = None
    source: str | None = None
    # A trailing order's trail: its amount or percent (the one it has), a trailing stop limit's offset.
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    limit_offset: Decimal | None = None


# What makes two requests under one modify_id the same request (a producer's retry may build the rest anew).
MODIFY_TERMS: tuple[str, ...] = ("order_id", "account", "quantity", "limit_price", "stop_price", "time_in_force",
                                 "trailing_amount", "trailing_percent", "limit_offset")


def differing_modify_terms(recorded: OrderModifyRequested, other: OrderModifyRequested) -> tuple[str, ...]:
    """The fields in which ``other`` differs from ``recorded`` (none: the same modification again)."""
    return tuple(name for name in MODIFY_TERMS if getattr(recorded, name) != getattr(other, name))


class ModifyState(enum.StrEnum):
    """A modification in the ledger: REQUESTED (recorded), SENT (placeOrder went to IBKR with the new
    terms), then APPLIED (IBKR's order has them) or REFUSED (by a rule, or by IBKR)."""

    REQUESTED = "REQUESTED"
    SENT = "SENT"
    APPLIED = "APPLIED"
    REFUSED = "REFUSED"

    @property
    def is_final(self) -> bool:
        return self in (ModifyState.APPLIED, ModifyState.REFUSED)


class ModifyRefusal(enum.StrEnum):
    """Machine codes of a refused modification (after ``MODIFY_REFUSED:`` in the status's reason)."""

    ACCOUNT_MISMATCH = "ACCOUNT_MISMATCH"
    ORDER_DONE = "ORDER_DONE"
    CANCEL_PENDING = "CANCEL_PENDING"
    NOT_MODIFIABLE = "NOT_MODIFIABLE"
    NO_CHANGE = "NO_CHANGE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_PRICE = "INVALID_PRICE"
    RISK_RULE = "RISK_RULE"
    IBKR_REFUSED = "IBKR_REFUSED"
    NOT_CONFIRMED = "NOT_CONFIRMED"


class ModifyRefused(Exception):
    """A modification that is not sent (or that IBKR did not apply), with a code and a sentence."""

    def __init__(self, code: ModifyRefusal, detail: str, ib_error_code: int | None = None) -> None:
        super().__init__(f"{REFUSED_PREFIX}: {code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.ib_error_code = ib_error_code

    @property
    def text(self) -> str:
        return str(self)


@dataclass(frozen=True)
class WorkingTerms:
    """The terms of an order that a modification may change: what is working at IBKR."""

    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None
    time_in_force: TimeInForce
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    limit_offset: Decimal | None = None

    @classmethod
    def of(cls, order: Order) -> WorkingTerms:
        return cls(order.quantity, order.limit_price, order.stop_price, order.time_in_force,
                   order.trailing_amount, order.trailing_percent, order.limit_offset)

    def changes_from(self, before: WorkingTerms) -> list[str]:
        """``name before -> after`` of each term that differs from ``before``."""
        names = ("quantity", "limit_price", "stop_price", "time_in_force", "trailing_amount", "trailing_percent",
                 "limit_offset")
        return [f"{name} {_plain(getattr(before, name))} -> {_plain(getattr(self, name))}"
                for name in names if getattr(before, name) != getattr(self, name)]


def _plain(value: object) -> str:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


@dataclass(frozen=True)
class Modification:
    """One modification as the ledger holds it: the request, the terms it was sent with, its outcome."""

    request: OrderModifyRequested
    state: ModifyState
    target: WorkingTerms | None = None
    reason: str | None = None
    ib_error_code: int | None = None
    attempts: int = 0

    @property
    def modify_id(self) -> str:
        return self.request.modify_id

    @property
    def order_id(self) -> str:
        return self.request.order_id


def _positive(value: Decimal, name: str, code: ModifyRefusal) -> None:
    if not value.is_finite() or value <= 0:
        raise ModifyRefused(code, f"{name} {value} must be a positive number")


def target_terms(order: Order, request: OrderModifyRequested) -> WorkingTerms:
    """The terms ``request`` asks ``order`` to work with; raises :class:`ModifyRefused` when IBKR cannot
    change the order so in place (or the request changes nothing).

    The pre-trade rules are checked on the result separately (they need the market).
    """
    if request.account != order.account:
        raise ModifyRefused(ModifyRefusal.ACCOUNT_MISMATCH,
                            f"account {request.account!r} is not the order's account")
    if order.state.is_final:
        raise ModifyRefused(ModifyRefusal.ORDER_DONE, f"the order is {order.state.value}")
    if order.state is OrderState.CANCEL_PENDING:
        raise ModifyRefused(ModifyRefusal.CANCEL_PENDING, "the order is being cancelled")
    current = WorkingTerms.of(order)
    quantity = current.quantity if request.quantity is None else request.quantity
    _positive(quantity, "quantity", ModifyRefusal.INVALID_QUANTITY)
    if quantity <= order.filled_quantity:
        raise ModifyRefused(ModifyRefusal.INVALID_QUANTITY,
                            f"quantity {_plain(quantity)} is not above the filled quantity "
                            f"{_plain(order.filled_quantity)}; cancel the order instead")
    prices = (("limit_price", request.limit_price, order.order_type.needs_limit_price),
              ("stop_price", request.stop_price, order.order_type.needs_stop_price))
    for name, price, has_it in prices:
        if price is None:
            continue
        if not has_it:
            raise ModifyRefused(ModifyRefusal.NOT_MODIFIABLE,
                                f"a {order.order_type.value} order has no {name}; IBKR cannot change the order "
                                "type in place: cancel it and send a new order")
        _positive(price, name, ModifyRefusal.INVALID_PRICE)
    trail = _trail(order, request)
    tif = current.time_in_force if request.time_in_force is None else request.time_in_force
    if tif != current.time_in_force and (tif not in MODIFIABLE_TIME_IN_FORCE
                                         or current.time_in_force not in MODIFIABLE_TIME_IN_FORCE):
        raise ModifyRefused(ModifyRefusal.NOT_MODIFIABLE,
                            f"time_in_force {current.time_in_force.value} -> {tif.value}: IBKR changes only "
                            "DAY and GTC in place")
    target = WorkingTerms(
        quantity=quantity,
        limit_price=current.limit_price if request.limit_price is None else request.limit_price,
        stop_price=current.stop_price if request.stop_price is None else request.stop_price,
        time_in_force=tif,
        trailing_amount=trail[0], trailing_percent=trail[1], limit_offset=trail[2],
    )
    if target == current:
        raise ModifyRefused(ModifyRefusal.NO_CHANGE, "the order already works with these terms")
    return target


def _trail(order: Order, request: OrderModifyRequested) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """The trailing amount, percent and limit offset ``request`` asks for (a trailing order keeps the kind of
    trail it has: an amount stays an amount, a percent a percent)."""
    given = (("trailing_amount", request.trailing_amount, order.trailing_amount),
             ("trailing_percent", request.trailing_percent, order.trailing_percent),
             ("limit_offset", request.limit_offset, order.limit_offset))
    for name, new, now in given:
        if new is None:
            continue
        if now is None:
            raise ModifyRefused(ModifyRefusal.NOT_MODIFIABLE,
                                f"a {order.order_type.value} order has no {name}; IBKR cannot change the kind of "
                                "order in place: cancel it and send a new order")
        if not new.is_finite() or new <= 0 or (name == "trailing_percent" and new >= 100):
            raise ModifyRefused(ModifyRefusal.INVALID_PRICE, f"{name} {new} is out of range")
    amount, percent, offset = (now if new is None else new for _, new, now in given)
    return amount, percent, offset


def checked_request(order: Order, target: WorkingTerms, request: OrderModifyRequested) -> OrderRequested:
    """The order as the pre-trade rules check a modification of it: the new terms, the quantity still to
    trade, and the modification's own time (a stale modification is refused as a stale order would be)."""
    return replace(order.request, quantity=target.quantity - order.filled_quantity,
                   limit_price=target.limit_price, stop_price=target.stop_price,
                   time_in_force=target.time_in_force, trailing_amount=target.trailing_amount,
                   trailing_percent=target.trailing_percent, limit_offset=target.limit_offset,
                   created_at=request.requested_at, source=request.source)


def applied_reason(before: WorkingTerms, after: WorkingTerms) -> str:
    """The status reason of an applied modification: what changed."""
    return f"{MODIFIED_PREFIX}: " + ", ".join(after.changes_from(before))
