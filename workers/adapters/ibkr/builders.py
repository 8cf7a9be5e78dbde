"""Translate our orders and instruments into ib_insync objects."""

from __future__ import annotations

from datetime import UTC, datetime

from ib_insync import Contract, Order, TagValue

from workers.domain.instruments import Instrument
from workers.domain.orders import Algo, AlgoPriority, OrderRequested, OrderType

IB_ORDER_TYPES: dict[OrderType, str] = {
    OrderType.MARKET: "MKT",
    OrderType.LIMIT: "LMT",
    OrderType.STOP: "STP",
    OrderType.STOP_LIMIT: "STP LMT",
    OrderType.TRAILING_STOP: "TRAIL",
    OrderType.TRAILING_STOP_LIMIT: "TRAIL LIMIT",
    OrderType.MARKET_ON_CLOSE: "MOC",
    OrderType.LIMIT_ON_CLOSE: "LOC",
    OrderType.MARKET_IF_TOUCHED: "MIT",
    OrderType.LIMIT_IF_TOUCHED: "LIT",
}
IB_ALGO_STRATEGIES: dict[Algo, str] = {Algo.ADAPTIVE: "Adaptive"}
IB_ADAPTIVE_PRIORITIES: dict[AlgoPriority, str] = {
    AlgoPriority.PATIENT: "Patient",
    AlgoPriority.NORMAL: "Normal",
    AlgoPriority.URGENT: "Urgent",
}


def good_till_date(moment: datetime) -> str:
    """``moment`` as IBKR's ``goodTillDate`` in UTC (``yyyymmdd-hh:mm:ss``, TWS 10.17 and later): no time
    zone is left for TWS to guess."""
    return moment.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S")


def contract_for(instrument: Instrument) -> Contract:
    """An ib_insync contract identified by conId, with the mapper's fields for readability in logs."""
    contract = Contract(
        conId=instrument.con_id,
        symbol=instrument.symbol,
        secType=instrument.sec_type,
        exchange=instrument.exchange,
        primaryExchange=instrument.primary_exchange,
        currency=instrument.currency,
        localSymbol=instrument.local_symbol,
        tradingClass=instrument.trading_class,
    )
    if instrument.sec_type in ("FUT", "OPT"):
        contract.lastTradeDateOrContractMonth = instrument.last_trade_date or ""
        contract.multiplier = format(instrument.multiplier.normalize(), "f") if instrument.multiplier else ""
    if instrument.sec_type == "OPT":
        contract.strike = float(instrument.strike) if instrument.strike is not None else 0.0
        contract.right = instrument.option_right or ""
    return contract


# IB's ocaType 1: cancel the group's other orders when one fills, with block (overfill protection).
OCA_CANCEL_WITH_BLOCK = 1


def order_for(request: OrderRequested, ib_order_id: int, *, parent_ib_order_id: int | None = None,
              transmit: bool = True) -> Order:
    """The IB order for ``request``; ``orderRef`` carries our ``order_id`` so reconciliation can match it.

    A bracket's child names its parent (``parentId``); an order of a group sent before its last member goes
    with ``transmit`` off, so IBKR works none of them before all are there.
    """
    order = Order(
        orderId=ib_order_id,
        action=request.side.value,
        totalQuantity=float(request.quantity),
        orderType=IB_ORDER_TYPES[request.order_type],
        tif=request.time_in_force.value,
        outsideRth=request.outside_rth,
        account=request.account,
        orderRef=request.order_id,
        transmit=transmit,
    )
    if parent_ib_order_id is not None:
        order.parentId = parent_ib_order_id
    if request.oca_group is not None:
        order.ocaGroup = request.oca_group
        order.ocaType = OCA_CANCEL_WITH_BLOCK
    if request.limit_price is not None:
        order.lmtPrice = float(request.limit_price)
    if request.order_type.is_trailing:
        _trail(order, request)
    elif request.stop_price is not None:
        # A stop's trigger and a touched order's touch price are both IB's auxPrice.
        order.auxPrice = float(request.stop_price)
    if request.good_till is not None:
        order.goodTillDate = good_till_date(request.good_till)
    if request.algo is not None:
        priority = request.algo_priority or AlgoPriority.NORMAL
        order.algoStrategy = IB_ALGO_STRATEGIES[request.algo]
        order.algoParams = [TagValue("adaptivePriority", IB_ADAPTIVE_PRIORITIES[priority])]
    return order


def _trail(order: Order, request: OrderRequested) -> None:
    # IB's trailing amount is the auxPrice; a percentage goes in trailingPercent instead. The initial stop,
    # where given, is trailStopPrice; the limit of a trailing stop limit is the stop moved by lmtPriceOffset.
    if request.trailing_amount is not None:
        order.auxPrice = float(request.trailing_amount)
    if request.trailing_percent is not None:
        order.trailingPercent = float(request.trailing_percent)
    if request.stop_price is not None:
        order.trailStopPrice = float(request.stop_price)
    if request.limit_offset is not None:
        order.lmtPriceOffset = float(request.limit_offset)
