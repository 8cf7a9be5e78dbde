"""The market-data port: IBKR's latest prices of an instrument, for the pre-trade rules that need a reference.

The IBKR adapter (:mod:`workers.adapters.ibkr.market_data`) implements :class:`ReferencePrices`
structurally; the service layer and the domain see only this module's types. How a BUY or a SELL picks
among ask, bid, last and close, and when a price is too old, is the domain's decision, not the port's.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from workers.domain.instruments import Instrument


@dataclass(frozen=True)
class ReferencePrice:
    """IBKR's market data for one contract as last seen: bid, ask, last, close (None when unknown) and when
    each arrived (monotonic seconds)."""

    con_id: int
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    close: Decimal | None
    received_at: float  # time.monotonic() of the latest tick
    delayed: bool  # delayed or frozen data


class ReferencePrices(Protocol):
    """Where the pre-trade rules get an instrument's latest market prices."""

    async def reference(self, instrument: Instrument) -> ReferencePrice | None:
        """The latest prices of ``instrument``, subscribing on first use (None while none has arrived or
        when IBKR refuses: unknown contract, no subscription, lines exhausted)."""
        ...
