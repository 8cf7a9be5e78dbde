"""The placement watchdog: orders sent to IBKR that IBKR never answered are looked up, and placed again
only when IBKR never received them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable

from workers.domain.orders import Order, OrderState
from workers.logs import get_logger
from workers.ports.ibkr import IbkrConnection
from workers.ports.orders import OrderRepository
from workers.service_layer.orders.status_writer import StatusWriter

log = get_logger(__name__)

Retry = Callable[[Order], Awaitable[None]]


class PlacementWatchdog:
    """Keeps, for each order sent and not answered yet, when it was sent; checks the overdue ones at IBKR.

    IBKR answers a placeOrder within milliseconds (openOrder, orderStatus). One it dropped — IB drops a
    message that exceeds its pacing limit, answering only error 100 without naming it — would stay PLACING
    until the next reconnect.
    """

    def __init__(self, *, ledger: OrderRepository, broker: IbkrConnection, status: StatusWriter,
                 reconciled: asyncio.Event, readonly: bool) -> None:
        self.ledger = ledger
        self.broker = broker
        self.status = status
        self.reconciled = reconciled
        self.readonly = readonly
        self.client_id = broker.client_id
        # Set by the placer: how an order IBKR never received is placed again.
        self.retry: Retry | None = None
        # placeOrder sent, no word from IBKR yet: order_id -> when.
        self._sent_at: dict[str, float] = {}
        self._pacing_violated = asyncio.Event()

    @property
    def unanswered(self) -> int:
        """Orders sent to IBKR that IBKR has said nothing about yet."""
        return len(self._sent_at)

    def sent(self, order_id: str) -> None:
        self._sent_at[order_id] = time.monotonic()

    def answered(self, order_id: str) -> None:
        """IBKR said something about ``order_id``: nothing to check."""
        self._sent_at.pop(order_id, None)

    def forget_all(self) -> None:
        """Reconciliation settles every open order: nothing is left to check."""
        self._sent_at.clear()

    def pacing_violated(self) -> None:
        """IB dropped a message (error 100): check soon."""
        self._pacing_violated.set()

    def watch_unsent(self, orders: Iterable[Order]) -> None:
        """Check this worker's PLACING orders that it has not sent.

        A recording statement can commit and its answer be lost (the database connection breaks): the
        batch is then handled again as a redelivery, which inserts nothing, so the orders it recorded
        PLACING would wait, unsent, for the next reconnect's reconciliation. The watchdog looks them up at
        IBKR once their answer is overdue and places again only those IBKR never received, so an order that
        did reach IBKR (sent before a restart, say) is never placed twice.
        """
        if self.readonly:
            return
        now = time.monotonic()
        for order in orders:
            if (order.state is OrderState.PLACING and order.ib_client_id == self.client_id
                    and order.order_id not in self._sent_at):
                self._sent_at[order.order_id] = now
                log.warning("redelivered order is PLACING but was not sent by this worker; "
                            "the placement watchdog checks it at IBKR", order_id=order.order_id)

    async def run(self, stop: asyncio.Event, *, answer_within: float = 5.0, every: float = 2.0) -> None:
        """An order sent ``answer_within`` seconds ago and still PLACING is looked up among IBKR's open and
        completed orders (asked on the same connection, so after the placeOrder): found, its status is
        applied; not found, IBKR never received it and it is placed again under a new id, as reconciliation
        does. Checked every ``every`` seconds, and soon after an error 100."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pacing_violated.wait(), every)
            if self._pacing_violated.is_set():
                self._pacing_violated.clear()
                await asyncio.sleep(min(every, answer_within))  # let IBKR's answers to what went through arrive
            try:
                await self.check_unanswered(answer_within)
            except Exception:
                log.exception("placement check failed; will try again")

    async def check_unanswered(self, answer_within: float) -> int:
        """One pass of :meth:`run`; returns how many orders were placed again."""
        now = time.monotonic()
        due = [order_id for order_id, sent in self._sent_at.items() if now - sent >= answer_within]
        if not due or not self.broker.connected or not self.reconciled.is_set():
            return 0
        orders = await self.ledger.get_many(due)
        placing = [orders[i] for i in due if i in orders and orders[i].state is OrderState.PLACING]
        for order_id in due:
            if order_id not in orders or orders[order_id].state is not OrderState.PLACING:
                self._sent_at.pop(order_id, None)
        if not placing:
            return 0
        # A query can be dropped over the pacing limit as well: never wait for an answer forever.
        at_ib = await asyncio.wait_for(self.broker.order_statuses(), max(2 * answer_within, 5.0))
        changes = [change for order in placing if order.order_id in at_ib
                   for change in [at_ib[order.order_id].change] if change is not None]
        if changes:
            await self.status.apply(changes)
        retried = 0
        for order in placing:
            self._sent_at.pop(order.order_id, None)
            if order.order_id not in at_ib and self.retry is not None:
                await self.retry(order)
                retried += 1
        return retried
