"""Order status changes through one path, whoever decides them: IBKR's reports, a cancel, the kill switch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from workers.domain.orders import AppliedChange, OrderState, StatusChange
from workers.logs import get_logger
from workers.ports.orders import EventSink, OrderMetrics, OrderRepository

log = get_logger(__name__)


class StatusWriter:
    """Writes status changes to the ledger (each with its ``orders.status`` record), counts and logs them,
    and wakes the outbox relay."""

    def __init__(self, ledger: OrderRepository, events: EventSink, metrics: OrderMetrics,
                 on_published: Callable[[], None]) -> None:
        self.ledger = ledger
        self.events = events
        self.metrics = metrics
        self.on_published = on_published
        # Told of every change written (after it is written), e.g. to act on a bracket child's rejection.
        self.observers: list[Callable[[Sequence[AppliedChange]], None]] = []

    async def apply(self, changes: Sequence[StatusChange]) -> int:
        """Write the legal ones of ``changes`` (with their status records); return how many were written."""
        applied = await self.ledger.apply(changes, self.events.status)
        self.applied(applied)
        return len(applied)

    def applied(self, applied: Sequence[AppliedChange]) -> None:
        """Status changes written (by :meth:`apply` or with a batch of reports): wake the relay; count, log."""
        if not applied:
            return
        self.on_published()
        for observer in self.observers:
            observer(applied)
        for change in applied:
            self.metrics.order_transition(change.previous.value, change.order.state.value)
            if change.order.state is OrderState.CANCELLED:
                self.metrics.order_cancelled()
            log.info("order status", order_id=change.order.order_id, state=change.order.state.value,
                     previous=change.previous.value)

    async def transition(self, order_id: str, state: OrderState, *, reason: str | None = None) -> None:
        """One state change decided by the worker itself (cancel, rejection), through the same path as IBKR's."""
        if not await self.apply([StatusChange(order_id, state, reason=reason)]):
            log.info("status change refused by the ledger", order_id=order_id, requested=state.value)
