"""Modifications: a working order's new terms recorded, checked, sent once, and settled by what IBKR says.

The rules that keep "at most one IBKR action per request":

* a modification is recorded (REQUESTED) before anything else; a redelivered ``modify_id`` is never acted
  on again, and one recorded with other terms is a conflict (dead-lettered);
* the modifications of an order are worked one at a time, in the order they came: the next waits until
  IBKR has confirmed or refused the one before;
* it is marked SENT (with the terms it carries) before placeOrder goes; IBKR's openOrder with those terms
  applies it, IBKR's error about the order refuses it, the order ending first refuses it;
* after a (re)connect, a SENT modification is settled against IBKR's open order: its terms applied, or
  sent again (the terms are absolute, so sending them twice leaves IBKR's order as once), a bounded number
  of times;
* only the client id that placed an order modifies it at IBKR; a modification of an order not placed yet
  changes the ledger only (the order goes out with the new terms).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace

from workers.domain.guards import GuardPolicy
from workers.domain.modifications import (
    Modification,
    ModifyRefusal,
    ModifyRefused,
    ModifyState,
    OrderModifyRequested,
    WorkingTerms,
    applied_reason,
    differing_modify_terms,
    target_terms,
)
from workers.domain.orders import Order, OrderState, OrderType
from workers.logs import get_logger
from workers.ports.ibkr import IbError, IbkrConnection, IbOrderStatus, IbOrderTerms, IbReport, IbTerms
from workers.ports.orders import EventSink, InstrumentSource, ModificationStore, OrderRepository
from workers.service_layer.orders.intake import OrderSource
from workers.service_layer.orders.placing import Placer
from workers.service_layer.orders.pre_trade import PreTradeRules

log = get_logger(__name__)

# How many times a modification is sent before, still unconfirmed after reconnects, it is refused.
MAX_SENDS = 3
# States in which IBKR has acknowledged an order: a modification goes to IBKR only then (an error about an
# order IBKR has not acknowledged would read as the order's rejection).
_ACKNOWLEDGED = frozenset({OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED})


def same_terms(ib: IbTerms, target: WorkingTerms, order_type: OrderType) -> bool:
    """True when IBKR's order has the terms ``target``. A trailing order's stop and limit move with the
    market: its trail is compared instead (IBKR's auxPrice is its trailing amount)."""
    if ib.quantity != target.quantity or ib.time_in_force != target.time_in_force.value:
        return False
    if order_type.is_trailing:
        return (ib.stop_price == target.trailing_amount and ib.trailing_percent == target.trailing_percent
                and (target.limit_offset is None or ib.limit_offset == target.limit_offset))
    return ib.limit_price == target.limit_price and ib.stop_price == target.stop_price


def with_terms(order: Order, target: WorkingTerms) -> Order:
    return replace(order, quantity=target.quantity, limit_price=target.limit_price, stop_price=target.stop_price,
                   time_in_force=target.time_in_force, trailing_amount=target.trailing_amount,
                   trailing_percent=target.trailing_percent, limit_offset=target.limit_offset)


@dataclass(frozen=True)
class _Sent:
    """A modification sent to IBKR, with what its answer is matched by."""

    modification: Modification
    order_type: OrderType
    ib_order_id: int


class Modifications:
    """Acts on modification requests and settles them from IBKR's reports."""

    def __init__(self, *, ledger: OrderRepository, store: ModificationStore, broker: IbkrConnection,
                 instruments: InstrumentSource, events: EventSink, rules: PreTradeRules,
                 policy: Callable[[], GuardPolicy], placer: Placer, reconciled: asyncio.Event,
                 on_published: Callable[[], None], readonly: bool = False) -> None:
        self.ledger = ledger
        self.store = store
        self.broker = broker
        self.instruments = instruments
        self.events = events
        self.rules = rules
        self.policy = policy
        self.placer = placer
        self.reconciled = reconciled
        self.on_published = on_published
        self.readonly = readonly
        self.client_id = broker.client_id
        # The modifications this worker sent that IBKR has not answered yet, by order_id, and the order_id
        # of each by IBKR order id (IBKR's errors name the order by it).
        self._sent: dict[str, _Sent] = {}
        self._sent_ib_ids: dict[int, str] = {}
        # Working orders IBKR did not know at the last reconnect (left for an operator): placing one of them
        # again as a modification would create a new order at IBKR, so their modifications are refused.
        self._unknown_at_ib: set[str] = set()
        # One lock per order with modifications being worked (and how many hold or wait for it).
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def on_modify_requested(self, request: OrderModifyRequested, source: OrderSource | None = None,
                                  ) -> str | None:
        """Record ``request`` and act on it; returns why it is dead-lettered instead (an order the ledger
        does not know, a ``modify_id`` recorded with other terms), None when taken."""
        if await self.ledger.get(request.order_id) is None:
            return (f"UNKNOWN_ORDER: modification {request.modify_id} is for order {request.order_id}, which "
                    "the worker has not recorded; send a modification once the order's first status is out")
        where = source or OrderSource()
        modification, new = await self.store.record(request, where.topic, where.partition, where.offset)
        if not new:
            differing = differing_modify_terms(modification.request, request)
            if differing:
                return (f"MODIFY_ID_CONFLICT: modify_id {request.modify_id} was recorded with other "
                        f"{', '.join(differing)}; a new modification needs a new modify_id")
            if modification.state.is_final:
                log.info("modification redelivered; settled before", modify_id=request.modify_id,
                         state=modification.state.value)
                return None
        await self.advance(request.order_id)
        return None

    async def advance(self, order_id: str) -> None:
        """Work the order's unsettled modifications in order, until one has to wait (for IBKR's answer, the
        connection, or the worker that placed the order)."""
        async with self._order_lock(order_id):
            for modification in await self.store.unsettled(order_id):
                if not await self._step(modification):
                    return

    @contextlib.asynccontextmanager
    async def _order_lock(self, order_id: str) -> AsyncIterator[None]:
        """One worker of an order's modifications at a time (the lock is dropped when nobody needs it)."""
        lock, users = self._locks.setdefault(order_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[order_id]

    async def _step(self, modification: Modification, *, resend: bool = False) -> bool:
        """Settle or send ``modification``; True when it is settled and the next one may go."""
        if modification.state is ModifyState.SENT and not resend:
            return False  # IBKR's answer (or the reconciliation after a reconnect) settles it
        for _ in range(3):  # the order may change under us (placed meanwhile): worked out again
            order = await self.ledger.get(modification.order_id)
            if order is None:
                return True
            try:
                target = target_terms(order, modification.request)
                rejection = await self.rules.check_modified(order, target, modification.request, self.policy())
                if rejection is not None:
                    raise ModifyRefused(ModifyRefusal.RISK_RULE, rejection.text)
            except ModifyRefused as refused:
                await self._refuse(modification, refused.text, None)
                return True
            if order.state is OrderState.ACCEPTED:
                # Not at IBKR yet: the ledger's terms change, and the order goes out with them.
                applied = await self.store.apply(modification, target, applied_reason(WorkingTerms.of(order), target),
                                                 self.events.modification, only_from=frozenset({OrderState.ACCEPTED}))
                if applied is not None:
                    self._published(modification, "applied before the order was placed")
                    return True
                continue
            return await self._send(modification, order, target)
        return False

    async def _send(self, modification: Modification, order: Order, target: WorkingTerms) -> bool:
        if order.owner_client_id != self.client_id:
            log.info("modification left for the worker that placed the order", modify_id=modification.modify_id,
                     owner_client_id=order.owner_client_id)
            return False
        if order.order_id in self._unknown_at_ib:
            await self._refuse(modification, _unknown_at_ibkr(), None)
            return True
        if (order.state not in _ACKNOWLEDGED or order.ib_order_id is None or self.readonly
                or not self.broker.connected or not self.reconciled.is_set()):
            return False  # the sweep tries again
        if modification.attempts >= MAX_SENDS:
            await self._refuse(modification, ModifyRefused(
                ModifyRefusal.NOT_CONFIRMED, f"IBKR did not confirm the new terms after {MAX_SENDS} attempts; "
                "the order works with the terms its last status shows").text, None)
            return True
        await self.placer.sends_settled()
        instrument = await self.instruments.get(order.instrument_id)
        if instrument is None:
            await self._refuse(modification, ModifyRefused(
                ModifyRefusal.NOT_MODIFIABLE, f"instrument {order.instrument_id} is no longer mapped").text, None)
            return True
        if not await self.store.mark_sent(modification.modify_id, target, modification.attempts):
            return True  # settled, or sent by another worker, meanwhile
        sent = replace(modification, state=ModifyState.SENT, target=target, attempts=modification.attempts + 1)
        self._sent[order.order_id] = _Sent(sent, order.order_type, order.ib_order_id)
        self._sent_ib_ids[order.ib_order_id] = order.order_id
        parent = await self.ledger.get(order.parent_order_id) if order.parent_order_id is not None else None
        try:
            await self.broker.modify(instrument, with_terms(order, target), order.ib_order_id,
                                     parent_ib_order_id=parent.ib_order_id if parent is not None else None)
        except ConnectionError as exc:
            log.warning("modification not sent: not connected; settled after the reconnect",
                        modify_id=modification.modify_id, error=str(exc))
            return False
        log.info("modification sent", modify_id=modification.modify_id, order_id=order.order_id,
                 ib_order_id=order.ib_order_id, changes=target.changes_from(WorkingTerms.of(order)))
        return False

    async def _refuse(self, modification: Modification, reason: str, ib_error_code: int | None) -> None:
        self._forget(modification.order_id)
        if await self.store.refuse(modification, reason, ib_error_code, self.events.modification) is not None:
            self._published(modification, reason)

    def _published(self, modification: Modification, outcome: str) -> None:
        self.on_published()
        log.info("modification settled", modify_id=modification.modify_id, order_id=modification.order_id,
                 outcome=outcome)

    def _forget(self, order_id: str) -> None:
        sent = self._sent.pop(order_id, None)
        if sent is not None:
            self._sent_ib_ids.pop(sent.ib_order_id, None)

    async def _confirm(self, modification: Modification) -> None:
        """IBKR's order has the modification's terms: APPLIED, with the order's new terms (also when the
        order filled or ended meanwhile: it did so with them)."""
        self._forget(modification.order_id)
        order = await self.ledger.get(modification.order_id)
        target = modification.target
        if order is None or target is None:
            return
        reason = applied_reason(WorkingTerms.of(order), target)
        if await self.store.apply(modification, target, reason, self.events.modification) is not None:
            self._published(modification, reason)

    async def confirm(self, reports: Sequence[IbReport]) -> list[str]:
        """Settle the modifications IBKR confirmed (its openOrder with their terms) or refused (its error
        about the order) in ``reports``, before the reports' status changes are written: a fill that came
        with the new terms is then announced with them. Returns the orders whose modification settled."""
        settled: list[str] = []
        if not self._sent:
            return settled
        for report in reports:
            if isinstance(report, IbOrderTerms):
                sent = self._sent.get(report.order_ref)
                target = sent.modification.target if sent is not None else None
                if sent is not None and target is not None and same_terms(report.terms, target, sent.order_type):
                    await self._confirm(sent.modification)
                    settled.append(report.order_ref)
            elif isinstance(report, IbError) and not report.informational and report.req_id in self._sent_ib_ids:
                sent = self._sent[self._sent_ib_ids[report.req_id]]
                await self._refuse(sent.modification, ModifyRefused(
                    ModifyRefusal.IBKR_REFUSED, f"{report.message} (IBKR error {report.code})", report.code).text,
                    report.code)
                settled.append(sent.modification.order_id)
        return settled

    async def settle(self, reports: Sequence[IbReport], settled: Sequence[str] = ()) -> None:
        """After the reports' status changes are written: refuse what was sent for an order that ended
        unconfirmed, then work the next modification of each order settled."""
        if not self._sent and not settled:
            return
        done = list(settled)
        ended = {r.order_ref for r in reports if isinstance(r, IbOrderStatus) and r.order_ref in self._sent
                 and r.change is not None and r.change.state.is_final}
        for order_id in sorted(ended):
            order = await self.ledger.get(order_id)
            sent = self._sent.get(order_id)
            if order is not None and order.is_final and sent is not None:
                await self._refuse(sent.modification, _done_first(order), None)
                done.append(order_id)
        for order_id in dict.fromkeys(done):
            await self.advance(order_id)

    async def reconcile(self, at_ib: dict[str, IbOrderStatus]) -> None:
        """After a (re)connect: settle every unsettled modification of this worker's orders against IBKR's
        orders, and work the ones waiting."""
        self._sent.clear()
        self._sent_ib_ids.clear()
        working = (OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED, OrderState.CANCEL_PENDING)
        self._unknown_at_ib = {o.order_id for o in await self.ledger.open_orders_owned_by(self.client_id)
                               if o.state in working and o.order_id not in at_ib}
        orders: list[str] = []
        for modification in await self.store.unsettled_owned_by(self.client_id):
            if modification.order_id not in orders:
                orders.append(modification.order_id)
            if modification.state is not ModifyState.SENT or modification.target is None:
                continue
            ib = at_ib.get(modification.order_id)
            order = await self.ledger.get(modification.order_id)
            if (ib is not None and ib.terms is not None and order is not None
                    and same_terms(ib.terms, modification.target, order.order_type)):
                await self._confirm(modification)
            elif modification.order_id in self._unknown_at_ib:
                await self._refuse(modification, _unknown_at_ibkr(), None)
            else:
                # IBKR's order does not have the terms: never received, or refused with the answer lost.
                # Sent again (absolute terms: harmless twice), at most MAX_SENDS times in all.
                log.warning("modification unconfirmed after a reconnect; sending it again",
                            modify_id=modification.modify_id, attempts=modification.attempts)
                async with self._order_lock(modification.order_id):
                    await self._step(modification, resend=True)
        for order_id in orders:
            await self.advance(order_id)

    async def sweep(self) -> None:
        """Work the modifications waiting for the connection or for this worker (their order's owner)."""
        waiting = [m for m in await self.store.unsettled_owned_by(self.client_id) if m.state is ModifyState.REQUESTED]
        for order_id in dict.fromkeys(m.order_id for m in waiting):
            await self.advance(order_id)


def _unknown_at_ibkr() -> str:
    return ModifyRefused(ModifyRefusal.NOT_CONFIRMED,
                         "IBKR did not know the order at the last reconnect: it is left for an operator, and "
                         "a modification would place it anew").text


def _done_first(order: Order) -> str:
    return ModifyRefused(ModifyRefusal.ORDER_DONE,
                         f"the order was {order.state.value} before IBKR confirmed the modification").text

