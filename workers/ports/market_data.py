"""What the risk rules need of IBKR's market data: the latest prices of a contract."""

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
    async def reference(self, instrument: Instrument) -> ReferencePrice | None:
        """The latest prices of ``instrument``, subscribing on first use (None while none has arrived or
        when IBKR refuses: unknown contract, no subscription, lines exhausted)."""
