"""Order intake: order requests from Kafka are checked, recorded (and reserved) in one statement, and sent.

The order is committed to the ledger before anything is sent to IBKR, and the Kafka offset is committed
only after that; a redelivered request finds its ``order_id`` in the ledger and only re-publishes the
order's current status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.domain.guards import GuardPolicy, OrderRejected, RejectReason, check_order, check_text
from workers.domain.orders import NewOrder, OrderRequested, OrderState
from workers.logs import get_logger
from workers.ports.orders import EventSink, InstrumentSource, OrderMetrics, OrderRepository
from workers.ports.outbox import OutboxMessage, OutboxWriter
from workers.service_layer.orders.placing import Placer
from workers.service_layer.orders.watchdog import PlacementWatchdog

log = get_logger(__name__)


# Rejections too malformed for the ledger's constraints (or for PostgreSQL's text): announced, not kept.
_NOT_KEPT = (RejectReason.INVALID_ORDER_ID, RejectReason.INVALID_QUANTITY, RejectReason.INVALID_TEXT)


@dataclass(frozen=True)
class OrderSource:
    """Where an order request was read from (kept in the ledger for operators)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None  # the Kafka record's timestamp, seconds since the epoch


@dataclass(frozen=True)
class _Checked:
    """A batch of requests after the guards: what to record, re-publish, announce only, and why rejected."""

    new: list[NewOrder]
    republish: list[str]
    loose: list[OutboxMessage]
    rejections: dict[str, OrderRejected]


class OrderIntake:
    """Handles batches of order requests."""

    def __init__(self, *, ledger: OrderRepository, instruments: InstrumentSource, events: EventSink,
                 outbox: OutboxWriter, placer: Placer, watchdog: PlacementWatchdog,
                 policy: Callable[[], GuardPolicy], metrics: OrderMetrics,
                 on_published: Callable[[], None]) -> None:
        self.ledger = ledger
        self.instruments = instruments
        self.events = events
        self.outbox = outbox
        self.placer = placer
        self.watchdog = watchdog
        self.policy = policy
        self.metrics = metrics
        self.on_published = on_published
        self.client_id = placer.client_id

    async def on_orders_requested(self, items: Sequence[tuple[OrderRequested, OrderSource]]) -> None:
        """Record, check and place a batch of orders; one statement records (and reserves) them all.

        A known ``order_id`` (a redelivery, or twice in the batch) only re-publishes its current status.
        """
        started = time.monotonic()
        wall = time.time()
        for _, source in items:
            if source.timestamp is not None:
                self.metrics.order_stage("queued", wall - source.timestamp)
        checked = await self._check(items)
        # Connected and reconciled (the consume gate makes sure of it): the IBKR ids are reserved in the
        # recording statement and the orders placed at once; otherwise the placer reserves them later.
        to_place = ([n.order.order_id for n in checked.new if n.state is OrderState.ACCEPTED]
                    if self.placer.ready else [])
        ids, turn = self.placer.take_ib_order_ids(to_place) if to_place else ({}, None)
        try:
            # A cancel that came first turns an ACCEPTED order CANCELLED inside the insert.
            inserted = await self.ledger.record_new(checked.new, self.client_id, self.events.status, ids)
            self.metrics.order_stage("record", time.monotonic() - started)
            self.on_published()
            if turn is not None:
                await turn.wait()
            await self.placer.place_recorded(inserted)
        finally:
            if turn is not None:
                turn.done()
        # An order_id the ledger knew already was not inserted: a redelivery, its status goes out again.
        inserted_ids = {order.order_id for order in inserted}
        republish = checked.republish + [n.order.order_id for n in checked.new if n.order.order_id not in inserted_ids]
        for order in inserted:
            if order.order_id in checked.rejections:
                self._count_rejection(order.request, checked.rejections[order.order_id])
        loose = list(checked.loose)
        if republish:
            known = await self.ledger.get_many(republish)
            loose.extend(self.events.status(known[i], None) for i in republish if i in known)
            log.info("orders redelivered; re-publishing their status", count=len(republish))
            self.watchdog.watch_unsent(known.values())
        if loose:
            await self.outbox.add_many(loose)
            self.on_published()
        log.info("orders recorded", count=len(inserted),
                 accepted=sum(o.state in (OrderState.ACCEPTED, OrderState.PLACING) for o in inserted))

    async def reject_unprocessable(self, order: OrderRequested, error: str) -> None:
        """Announce REJECTED for a request the worker failed on (its record was dead-lettered).

        Unless the ledger knows its ``order_id``: that order has a life of its own, which a second request
        carrying its id must not overwrite.
        """
        if (await self.ledger.get_many([order.order_id])).get(order.order_id) is not None:
            log.warning("unprocessable request for a known order; its status stays", order_id=order.order_id)
            return
        rejection = OrderRejected(RejectReason.UNPROCESSABLE, f"the request could not be processed ({error}); "
                                                              "it is on the dead-letter topic")
        self._count_rejection(order, rejection)
        await self.outbox.add_many([self.events.rejection(order, rejection.text)])
        self.on_published()

    async def _check(self, items: Sequence[tuple[OrderRequested, OrderSource]]) -> _Checked:
        """The guards for each new order: what to record, what to re-publish, what to announce only."""
        policy = self.policy()
        checked = _Checked([], [], [], {})
        seen: set[str] = set()
        for order, source in items:
            if order.order_id in seen:
                checked.republish.append(order.order_id)
                continue
            seen.add(order.order_id)
            state, reason = OrderState.ACCEPTED, None
            try:
                check_text(order)  # before the instrument lookup: the mapper cannot take such a value
                check_order(order, await self.instruments.get(order.instrument_id), policy)
            except OrderRejected as rejection:
                if rejection.reason in _NOT_KEPT:
                    # Too malformed for the ledger's constraints: announce the rejection, keep nothing.
                    self._count_rejection(order, rejection)
                    checked.loose.append(self.events.rejection(order, rejection.text))
                    continue
                checked.rejections[order.order_id] = rejection
                state, reason = OrderState.REJECTED, rejection.text
            checked.new.append(NewOrder(order, state, reason, source.topic, source.partition, source.offset))
        return checked

    def _count_rejection(self, order: OrderRequested, rejection: OrderRejected) -> None:
        self.metrics.order_rejected(rejection.reason.value)
        log.warning("order rejected", order_id=order.order_id, reason=rejection.reason.value,
                    detail=rejection.detail)
