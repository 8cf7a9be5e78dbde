"""IB's order statuses in our states: the table, and what a status report asks of the ledger."""

from __future__ import annotations

from decimal import Decimal

from workers.domain.guards import RejectReason
from workers.domain.orders import OrderState, StatusChange
from workers.ports.ibkr import IbOrderStatus

# IB's statuses that change nothing of ours: the order is on its way (ib_insync's own, before IBKR's word).
_TRANSIENT = frozenset({"PendingSubmit", "ApiPending"})
_WORKING = frozenset({"PreSubmitted", "Submitted"})
_CANCELLED = frozenset({"Cancelled", "ApiCancelled"})


def state_for_ib_status(ib_status: str, filled: Decimal | float, remaining: Decimal | float) -> OrderState | None:
    """Our state for an IB order status; ``None`` for IB's transient states that change nothing."""
    if ib_status in _TRANSIENT:
        return None
    if ib_status in _WORKING:
        return OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.SUBMITTED
    if ib_status == "PendingCancel":
        return OrderState.CANCEL_PENDING
    if ib_status in _CANCELLED:
        return OrderState.FILLED if filled > 0 and remaining <= 0 else OrderState.CANCELLED
    if ib_status == "Filled":
        return OrderState.FILLED if remaining <= 0 else OrderState.PARTIALLY_FILLED
    if ib_status == "Inactive":
        return OrderState.REJECTED
    return None


def status_change(status: IbOrderStatus) -> StatusChange | None:
    """The ledger change an IBKR status asks for, or None when it changes nothing."""
    if not status.order_ref:
        return None
    state = state_for_ib_status(status.ib_status, status.filled, status.remaining)
    if state is None:
        return None
    if status.error_code and state in (OrderState.CANCELLED, OrderState.REJECTED):
        # ib_insync marks an order cancelled on any error about it. That is a rejection only while IBKR has
        # not acknowledged the order (PLACING); for a working order IBKR said no such thing: ignored.
        return StatusChange(
            status.order_ref, OrderState.REJECTED,
            reason=f"{RejectReason.IBKR_REJECTED}: {status.error_message} (IBKR error {status.error_code})",
            error_code=status.error_code, only_from=frozenset({OrderState.PLACING}),
        )
    if state is OrderState.REJECTED:
        return StatusChange(status.order_ref, state, perm_id=status.perm_id or None,
                            reason=f"{RejectReason.IBKR_REJECTED}: order {status.ib_status} at IBKR")
    return StatusChange(status.order_ref, state, filled=status.filled, remaining=status.remaining,
                        avg_price=status.avg_fill_price, perm_id=status.perm_id or None,
                        reason="cancelled at IBKR" if state is OrderState.CANCELLED else None)
