"""What the risk rules see of the market and the accounts, gathered once per batch of orders.

Quotes come from IBKR's market data (subscribed on first use), positions from IBKR's position reports
(kept in memory as they arrive), working orders from the ledger (one query per batch, every replica's
orders, only when a position limit is in force).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal

from workers.domain.guards import GuardPolicy
from workers.domain.instruments import Instrument
from workers.domain.orders import OrderRequested, Side
from workers.domain.risk import MarketView, Quote, has_banded_price, needs_reference_for_notional
from workers.domain.trading_state import TradingState
from workers.ports.ibkr import IbPosition
from workers.ports.market_data import ReferencePrice, ReferencePrices
from workers.ports.orders import OrderRepository


class PositionCache:
    """IBKR's latest position of each account in each contract, as reported (a contract IBKR stops
    reporting after a reconnect is flat: the cache is emptied when the connection drops)."""

    def __init__(self) -> None:
        self._positions: dict[tuple[str, int], Decimal] = {}

    def note(self, reports: Iterable[IbPosition]) -> None:
        for report in reports:
            self._positions[(report.account, report.con_id)] = report.quantity

    def connection_lost(self) -> None:
        self._positions.clear()

    def position(self, account: str, con_id: int) -> Decimal:
        return self._positions.get((account, con_id), Decimal(0))


def quote_of(price: ReferencePrice, now: float) -> Quote:
    return Quote(bid=price.bid, ask=price.ask, last=price.last, close=price.close,
                 age_seconds=max(0.0, now - price.received_at), delayed=price.delayed)


def needs_quote(order: OrderRequested, instrument: Instrument, policy: GuardPolicy) -> bool:
    """Whether a rule in force measures ``order`` against the market price."""
    if has_banded_price(order) and policy.price_band_for(instrument) is not None:
        return True
    notional_limited = (policy.global_limits.max_notional is not None
                        or policy.limits_for(instrument.instrument_id).max_notional is not None)
    return needs_reference_for_notional(order) and notional_limited


def needs_exposure(instrument_id: str, policy: GuardPolicy) -> bool:
    """Whether a rule in force needs the account's working orders (a position limit; REDUCING, to tell an
    order that reduces the position)."""
    return (policy.global_limits.max_position is not None
            or policy.limits_for(instrument_id).max_position is not None
            or policy.trading_state is TradingState.REDUCING)


class MarketViews:
    """Builds the :class:`MarketView` of each order of a batch."""

    def __init__(self, *, ledger: OrderRepository, prices: ReferencePrices | None, positions: PositionCache,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.prices = prices
        self.positions = positions
        self.clock = clock

    async def views(self, orders: Sequence[tuple[OrderRequested, Instrument]],
                    policy: GuardPolicy) -> dict[str, MarketView]:
        """The view of each order (by ``order_id``), with only what the rules in force need."""
        exposed = [(o, i) for o, i in orders if needs_exposure(o.instrument_id, policy)]
        working = await self.ledger.working_quantities(
            [o.account for o, _ in exposed], [o.instrument_id for o, _ in exposed]) if exposed else {}
        quotes = await self._quotes({i.con_id: i for o, i in orders if needs_quote(o, i, policy)})
        views: dict[str, MarketView] = {}
        for order, instrument in orders:
            views[order.order_id] = MarketView(
                quote=quotes.get(instrument.con_id) if needs_quote(order, instrument, policy) else None,
                position=self.positions.position(order.account, instrument.con_id),
                working_buy=working.get((order.account, order.instrument_id, Side.BUY), Decimal(0)),
                working_sell=working.get((order.account, order.instrument_id, Side.SELL), Decimal(0)),
            )
        return views

    async def _quotes(self, instruments: dict[int, Instrument]) -> dict[int, Quote | None]:
        """The quote of each instrument, asked for at once (a first use may wait for IBKR's first prices)."""
        if self.prices is None or not instruments:
            return {}
        prices = self.prices
        answers = await asyncio.gather(*(prices.reference(i) for i in instruments.values()))
        now = self.clock()
        return {con_id: quote_of(price, now) if price is not None else None
                for con_id, price in zip(instruments, answers, strict=True)}
