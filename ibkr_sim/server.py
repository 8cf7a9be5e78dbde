"""``SimGateway``: the TWS-API-protocol server, its fault switches and what tests can inspect."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from types import TracebackType

from ibkr_sim import messages as m
from ibkr_sim.broker import SimBroker
from ibkr_sim.config import SimConfig
from ibkr_sim.handlers import Backend
from ibkr_sim.logs import get_logger
from ibkr_sim.market import PriceProcess
from ibkr_sim.matching import Rejection
from ibkr_sim.orders import SimExecution, SimOrder
from ibkr_sim.portfolio import Portfolio, Position
from ibkr_sim.quotes import quote_frames
from ibkr_sim.reports import Reports
from ibkr_sim.requests import OrderRequest
from ibkr_sim.session import ClientSession
from ibkr_sim.universe import SimContract, Universe

log = get_logger(__name__)

class SimGateway:
    """A TWS API server backed by a simulated broker; ib_insync connects to it as to IB Gateway.

    Start it with :meth:`start` (port 0 picks a free port), drive faults and prices from a test with
    the methods below, stop it with :meth:`stop`.
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        universe: Universe | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = (config or SimConfig()).validate()
        self.universe = universe if universe is not None else Universe.load()
        self.prices = PriceProcess(self.config.seed, self.config.volatility)
        self.portfolio = Portfolio(list(self.config.accounts), self.config.initial_cash)
        self.reports = Reports(self.portfolio, self.prices)
        self.broker = SimBroker(self.config, self.universe, self.prices, self.portfolio, self, clock=clock)
        self.backend = Backend(
            self.config, self.broker, self.reports, self.universe, self.prices, self.market_data_lines_in_use
        )
        self.sessions: set[ClientSession] = set()
        self.clients: dict[int, ClientSession] = {}
        self.frozen = False
        self.response_delay = 0.0
        self.pacing_enabled = True
        self.pacing_violations = 0
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._next_id_override: dict[int | None, int] = {}
        self._dirty_accounts: set[str] = set()
        self._account_push: asyncio.TimerHandle | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._reopen: asyncio.TimerHandle | None = None
        self._stopped = False

    # --- life cycle --------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); return the address actually bound."""
        self._stopped = False
        self._host = host
        self._port = port
        await self._listen()
        if self.config.tick_interval is not None:
            self._ticker = asyncio.create_task(self._tick_loop(self.config.tick_interval))
        log.info("sim gateway listening", host=self._host, port=self._port)
        return self._host, self._port

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_session, self._host, self._port, reuse_address=True
        )
        sock = self._server.sockets[0]
        self._host, self._port = sock.getsockname()[:2]

    def _new_session(self) -> ClientSession:
        self.connections_accepted += 1
        return ClientSession(self, self.backend)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        self._stopped = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._account_push is not None:
            self._account_push.cancel()
            self._account_push = None
        self._close_listener()
        for session in list(self.sessions):
            session.abort()
        await asyncio.sleep(0)

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    async def __aenter__(self) -> SimGateway:
        await self.start(self._host, self._port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the gateway listens on."""
        return self._host, self._port

    @property
    def listening(self) -> bool:
        """Whether new connections are accepted now."""
        return self._server is not None

    async def _tick_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.step_prices()
            except Exception:
                log.exception("price step failed; prices keep moving")

    # --- connections (used by ClientSession) -------------------------------------------------

    def session_opened(self, session: ClientSession) -> None:
        """Register a new connection."""
        self.sessions.add(session)

    def session_closed(self, session: ClientSession) -> None:
        """Forget a connection and free its clientId."""
        self.sessions.discard(session)
        if session.client_id is not None and self.clients.get(session.client_id) is session:
            del self.clients[session.client_id]

    def bind_client(self, session: ClientSession, client_id: int) -> bool:
        """Claim ``client_id`` for the session; False when another live connection holds it."""
        holder = self.clients.get(client_id)
        if holder is not None and holder is not session:
            return False
        self.clients[client_id] = session
        return True

    def take_next_valid_id(self, client_id: int) -> int:
        """The nextValidId to announce on connect (a lowered one once, if a fault asked for it)."""
        override = self._next_id_override.pop(client_id, None)
        if override is None:
            override = self._next_id_override.pop(None, None)
        return override if override is not None else self.broker.next_valid_id(client_id)

    # --- delivery (used by the broker) -------------------------------------------------------

    def to_client(self, client_id: int, frames: list[bytes]) -> None:
        """Send to the client's connection and to the master client's."""
        session = self.clients.get(client_id)
        if session is not None:
            session.send_all(frames)
        master = self.config.master_client_id
        if master is not None and master != client_id:
            master_session = self.clients.get(master)
            if master_session is not None:
                master_session.send_all(frames)

    def position_changed(self, account: str, inst: SimContract) -> None:
        """Push portfolio/position updates now; account values (changes only) a moment later."""
        portfolio: bytes | None = None
        position: bytes | None = None
        for session in self.sessions:
            if account in session.account_updates:
                if portfolio is None:
                    portfolio = self.reports.portfolio_update(account, inst.con_id)
                session.send(portfolio)
            if session.positions_subscribed:
                if position is None:
                    position = self.reports.position(account, inst.con_id)
                session.send(position)
        self._dirty_accounts.add(account)
        if self._account_push is None:
            self._account_push = asyncio.get_running_loop().call_later(
                self.config.account_update_interval, self._push_account_values
            )

    def _push_account_values(self) -> None:
        self._account_push = None
        accounts, self._dirty_accounts = self._dirty_accounts, set()
        values = {account: self.reports.values(account) for account in accounts}
        for session in self.sessions:
            session.push_account_values(values)

    def market_data_lines_in_use(self) -> int:
        """Streaming market-data lines held by every connection together."""
        return sum(len(session.market_data) for session in self.sessions)

    def _price_moved(self, inst: SimContract) -> None:
        price = self.prices.price(inst)
        for session in self.sessions:
            for req_id, line in session.market_data.items():
                if line.con_id == inst.con_id and not line.frozen:
                    session.send_all(quote_frames(req_id, inst, price, delayed=line.delayed))
        self.broker.match_instrument(inst.con_id)

    # --- prices and the market ---------------------------------------------------------------

    def instrument(self, con_id: int) -> SimContract:
        """The instrument with this conId (KeyError if unknown)."""
        inst = self.universe.get(con_id)
        if inst is None:
            raise KeyError(f"no instrument with conId {con_id}")
        return inst

    def price(self, con_id: int) -> float:
        """Current price of an instrument."""
        return self.prices.price(self.instrument(con_id))

    def set_price(self, con_id: int, price: float) -> float:
        """Set an instrument's price (on its tick grid) and match its working orders at once."""
        inst = self.instrument(con_id)
        value = self.prices.set_price(inst, price)
        self._price_moved(inst)
        return value

    def script_prices(self, con_id: int, prices: Iterable[float]) -> None:
        """Queue a price path: each later :meth:`step_prices` takes the next price."""
        self.prices.script(self.instrument(con_id), prices)

    def step_prices(self, con_ids: Iterable[int] | None = None) -> None:
        """Move prices one step (scripted or random walk) and match the orders they reach."""
        targets = [self.instrument(c) for c in con_ids] if con_ids is not None else [
            i for i in self.universe if i.listed
        ]
        for inst in targets:
            self.prices.step(inst)
            self._price_moved(inst)

    def run_opening_auction(self) -> None:
        """Fill (or cancel) every OPG order at the current price."""
        self.broker.run_opening_auction()

    def close_session(self) -> None:
        """The closing auction: fill (or cancel) every MOC and LOC order at the current price."""
        self.broker.close_session()

    def set_regular_trading_hours(self, inside: bool) -> None:
        """Enter or leave regular trading hours; orders without outsideRth wait outside them."""
        self.config.regular_trading_hours = inside
        if inside:
            self.broker.match_all()

    def set_market_data(
        self, subscribed: bool | None = None, unsubscribed_con_ids: Iterable[int] | None = None,
        lines: int | None = None,
    ) -> None:
        """Change the account's market-data subscriptions (for the whole account, or the contracts without
        one) or its number of lines; streams already open keep going."""
        if subscribed is not None:
            self.config.market_data_subscribed = subscribed
        if unsubscribed_con_ids is not None:
            self.config.unsubscribed_con_ids = frozenset(int(c) for c in unsubscribed_con_ids)
        if lines is not None:
            if lines < 0:
                raise ValueError("lines must not be negative")
            self.config.market_data_lines = lines

    def expire_day_orders(self) -> None:
        """End of day: cancel DAY and OPG orders."""
        self.broker.expire_day_orders()

    # --- faults ------------------------------------------------------------------------------

    def drop_connections(self) -> int:
        """Drop every client connection at once (like a crashed gateway); returns how many."""
        sessions = list(self.sessions)
        for session in sessions:
            session.abort()
        return len(sessions)

    def refuse_connections(self, seconds: float) -> None:
        """Drop every connection and stop listening for ``seconds`` (IB's daily restart)."""
        self._close_listener()
        self.drop_connections()
        if self._reopen is not None:
            self._reopen.cancel()
        loop = asyncio.get_running_loop()
        self._reopen = loop.call_later(seconds, lambda: loop.create_task(self._reopen_listener()))

    async def _reopen_listener(self) -> None:
        self._reopen = None
        if self._server is None and not self._stopped:
            await self._listen()
            log.info("sim gateway accepting connections again", host=self._host, port=self._port)

    def delay_responses(self, milliseconds: float) -> None:
        """Delay every outgoing message by ``milliseconds`` (0 to stop delaying)."""
        self.response_delay = max(milliseconds, 0.0) / 1000.0

    def reject_next_order(self, code: int = 201, text: str | None = None) -> None:
        """Reject the next new order with IB error ``code`` (201 also sets it Inactive)."""
        reason = text if text is not None else "Order rejected - reason:Simulated rejection"
        self.broker.rejections.append(Rejection(code, reason))

    def hold_fills(self) -> None:
        """Accept orders but fill nothing until :meth:`release_fills`."""
        self.broker.fills_held = True

    def release_fills(self) -> None:
        """Resume filling and match every working order now."""
        self.broker.fills_held = False
        self.broker.match_all()

    def send_system_message(self, code: int, text: str | None = None) -> None:
        """Send a system message (1100/1101/1102, 2104/2106/2158, 10197, …) to every client."""
        message = text if text is not None else m.SYSTEM_MESSAGES.get(code, f"System message {code}")
        for session in self.sessions:
            if session.client_id is not None:
                session.error(-1, code, message)

    def correct_execution(self, exec_id: str, price: float | None = None, shares: float | None = None) -> str:
        """Correct an execution: re-send it with the execId suffix bumped; returns the new execId."""
        return self.broker.correct_execution(exec_id, price, shares).exec_id

    def lower_next_valid_id(self, value: int, client_id: int | None = None) -> None:
        """Announce ``value`` as nextValidId on the next connect (of ``client_id``, or of anyone)."""
        self._next_id_override[client_id] = value

    def freeze(self) -> None:
        """Stop answering entirely (connections stay open; input and output wait)."""
        self.frozen = True

    def unfreeze(self) -> None:
        """Answer again: handle what arrived during the freeze and send what was held."""
        self.frozen = False
        for session in list(self.sessions):
            session.thaw()

    def set_pacing(self, enabled: bool) -> None:
        """Switch enforcement of the message-rate limit on or off."""
        self.pacing_enabled = enabled

    # --- introspection -----------------------------------------------------------------------

    @property
    def orders_seen(self) -> list[tuple[int, OrderRequest]]:
        """Every placeOrder received, as (clientId, request), in order."""
        return self.broker.requests_seen

    def place_count(self, order_ref: str) -> int:
        """How many placeOrder messages carried this orderRef (modifications included)."""
        return self.broker.place_count_by_ref[order_ref]

    def orders(self) -> list[SimOrder]:
        """Every order the sim holds."""
        return list(self.broker.orders.values())

    def order(self, client_id: int, order_id: int) -> SimOrder:
        """One order by (clientId, orderId)."""
        return self.broker.orders[(client_id, order_id)]

    def open_orders(self) -> list[SimOrder]:
        """Orders still working."""
        return [o for o in self.broker.orders.values() if not o.done]

    def executions(self) -> list[SimExecution]:
        """Current executions (corrected ones replaced by their correction)."""
        return [e for e in self.broker.executions if not e.superseded]

    def position(self, account: str, con_id: int) -> Position | None:
        """An account's position in a contract, if it ever traded it."""
        return self.portfolio.account(account).positions.get(con_id)

    def account_values(self, account: str) -> dict[str, str]:
        """Account values in the base currency, by tag."""
        return {tag: value for tag, value, cur in self.reports.values(account) if cur in ("USD", "")}

    @property
    def connected_client_ids(self) -> list[int]:
        """clientIds with a live connection."""
        return sorted(self.clients)

    @staticmethod
    def cpu_seconds() -> float:
        """CPU time (user + system) this process has used."""
        times = os.times()
        return times.user + times.system

    @staticmethod
    def cpu_times() -> tuple[float, float]:
        """(user, system) CPU seconds this process has used."""
        times = os.times()
        return times.user, times.system
