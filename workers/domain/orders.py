"""The order life cycle: states, legal transitions, and the commands that start it.

Plain Python only: nothing here knows about Kafka, SQL or the TWS socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class Side(enum.StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(enum.StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"

    @property
    def needs_limit_price(self) -> bool:
        return self in (OrderType.LIMIT, OrderType.STOP_LIMIT)

    @property
    def needs_stop_price(self) -> bool:
        return self in (OrderType.STOP, OrderType.STOP_LIMIT)


class TimeInForce(enum.StrEnum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"
    OPG = "OPG"


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


@dataclass(frozen=True)
class OrderRequested:
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


@dataclass(frozen=True)
class OrderCancelRequested:
    """An upstream service asks to cancel an order (``orders.cancel-requested``); may precede the order."""

    order_id: str
    account: str
    requested_at: datetime
    reason: str | None = None
