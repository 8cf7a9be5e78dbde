"""IBKR's callbacks as our reports: ib_insync's trades, fills and orders turned into the typed values of
:mod:`workers.ports.ibkr` (the numbers as exact decimals)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from ib_insync import Order as IbOrder
from ib_insync import Trade
from ib_insync.objects import CommissionReport, Fill

from workers.adapters.ibkr.status_mapping import status_change
from workers.ports.ibkr import IbExecution, IbOrderStatus, IbTerms


def contract_multiplier(text: str | None) -> Decimal | None:
    """IB's ``Contract.multiplier`` as a number: 1 when empty (a stock, a currency), None when not a number."""
    if not text or not text.strip():
        return Decimal(1)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    return value if value.is_finite() and value > 0 else None


def to_decimal(value: float) -> Decimal:
    """A float from ib_insync as the shortest exact decimal that prints the same."""
    return Decimal(repr(float(value)))


# ib_insync's statuses of an order it sent that IBKR has not acknowledged yet.
LOCAL_ONLY = frozenset({"PendingSubmit", "ApiPending"})
# IB's statuses of an order that is over.
DONE = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})

def execution_report(fill: Fill, order_ref: str) -> IbExecution:
    execution = fill.execution
    report: CommissionReport = fill.commissionReport
    has_commission = bool(report.execId)
    executed_at = execution.time if isinstance(execution.time, datetime) else datetime.now(UTC)
    return IbExecution(
        exec_id=execution.execId,
        order_ref=order_ref or execution.orderRef,
        ib_order_id=execution.orderId,
        perm_id=execution.permId,
        con_id=fill.contract.conId,
        side="BUY" if execution.side == "BOT" else "SELL",
        quantity=to_decimal(execution.shares),
        price=to_decimal(execution.price),
        cumulative_quantity=to_decimal(execution.cumQty),
        avg_price=to_decimal(execution.avgPrice),
        account=execution.acctNumber,
        exchange=execution.exchange,
        currency=fill.contract.currency,
        executed_at=executed_at.astimezone(UTC),
        commission=to_decimal(report.commission) if has_commission else None,
        commission_currency=report.currency if has_commission else None,
    )


def _price(value: float) -> Decimal | None:
    """An IB order price: None where IB sends none (0, or its "unset" maximum double)."""
    if not value or math.isnan(value) or abs(value) >= 1e300:
        return None
    return to_decimal(value)


def terms_of(order: IbOrder) -> IbTerms:
    return IbTerms(quantity=to_decimal(order.totalQuantity), limit_price=_price(order.lmtPrice),
                   stop_price=_price(order.auxPrice), time_in_force=order.tif,
                   trailing_percent=_price(order.trailingPercent), limit_offset=_price(order.lmtPriceOffset))


def status_report(trade: Trade, *, with_terms: bool = False) -> IbOrderStatus:
    """IB's status of ``trade``; with its terms when asked (reconciliation compares them: a status as it
    arrives does not need them)."""
    status = trade.orderStatus
    avg = status.avgFillPrice
    last = trade.log[-1] if trade.log else None
    inferred = last is not None and last.errorCode and last.status == status.status
    report = IbOrderStatus(
        order_ref=trade.order.orderRef,
        ib_order_id=trade.order.orderId,
        perm_id=trade.order.permId or status.permId,
        ib_status=status.status,
        filled=to_decimal(status.filled),
        remaining=to_decimal(status.remaining),
        avg_fill_price=to_decimal(avg) if avg else None,
        error_code=last.errorCode if inferred and last is not None else None,
        error_message=last.message if inferred and last is not None else None,
        terms=terms_of(trade.order) if with_terms else None,
    )
    return replace(report, change=status_change(report))


def known_status(trade: Trade) -> IbOrderStatus | None:
    """The status of one of our orders IBKR knows (None: not ours, or not acknowledged by IBKR yet).

    ib_insync keeps a trade for every placeOrder it sent; one IBKR never acknowledged (no permId, still
    PendingSubmit) is not known at IBKR: it may have been dropped.
    """
    if trade.order.orderRef and (trade.order.permId or trade.orderStatus.status not in LOCAL_ONLY):
        return status_report(trade, with_terms=True)
    return None


