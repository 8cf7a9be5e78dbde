"""The instrument record: an internal ``instrument_id`` mapped to one IBKR contract."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class SecType(enum.StrEnum):
    STK = "STK"
    FUT = "FUT"
    OPT = "OPT"
    CASH = "CASH"


@dataclass(frozen=True)
class Instrument:
    """One row of the instrument mapper; ``con_id`` is IBKR's identity of the contract."""

    instrument_id: str
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: Decimal | None = None
    min_tick: Decimal | None = None
    last_trade_date: str | None = None
    strike: Decimal | None = None
    right: str | None = None
    long_name: str = ""
    active: bool = True

    @property
    def price_multiplier(self) -> Decimal:
        """The factor from price × quantity to notional (1 when IBKR gives no multiplier)."""
        return self.multiplier if self.multiplier else Decimal(1)
