"""Cancels: a cancel request may arrive before its order; only the worker that placed an order cancels it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from workers.domain.brackets import group_member_ids, is_bracket
from workers.domain.orders import AppliedChange, Order, OrderCancelRequested, OrderState
from workers.logs import get_logger
from workers.ports.ibkr import IbkrConnection
from workers.ports.orders import CancelRequestStore, OrderRepository
from workers.service_layer.orders.placing import Placer
from workers.service_layer.orders.status_writer import StatusWriter

log = get_logger(__name__)


class Cancels:
    """Acts on cancel requests: before an order is placed it is simply CANCELLED; once placed, IBKR is asked."""

    def __init__(self, *, ledger: OrderRepository, requests: CancelRequestStore, broker: IbkrConnection,
                 status: StatusWriter, placer: Placer) -> None:
        self.ledger = ledger
        self.requests = requests
        self.broker = broker
        self.status = status
        self.placer = placer
        self.client_id = broker.client_id
        self._group_cancels: set[asyncio.Task[None]] = set()
        status.observers.append(self._on_applied)

    async def on_cancel_requested(self, cancel: OrderCancelRequested) -> None:
        """Cancel an order; a cancel for an order not seen yet is kept for when the order arrives."""
        await self.requests.record(cancel)
        order = await self.ledger.get(cancel.order_id)
        if order is None:
            log.info("cancel recorded before its order", order_id=cancel.order_id)
            return
        if order.account != cancel.account:
            log.warning("cancel ignored: account does not match the order", order_id=cancel.order_id)
            await self.requests.mark_handled(cancel.order_id)
            return
        await self._cancel(order, cancel.reason)

    async def _cancel(self, order: Order, reason: str | None) -> None:
        text = f"cancel requested: {reason}" if reason else "cancel requested"
        if order.state.is_final:
            await self.requests.mark_handled(order.order_id)
            return
        if order.state is OrderState.ACCEPTED:
            await self.status.transition(order.order_id, OrderState.CANCELLED, reason=text)
            if is_bracket(order.request):
                # Not placed: its children (not placed either) go with it. Once placed, IBKR cancels them.
                for child_id in group_member_ids(order)[1:]:
                    await self.status.transition(child_id, OrderState.CANCELLED, reason=f"parent {text}")
            await self.requests.mark_handled(order.order_id)
            return
        if order.owner_client_id != self.client_id:
            # Only the client id that placed an order may cancel it at IBKR; its owner picks the request up
            # from the cancel requests (see sweep).
            log.info("cancel left for the owning worker", order_id=order.order_id,
                     owner_client_id=order.owner_client_id)
            return
        if order.ib_order_id is None or not self.broker.connected:
            return  # stays pending; the sweep retries once connected
        # The batch that reserved the order's id may still be sending: the cancel must reach IBKR after its
        # placeOrder, or IBKR would refuse it (10147) and the order would then go out uncancelled.
        await self.placer.sends_settled()
        current = await self.ledger.get(order.order_id)
        if current is None or current.state.is_final or current.ib_order_id is None:
            await self.requests.mark_handled(order.order_id)
            return
        if current.state is not OrderState.CANCEL_PENDING:
            await self.status.transition(order.order_id, OrderState.CANCEL_PENDING, reason=text)
        await self.broker.cancel(current.ib_order_id)
        await self.requests.mark_handled(order.order_id)

    def _on_applied(self, applied: Sequence[AppliedChange]) -> None:
        """A bracket's child rejected before its parent filled: the parent is cancelled (and IBKR cancels the
        other child with it). IBKR holds a group whose last order it refused: it would never work, and a
        parent must never work without the protection it was sent with."""
        for change in applied:
            child = change.order
            if child.state is OrderState.REJECTED and child.parent_order_id is not None:
                task = asyncio.create_task(self._cancel_parent_of(child))
                self._group_cancels.add(task)
                task.add_done_callback(self._group_cancels.discard)

    async def _cancel_parent_of(self, child: Order) -> None:
        assert child.parent_order_id is not None
        parent = await self.ledger.get(child.parent_order_id)
        if parent is None or parent.is_final or parent.filled_quantity > 0:
            return  # filled (in part): its position keeps the protection it still has
        log.warning("bracket child rejected; cancelling its parent", order_id=child.order_id,
                    parent_order_id=parent.order_id)
        try:
            await self._cancel(parent, f"its child {child.order_id} was rejected")
        except Exception:
            log.exception("cancelling the parent of a rejected bracket child failed", parent_order_id=parent.order_id)

    async def sweep(self) -> None:
        """Act on cancel requests for orders this worker owns that nobody has acted on yet."""
        for order in await self.ledger.open_with_pending_cancel(self.client_id):
            cancel = await self.requests.pending(order.order_id)
            if cancel is not None:
                await self._cancel(order, cancel.reason)

    async def global_cancel(self) -> None:
        """reqGlobalCancel: every open order of the account at the gateway, other client ids' and manual
        orders included. Only ever an operator's explicit action; HALTED cancels the ledger's orders instead."""
        if not self.broker.connected:
            raise ConnectionError("not connected to IBKR: the global cancel was not sent")
        log.warning("global cancel sent to IBKR", client_id=self.client_id)
        await self.broker.global_cancel()
