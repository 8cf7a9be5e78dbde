"""What the order service needs of IBKR: the connection it places through, and IBKR's reports as typed values.

The IBKR adapter (``workers.adapters.ibkr``) implements :class:`IbkrConnection` over ib_insync and turns
its callbacks into these reports; nothing here knows ib_insync.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from workers.domain.instruments import Instrument
from workers.domain.orders import Order, StatusChange

# IB error codes that are notices, not failures of a request: connectivity, farms, every 21xx warning.
# docs/troubleshooting.md lists them (a test keeps the two in agreement).
INFORMATIONAL_CODES = frozenset({202, 399, 404, 1100, 1101, 1102, *range(2100, 2200), 10349})
# IB drops a message over its pacing limit and says so with this code, naming no request.
PACING_VIOLATION = 100


@dataclass(frozen=True)
class IbTerms:
    """The terms IBKR holds for an order (from its openOrder message): size, prices, time in force."""

    quantity: Decimal
    limit_price: Decimal | None
    stop_price: Decimal | None  # IB's auxPrice: a stop's trigger, a touch price, a trailing amount
    time_in_force: str
    trailing_percent: Decimal | None = None
    limit_offset: Decimal | None = None


@dataclass(frozen=True)
class IbOrderTerms:
    """IBKR (re)stated the terms of one of our orders: an openOrder, as after a placement or a modification."""

    order_ref: str
    ib_order_id: int
    terms: IbTerms


@dataclass(frozen=True)
class IbOrderStatus:
    """IB's view of one of our orders (from openOrder / orderStatus / completed orders).

    ``change``: what it asks of the ledger, in our states (mapped by the adapter from IB's status), or
    None when it changes nothing (IB's transient states, an order without our ``orderRef``).
    """

    order_ref: str
    ib_order_id: int
    perm_id: int
    ib_status: str
    filled: Decimal
    remaining: Decimal
    avg_fill_price: Decimal | None
    # Set when ib_insync inferred the status from an error message rather than from an orderStatus.
    error_code: int | None = None
    error_message: str | None = None
    change: StatusChange | None = None
    # The terms of the order as IBKR last stated them (None when not known).
    terms: IbTerms | None = None


@dataclass(frozen=True)
class IbExecution:
    """One IBKR execution; ``exec_id`` is its identity, stable across replays."""

    exec_id: str
    order_ref: str
    ib_order_id: int
    perm_id: int
    con_id: int
    side: str
    quantity: Decimal
    price: Decimal
    cumulative_quantity: Decimal
    avg_price: Decimal
    account: str
    exchange: str
    currency: str
    executed_at: datetime
    commission: Decimal | None = None
    commission_currency: str | None = None


@dataclass(frozen=True)
class IbCommission:
    """IBKR's commission report for one execution."""

    exec_id: str
    commission: Decimal
    currency: str


@dataclass(frozen=True)
class IbError:
    """An error or notice from IB; ``req_id`` is an order id when it concerns an order."""

    req_id: int
    code: int
    message: str

    @property
    def informational(self) -> bool:
        return self.code in INFORMATIONAL_CODES


@dataclass(frozen=True)
class IbPosition:
    """IBKR's position of one account in one contract.

    ``avg_cost`` is IBKR's, per contract with the multiplier in it; ``multiplier`` is the contract's (1 when
    it has none), None when IBKR sent one that is not a number.
    """

    account: str
    con_id: int
    quantity: Decimal
    avg_cost: Decimal
    currency: str
    multiplier: Decimal | None = Decimal(1)


@dataclass(frozen=True)
class ConnectionChanged:
    """The connection to IBKR went up or down."""

    connected: bool


IbReport = IbOrderStatus | IbOrderTerms | IbExecution | IbCommission | IbError | IbPosition | ConnectionChanged


class IbkrListener(Protocol):
    """Receives the reports in arrival order, in batches of whatever had queued up."""

    async def __call__(self, reports: list[IbReport]) -> None: ...


class IbkrConnection(Protocol):
    """What the order service needs of its IBKR connection (one API client id)."""

    client_id: int
    next_valid_id_at_connect: int

    @property
    def connected(self) -> bool: ...

    async def place(self, instrument: Instrument, order: Order, ib_order_id: int, *,
                    parent_ib_order_id: int | None = None, transmit: bool = True) -> None:
        """Send ``order`` for ``instrument`` under ``ib_order_id``, its ``orderRef`` our ``order_id``; a
        bracket's child names its parent's IBKR id, and IBKR holds an order sent without ``transmit`` until
        the last order of its group (sent with it) arrives."""

    async def modify(self, instrument: Instrument, order: Order, ib_order_id: int, *,
                     parent_ib_order_id: int | None = None) -> None:
        """Place ``order`` again under its ``ib_order_id`` with the terms it now has: IBKR's modification."""

    async def cancel(self, ib_order_id: int) -> None: ...
    async def global_cancel(self) -> None: ...
    async def order_statuses(self) -> dict[str, IbOrderStatus]:
        """IBKR's open and completed orders of this client id, by ``orderRef`` (our ``order_id``)."""

    async def executions(self) -> list[IbExecution]: ...
