"""Reference prices from the sim's market data, through the IBKR adapter's MarketDataBook over the real socket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from decimal import Decimal

import pytest

from ibkr_sim import SimConfig, SimGateway
from tests.integration.harness import AAPL, ES, EURUSD, SPY_CALL
from tests.integration.test_tws_connection import an_order
from workers.adapters.ibkr.market_data import FIRST_REQ_ID, MarketDataBook
from workers.adapters.ibkr.pacing import PacingLimiter, Priority
from workers.adapters.ibkr.tws_connection import TwsConnection

pytestmark = pytest.mark.integration

MSFT = replace(AAPL, instrument_id="STK:MSFT:USD", con_id=272093, symbol="MSFT", local_symbol="MSFT")
UNKNOWN = replace(AAPL, instrument_id="STK:NOPE:USD", con_id=999_999_999, symbol="NOPE", local_symbol="NOPE")


class CountingLimiter(PacingLimiter):
    """A pacing limiter that counts the messages it let through."""

    def __init__(self) -> None:
        super().__init__(1000.0)
        self.acquired = 0

    async def acquire(self, priority: Priority = Priority.QUERY) -> None:
        await super().acquire(priority)
        self.acquired += 1


class Clock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def sim_lines(sim: SimGateway) -> set[int]:
    """The conIds the sim streams to its clients (one per line held)."""
    return {line.con_id for session in sim.sessions for line in session.market_data.values()}


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(pacing=False)


@pytest.fixture
async def gateway(sim: SimGateway) -> AsyncIterator[TwsConnection]:
    host, port = sim.address
    gateway = TwsConnection(host, port, 31, limiter=CountingLimiter(), connect_timeout=5)
    yield gateway
    await gateway.close()


@pytest.fixture
async def book_of(gateway: TwsConnection) -> AsyncIterator[Callable[..., MarketDataBook]]:
    """``book_of(**kwargs)``: a book over the (not yet connected) gateway, closed after the test."""
    books: list[MarketDataBook] = []

    def make(**kwargs: object) -> MarketDataBook:
        book = MarketDataBook(gateway, **kwargs)  # type: ignore[arg-type]
        books.append(book)
        return book

    yield make
    for book in books:
        await book.close()


async def test_first_use_subscribes_and_returns_bid_ask_last_close_that_refresh(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    book = book_of()
    await gateway.connect()
    sim.set_price(AAPL.con_id, 230.00)
    first = await book.reference(AAPL)
    assert first is not None
    assert (first.con_id, first.bid, first.ask, first.last) == (AAPL.con_id, Decimal("229.99"), Decimal("230.01"),
                                                                 Decimal("230.0"))
    assert first.close == Decimal(repr(sim.instrument(AAPL.con_id).ref_price))
    assert not first.delayed
    assert sim_lines(sim) == {AAPL.con_id}
    sim.set_price(AAPL.con_id, 231.50)
    await eventually(lambda: sim_lines(sim) == {AAPL.con_id} and book._lines[AAPL.con_id].last == Decimal("231.5"))
    second = await book.reference(AAPL)
    assert second is not None and second.received_at >= first.received_at
    assert (second.bid, second.ask) == (Decimal("231.49"), Decimal("231.51"))
    assert book.lines_in_use == 1 and sim_lines(sim) == {AAPL.con_id}  # the second use reuses the line


async def test_futures_forex_and_options_get_reference_prices(
    gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    book = book_of()
    await gateway.connect()
    for instrument in (ES, EURUSD, SPY_CALL):
        reference = await book.reference(instrument)
        assert reference is not None and reference.last is not None and reference.last > 0, instrument


async def test_delayed_type_gives_delayed_prices_where_the_account_has_no_subscription(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    sim.config.market_data_subscribed = False
    book = book_of(data_type="delayed")
    await gateway.connect()
    reference = await book.reference(AAPL)
    assert reference is not None and reference.delayed
    assert reference.bid is not None and reference.ask is not None and reference.last is not None


async def test_live_type_without_subscription_is_no_reference_and_retried_later(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    sim.config.unsubscribed_con_ids = frozenset({AAPL.con_id})
    clock = Clock()
    book = book_of(retry_refused_after=60.0, clock=clock)
    await gateway.connect()
    started = time.monotonic()
    assert await book.reference(AAPL) is None  # error 354
    assert time.monotonic() - started < 1.0  # the refusal ends the wait for the first prices
    assert book.lines_in_use == 0 and sim_lines(sim) == set()
    sim.config.unsubscribed_con_ids = frozenset()
    assert await book.reference(AAPL) is None  # not asked again at once
    clock.now += 60
    reference = await book.reference(AAPL)
    assert reference is not None and not reference.delayed


async def test_unknown_contract_is_no_reference_without_raising(
    gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    book = book_of()
    await gateway.connect()
    started = time.monotonic()
    assert await book.reference(UNKNOWN) is None  # error 200
    assert time.monotonic() - started < 1.0
    assert book.lines_in_use == 0
    assert await book.reference(AAPL) is not None  # the book goes on working


async def test_lines_are_bounded_and_the_least_recently_used_is_released(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    clock = Clock()
    book = book_of(lines=2, clock=clock)
    await gateway.connect()
    for instrument in (AAPL, MSFT, AAPL):  # AAPL used again: MSFT is now the least recently used
        assert await book.reference(instrument) is not None
        clock.now += 1
    assert await book.reference(ES) is not None
    await eventually(lambda: sim_lines(sim) == {AAPL.con_id, ES.con_id})
    assert book.lines_in_use == 2 and book.released_full == 1


async def test_lines_exhausted_at_ibkr_is_no_reference(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    sim.config.market_data_lines = 1
    book = book_of()
    await gateway.connect()
    assert await book.reference(AAPL) is not None
    assert await book.reference(MSFT) is None  # error 101: another line is more than the account has
    assert book.lines_in_use == 1


async def test_idle_lines_are_released(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    clock = Clock()
    book = book_of(idle=600.0, clock=clock)
    await gateway.connect()
    assert await book.reference(AAPL) is not None
    clock.now += 300
    assert await book.reference(MSFT) is not None
    clock.now += 300
    assert book.release_idle() == 1  # AAPL unused for 600 s, MSFT for 300 s
    await eventually(lambda: sim_lines(sim) == {MSFT.con_id})
    assert book.lines_in_use == 1
    reference = await book.reference(AAPL)  # used again: subscribed again
    assert reference is not None and sim_lines(sim) == {AAPL.con_id, MSFT.con_id}


async def test_lines_are_subscribed_again_after_a_reconnect_with_the_data_type(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    sim.config.market_data_subscribed = False  # only delayed data: proves reqMarketDataType is sent again
    book = book_of(data_type="delayed")
    await gateway.connect()
    before = await book.reference(AAPL)
    assert before is not None and before.delayed
    sim.drop_connections()
    await eventually(lambda: not gateway.connected)
    await gateway.connect()
    await eventually(lambda: sim_lines(sim) == {AAPL.con_id})
    sim.set_price(AAPL.con_id, 240.00)
    await eventually(lambda: book._lines[AAPL.con_id].last == Decimal("240.0"))
    after = await book.reference(AAPL)
    assert after is not None and after.delayed and after.received_at > before.received_at


async def test_every_market_data_request_goes_through_the_pacing_limiter(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    limiter = gateway.limiter
    assert isinstance(limiter, CountingLimiter)
    book = book_of(lines=1)
    await gateway.connect()
    await book.reference(AAPL)
    await book.reference(MSFT)  # releases AAPL's line first
    await eventually(lambda: sim_lines(sim) == {MSFT.con_id})
    # reqMarketDataType, reqMktData twice, cancelMktData once.
    assert limiter.acquired == 4


async def test_a_refused_request_never_touches_an_order_of_the_same_number(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    # The workers number orders from nextValidId, where ib_insync's request ids start too.
    sim.config.unsubscribed_con_ids = frozenset({MSFT.con_id})
    book = book_of()
    await gateway.connect()
    order_id = gateway.next_valid_id_at_connect
    await gateway.place(AAPL, an_order("resting", limit_price=Decimal(1)), order_id)
    assert await book.reference(MSFT) is None  # error 354 for the book's own request id
    assert book._next_req_id > FIRST_REQ_ID
    (trade,) = gateway.ib.openTrades()
    assert trade.order.orderId == order_id and trade.orderStatus.status == "Submitted"


async def test_a_book_built_after_the_connect_asks_for_the_data_type_first(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    sim.config.market_data_subscribed = False
    await gateway.connect()
    book = book_of(data_type="delayed")
    reference = await book.reference(AAPL)
    assert reference is not None and reference.delayed


async def test_only_the_first_use_waits_for_prices_that_do_not_come(
    sim: SimGateway, gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    clock = Clock()
    book = book_of(first_tick_timeout=0.3, clock=clock)
    await gateway.connect()
    sim.freeze()  # IBKR takes the request and says nothing
    started = time.monotonic()
    assert await book.reference(AAPL) is None
    assert 0.25 < time.monotonic() - started < 1.0
    clock.now += 0.3
    started = time.monotonic()
    assert await book.reference(AAPL) is None
    assert time.monotonic() - started < 0.05
    sim.unfreeze()
    await eventually(lambda: book._lines[AAPL.con_id].received_at is not None)
    assert await book.reference(AAPL) is not None


async def test_no_reference_while_disconnected_before_first_use(
    gateway: TwsConnection, book_of: Callable[..., MarketDataBook]
) -> None:
    book = book_of()
    assert await book.reference(AAPL) is None
    assert book.lines_in_use == 0

