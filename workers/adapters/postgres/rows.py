"""Typed rows the PostgreSQL stores read and write.

Plain frozen dataclasses: nothing here runs SQL. An order is stored as the domain's
:class:`~workers.domain.orders.Order`, a fill recorded from the domain's :class:`~workers.domain.fills.Fill`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from workers.domain.orders import Side


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


class InstrumentFields(Protocol):
    """What :meth:`InstrumentMapper.upsert` needs to know about one instrument."""

    @property
    def instrument_id(self) -> str: ...
    @property
    def con_id(self) -> int: ...
    @property
    def symbol(self) -> str: ...
    @property
    def sec_type(self) -> str: ...
    @property
    def exchange(self) -> str: ...
    @property
    def primary_exchange(self) -> str: ...
    @property
    def currency(self) -> str: ...
    @property
    def local_symbol(self) -> str: ...
    @property
    def trading_class(self) -> str: ...
    @property
    def multiplier(self) -> Decimal | None: ...
    @property
    def min_tick(self) -> Decimal: ...
    @property
    def last_trade_date(self) -> str | None: ...
    @property
    def long_name(self) -> str: ...
    @property
    def active(self) -> bool: ...
    @property
    def strike(self) -> Decimal | None: ...
    @property
    def option_right(self) -> str | None: ...


# The attributes of InstrumentFields that upsert compares and stores, besides the key.
INSTRUMENT_FIELDS: tuple[str, ...] = (
    "con_id",
    "symbol",
    "sec_type",
    "exchange",
    "primary_exchange",
    "currency",
    "local_symbol",
    "trading_class",
    "multiplier",
    "min_tick",
    "last_trade_date",
    "long_name",
    "active",
    "strike",
    "option_right",
)


@dataclass(frozen=True)
class Instrument:
    """An instrument as the mapper knows it: our ``instrument_id`` and the IBKR contract it maps to."""

    instrument_id: str
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    min_tick: Decimal
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: Decimal | None = None
    last_trade_date: str | None = None
    long_name: str = ""
    active: bool = True
    # Options only: the strike and the right (C or P).
    strike: Decimal | None = None
    option_right: str | None = None


@dataclass(frozen=True)
class InstrumentRow:
    """A row of the mapper (table ``instruments``)."""

    instrument_id: str
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    multiplier: Decimal | None
    min_tick: Decimal
    last_trade_date: str | None
    long_name: str
    active: bool
    created_at: datetime
    updated_at: datetime
    strike: Decimal | None = None
    option_right: str | None = None


class InstrumentChange(enum.StrEnum):
    """What an upsert or deactivation did (the first three are the contract's ``change`` values)."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DEACTIVATED = "DEACTIVATED"
    UNCHANGED = "UNCHANGED"


@dataclass(frozen=True)
class Deactivate:
    """Mark instrument ``instrument_id`` inactive (IBKR no longer knows it, or it expired)."""

    instrument_id: str
    reason: str = ""


@dataclass(frozen=True)
class InstrumentUpsert:
    """The outcome of writing one instrument: what changed, which fields, and the row as stored now."""

    change: InstrumentChange
    changed_fields: tuple[str, ...]
    row: InstrumentRow


@dataclass(frozen=True)
class OutboxRow:
    """A row of table ``outbox``."""

    id: int
    topic: str
    key: str
    payload: bytes
    created_at: datetime
    published_at: datetime | None
