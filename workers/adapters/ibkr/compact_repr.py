"""A short ``repr`` for ib_insync's ``Trade``.

ib_insync logs every order event as ``self._logger.info(f"orderStatus: {trade}")``: the f-string formats the
whole trade (the order's ~150 fields, its contract, its log and fills) before the logger looks at its
level, whether or not anything is logged. That is about 40 µs a time, five or more times per order, on the
worker's one event loop. The short form keeps what identifies the trade and its state.
"""

from __future__ import annotations

from ib_insync import Trade


def _short_trade_repr(trade: Trade) -> str:
    order, status = trade.order, trade.orderStatus
    return (f"Trade(orderId={order.orderId}, clientId={order.clientId}, permId={order.permId}, "
            f"orderRef={order.orderRef!r}, action={order.action}, totalQuantity={order.totalQuantity}, "
            f"orderType={order.orderType}, conId={trade.contract.conId}, status={status.status}, "
            f"filled={status.filled}, remaining={status.remaining}, fills={len(trade.fills)})")


def install() -> None:
    """Give ``Trade`` the short repr (idempotent; it applies to every ``Trade`` of the process)."""
    setattr(Trade, "__repr__", _short_trade_repr)  # noqa: B010  (assigning a method to a class is the point)
