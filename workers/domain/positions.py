"""A position: what IBKR says one account holds of one contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


@dataclass(frozen=True)
class Position:
    """IBKR's latest position of ``account`` in contract ``con_id``, as of when the worker received it.

    ``instrument_id`` is None for a contract the instrument mapper does not know.
    """

    account: str
    con_id: int
    instrument_id: str | None
    quantity: Decimal
    avg_cost: Decimal
    currency: str
    as_of: datetime
