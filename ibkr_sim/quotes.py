"""Market data: reqMktData, cancelMktData and reqMarketDataType, served from the price process.

What the sim answers, as IB does:
- a streaming request holds one of the account's market-data lines (``SimConfig.market_data_lines``,
  IB's default 100, shared by every connection) until cancelled; one over the bound gets error 101;
- the market data type a client asked for (reqMarketDataType: live 1, frozen 2, delayed 3,
  delayed-frozen 4) decides what a contract without a live subscription gets: error 354 for live or frozen,
  warning 10167 and the delayed tick types (66-68, 75) for delayed; a contract with a subscription always
  gets live data (IB ignores a delayed request then);
- frozen data (2 or 4 outside regular trading hours) is the last quote, sent once and never updated;
- a snapshot sends the quote and tickSnapshotEnd and holds no line.
Delayed quotes carry the current price: the sim keeps no price history to lag them by.
"""

from __future__ import annotations

from dataclasses import dataclass

from ibkr_sim import messages as m
from ibkr_sim.market import on_grid
from ibkr_sim.universe import SimContract

LIVE, FROZEN, DELAYED, DELAYED_FROZEN = 1, 2, 3, 4

NOT_SUBSCRIBED = "Requested market data is not subscribed. Delayed market data is available."
DISPLAYING_DELAYED = "Requested market data is not subscribed. Displaying delayed market data."
MAX_TICKERS = "Max number of tickers has been reached."
DUPLICATE_TICKER = "Error processing request.-'bW' : cause - Duplicate ticker id"


@dataclass(frozen=True, slots=True)
class TickTypes:
    """The tick type ids of one kind of data (live or delayed)."""

    bid: int
    ask: int
    last: int
    close: int
    last_size: int


LIVE_TICKS = TickTypes(bid=1, ask=2, last=4, close=9, last_size=5)
DELAYED_TICKS = TickTypes(bid=66, ask=67, last=68, close=75, last_size=71)
QUOTE_SIZE = 100.0


@dataclass(frozen=True, slots=True)
class MarketDataLine:
    """One streaming subscription of a connection: which contract, delayed or live, frozen or updating."""

    con_id: int
    delayed: bool
    frozen: bool


def quote_frames(req_id: int, inst: SimContract, price: float, *, delayed: bool) -> list[bytes]:
    """tickPrice (bid one tick under ``price``, ask one over, last, the previous close) and the last size."""
    tick = inst.min_tick
    types = DELAYED_TICKS if delayed else LIVE_TICKS
    return [
        m.tick_price(req_id, types.bid, on_grid(max(price - tick, tick), tick), QUOTE_SIZE),
        m.tick_price(req_id, types.ask, on_grid(price + tick, tick), QUOTE_SIZE),
        m.tick_price(req_id, types.last, price, QUOTE_SIZE),
        m.tick_size(req_id, types.last_size, QUOTE_SIZE),
        m.tick_price(req_id, types.close, max(on_grid(inst.ref_price, tick), tick), 0.0),
    ]


def data_type_served(wanted: int, *, subscribed: bool, trading_hours: bool) -> int | None:
    """The market data type a request gets (None: refused with error 354, no subscription for live data)."""
    frozen = wanted in (FROZEN, DELAYED_FROZEN) and not trading_hours
    if subscribed:
        return FROZEN if frozen else LIVE
    if wanted in (LIVE, FROZEN):
        return None
    return DELAYED_FROZEN if frozen else DELAYED
