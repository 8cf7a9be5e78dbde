"""Exact field layouts: the sim's messages through ib_insync's decoder, ib_insync's requests through the sim's
parsers (no socket)."""

from __future__ import annotations

from typing import Any

import pytest
from ib_insync import (
    ComboLeg,
    Contract,
    ExecutionFilter,
    LimitOrder,
    Option,
    Order,
    PriceCondition,
    Stock,
    TagValue,
)
from ib_insync.client import Client
from ib_insync.decoder import Decoder

from ibkr_sim import messages as m
from ibkr_sim.framing import FrameReader, encode_body
from ibkr_sim.orders import SimExecution, SimOrder
from ibkr_sim.requests import (
    OrderRequest,
    parse_place_order,
    parse_req_contract_details,
    parse_req_executions,
)
from ibkr_sim.universe import ContractQuery, Universe

UNIVERSE = Universe.load()
AAPL = UNIVERSE.get(265598)
SPY_CALL = next(i for i in UNIVERSE if i.sec_type == "OPT" and i.right == "C" and i.strike == 600.0)
VERSIONS = [157, 163, 164, 166, 170, 176]


class Recorder:
    """A stand-in ib_insync wrapper that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def decode(frame: bytes, version: int = 157) -> tuple[str, tuple[Any, ...]]:
    """Run one frame through ib_insync's decoder; return the single wrapper call it makes."""
    (fields,) = FrameReader().feed(frame)
    recorder = Recorder()
    decoder = Decoder(recorder, version)  # type: ignore[arg-type]
    decoder.handlers[int(fields[0])](fields)
    assert len(recorder.calls) == 1, recorder.calls
    return recorder.calls[0]


def sim_order(**changes: Any) -> SimOrder:
    assert AAPL is not None
    request = OrderRequest(
        order_id=7, contract=ContractQuery(con_id=AAPL.con_id, exchange="SMART"), action="BUY",
        total_quantity=100, order_type="LMT", lmt_price=230.5, aux_price=None, tif="GTC",
        account="DU0000001", order_ref="ref-9", outside_rth=True, good_till_date="",
    )
    order = SimOrder(
        client_id=3, order_id=7, perm_id=1_000_000_123, instrument=AAPL, request=request,
        account="DU0000001", side=1, status="Submitted", **changes,
    )
    return order


@pytest.mark.parametrize("version", VERSIONS)
def test_open_order_layout(version: int) -> None:
    order = sim_order()
    order.open_order_head, order.open_order_tail = m.open_order_parts(order, version)
    name, (order_id, contract, ib_order, state) = decode(m.open_order(order), version)
    assert name == "openOrder"
    assert order_id == 7
    assert contract.conId == AAPL.con_id if AAPL else False
    assert (ib_order.orderRef, ib_order.permId, ib_order.clientId) == ("ref-9", 1_000_000_123, 3)
    assert (ib_order.lmtPrice, ib_order.tif, ib_order.outsideRth, ib_order.account) == (
        230.5, "GTC", True, "DU0000001"
    )
    assert ib_order.auxPrice == 1.7976931348623157e308
    assert ib_order.totalQuantity == 100
    assert state.status == "Submitted"


def test_what_if_open_order_carries_margin() -> None:
    order = sim_order()
    order.request.what_if = True
    head, tail = m.open_order_parts(order, 157, what_if_margin="5762.50")
    _, (_, _, ib_order, state) = decode(encode_body(head + "PreSubmitted" + tail))
    assert ib_order.whatIf is True
    assert state.initMarginChange == "5762.50"


@pytest.mark.parametrize("version", VERSIONS)
def test_completed_order_layout(version: int) -> None:
    order = sim_order(filled=100.0, notional=23050.0)
    order.status = "Filled"
    order.completed_time = "20261128 10:00:00 UTC"
    order.completed_status = "Filled"
    name, (contract, ib_order, state) = decode(m.completed_order(order, version), version)
    assert name == "completedOrder"
    assert contract.symbol == "AAPL"
    assert (ib_order.permId, ib_order.filledQuantity, ib_order.orderRef) == (1_000_000_123, 100.0, "ref-9")
    assert (state.status, state.completedTime) == ("Filled", "20261128 10:00:00 UTC")


def test_order_status_layout() -> None:
    order = sim_order(filled=40.0, notional=40 * 230.0, last_fill_price=230.0)
    name, args = decode(m.order_status(order))
    assert name == "orderStatus"
    assert args == (7, "Submitted", 40.0, 60.0, 230.0, 1_000_000_123, 0, 230.0, 3, "", 0.0)


def test_exec_details_and_commission_report_layout() -> None:
    order = sim_order()
    ex = SimExecution(
        base_id="0000e0d5.3b9aca7b.01", revision=1, order=order, shares=40, price=230.0,
        time="20261128 10:00:00 UTC", epoch=0, cum_qty=40, avg_price=230.0, venue="NASDAQ", liquidity=2,
        commission=1.0, realized_pnl=None,
    )
    name, (req_id, contract, execution) = decode(m.exec_details(-1, ex))
    assert (name, req_id, contract.conId) == ("execDetails", -1, 265598)
    assert execution.execId == "0000e0d5.3b9aca7b.01.01"
    assert (execution.side, execution.shares, execution.price, execution.orderRef) == ("BOT", 40, 230.0, "ref-9")
    assert execution.time.year == 2026
    name, (report,) = decode(m.commission_report(ex))
    assert (report.execId, report.commission, report.currency) == (ex.exec_id, 1.0, "USD")
    assert report.realizedPNL == 1.7976931348623157e308  # unset: an opening fill


@pytest.mark.parametrize("version", VERSIONS)
def test_contract_details_layout(version: int) -> None:
    name, (req_id, details) = decode(m.contract_details(5, SPY_CALL, "SMART", version), version)
    assert (name, req_id) == ("contractDetails", 5)
    c = details.contract
    assert (c.conId, c.symbol, c.secType, c.strike, c.right) == (SPY_CALL.con_id, "SPY", "OPT", 600.0, "C")
    assert (c.lastTradeDateOrContractMonth, c.multiplier, c.exchange) == ("20261218", "100", "SMART")
    assert details.minTick == 0.01
    assert details.underConId == 756733


@pytest.mark.parametrize("version", [157, 166])
def test_error_layout(version: int) -> None:
    name, args = decode(m.error(12, 202, "Order Canceled - reason:", version), version)
    assert (name, args[:3]) == ("error", (12, 202, "Order Canceled - reason:"))


def test_account_and_position_layouts() -> None:
    assert AAPL is not None
    assert decode(m.position("DU0000001", AAPL, 10, 230.5))[1][2:] == (10.0, 230.5)
    name, args = decode(m.update_portfolio(
        "DU0000001", AAPL, quantity=10, price=231.0, value=2310.0, avg_cost=230.5, unrealized=5.0,
        realized=0.0,
    ))
    assert (name, args[1:]) == ("updatePortfolio", (10.0, 231.0, 2310.0, 230.5, 5.0, 0.0, "DU0000001"))
    assert decode(m.update_account_value("NetLiquidation", "1.00", "USD", "DU0000001")) == (
        "updateAccountValue", ("NetLiquidation", "1.00", "USD", "DU0000001")
    )
    assert decode(m.account_update_multi(4, "DU0000001", "", "X", value="1", cur="USD"))[1] == (
        4, "DU0000001", "", "X", "1", "USD"
    )
    assert decode(m.account_summary(4, "DU0000001", "NetLiquidation", "1.00", "USD"))[0] == "accountSummary"
    assert decode(m.managed_accounts(["DU0000001", "DU0000002"])) == (
        "managedAccounts", ("DU0000001,DU0000002",)
    )
    assert decode(m.next_valid_id(17)) == ("nextValidId", (17,))


# --- requests, as ib_insync writes them -------------------------------------------------------


@pytest.fixture
def client() -> tuple[Client, list[bytes]]:
    sent: list[bytes] = []
    c = Client(Recorder())
    c.connState = Client.CONNECTED
    c._serverVersion = 157
    c.conn.sendMsg = sent.append
    return c, sent


def fields_of(sent: list[bytes]) -> list[str]:
    (fields,) = FrameReader().feed(b"".join(sent))
    return fields


async def test_place_order_parses_ib_insync_encoding(client: tuple[Client, list[bytes]]) -> None:
    c, sent = client
    order = LimitOrder(
        "SELL", 250, 231.25, tif="GTC", orderRef="abc", account="DU0000001", outsideRth=True,
        goodTillDate="20261231 23:59:59", minQty=10, allOrNone=True, cashQty=5000.0, trailStopPrice=229.0,
    )
    c.placeOrder(42, Stock("AAPL", "SMART", "USD", primaryExchange="NASDAQ"), order)
    req = parse_place_order(fields_of(sent), 157)
    assert (req.order_id, req.action, req.total_quantity, req.order_type) == (42, "SELL", 250.0, "LMT")
    assert (req.lmt_price, req.aux_price, req.tif, req.order_ref) == (231.25, None, "GTC", "abc")
    assert (req.account, req.outside_rth, req.good_till_date) == ("DU0000001", True, "20261231 23:59:59")
    assert (req.min_qty, req.all_or_none, req.what_if, req.transmit) == (10, True, False, True)
    assert (req.cash_qty, req.trail_stop_price) == (5000.0, 229.0)
    assert req.contract.symbol == "AAPL"
    assert req.contract.primary_exchange == "NASDAQ"


async def test_place_order_with_algo_conditions_and_combo_legs(client: tuple[Client, list[bytes]]) -> None:
    c, sent = client
    order = Order(
        action="BUY", totalQuantity=1, orderType="MKT", algoStrategy="Adaptive",
        algoParams=[TagValue("adaptivePriority", "Normal")], whatIf=True,
        conditions=[PriceCondition(price=100.0, conId=265598, exch="SMART")],
    )
    bag = Contract(secType="BAG", symbol="SPY", exchange="SMART", currency="USD",
                   comboLegs=[ComboLeg(conId=1, ratio=1, action="BUY", exchange="SMART")])
    c.placeOrder(43, bag, order)
    req = parse_place_order(fields_of(sent), 157)
    assert (req.order_id, req.has_combo_legs, req.has_conditions, req.what_if) == (43, True, True, True)


async def test_place_order_from_a_newer_version_still_parses(client: tuple[Client, list[bytes]]) -> None:
    c, sent = client
    c._serverVersion = 176
    c.placeOrder(44, Option("SPY", "20261218", 600, "C", "SMART"), LimitOrder("BUY", 2, 9.5, orderRef="r"))
    req = parse_place_order(fields_of(sent), 176)
    assert (req.order_id, req.lmt_price, req.order_ref, req.contract.strike) == (44, 9.5, "r", 600.0)


async def test_executions_and_contract_details_requests(client: tuple[Client, list[bytes]]) -> None:
    c, sent = client
    c.reqExecutions(9, ExecutionFilter(clientId=3, acctCode="DU0000001", side="BUY", symbol="AAPL"))
    f = parse_req_executions(fields_of(sent))
    assert (f.req_id, f.client_id, f.account, f.side, f.symbol) == (9, 3, "DU0000001", "BUY", "AAPL")
    sent.clear()
    c.reqContractDetails(10, Option("SPY", "202612", 600, "P", "SMART", includeExpired=True))
    req_id, query = parse_req_contract_details(fields_of(sent))
    assert (req_id, query.symbol, query.strike, query.right, query.include_expired) == (
        10, "SPY", 600.0, "P", True
    )
