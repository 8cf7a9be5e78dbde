"""Typed rows the PostgreSQL stores read and write.

Plain frozen dataclasses: nothing here runs SQL. An IBKR execution, which may come from elsewhere, is
described by a protocol (:class:`FillFields`), so a dataclass with the same attributes can be passed as it
is; :class:`Fill` is a ready-made implementation. The instrument rows and the outbox message are the
service layer's types: they live in :mod:`workers.ports`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from workers.domain.orders import OrderState, OrderType, Side, TimeInForce

# Re-exported (explicitly, for mypy) for the order side, which still imports it from here.
from workers.ports.outbox import OutboxMessage as OutboxMessage  # noqa: PLC0414


@dataclass(frozen=True)
class OrderRow:
    """One order in the ledger (table ``orders``)."""

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

    @property
    def is_final(self) -> bool:
        return self.state.is_final


@dataclass(frozen=True)
class CancelRequestRow:
    """A cancel request as received (table ``cancel_requests``); its order may not exist yet."""

    order_id: str
    account: str
    requested_at: datetime
    reason: str | None
    received_at: datetime
    handled_at: datetime | None


class FillFields(Protocol):
    """What :meth:`FillStore.insert` needs to know about one IBKR execution."""

    @property
    def fill_id(self) -> str: ...
    @property
    def order_id(self) -> str: ...
    @property
    def con_id(self) -> int: ...
    @property
    def side(self) -> str: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def executed_at(self) -> datetime: ...
    @property
    def commission(self) -> Decimal | None: ...
    @property
    def commission_currency(self) -> str | None: ...
    @property
    def ib_order_id(self) -> int: ...
    @property
    def ib_perm_id(self) -> int: ...
    @property
    def cumulative_quantity(self) -> Decimal: ...
    @property
    def avg_price(self) -> Decimal: ...
    @property
    def corrects_fill_id(self) -> str | None: ...


@dataclass(frozen=True)
class Fill:
    """One IBKR execution of a ledger order (``fill_id`` is IBKR's execId)."""

    fill_id: str
    order_id: str
    con_id: int
    side: Side
    quantity: Decimal
    price: Decimal
    currency: str
    exchange: str
    executed_at: datetime
    ib_order_id: int
    ib_perm_id: int
    cumulative_quantity: Decimal
    avg_price: Decimal
    commission: Decimal | None = None
    commission_currency: str | None = None
    corrects_fill_id: str | None = None


@dataclass(frozen=True)
class FillRow:
    """A recorded fill (table ``fills``), with its order's account and instrument for publishing."""

    fill_id: str
    order_id: str
    account: str
    instrument_id: str
    con_id: int
    side: Side
    quantity: Decimal
    price: Decimal
    currency: str
    exchange: str
    executed_at: datetime
    commission: Decimal | None
    commission_currency: str | None
    ib_order_id: int
    ib_perm_id: int
    cumulative_quantity: Decimal
    avg_price: Decimal
    recorded_at: datetime
    published_at: datetime | None
    corrects_fill_id: str | None = None


@dataclass(frozen=True)
class OutboxRow:
    """A row of table ``outbox``."""

    id: int
    topic: str
    key: str
    payload: bytes
    created_at: datetime
    published_at: datetime | None
