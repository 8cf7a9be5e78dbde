"""Order intake: order requests from Kafka are checked, recorded (and reserved) in one statement, and sent.

The order is committed to the ledger before anything is sent to IBKR, and the Kafka offset is committed
only after that; a redelivered request finds its ``order_id`` in the ledger and only re-publishes the
order's current status.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from workers.domain.brackets import bracket_children, is_bracket
from workers.domain.guards import GuardPolicy, OrderRejected, RejectReason
from workers.domain.orders import NewOrder, OrderRequested, OrderState, differing_terms
from workers.logs import get_logger
from workers.ports.orders import EventSink, OrderMetrics, OrderRepository
from workers.ports.outbox import OutboxMessage, OutboxWriter
from workers.service_layer.orders.placing import Placer
from workers.service_layer.orders.pre_trade import PreTradeRules
from workers.service_layer.orders.watchdog import PlacementWatchdog

log = get_logger(__name__)


# Rejections too malformed for the ledger's constraints (or for PostgreSQL's text): announced, not kept.


@dataclass(frozen=True)
class OrderSource:
    """Where an order request was read from (kept in the ledger for operators)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None  # the Kafka record's timestamp, seconds since the epoch


# Rejections of orders too malformed for the ledger's constraints: announced, not recorded.
_UNRECORDABLE = frozenset({RejectReason.INVALID_ORDER_ID, RejectReason.INVALID_QUANTITY, RejectReason.INVALID_TEXT})


ORDER_ID_CONFLICT = "ORDER_ID_CONFLICT"


@dataclass(frozen=True)
class OrderIdConflict:
    """An order request whose ``order_id`` the ledger holds for an order with other trading terms."""

    order_id: str
    source: OrderSource
    fields: tuple[str, ...]  # the terms that differ

    @property
    def reason(self) -> str:
        """The dead letter's ``error.reason``."""
        return (f"{ORDER_ID_CONFLICT}: order_id {self.order_id} is recorded for an order with other "
                f"{', '.join(self.fields)}; send a new order under a new order_id")


@dataclass(frozen=True)
class _Checked:
    """A batch of requests after the guards: what to record, re-publish, announce only, and why rejected."""

    new: list[NewOrder]
    again: list[tuple[OrderRequested, OrderSource]]  # an order_id seen earlier in the batch
    loose: list[OutboxMessage]
    rejections: dict[str, OrderRejected]


class OrderIntake:
    """Handles batches of order requests."""

    def __init__(self, *, ledger: OrderRepository, rules: PreTradeRules, events: EventSink,
                 outbox: OutboxWriter, placer: Placer, watchdog: PlacementWatchdog,
                 policy: Callable[[], GuardPolicy], metrics: OrderMetrics,
                 on_published: Callable[[], None]) -> None:
        self.ledger = ledger
        self.rules = rules
        self.events = events
        self.outbox = outbox
        self.placer = placer
        self.watchdog = watchdog
        self.policy = policy
        self.metrics = metrics
        self.on_published = on_published
        self.client_id = placer.client_id

    async def on_orders_requested(self, items: Sequence[tuple[OrderRequested, OrderSource]],
                                  ) -> list[OrderIdConflict]:
        """Record, check and place a batch of orders; one statement records (and reserves) them all.

        A known ``order_id`` (a redelivery, or twice in the batch) only re-publishes its current status; one
        with other trading terms is an order id conflict, returned for the dead-letter topic (the order
        recorded under that id, and its statuses, are left as they are).
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
        # An order_id the ledger knew already was not inserted: a redelivery (its status goes out again), or
        # a conflict when its terms differ.
        inserted_ids = {order.order_id for order in inserted}
        not_new = [(n.order, OrderSource(n.source_topic, n.source_partition, n.source_offset))
                   for n in checked.new if n.order.order_id not in inserted_ids]
        self.rules.give_back([n.order for n in checked.new if n.order.order_id not in inserted_ids
                              and n.state is OrderState.ACCEPTED and n.parent_order_id is None])
        for order in inserted:
            if order.order_id in checked.rejections:
                self._count_rejection(order.request, checked.rejections[order.order_id])
        loose = list(checked.loose)
        conflicts: list[OrderIdConflict] = []
        republished = 0
        if checked.again or not_new:
            known = await self.ledger.read_versions([request.order_id for request, _ in [*checked.again, *not_new]])
            republish: list[str] = []
            for request, source in [*checked.again, *not_new]:
                stored = known.get(request.order_id)
                differing = differing_terms(stored[0].as_requested, request) if stored is not None else ()
                if differing:
                    conflicts.append(self._conflict(request, source, differing))
                elif stored is not None:
                    republish.append(request.order_id)
            if republish:
                # Only for orders still as read: one that changed meanwhile (its IBKR reports are handled
                # alongside) announced its newer status itself, which an older one must not follow.
                again = {i: known[i] for i in dict.fromkeys(republish)}
                republished = await self.ledger.reannounce(again, self.events.status)
                log.info("orders redelivered; re-publishing their status", count=len(again),
                         changed_meanwhile=len(again) - republished)
                self.watchdog.watch_unsent(row for row, _ in again.values())
        if loose:
            await self.outbox.add_many(loose)
        if loose or republished:
            self.on_published()
        log.info("orders recorded", count=len(inserted),
                 accepted=sum(o.state in (OrderState.ACCEPTED, OrderState.PLACING) for o in inserted))
        return conflicts

    def _conflict(self, request: OrderRequested, source: OrderSource,
                  differing: tuple[str, ...]) -> OrderIdConflict:
        self.metrics.order_rejected(ORDER_ID_CONFLICT)
        log.error("order id conflict: a known order_id with other terms; dead-lettered", order_id=request.order_id,
                  fields=list(differing), source_topic=source.topic, partition=source.partition,
                  offset=source.offset)
        return OrderIdConflict(request.order_id, source, differing)

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
        """The guards and risk rules for each new order: what to record, re-publish, announce only."""
        policy = self.policy()
        checked = _Checked([], [], [], {})
        seen: set[str] = set()
        firsts: list[tuple[OrderRequested, OrderSource]] = []
        for order, source in items:
            if order.order_id in seen:
                checked.again.append((order, source))
            else:
                seen.add(order.order_id)
                firsts.append((order, source))
        rejected = await self.rules.check([order for order, _ in firsts], policy, count_rate=True)
        for order, source in firsts:
            rejection = rejected.get(order.order_id)
            if rejection is not None and rejection.reason in _UNRECORDABLE:
                # Too malformed for the ledger's constraints: announce the rejection, keep nothing.
                self._count_rejection(order, rejection)
                checked.loose.append(self.events.rejection(order, rejection.text))
                continue
            if rejection is not None:
                checked.rejections[order.order_id] = rejection
            state = OrderState.REJECTED if rejection is not None else OrderState.ACCEPTED
            checked.new.append(NewOrder(order, state, rejection.text if rejection is not None else None,
                                        source.topic, source.partition, source.offset))
            if state is OrderState.ACCEPTED and is_bracket(order):
                # The children go with the parent: recorded in the same statement, right after it, so they
                # take the next IBKR ids and are sent in one group (see Placer.send).
                checked.new.extend(NewOrder(child, OrderState.ACCEPTED, None, source.topic, source.partition,
                                            source.offset, parent_order_id=order.order_id)
                                   for _, child in bracket_children(order))
        return checked

    def _count_rejection(self, order: OrderRequested, rejection: OrderRejected) -> None:
        self.metrics.order_rejected(rejection.reason.value)
        log.warning("order rejected", order_id=order.order_id, reason=rejection.reason.value,
                    detail=rejection.detail)
