"""Placing: IBKR order ids handed out in increasing order, and orders sent in the order they took them.

The rules that keep "one event = at most one IBKR order":

* an IBKR order id is reserved (state PLACING) in the ledger before ``placeOrder``, and ids are never
  reused: they start above IB's nextValidId and above every id the ledger ever reserved for the client id;
* batches take their ids and their place in the line of batches sending to IBKR in one step (no await in
  between), so ids reach IBKR in increasing order while batches record concurrently;
* an order is sent only once reconciliation has settled the ledger with IBKR since the last (re)connect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from workers.domain.brackets import group_member_ids, group_root, is_bracket
from workers.domain.guards import OrderRejected, RejectReason
from workers.domain.orders import Order, OrderRequested, OrderState
from workers.logs import get_logger
from workers.ports.ibkr import IbkrConnection
from workers.ports.orders import InstrumentSource, OrderMetrics, OrderRepository
from workers.service_layer.orders.status_writer import StatusWriter
from workers.service_layer.orders.watchdog import PlacementWatchdog

log = get_logger(__name__)

# Checks orders that waited again before they are sent: the rejection of each that breaks a rule now.
Recheck = Callable[[Sequence[OrderRequested]], Awaitable[dict[str, OrderRejected]]]


class SendingTurn:
    """A batch's place in the line of batches sending orders to IBKR.

    :meth:`wait` returns once every batch ahead has sent (or given up); :meth:`done` (always called, also
    on failure) lets the next batch go, but never before the ones ahead are done.
    """

    def __init__(self, ahead: asyncio.Future[None] | None) -> None:
        self.ahead = ahead
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self) -> None:
        if self.ahead is not None:
            await asyncio.shield(self.ahead)  # shielded: a cancelled batch must not cancel the line

    def done(self) -> None:
        if self.ahead is None or self.ahead.done():
            self._finish()
        else:
            self.ahead.add_done_callback(lambda _: self._finish())

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


class Placer:
    """Reserves IBKR ids for recorded orders and sends them, now (the order batch's own turn) or from its
    queue (orders recorded while IBKR was away, or released by reconciliation)."""

    def __init__(self, *, ledger: OrderRepository, broker: IbkrConnection, instruments: InstrumentSource,
                 status: StatusWriter, watchdog: PlacementWatchdog, metrics: OrderMetrics,
                 halted: Callable[[], bool], reconciled: asyncio.Event, readonly: bool,
                 recheck: Recheck | None = None) -> None:
        self.ledger = ledger
        self.broker = broker
        self.instruments = instruments
        self.status = status
        self.watchdog = watchdog
        self.metrics = metrics
        self.halted = halted
        self.reconciled = reconciled
        self.readonly = readonly
        self.recheck = recheck
        self.client_id = broker.client_id
        # The next IBKR order id to hand out; None until reconciliation has set it.
        self.next_ib_order_id: int | None = None
        self._last_in_line: asyncio.Future[None] | None = None
        self._to_place: asyncio.Queue[str] = asyncio.Queue()
        # Orders recorded and not sent yet: when they were received (for the latency metrics).
        self._received_at: dict[str, float] = {}

    @property
    def ready(self) -> bool:
        """True when orders may be reserved and sent at once (connected, reconciled, ids known)."""
        return (not self.readonly and self.broker.connected and self.reconciled.is_set()
                and self.next_ib_order_id is not None)

    def restart_ids(self, highest_reserved: int) -> None:
        """Ids go on from above every id ever reserved and above IB's nextValidId (lower after a gateway
        restart)."""
        self.next_ib_order_id = max(self.broker.next_valid_id_at_connect, self.next_ib_order_id or 0,
                                    highest_reserved + 1)

    def take_ib_order_ids(self, order_ids: Sequence[str]) -> tuple[dict[str, int], SendingTurn]:
        """Fresh IBKR order ids for ``order_ids`` (in order) and the batch's turn to send them.

        No await between the two: batches send in the order they took their ids, so ids reach IBKR in
        increasing order. An id never sent is a gap IB allows.
        """
        assert self.next_ib_order_id is not None, "ids are handed out only once reconciled"
        first = max(self.next_ib_order_id, self.broker.next_valid_id_at_connect)
        self.next_ib_order_id = first + len(order_ids)
        turn = SendingTurn(self._last_in_line)
        self._last_in_line = turn.finished
        return {order_id: first + n for n, order_id in enumerate(order_ids)}, turn

    async def sends_settled(self) -> None:
        """Wait until every batch that took ids so far has sent its orders (or given up)."""
        if self._last_in_line is not None:
            await asyncio.shield(self._last_in_line)

    def queue(self, order_id: str) -> None:
        """Place ``order_id`` (ACCEPTED in the ledger) from the queue, once reconciled."""
        if not self.readonly:
            self._to_place.put_nowait(order_id)

    async def place_recorded(self, inserted: Sequence[Order]) -> None:
        """Send the orders reserved while recording; queue the ACCEPTED ones."""
        now = time.monotonic()
        reserved: list[tuple[Order, int]] = []
        for order in inserted:
            if order.state is OrderState.PLACING and order.ib_order_id is not None:
                self._received_at[order.order_id] = now
                reserved.append((order, order.ib_order_id))
            elif order.state is OrderState.ACCEPTED and not self.readonly:
                self._received_at[order.order_id] = now
                self.queue(order.order_id)
            elif order.state is OrderState.CANCELLED:
                self.metrics.order_cancelled()
        if not reserved:
            return
        try:
            await self.send(reserved)
        except ConnectionError as exc:
            # Recorded and reserved: reconciliation finds IBKR never got them and places them again.
            log.warning("placing failed: not connected; the orders stay for reconciliation",
                        count=len(reserved), error=str(exc))

    async def run(self, stop: asyncio.Event, batch: int = 200) -> None:
        """Place queued orders in batches (ids reserved in one statement), once reconciliation has run."""
        while not stop.is_set():
            order_ids = [await self._to_place.get()]
            while not self._to_place.empty() and len(order_ids) < batch:
                order_ids.append(self._to_place.get_nowait())
            await self.reconciled.wait()
            try:
                await self._place(order_ids)
            except ConnectionError as exc:
                log.warning("placing failed: not connected; the orders stay for reconciliation",
                            count=len(order_ids), error=str(exc))
            except Exception:
                log.exception("placing failed; the orders stay for reconciliation", count=len(order_ids))

    async def _place(self, order_ids: list[str]) -> None:
        if not self.broker.connected or self.next_ib_order_id is None:
            return  # still ACCEPTED: reconciliation queues them again after the reconnect
        unique = await self._still_allowed(await self._with_groups(list(dict.fromkeys(order_ids))))
        if not unique:
            return
        ids, turn = self.take_ib_order_ids(unique)
        try:
            reserved = await self.ledger.reserve_ib_order_ids(ids, self.client_id)
            now = time.monotonic()
            reserved_ids = {order.order_id for order, _ in reserved}
            for order_id in unique:
                received = self._received_at.get(order_id)
                if order_id not in reserved_ids:
                    self._received_at.pop(order_id, None)  # no longer ACCEPTED: it is not sent
                elif received is not None:
                    self.metrics.order_stage("waiting", now - received)
            await turn.wait()
            await self.send(reserved)
        finally:
            turn.done()

    async def _with_groups(self, order_ids: list[str]) -> list[str]:
        """``order_ids`` with the other members of their brackets, each group in sending order (parent,
        then children): a group goes to IBKR in one batch, never split."""
        orders = await self.ledger.get_many(order_ids)
        roots = {o.parent_order_id for o in orders.values() if o.parent_order_id is not None} - set(orders)
        if roots:
            orders |= await self.ledger.get_many(sorted(roots))
        grouped: list[str] = []
        for order_id in order_ids:
            order = orders.get(order_id)
            root = orders.get(order.parent_order_id or order_id) if order is not None else None
            members = group_member_ids(root) if root is not None and is_bracket(root.request) else [order_id]
            grouped.extend(members)
        return list(dict.fromkeys(grouped))

    async def _still_allowed(self, order_ids: list[str]) -> list[str]:
        """The orders that still pass every rule; the others (an order grown stale while IBKR was away, a
        position limit reached meanwhile) are rejected here, never sent. A bracket's children go with their
        parent: checked through it, rejected with it."""
        if self.recheck is None:
            return order_ids
        waiting = await self.ledger.get_many(order_ids)
        accepted = [o.request for o in waiting.values()
                    if o.state is OrderState.ACCEPTED and o.parent_order_id is None]
        rejected = await self.recheck(accepted) if accepted else {}
        for child in [o for o in waiting.values() if o.parent_order_id in rejected and o.state is OrderState.ACCEPTED]:
            parent = rejected[child.parent_order_id]  # type: ignore[index]  # checked in the line above
            rejected[child.order_id] = OrderRejected(parent.reason, f"its parent was rejected: {parent.detail}")
        for order_id, rejection in rejected.items():
            self._received_at.pop(order_id, None)
            self.metrics.order_rejected(rejection.reason.value)
            log.warning("order rejected before placing", order_id=order_id, reason=rejection.reason.value,
                        detail=rejection.detail)
            await self.status.transition(order_id, OrderState.REJECTED, reason=rejection.text)
        return [order_id for order_id in order_ids if order_id not in rejected]

    async def send(self, reserved: Sequence[tuple[Order, int]]) -> None:
        """placeOrder for each reserved order, in id order (none while trading is HALTED)."""
        if reserved and self.halted():
            # Accepted before trading was halted, not sent yet: they never reach IBKR.
            for order, _ in reserved:
                self._received_at.pop(order.order_id, None)
                await self.status.transition(order.order_id, OrderState.CANCELLED,
                                             reason=f"{RejectReason.TRADING_HALTED}: trading was halted "
                                                    "before the order was placed")
            return
        started = time.monotonic()
        reserved = sorted(reserved, key=lambda placed: placed[1])  # ids increase in sending order
        ib_ids = {order.order_id: ib_order_id for order, ib_order_id in reserved}
        # A group's last member in this batch carries IBKR's transmit flag: the ones before it are held.
        last_of_group = {group_root(order): n for n, (order, _) in enumerate(reserved)}
        for n, (order, ib_order_id) in enumerate(reserved):
            instrument = await self.instruments.get(order.instrument_id)
            if instrument is None:
                self._received_at.pop(order.order_id, None)
                await self.status.transition(order.order_id, OrderState.REJECTED,
                                             reason=f"{RejectReason.UNKNOWN_INSTRUMENT}: {order.instrument_id}")
                continue
            parent_ib_order_id = None
            if order.parent_order_id is not None:
                parent_ib_order_id = ib_ids.get(order.parent_order_id) or await self._placed_parent(order)
                if parent_ib_order_id is None:
                    continue  # its parent ended first: cancelled with it
            await self.broker.place(instrument, order, ib_order_id, parent_ib_order_id=parent_ib_order_id,
                                    transmit=last_of_group[group_root(order)] == n)
            self.watchdog.sent(order.order_id)
            received = self._received_at.pop(order.order_id, None)
            self.metrics.order_placed(time.monotonic() - received if received is not None else None)
            self.metrics.order_stage("send", time.monotonic() - started)
        if reserved:
            log.info("orders placed", count=len(reserved), client_id=self.client_id,
                     first_ib_order_id=reserved[0][1], last_ib_order_id=reserved[-1][1])

    async def _placed_parent(self, child: Order) -> int | None:
        """The IBKR id of ``child``'s parent, placed in an earlier batch; None when the parent is over (the
        child is then cancelled: it never goes alone)."""
        assert child.parent_order_id is not None
        parent = await self.ledger.get(child.parent_order_id)
        if parent is not None and not parent.is_final and parent.ib_order_id is not None:
            return parent.ib_order_id
        self._received_at.pop(child.order_id, None)
        await self.status.transition(child.order_id, OrderState.CANCELLED,
                                     reason="its parent order ended before it was placed")
        return None

    async def retry_unplaced(self, order: Order) -> None:
        """IBKR never received ``order``: back to ACCEPTED (its reserved id stays spent) and placed again."""
        log.warning("order never reached IBKR; placing it again", order_id=order.order_id,
                    reserved_ib_order_id=order.ib_order_id)
        await self.ledger.release_unplaced(order.order_id)
        self.queue(order.order_id)
