"""Translate our orders and instruments into ib_insync objects."""

from __future__ import annotations

from ib_insync import Contract, Order

from workers.domain.instruments import Instrument
from workers.domain.orders import OrderRequested, OrderType

IB_ORDER_TYPES: dict[OrderType, str] = {
    OrderType.MARKET: "MKT",
    OrderType.LIMIT: "LMT",
    OrderType.STOP: "STP",
    OrderType.STOP_LIMIT: "STP LMT",
}


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


def order_for(request: OrderRequested, ib_order_id: int) -> Order:
    """The IB order for ``request``; ``orderRef`` carries our ``order_id`` so reconciliation can match it."""
    order = Order(
        orderId=ib_order_id,
        action=request.side.value,
        totalQuantity=float(request.quantity),
        orderType=IB_ORDER_TYPES[request.order_type],
        tif=request.time_in_force.value,
        outsideRth=request.outside_rth,
        account=request.account,
        orderRef=request.order_id,
        transmit=True,
    )
    if request.limit_price is not None:
        order.lmtPrice = float(request.limit_price)
    if request.stop_price is not None:
        order.auxPrice = float(request.stop_price)
    return order
