"""Request handlers: one function per TWS API request id the sim serves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ibkr_sim import messages as m
from ibkr_sim.admission import NO_SECURITY
from ibkr_sim.framing import parse_bool, parse_int
from ibkr_sim.orders import SimExecution, SimOrder
from ibkr_sim.requests import (
    ExecutionFilterRequest,
    Fields,
    parse_place_order,
    parse_req_contract_details,
    parse_req_executions,
    read_contract,
)

if TYPE_CHECKING:
    from ibkr_sim.session import ClientSession

Handler = Callable[["ClientSession", list[str]], None]

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


def _client(s: ClientSession) -> int:
    assert s.client_id is not None
    return s.client_id


def place_order(s: ClientSession, fields: list[str]) -> None:
    """placeOrder (3)."""
    s.gw.broker.place(_client(s), parse_place_order(fields, s.version))


def cancel_order(s: ClientSession, fields: list[str]) -> None:
    """cancelOrder (4)."""
    s.gw.broker.cancel(_client(s), parse_int(fields[2]))


def _send_open_orders(s: ClientSession, orders: list[SimOrder]) -> None:
    for order in orders:
        s.send_all([m.open_order(order), m.order_status(order)])
    s.send(m.open_order_end())


def req_open_orders(s: ClientSession, fields: list[str]) -> None:
    """reqOpenOrders (5): this client's working orders (every client's for the master client)."""
    client_id = _client(s)
    every = client_id == s.gw.config.master_client_id
    orders = [o for o in s.gw.broker.orders.values() if not o.done and (every or o.client_id == client_id)]
    _send_open_orders(s, orders)


def req_all_open_orders(s: ClientSession, fields: list[str]) -> None:
    """reqAllOpenOrders (16)."""
    _send_open_orders(s, [o for o in s.gw.broker.orders.values() if not o.done])


def req_account_updates(s: ClientSession, fields: list[str]) -> None:
    """reqAccountUpdates (6): values, portfolio, accountDownloadEnd; later changes while subscribed."""
    subscribe = parse_bool(fields[2])
    account = fields[3] if len(fields) > 3 and fields[3] else s.gw.config.accounts[0]
    if not subscribe:
        s.account_updates.discard(account)
        return
    if account in s.gw.config.accounts:
        s.account_updates.add(account)
        s.send_all(s.gw.reports.account_updates(account, with_end=True))
        s.remember_values(account, s.gw.reports.values(account))
    else:
        s.error(-1, 321, f"Error validating request.-'bB' : cause - Invalid account code {account}")
        s.send(m.account_download_end(account))


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


def req_executions(s: ClientSession, fields: list[str]) -> None:
    """reqExecutions (7): the day's executions with their commission reports, then execDetailsEnd."""
    f = parse_req_executions(fields)
    for ex in matching_executions(s.gw.broker.executions, f, s.gw.config.time_zone):
        s.send_all([m.exec_details(f.req_id, ex), m.commission_report(ex)])
    s.send(m.exec_details_end(f.req_id))


def req_ids(s: ClientSession, fields: list[str]) -> None:
    """reqIds (8)."""
    s.send(m.next_valid_id(s.gw.broker.next_valid_id(_client(s))))


def req_contract_details(s: ClientSession, fields: list[str]) -> None:
    """reqContractDetails (9): one contractDetails per match, or error 200."""
    req_id, query = parse_req_contract_details(fields)
    found = s.gw.universe.lookup(query)
    if not found:
        s.error(req_id, 200, NO_SECURITY)
        return
    asked = query.exchange.upper()
    s.send_all([
        m.contract_details(req_id, inst, asked if asked else inst.exchange, s.version) for inst in found
    ])
    s.send(m.contract_details_end(req_id))


def req_managed_accounts(s: ClientSession, fields: list[str]) -> None:
    """reqManagedAccts (17)."""
    s.send(m.managed_accounts(list(s.gw.config.accounts)))


def req_current_time(s: ClientSession, fields: list[str]) -> None:
    """reqCurrentTime (49)."""
    s.send(m.current_time(int(s.gw.broker.clock())))


def req_global_cancel(s: ClientSession, fields: list[str]) -> None:
    """reqGlobalCancel (58)."""
    s.gw.broker.global_cancel()


def req_positions(s: ClientSession, fields: list[str]) -> None:
    """reqPositions (61): every account's positions, positionEnd, then changes as they happen."""
    s.positions_subscribed = True
    for account in s.gw.config.accounts:
        s.send_all(s.gw.reports.positions(account, None, with_flat=False))
    s.send(m.position_end())


def cancel_positions(s: ClientSession, fields: list[str]) -> None:
    """cancelPositions (64)."""
    s.positions_subscribed = False


def req_account_summary(s: ClientSession, fields: list[str]) -> None:
    """reqAccountSummary (62)."""
    req_id = parse_int(fields[2])
    tags = fields[4] if len(fields) > 4 else ""
    s.send_all(s.gw.reports.summary(req_id, s.gw.config.accounts, tags))


def _accounts_named(s: ClientSession, account: str) -> list[str]:
    if not account or account.upper() == "ALL":
        return list(s.gw.config.accounts)
    return [account] if account in s.gw.config.accounts else []


def req_positions_multi(s: ClientSession, fields: list[str]) -> None:
    """reqPositionsMulti (74)."""
    req_id = parse_int(fields[2])
    frames: list[bytes] = []
    for account in _accounts_named(s, fields[3] if len(fields) > 3 else ""):
        frames += s.gw.reports.positions_multi(req_id, account)[:-1]
    s.send_all([*frames, m.position_multi_end(req_id)])


def req_account_updates_multi(s: ClientSession, fields: list[str]) -> None:
    """reqAccountUpdatesMulti (76): values, accountUpdateMultiEnd, later changes while subscribed."""
    req_id = parse_int(fields[2])
    model = fields[4] if len(fields) > 4 else ""
    for account in _accounts_named(s, fields[3] if len(fields) > 3 else ""):
        s.account_multi[req_id] = (account, model)
        s.send_all(s.gw.reports.account_multi(req_id, account, model))
        s.remember_values(f"{req_id}:{account}", s.gw.reports.values(account))
    s.send(m.account_update_multi_end(req_id))


def cancel_account_updates_multi(s: ClientSession, fields: list[str]) -> None:
    """cancelAccountUpdatesMulti (77)."""
    s.account_multi.pop(parse_int(fields[2]), None)


def req_completed_orders(s: ClientSession, fields: list[str]) -> None:
    """reqCompletedOrders (99): every done order, then completedOrdersEnd."""
    done = [o for o in s.gw.broker.orders.values() if o.done]
    done.sort(key=lambda o: o.completed_time)
    s.send_all([m.completed_order(o, s.version) for o in done])
    s.send(m.completed_orders_end())


def req_mkt_data(s: ClientSession, fields: list[str]) -> None:
    """reqMktData (1): bid, ask and last from the price process; snapshot ends with tickSnapshotEnd."""
    f = Fields(fields, start=2)
    req_id = f.integer()
    query = read_contract(f)
    found = s.gw.universe.lookup(query)
    if len(found) != 1:
        s.error(req_id, 200, NO_SECURITY)
        return
    if f.flag():  # delta-neutral contract
        f.skip(3)
    f.skip(1)  # genericTickList
    snapshot = f.flag()
    inst = found[0]
    s.send_all(s.gw.quote_frames(req_id, inst))
    if snapshot:
        s.send(m.tick_snapshot_end(req_id))
    else:
        s.market_data[req_id] = inst.con_id


def cancel_mkt_data(s: ClientSession, fields: list[str]) -> None:
    """cancelMktData (2)."""
    s.market_data.pop(parse_int(fields[2]), None)


def ignore(s: ClientSession, fields: list[str]) -> None:
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
    59: ignore,  # reqMarketDataType
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
