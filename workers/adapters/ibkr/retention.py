"""How long ib_insync's record of an order is kept: until its reports are settled, then forgotten.

ib_insync keeps every ``Trade`` and ``Fill`` of a session in its wrapper (``trades``, ``permId2Trade``,
``fills``). The ledger is the record; ib_insync's copy is only needed while IBKR may still say something
about the order that needs the trade to be turned into a report: an execution (IBKR may send the ``Filled``
status before the executions), or a commission (delivered only while the trade is held). A trade is
*settled* once it is done, its fills add up to its filled quantity and every fill has its commission.

A ``Trade`` is in a reference cycle with its own events: each of its ``eventkit`` events keeps the last
values it emitted, which include the trade. Dropped from the wrapper it would wait for the cyclic garbage
collector's full pass (rare in the order-consumer, which collects the old generations seldom), so
forgetting a trade also replaces its events.

IBKR can still send an execution of a forgotten order (a correction, ``.02``, minutes later) and its
commission; ib_insync keeps them but reports neither without the trade. :func:`report_untracked` has them
reported all the same.

Completed orders (``reqCompletedOrders``: every order of the day, at each reconnection, twice) are not
kept as trades at all: :func:`keep_completed_orders_as` turns each into a small record as it arrives. A
day's worth of ib_insync trades at once is hundreds of MB, and memory the process has grown to stays
taken.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from eventkit import Event
from ib_insync import Contract, Order, OrderState, OrderStatus, Trade
from ib_insync.objects import CommissionReport, Execution, Fill
from ib_insync.wrapper import OrderKeyType, Wrapper

# Orders working at IBKR: kept whatever their age. Any other trade (done, Inactive, or never acknowledged by
# IBKR, as when it dropped the placeOrder over its pacing limit) is forgotten once untouched long enough.
_WORKING = frozenset({"PreSubmitted", "Submitted"})


def last_touched(trade: Trade) -> datetime:
    """When IBKR last said something about ``trade`` (the time of its last log entry)."""
    if not trade.log:
        return datetime.min.replace(tzinfo=UTC)
    last: datetime = trade.log[-1].time
    return last if last.tzinfo is not None else last.replace(tzinfo=UTC)


def is_settled(trade: Trade) -> bool:
    """Done, with every execution of its filled quantity received, each with its commission."""
    if not trade.isDone():
        return False
    received = sum(fill.execution.shares for fill in trade.fills)
    return received >= trade.orderStatus.filled and all(fill.commissionReport.execId for fill in trade.fills)


def _fill_time(time: datetime) -> datetime:
    return time if time.tzinfo is not None else time.replace(tzinfo=UTC)


def forget(wrapper: Wrapper, key: OrderKeyType) -> None:
    """Drop the trade under ``key`` from the wrapper, with its fills, and break its reference cycles."""
    trade: Trade = wrapper.trades.pop(key)
    if trade.order.permId and wrapper.permId2Trade.get(trade.order.permId) is trade:
        del wrapper.permId2Trade[trade.order.permId]
    for fill in trade.fills:
        wrapper.fills.pop(fill.execution.execId, None)
    for name in Trade.events:
        setattr(trade, name, Event(name))


def prune(wrapper: Wrapper, now: datetime, settled_for: float, unsettled_for: float) -> int:
    """Forget the trades settled and untouched for ``settled_for`` seconds, and those not working at IBKR
    untouched for ``unsettled_for`` seconds (done but unsettled, Inactive, never acknowledged); returns how
    many were forgotten.

    A trade working at IBKR is never forgotten. Fills of trades the wrapper does not hold (another client's,
    or replayed by ``reqExecutions``) are forgotten the same way: after ``settled_for`` seconds once their
    commission is in, after ``unsettled_for`` seconds in any case.
    """
    settled_cutoff = now - timedelta(seconds=settled_for)
    cutoff = now - timedelta(seconds=unsettled_for)
    done: list[OrderKeyType] = []
    for key, trade in wrapper.trades.items():
        if trade.orderStatus.status in _WORKING:
            continue
        touched = last_touched(trade)
        if touched <= cutoff or (touched <= settled_cutoff and is_settled(trade)):
            done.append(key)
    for key in done:
        forget(wrapper, key)
    held = {fill.execution.execId for trade in wrapper.trades.values() for fill in trade.fills}
    for exec_id in [e for e, fill in wrapper.fills.items() if e not in held and _fill_time(fill.time) <= (
            settled_cutoff if fill.commissionReport.execId else cutoff)]:
        del wrapper.fills[exec_id]
    return len(done)


def _held_trade(wrapper: Wrapper, execution: Execution) -> Trade | None:
    """The trade ib_insync files ``execution`` under, as its ``execDetails`` finds it."""
    trade = wrapper.permId2Trade.get(execution.permId)
    if trade is None:
        trade = wrapper.trades.get(wrapper.orderKey(execution.clientId, execution.orderId, execution.permId))
    return trade


def report_untracked(wrapper: Wrapper, on_execution: Callable[[Fill], None],
                     on_commission: Callable[[CommissionReport], None]) -> None:
    """Call ``on_execution`` for a live execution of an order ib_insync holds no trade for (forgotten, or
    placed by an earlier session), and ``on_commission`` for the commission of a fill without a trade.

    ib_insync's own events fire only for the orders it holds; these complete them, so forgetting a trade
    loses none of IBKR's later reports about it.
    """
    exec_details = wrapper.execDetails
    commission_report = wrapper.commissionReport

    def execution_seen(req_id: int, contract: Contract, execution: Execution) -> None:
        # ib_insync's test for a live execution, not an answer to reqExecutions.
        live = req_id not in wrapper._futures
        new = execution.execId not in wrapper.fills
        exec_details(req_id, contract, execution)
        if live and new and _held_trade(wrapper, execution) is None:
            fill = wrapper.fills.get(execution.execId)
            if fill is not None:
                on_execution(fill)

    def commission_seen(report: CommissionReport) -> None:
        fill = wrapper.fills.get(report.execId)
        untracked = fill is not None and wrapper.permId2Trade.get(fill.execution.permId) is None
        commission_report(report)
        if untracked:
            on_commission(report)

    # The decoder looks the wrapper's methods up at each message, so the instance's own are called.
    instance: Any = wrapper
    instance.execDetails = execution_seen
    instance.commissionReport = commission_seen


def keep_completed_orders_as(wrapper: Wrapper, convert: Callable[[Trade], object | None]) -> None:
    """Have ``reqCompletedOrders`` answer with ``convert(trade)`` of each completed order (``None``: left
    out), made as each arrives, instead of ib_insync's trades, which it would also file in the wrapper."""

    def completed_order(contract: Contract, order: Order, order_state: OrderState) -> None:
        results = wrapper._results.get("completedOrders")
        if results is None:
            return
        status = OrderStatus(orderId=order.orderId, status=order_state.status)
        converted = convert(Trade(contract, order, status, [], []))
        if converted is not None:
            results.append(converted)

    instance: Any = wrapper
    instance.completedOrder = completed_order
