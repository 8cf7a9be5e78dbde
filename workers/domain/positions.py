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


def average_price(avg_cost: Decimal, multiplier: Decimal | None) -> Decimal | None:
    """The average price as quoted: IBKR's ``avg_cost`` (per contract) divided by the contract's multiplier.

    IBKR's average cost of a future or an option is per contract (ES at 6038.22 shows 301911 with its 50
    multiplier); people and price checks read prices. None when the multiplier is unknown or not positive.
    """
    if multiplier is None or multiplier <= 0:
        return None
    return avg_cost / multiplier
