"""The order life cycle: the commands that start it, the :class:`Order`, its states and legal transitions.

Plain Python only: nothing here knows about Kafka, SQL or the TWS socket. The ledger stores :class:`Order`
as it is; every change of one goes through :meth:`Order.after`, so the rules are tested without a database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

_T = TypeVar("_T")


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"
    TRAILING_STOP = "TRAILING_STOP"
    TRAILING_STOP_LIMIT = "TRAILING_STOP_LIMIT"
    MARKET_ON_CLOSE = "MARKET_ON_CLOSE"
    LIMIT_ON_CLOSE = "LIMIT_ON_CLOSE"
    MARKET_IF_TOUCHED = "MARKET_IF_TOUCHED"
    LIMIT_IF_TOUCHED = "LIMIT_IF_TOUCHED"

    @property
    def needs_limit_price(self) -> bool:
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.LIMIT_ON_CLOSE, OrderType.LIMIT_IF_TOUCHED)

    @property
    def needs_stop_price(self) -> bool:
        """A stop's trigger, or a touched order's touch price (both IBKR's auxPrice)."""
        return self in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.MARKET_IF_TOUCHED, OrderType.LIMIT_IF_TOUCHED)

    @property
    def is_trailing(self) -> bool:
        """Trails the market by ``trailing_amount`` or ``trailing_percent``; ``stop_price`` is optional (the
        initial stop)."""
        return self in (OrderType.TRAILING_STOP, OrderType.TRAILING_STOP_LIMIT)

    @property
    def is_touched(self) -> bool:
        """Triggers when the market touches ``stop_price`` from above for a BUY, from below for a SELL: the
        mirror of a stop."""
        return self in (OrderType.MARKET_IF_TOUCHED, OrderType.LIMIT_IF_TOUCHED)

    @property
    def has_fixed_price(self) -> bool:
        """False for the types that trade at a price not known when placed (market, on close, trailing)."""
        return self not in (OrderType.MARKET, OrderType.MARKET_ON_CLOSE, OrderType.TRAILING_STOP,
                            OrderType.TRAILING_STOP_LIMIT)


class TimeInForce(enum.StrEnum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    OPG = "OPG"
    GTD = "GTD"


class Algo(enum.StrEnum):
    """An IBKR order algorithm."""

    ADAPTIVE = "ADAPTIVE"


class AlgoPriority(enum.StrEnum):
    PATIENT = "PATIENT"
    NORMAL = "NORMAL"
    URGENT = "URGENT"


class OrderState(enum.StrEnum):
    """States of an order in the ledger.

    The first seven are the contract's ``OrderStatusChanged.status`` values. ``PLACING`` is the ledger's
    own in-flight state: an IBKR order id has been reserved and ``placeOrder`` may have reached IBKR, but
    IBKR has not acknowledged it. After a crash or a disconnect such an order stays ``PLACING`` until
    reconciliation finds it at IBKR (by ``orderRef``) or proves IBKR never received it.
    """

    ACCEPTED = "ACCEPTED"
    PLACING = "PLACING"
    SUBMITTED = "SUBMITTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCEL_PENDING = "CANCEL_PENDING"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES

    @property
    def published_status(self) -> OrderState:
        """The status published on ``orders.status`` (``PLACING`` is internal: shown as ``ACCEPTED``)."""
        return OrderState.ACCEPTED if self is OrderState.PLACING else self


FINAL_STATES = frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED})

_S = OrderState
LEGAL_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    _S.ACCEPTED: frozenset({_S.PLACING, _S.REJECTED, _S.CANCELLED}),
    _S.PLACING: frozenset(
        {_S.SUBMITTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_PENDING, _S.CANCELLED, _S.REJECTED}
    ),
    _S.SUBMITTED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_PENDING, _S.CANCELLED, _S.REJECTED}),
    _S.PARTIALLY_FILLED: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCEL_PENDING, _S.CANCELLED}),
    _S.CANCEL_PENDING: frozenset({_S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELLED, _S.SUBMITTED}),
    _S.FILLED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.REJECTED: frozenset(),
}


class IllegalTransition(Exception):
    """The ledger refused a state change (e.g. FILLED back to SUBMITTED)."""

    def __init__(self, order_id: str, current: OrderState, requested: OrderState) -> None:
        super().__init__(f"order {order_id}: illegal transition {current} -> {requested}")
        self.order_id = order_id
        self.current = current
        self.requested = requested


def can_transition(current: OrderState, requested: OrderState) -> bool:
    """True when ``current -> requested`` is a legal change (staying in the same state is not a change)."""
    return requested in LEGAL_TRANSITIONS[current]


def check_transition(order_id: str, current: OrderState, requested: OrderState) -> None:
    """Raise :class:`IllegalTransition` unless ``current -> requested`` is legal."""
    if not can_transition(current, requested):
        raise IllegalTransition(order_id, current, requested)


@dataclass(frozen=True, kw_only=True)
class ExtendedTerms:
    """The terms an order request has since OrderRequested version 4, all optional; an :class:`Order` keeps
    them as they were sent."""

    # Trailing orders: how far the stop trails (one of the two) and, for a trailing stop limit, the limit's
    # distance from the stop.
    trailing_amount: Decimal | None = None
    trailing_percent: Decimal | None = None
    limit_offset: Decimal | None = None
    good_till: datetime | None = None  # GTD: when IBKR cancels the order
    algo: Algo | None = None
    algo_priority: AlgoPriority | None = None  # None with an algo: NORMAL
    # Brackets and OCA groups: refused until they are supported (see workers.domain.guards).
    take_profit_price: Decimal | None = None
    stop_loss_price: Decimal | None = None
    oca_group: str | None = None


EXTENDED_TERMS: tuple[str, ...] = tuple(f.name for f in fields(ExtendedTerms))


@dataclass(frozen=True)
class OrderRequested(ExtendedTerms):
    """An upstream service asks for an order (``orders.requested``)."""

    order_id: str
    account: str
    instrument_id: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    stop_price: Decimal | None
    time_in_force: TimeInForce
    outside_rth: bool
    created_at: datetime
    source: str | None = None
    # When the order is no longer wanted; it replaces the worker's maximum order age (None: that applies).
    expires_at: datetime | None = None


# The trading terms of an order: two requests under one order_id that differ in any of them are two orders
# (not ``created_at`` or ``source``, which a producer's retry may build anew).
TRADING_TERMS: tuple[str, ...] = (
    "account", "instrument_id", "side", "quantity", "order_type", "limit_price", "stop_price",
    "time_in_force", "outside_rth", "expires_at", *EXTENDED_TERMS,
)


def differing_terms(recorded: OrderRequested, other: OrderRequested) -> tuple[str, ...]:
    """The trading terms in which ``other`` differs from ``recorded`` (none: the same order again)."""
    return tuple(name for name in TRADING_TERMS if getattr(recorded, name) != getattr(other, name))


@dataclass(frozen=True)
class OrderCancelRequested:
    """An upstream service asks to cancel an order (``orders.cancel-requested``); may precede the order."""

    order_id: str
    account: str
    requested_at: datetime
    reason: str | None = None


# The reason of an order recorded CANCELLED because its cancel request arrived first.
CANCELLED_FIRST_REASON = "CANCELLED_BEFORE_PLACED: a cancel request arrived before the order"


@dataclass(frozen=True)
class NewOrder:
    """An order request to record, in the state the guards decided (ACCEPTED or REJECTED), and where it
    was read from."""

    order: OrderRequested
    state: OrderState
    reason: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    # A bracket's child names its parent (the children are derived from the parent's request).
    parent_order_id: str | None = None


@dataclass(frozen=True)
class StatusChange:
    """A requested state change of one order, with the fields IBKR reported (None keeps a field)."""

    order_id: str
    state: OrderState
    filled: Decimal | None = None
    remaining: Decimal | None = None
    avg_price: Decimal | None = None
    perm_id: int | None = None
    reason: str | None = None
    error_code: int | None = None
    # Apply only when the order is in one of these states (None: wherever the state machine allows).
    only_from: frozenset[OrderState] | None = None


@dataclass(frozen=True)
class Order(ExtendedTerms):
    """One order as the ledger holds it: its terms, where its request came from, its state and IBKR's ids.

    Immutable: a change gives a new ``Order`` (:meth:`after`); the ledger writes it only if the stored
    order is still the one the change was worked out on.
    """

    order_id: str
    account: str
    instrument_id: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    stop_price: Decimal | None
    time_in_force: TimeInForce
    outside_rth: bool
    source: str | None
    created_at: datetime
    state: OrderState
    ib_client_id: int | None
    ib_order_id: int | None
    ib_perm_id: int | None
    con_id: int | None
    filled_quantity: Decimal
    remaining_quantity: Decimal
    avg_fill_price: Decimal | None
    reason: str | None
    ib_error_code: int | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    accepted_at: datetime
    updated_at: datetime
    owner_client_id: int | None = None
    expires_at: datetime | None = None
    # The terms as first requested, kept once a modification changed the working terms above (None: the
    # order works with the terms it was requested with).
    requested_quantity: Decimal | None = None
    requested_limit_price: Decimal | None = None
    requested_stop_price: Decimal | None = None
    requested_time_in_force: TimeInForce | None = None
    requested_trailing_amount: Decimal | None = None
    requested_trailing_percent: Decimal | None = None
    requested_limit_offset: Decimal | None = None
    # A bracket's child: its parent's order_id (see workers.domain.brackets).
    parent_order_id: str | None = None

    @property
    def is_final(self) -> bool:
        return self.state.is_final

    @classmethod
    def recorded(cls, new: NewOrder, owner_client_id: int, now: datetime | None = None) -> Order:
        """The order ``new`` becomes when recorded (before IBKR's ids: those come with SUBMITTED)."""
        request = new.order
        now = now or datetime.now(UTC)
        return cls(
            order_id=request.order_id, account=request.account, instrument_id=request.instrument_id,
            side=request.side, quantity=request.quantity, order_type=request.order_type,
            limit_price=request.limit_price, stop_price=request.stop_price,
            time_in_force=request.time_in_force, outside_rth=request.outside_rth, source=request.source,
            created_at=request.created_at, state=new.state, ib_client_id=None, ib_order_id=None,
            ib_perm_id=None, con_id=None, filled_quantity=Decimal(0),
            remaining_quantity=request.quantity if new.state is OrderState.ACCEPTED else Decimal(0),
            avg_fill_price=None, reason=new.reason, ib_error_code=None, source_topic=new.source_topic,
            source_partition=new.source_partition, source_offset=new.source_offset, accepted_at=now,
            updated_at=now, owner_client_id=owner_client_id, expires_at=request.expires_at,
            parent_order_id=new.parent_order_id, **{name: getattr(request, name) for name in EXTENDED_TERMS},
        )

    @property
    def request(self) -> OrderRequested:
        """The order as a request with the terms it works with (what is placed at IBKR)."""
        return OrderRequested(
            order_id=self.order_id, account=self.account, instrument_id=self.instrument_id, side=self.side,
            quantity=self.quantity, order_type=self.order_type, limit_price=self.limit_price,
            stop_price=self.stop_price, time_in_force=self.time_in_force, outside_rth=self.outside_rth,
            created_at=self.created_at, source=self.source, expires_at=self.expires_at,
            **{name: getattr(self, name) for name in EXTENDED_TERMS},
        )

    @property
    def modified(self) -> bool:
        """True once a modification changed the terms the order works with."""
        return self.requested_quantity is not None

    @property
    def as_requested(self) -> OrderRequested:
        """The request as it was first recorded (a redelivery of it is the same order, whatever
        modifications changed since)."""
        request = self.request
        if not self.modified:
            return request
        assert self.requested_quantity is not None and self.requested_time_in_force is not None
        return replace(request, quantity=self.requested_quantity, limit_price=self.requested_limit_price,
                       stop_price=self.requested_stop_price, time_in_force=self.requested_time_in_force,
                       trailing_amount=self.requested_trailing_amount,
                       trailing_percent=self.requested_trailing_percent, limit_offset=self.requested_limit_offset)

    def after(self, change: StatusChange, now: datetime | None = None) -> Order | None:
        """This order after ``change``, or None when the change is illegal or changes nothing.

        Staying in a state is no change, except a PARTIALLY_FILLED order whose filled quantity moved.
        """
        if change.order_id != self.order_id:
            raise ValueError(f"change of order {change.order_id} applied to order {self.order_id}")
        if change.only_from is not None and self.state not in change.only_from:
            return None
        same_state = change.state is self.state
        if same_state and change.state is not OrderState.PARTIALLY_FILLED:
            return None
        if same_state and (change.filled is None or change.filled == self.filled_quantity):
            return None
        if not same_state and not can_transition(self.state, change.state):
            return None
        return replace(
            self,
            state=change.state,
            filled_quantity=_given(change.filled, self.filled_quantity),
            remaining_quantity=_given(change.remaining, self.remaining_quantity),
            avg_fill_price=_given(change.avg_price, self.avg_fill_price),
            ib_perm_id=_given(change.perm_id, self.ib_perm_id),
            reason=_given(change.reason, self.reason),
            ib_error_code=_given(change.error_code, self.ib_error_code),
            updated_at=now or datetime.now(UTC),
        )


def _given(value: _T | None, current: _T) -> _T:
    return current if value is None else value


@dataclass(frozen=True)
class AppliedChange:
    """A change the ledger accepted: the order as written and the state it left."""

    order: Order
    previous: OrderState
