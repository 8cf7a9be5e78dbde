"""Request handlers: one function per TWS API request id the sim serves.

A handler gets what it works with, the sim's :class:`Backend`, and the :class:`Connection` the request came
on; it knows neither the server nor the session class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from ibkr_sim import messages as m
from ibkr_sim.admission import NO_SECURITY
from ibkr_sim.broker import SimBroker
from ibkr_sim.config import SimConfig
from ibkr_sim.framing import parse_bool, parse_int
from ibkr_sim.market import PriceProcess
from ibkr_sim.orders import SimExecution, SimOrder
from ibkr_sim.quotes import (
    DISPLAYING_DELAYED,
    DUPLICATE_TICKER,
    LIVE,
    MAX_TICKERS,
    NOT_SUBSCRIBED,
    MarketDataLine,
    data_type_served,
    quote_frames,
)
from ibkr_sim.reports import Reports
from ibkr_sim.requests import (
    ExecutionFilterRequest,
    Fields,
    parse_place_order,
    parse_req_contract_details,
    parse_req_executions,
    read_contract,
)
from ibkr_sim.universe import Universe


@dataclass(frozen=True, slots=True)
class Backend:
    """The sim behind every connection: its settings, order desk, account reports, instruments and quotes."""

    config: SimConfig
    broker: SimBroker
    reports: Reports
    universe: Universe
    prices: PriceProcess
    # Streaming market-data lines held by every connection together (IB counts them per account).
    lines_in_use: Callable[[], int]


class Connection(Protocol):
    """The client connection a request came on: its identity, its subscriptions and its output."""

    version: int
    client_id: int | None
    account_updates: set[str]
    account_multi: dict[int, tuple[str, str]]
    positions_subscribed: bool
    market_data: dict[int, MarketDataLine]
    market_data_type: int

    def send(self, frame: bytes) -> None:
        """Queue one frame."""

    def send_all(self, frames: list[bytes]) -> None:
        """Queue several frames."""

    def error(self, req_id: int, code: int, text: str) -> None:
        """Queue an error message."""

    def remember_values(self, key: str, values: list[tuple[str, str, str]]) -> None:
        """Note account values sent in a full answer, so later pushes send only changes."""


Handler = Callable[[Backend, Connection, list[str]], None]

# Where the request id sits in requests the sim does not serve, so the error reaches the caller.
_REQ_ID_INDEX = {
    1: 2, 10: 2, 19: 4, 20: 1, 21: 2, 22: 1, 50: 2, 52: 2, 54: 2, 55: 2, 67: 2, 68: 2, 69: 2, 70: 2,
    78: 1, 79: 1, 81: 1, 83: 1, 84: 1, 86: 1, 87: 1, 88: 1, 92: 1, 94: 1, 96: 1, 97: 1, 100: 1,
    102: 1, 104: 1,
}


def request_id_of(msg_id: int, fields: list[str]) -> int:
    """The request id of a message, or -1 when it has none (or it cannot be read)."""
    index = _REQ_ID_INDEX.get(msg_id)
    if index is None or index >= len(fields):
        return -1
    try:
        return parse_int(fields[index], -1)
    except ValueError:
        return -1


def _client(conn: Connection) -> int:
    assert conn.client_id is not None
    return conn.client_id


def place_order(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """placeOrder (3)."""
    backend.broker.place(_client(conn), parse_place_order(fields, conn.version))


def cancel_order(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """cancelOrder (4)."""
    backend.broker.cancel(_client(conn), parse_int(fields[2]))


def _send_open_orders(conn: Connection, orders: list[SimOrder]) -> None:
    for order in orders:
        conn.send_all([m.open_order(order), m.order_status(order)])
    conn.send(m.open_order_end())


def req_open_orders(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqOpenOrders (5): this client's working orders (every client's for the master client)."""
    client_id = _client(conn)
    every = client_id == backend.config.master_client_id
    orders = [o for o in backend.broker.orders.values() if not o.done and (every or o.client_id == client_id)]
    _send_open_orders(conn, orders)


def req_all_open_orders(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqAllOpenOrders (16)."""
    _send_open_orders(conn, [o for o in backend.broker.orders.values() if not o.done])


def req_account_updates(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqAccountUpdates (6): values, portfolio, accountDownloadEnd; later changes while subscribed."""
    subscribe = parse_bool(fields[2])
    account = fields[3] if len(fields) > 3 and fields[3] else backend.config.accounts[0]
    if not subscribe:
        conn.account_updates.discard(account)
        return
    if account in backend.config.accounts:
        conn.account_updates.add(account)
        conn.send_all(backend.reports.account_updates(account, with_end=True))
        conn.remember_values(account, backend.reports.values(account))
    else:
        conn.error(-1, 321, f"Error validating request.-'bB' : cause - Invalid account code {account}")
        conn.send(m.account_download_end(account))


def _exec_time(text: str, default_zone: str) -> float | None:
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) < 8:
        return None
    parts = text.replace("-", " ").split()
    zone = parts[-1] if len(parts) >= 3 and not parts[-1][0].isdigit() else default_zone
    stamp = datetime.strptime((digits + "000000")[:14], "%Y%m%d%H%M%S")
    try:
        return stamp.replace(tzinfo=ZoneInfo(zone)).timestamp()
    except (KeyError, ValueError):
        return stamp.replace(tzinfo=ZoneInfo(default_zone)).timestamp()


def matching_executions(
    executions: list[SimExecution], f: ExecutionFilterRequest, zone: str
) -> list[SimExecution]:
    """The current (uncorrected) executions an ExecutionFilter selects."""
    since = _exec_time(f.time, zone) if f.time else None
    side = {"BUY": "BOT", "SELL": "SLD", "BOT": "BOT", "SLD": "SLD"}.get(f.side.upper(), "")
    out = []
    for ex in executions:
        order = ex.order
        inst = order.instrument
        if ex.superseded:
            continue
        if f.client_id and order.client_id != f.client_id:
            continue
        if f.account and order.account != f.account:
            continue
        if f.symbol and inst.symbol.upper() != f.symbol.upper():
            continue
        if f.sec_type and inst.sec_type != f.sec_type.upper():
            continue
        if f.exchange and ex.venue != f.exchange.upper():
            continue
        if side and ex.side != side:
            continue
        if since is not None and ex.epoch < since:
            continue
        out.append(ex)
    return out


def req_executions(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqExecutions (7): the day's executions with their commission reports, then execDetailsEnd."""
    f = parse_req_executions(fields)
    for ex in matching_executions(backend.broker.executions, f, backend.config.time_zone):
        conn.send_all([m.exec_details(f.req_id, ex), m.commission_report(ex)])
    conn.send(m.exec_details_end(f.req_id))


def req_ids(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqIds (8)."""
    conn.send(m.next_valid_id(backend.broker.next_valid_id(_client(conn))))


def req_contract_details(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqContractDetails (9): one contractDetails per match, or error 200."""
    req_id, query = parse_req_contract_details(fields)
    found = backend.universe.lookup(query)
    if not found:
        conn.error(req_id, 200, NO_SECURITY)
        return
    asked = query.exchange.upper()
    conn.send_all([
        m.contract_details(req_id, inst, asked if asked else inst.exchange, conn.version) for inst in found
    ])
    conn.send(m.contract_details_end(req_id))


def req_managed_accounts(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqManagedAccts (17)."""
    conn.send(m.managed_accounts(list(backend.config.accounts)))


def req_current_time(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqCurrentTime (49)."""
    conn.send(m.current_time(int(backend.broker.clock())))


def req_global_cancel(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqGlobalCancel (58)."""
    backend.broker.global_cancel()


def req_positions(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqPositions (61): every account's positions, positionEnd, then changes as they happen."""
    conn.positions_subscribed = True
    for account in backend.config.accounts:
        conn.send_all(backend.reports.positions(account, None, with_flat=False))
    conn.send(m.position_end())


def cancel_positions(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """cancelPositions (64)."""
    conn.positions_subscribed = False


def req_account_summary(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqAccountSummary (62)."""
    req_id = parse_int(fields[2])
    tags = fields[4] if len(fields) > 4 else ""
    conn.send_all(backend.reports.summary(req_id, backend.config.accounts, tags))


def _accounts_named(backend: Backend, account: str) -> list[str]:
    if not account or account.upper() == "ALL":
        return list(backend.config.accounts)
    return [account] if account in backend.config.accounts else []


def req_positions_multi(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqPositionsMulti (74)."""
    req_id = parse_int(fields[2])
    frames: list[bytes] = []
    for account in _accounts_named(backend, fields[3] if len(fields) > 3 else ""):
        frames += backend.reports.positions_multi(req_id, account)[:-1]
    conn.send_all([*frames, m.position_multi_end(req_id)])


def req_account_updates_multi(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqAccountUpdatesMulti (76): values, accountUpdateMultiEnd, later changes while subscribed."""
    req_id = parse_int(fields[2])
    model = fields[4] if len(fields) > 4 else ""
    for account in _accounts_named(backend, fields[3] if len(fields) > 3 else ""):
        conn.account_multi[req_id] = (account, model)
        conn.send_all(backend.reports.account_multi(req_id, account, model))
        conn.remember_values(f"{req_id}:{account}", backend.reports.values(account))
    conn.send(m.account_update_multi_end(req_id))


def cancel_account_updates_multi(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """cancelAccountUpdatesMulti (77)."""
    conn.account_multi.pop(parse_int(fields[2]), None)


def req_completed_orders(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqCompletedOrders (99): every done order, then completedOrdersEnd."""
    done = [o for o in backend.broker.orders.values() if o.done]
    done.sort(key=lambda o: o.completed_time)
    conn.send_all([m.completed_order(o, conn.version) for o in done])
    conn.send(m.completed_orders_end())


def req_mkt_data(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqMktData (1): a quote from the price process, then updates (streaming) or tickSnapshotEnd."""
    f = Fields(fields, start=2)
    req_id = f.integer()
    query = read_contract(f)
    found = backend.universe.lookup(query)
    if len(found) != 1:
        conn.error(req_id, 200, NO_SECURITY)
        return
    if f.flag():  # delta-neutral contract
        f.skip(3)
    f.skip(1)  # genericTickList
    snapshot = f.flag()
    inst = found[0]
    if not snapshot and req_id in conn.market_data:
        conn.error(req_id, 322, DUPLICATE_TICKER)
        return
    served = data_type_served(
        conn.market_data_type, subscribed=backend.config.has_market_data(inst.con_id),
        trading_hours=backend.config.regular_trading_hours,
    )
    if served is None:
        conn.error(req_id, 354, NOT_SUBSCRIBED)
        return
    if not snapshot and backend.lines_in_use() >= backend.config.market_data_lines:
        conn.error(req_id, 101, MAX_TICKERS)
        return
    line = MarketDataLine(inst.con_id, delayed=served >= 3, frozen=served in (2, 4))
    if line.delayed:
        conn.error(req_id, 10167, DISPLAYING_DELAYED)
    if served != LIVE:
        conn.send(m.market_data_type(req_id, served))
    conn.send_all(quote_frames(req_id, inst, backend.prices.price(inst), delayed=line.delayed))
    if snapshot:
        conn.send(m.tick_snapshot_end(req_id))
    else:
        conn.market_data[req_id] = line


def cancel_mkt_data(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """cancelMktData (2): frees the line; error 300 for a request id that holds none."""
    req_id = parse_int(fields[2])
    if conn.market_data.pop(req_id, None) is None:
        conn.error(req_id, 300, f"Can't find EId with tickerId:{req_id}")


def req_market_data_type(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """reqMarketDataType (59): live 1, frozen 2, delayed 3, delayed-frozen 4 for later requests."""
    wanted = parse_int(fields[2])
    if wanted not in (1, 2, 3, 4):
        conn.error(-1, 321, f"Error validating request.-'cJ' : cause - Invalid market data type {wanted}")
        return
    conn.market_data_type = wanted


def ignore(backend: Backend, conn: Connection, fields: list[str]) -> None:
    """Requests that need no answer (cancels of subscriptions the sim does not keep, settings)."""


HANDLERS: dict[int, Handler] = {
    1: req_mkt_data,
    2: cancel_mkt_data,
    3: place_order,
    4: cancel_order,
    5: req_open_orders,
    6: req_account_updates,
    7: req_executions,
    8: req_ids,
    9: req_contract_details,
    15: ignore,  # reqAutoOpenOrders
    16: req_all_open_orders,
    17: req_managed_accounts,
    49: req_current_time,
    58: req_global_cancel,
    59: req_market_data_type,
    61: req_positions,
    62: req_account_summary,
    63: ignore,  # cancelAccountSummary
    64: cancel_positions,
    71: ignore,  # a second startApi
    74: req_positions_multi,
    75: ignore,  # cancelPositionsMulti
    76: req_account_updates_multi,
    77: cancel_account_updates_multi,
    99: req_completed_orders,
    **dict.fromkeys((11, 12, 13, 14, 25, 51, 53, 56, 57, 89, 90, 93, 95, 98, 101, 103), ignore),
}
