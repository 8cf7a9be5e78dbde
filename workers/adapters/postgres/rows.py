"""Typed rows the PostgreSQL stores read and write.

Plain frozen dataclasses: nothing here runs SQL. An order is stored as the domain's
:class:`~workers.domain.orders.Order`, a fill recorded from the domain's :class:`~workers.domain.fills.Fill`;
the instrument rows and the outbox message are the service layer's types, in :mod:`workers.ports`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

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


@dataclass(frozen=True)
class OutboxRow:
    """A row of table ``outbox``."""

    id: int
    topic: str
    key: str
    payload: bytes
    created_at: datetime
    published_at: datetime | None
