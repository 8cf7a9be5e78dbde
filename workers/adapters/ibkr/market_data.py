"""Reference prices from IBKR market data: one streaming line per instrument traded, opened on first use.

:class:`MarketDataBook` implements :class:`workers.ports.market_data.ReferencePrices` over the gateway's
``ib_insync.IB``. It holds at most ``lines`` subscriptions (IBKR's allowance is per account), releases the
least recently used when full and any left unused for ``idle`` seconds, sends every request through the
gateway's pacing limiter, asks for the configured market data type at every connect and subscribes again
to what it held after a reconnect.

Its request ids come from a range of their own (:data:`FIRST_REQ_ID` up), not from ib_insync's sequence:
the workers number their orders from IB's nextValidId themselves, and ib_insync's sequence starts at the
same number, so a market-data request could share its id with an order; IB's error 200 or 354 for that
request would then make ib_insync mark the order cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ib_insync import Contract, Ticker

from workers.adapters.ibkr.builders import contract_for
from workers.adapters.ibkr.pacing import Priority
from workers.adapters.ibkr.reports import to_decimal
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.domain.instruments import Instrument
from workers.logs import get_logger
from workers.ports.market_data import ReferencePrice
from workers.settings import MarketDataType

log = get_logger(__name__)

DATA_TYPE_IDS: dict[MarketDataType, int] = {"live": 1, "frozen": 2, "delayed": 3, "delayed-frozen": 4}

FIRST_REQ_ID = 1_900_000_000
"""First request id of the book's subscriptions; order ids start at IB's nextValidId and stay far below."""

# IBKR's answers that mean no data will come for the request (the line is not held at IBKR).
REFUSALS: dict[int, str] = {
    101: "IBKR's market-data lines are exhausted (other clients of the account hold them)",
    200: "IBKR knows no such contract",
    354: "the account has no market-data subscription for the contract (IBKR_MARKET_DATA_TYPE=delayed "
         "would get delayed data)",
    10168: "the account has no market-data subscription and delayed data is not enabled",
    10197: "no market data during a competing live session",
}
DISPLAYING_DELAYED = 10167
# How long after a cancel ticks for the old request id are still expected (ib_insync keeps the id's ticker
# until then, so they are dropped quietly instead of logged as unknown).
_CANCEL_GRACE = 10.0


@dataclass(eq=False)
class _Line:
    """One instrument's subscription and the prices it last delivered."""

    instrument: Instrument
    opened_at: float
    last_used: float
    req_id: int = 0
    ticker: Ticker | None = None  # None while not subscribed at IBKR (before a connect, after a drop)
    contract: Contract | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    last: Decimal | None = None
    close: Decimal | None = None
    delayed: bool = False
    received_at: float | None = None
    first_tick: asyncio.Event = field(default_factory=asyncio.Event)

    def reference(self) -> ReferencePrice | None:
        if self.received_at is None:
            return None
        return ReferencePrice(con_id=self.instrument.con_id, bid=self.bid, ask=self.ask, last=self.last,
                              close=self.close, received_at=self.received_at, delayed=self.delayed)


def _price(value: float) -> Decimal | None:
    """A ticker's price, or None when IBKR has none (ib_insync's NaN, IB's -1 or 0 for "no price")."""
    if not math.isfinite(value) or value <= 0:
        return None
    return to_decimal(value)


class MarketDataBook:
    """IBKR's latest prices of the instruments the worker trades, one market-data line each."""

    def __init__(self, gateway: TwsConnection, *, data_type: MarketDataType = "live", lines: int = 100,
                 idle: float = 600.0, first_tick_timeout: float = 2.0, retry_refused_after: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if lines < 1:
            raise ValueError("lines must be at least 1")
        self.gateway = gateway
        self.data_type = data_type
        self.max_lines = lines
        self.idle = idle
        # The first use of an instrument waits this long for its first prices: an order should not be
        # refused only because its instrument was not subscribed yet.
        self.first_tick_timeout = first_tick_timeout
        # An instrument IBKR refused is asked for again only after this long, not on every order.
        self.retry_refused_after = retry_refused_after
        self._clock = clock
        self._lines: dict[int, _Line] = {}  # conId -> line, least recently used first
        self._by_req_id: dict[int, _Line] = {}
        self._by_ticker: dict[Ticker, _Line] = {}
        self._refused: dict[int, float] = {}  # conId -> monotonic time from which it may be asked again
        self._cancelled: deque[tuple[float, int]] = deque()  # (when, reqId) of cancels sent
        self._next_req_id = FIRST_REQ_ID
        self._type_sent = False  # reqMarketDataType sent on the current connection
        self._resumes_pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.released_idle = 0
        self.released_full = 0
        ib = gateway.ib
        ib.connectedEvent += self._on_connected
        ib.disconnectedEvent += self._on_disconnected
        ib.pendingTickersEvent += self._on_tickers
        ib.errorEvent += self._on_error

    @property
    def lines_in_use(self) -> int:
        """Instruments the book holds a line for (subscribed, or to subscribe at the next connect)."""
        return len(self._lines)

    # -- the port ---------------------------------------------------------------------------------

    async def reference(self, instrument: Instrument) -> ReferencePrice | None:
        """The latest prices of ``instrument``, subscribing on first use (None while none has arrived or
        when IBKR refuses: unknown contract, no subscription, lines exhausted)."""
        con_id = instrument.con_id
        now = self._clock()
        line = self._lines.get(con_id)
        if line is None:
            if now < self._refused.get(con_id, -math.inf) or not self.gateway.connected:
                return None
            self._refused.pop(con_id, None)
            if not self._type_sent and not self._resumes_pending:
                self._on_connected()  # built after the gateway connected: nothing asked for the type yet
            line = await self._open(instrument, now)
        else:
            # Most recently used last: the dict's order is the eviction order.
            del self._lines[con_id]
            self._lines[con_id] = line
            line.last_used = now
        # Only the first uses wait (within first_tick_timeout of the line's opening): an instrument IBKR
        # stays silent about must not hold up every later order.
        wait = line.opened_at + self.first_tick_timeout - now
        if line.received_at is None and wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(line.first_tick.wait(), wait)
        return line.reference()

    # -- lines ------------------------------------------------------------------------------------

    async def _open(self, instrument: Instrument, now: float) -> _Line:
        # Evict and register without an await in between, so concurrent first uses never exceed the bound.
        evicted: list[tuple[int, bool]] = []
        while len(self._lines) >= self.max_lines:
            oldest = next(iter(self._lines.values()))
            self.released_full += 1
            log.info("market data line released: lines full", con_id=oldest.instrument.con_id,
                     instrument_id=oldest.instrument.instrument_id, lines=self.max_lines)
            evicted.append(self._drop(oldest))
        line = _Line(instrument, opened_at=now, last_used=now)
        self._lines[instrument.con_id] = line
        # The cancels go out before the new request, so IBKR never counts more lines than the bound.
        for req_id, held in evicted:
            await self._cancel(req_id, held)
        await self._subscribe(line)
        return line

    def _needs_subscribing(self, line: _Line) -> bool:
        # Not while disconnected or before the data type was asked for (IBKR would answer with live data,
        # or 354): the connect's resume subscribes it then. Not when subscribed or released meanwhile.
        return self._type_sent and line.ticker is None and self._lines.get(line.instrument.con_id) is line

    async def _subscribe(self, line: _Line) -> None:
        if not self._needs_subscribing(line):
            return
        await self.gateway.limiter.acquire(Priority.QUERY)
        if not self._needs_subscribing(line):
            return
        ib = self.gateway.ib
        req_id = self._next_req_id
        self._next_req_id += 1
        contract = contract_for(line.instrument)
        ticker = ib.wrapper.startTicker(req_id, contract, "mktData")
        line.req_id, line.contract, line.ticker = req_id, contract, ticker
        self._by_req_id[req_id] = line
        self._by_ticker[ticker] = line
        ib.client.reqMktData(req_id, contract, "", False, False, [])

    def _drop(self, line: _Line) -> tuple[int, bool]:
        """Forget ``line`` at once; returns its request id and whether IBKR holds a line for it."""
        if self._lines.get(line.instrument.con_id) is line:
            del self._lines[line.instrument.con_id]
        self._by_req_id.pop(line.req_id, None)
        held = line.ticker is not None
        if line.ticker is not None:
            self._by_ticker.pop(line.ticker, None)
            self.gateway.ib.wrapper.endTicker(line.ticker, "mktData")
            if line.contract is not None:
                self.gateway.ib.wrapper.tickers.pop(id(line.contract), None)
        line.ticker = None
        line.first_tick.set()  # callers waiting for the first prices stop waiting
        return line.req_id, held

    async def _release(self, line: _Line) -> None:
        await self._cancel(*self._drop(line))

    async def _cancel(self, req_id: int, held: bool) -> None:
        if not held:
            return
        await self.gateway.limiter.acquire(Priority.QUERY)
        if self.gateway.connected:
            self.gateway.ib.client.cancelMktData(req_id)
            self._cancelled.append((self._clock(), req_id))

    def release_idle(self) -> int:
        """Release every line unused for ``idle`` seconds (cancels go out through the limiter); returns
        how many were released."""
        now = self._clock()
        idle = [line for line in self._lines.values() if now - line.last_used >= self.idle]
        for line in idle:
            log.info("market data line released: idle", con_id=line.instrument.con_id,
                     instrument_id=line.instrument.instrument_id, idle_seconds=round(now - line.last_used))
            self._spawn(self._release(line))
        self.released_idle += len(idle)
        self._forget_cancelled(now)
        for con_id in [c for c, until in self._refused.items() if until <= now]:
            del self._refused[con_id]
        return len(idle)

    def _forget_cancelled(self, now: float) -> None:
        wrapper = self.gateway.ib.wrapper
        while self._cancelled and now - self._cancelled[0][0] >= _CANCEL_GRACE:
            _, req_id = self._cancelled.popleft()
            wrapper.reqId2Ticker.pop(req_id, None)

    async def run_idle_release(self, stop: asyncio.Event) -> None:
        """:meth:`release_idle` every quarter of ``idle`` (at most every 30 s) until ``stop`` is set."""
        every = min(self.idle / 4, 30.0)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            self.release_idle()

    async def close(self) -> None:
        """Cancel every line (while connected) and stop the book's pending requests."""
        for line in list(self._lines.values()):
            await self._release(line)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        ib = self.gateway.ib
        ib.connectedEvent -= self._on_connected
        ib.disconnectedEvent -= self._on_disconnected
        ib.pendingTickersEvent -= self._on_tickers
        ib.errorEvent -= self._on_error

    # -- ib_insync events -------------------------------------------------------------------------

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("market data request failed", error=repr(task.exception()))

    def _on_connected(self) -> None:
        self._resumes_pending += 1
        self._spawn(self._resume())

    async def _resume(self) -> None:
        """Ask for the configured data type, then subscribe again to every line held."""
        try:
            await self.gateway.limiter.acquire(Priority.QUERY)
        finally:
            self._resumes_pending -= 1
        if not self.gateway.connected:
            return
        self.gateway.ib.reqMarketDataType(DATA_TYPE_IDS[self.data_type])
        # No await from here to the list: a line opened later subscribes itself.
        self._type_sent = True
        lines = [line for line in self._lines.values() if line.ticker is None]
        if lines:
            log.info("market data subscribed again after connecting", lines=len(lines))
        for line in lines:
            await self._subscribe(line)

    def _on_disconnected(self) -> None:
        # ib_insync forgets every ticker on a disconnect; the lines keep their last prices (their
        # received_at says how old they are) until the next connect subscribes them again.
        self._type_sent = False
        for line in self._lines.values():
            line.ticker = None
        self._by_req_id.clear()
        self._by_ticker.clear()
        self._cancelled.clear()

    def _on_tickers(self, tickers: set[Ticker]) -> None:
        now = self._clock()
        for ticker in tickers:
            line = self._by_ticker.get(ticker)
            if line is None:
                continue
            line.bid, line.ask = _price(ticker.bid), _price(ticker.ask)
            line.last, line.close = _price(ticker.last), _price(ticker.close)
            line.delayed = ticker.marketDataType != 1
            if line.bid or line.ask or line.last or line.close:
                line.received_at = now
                line.first_tick.set()

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        line = self._by_req_id.get(req_id)
        if line is None:
            return
        instrument = line.instrument
        if code == DISPLAYING_DELAYED:
            log.info("market data is delayed: no live subscription", con_id=instrument.con_id,
                     instrument_id=instrument.instrument_id, code=code)
            return
        reason = REFUSALS.get(code)
        if reason is None:
            return
        req_id, _ = self._drop(line)
        self.gateway.ib.wrapper.reqId2Ticker.pop(req_id, None)  # IBKR sends nothing more for it
        self._refused[instrument.con_id] = self._clock() + self.retry_refused_after
        log.warning("market data refused: no reference price", con_id=instrument.con_id,
                    instrument_id=instrument.instrument_id, code=code, reason=reason, message=message,
                    retry_in=self.retry_refused_after)
