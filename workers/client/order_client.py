"""``OrderClient``: how an upstream service sends orders to the order-consumer and follows what happens.

It produces ``OrderRequested`` / ``OrderCancelRequested`` (Avro, key ``order_id``) and consumes
``orders.status`` and ``fills.executed`` (and, when asked, ``positions.updated``) to hand the caller the
status changes and fills of the orders it follows.

Nothing is missed and no history is read: :meth:`OrderClient.start` assigns every partition of those topics
and fixes the read positions at their current end offsets *before* the first order can be produced, so any
answer to an order sent afterwards lies past those positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from workers.adapters.avro import AvroCodec, DecodeError, EventCodec, RegistryCodec, SchemaRegistryClient
from workers.adapters.kafka.connection import kafka_client_kwargs, start_kafka_client
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    ORDER_CANCEL_REQUESTED,
    ORDER_MODIFY_REQUESTED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    cancel_record,
    modify_record,
    order_requested_record,
)
from workers.client.errors import ClientClosed, OrderTimeout
from workers.client.events import (
    ClientEvent,
    FillExecuted,
    OrderEvent,
    OrderStatusChanged,
    PositionUpdated,
)
from workers.client.reading import open_reader
from workers.domain.modifications import OrderModifyRequested
from workers.domain.orders import (
    Algo,
    AlgoPriority,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
)
from workers.logs import get_logger
from workers.settings import Settings, TopicNames

log = get_logger(__name__)

Number = Decimal | int | str
"""Quantities and prices: a Decimal, an int or a decimal string (never a float: 0.1 is not exact)."""

_T = TypeVar("_T")


def _decimal(value: Number | None, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError(f"{name}: pass a Decimal or a string, not a float")
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass
class OrderTrack:
    """What the client has seen of one order, in arrival order.

    ``from_start`` is True for an order this client sent: every fill of it is expected. An order followed
    mid-way (:meth:`OrderClient.watch`) expects only the fills after the first status the client saw.
    """

    order_id: str
    from_start: bool = True
    events: list[OrderEvent] = field(default_factory=list)
    fills: dict[str, FillExecuted] = field(default_factory=dict)
    last: OrderStatusChanged | None = None
    final: OrderStatusChanged | None = None
    filled_before: Decimal = Decimal(0)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def filled(self) -> Decimal:
        """Sum of the fills seen, a corrected execution counted once (as its correction)."""
        replaced = {f.corrects_fill_id for f in self.fills.values() if f.corrects_fill_id}
        return sum((f.quantity for f in self.fills.values() if f.fill_id not in replaced), Decimal(0))

    @property
    def complete(self) -> bool:
        """The order is final and every fill its final status counts (that this client can see) arrived."""
        return self.final is not None and self.filled >= self.final.filled_quantity - self.filled_before

    def add(self, event: OrderEvent) -> bool:
        """Record ``event``; False for a repeat (a status equal to the last one, a fill seen already)."""
        if isinstance(event, FillExecuted):
            if event.fill_id in self.fills:
                return False
            self.fills[event.fill_id] = event
        else:
            if self.last is not None and self.last.same_state(event):
                return False
            if self.last is None and not self.from_start:
                self.filled_before = event.filled_quantity
            self.last = event
            if event.is_final and self.final is None:
                self.final = event
        self.events.append(event)
        self.wake()
        return True

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class OrderClient:
    """Sends orders and cancels to the order-consumer; follows their statuses and fills.

    Use it as an async context manager (or call :meth:`start` and :meth:`close`)::

        async with OrderClient("localhost:9092") as client:
            order_id = await client.submit(account="DU0000001", instrument_id="STK:AAPL:USD", side="BUY",
                                           quantity=10, order_type="LIMIT", limit_price="187.25")
            final = await client.wait_for_final(order_id, timeout=30)

    ``kafka_kwargs`` go to both aiokafka clients (security settings, e.g. from
    :func:`workers.adapters.kafka.connection.kafka_client_kwargs`). ``watch=False`` makes a producer-only
    client (submit and cancel, nothing to wait for). ``watch_positions`` adds ``positions.updated`` records
    for :meth:`listen` callbacks. The client follows the orders it submitted or cancelled and those named in
    :meth:`watch` (or :meth:`events`), from the moment it started.
    """

    def __init__(self, bootstrap_servers: str, *, topics: TopicNames | None = None,
                 codec: EventCodec | None = None, source: str | None = "ibkr-workers-client",
                 watch: bool = True, watch_positions: bool = False, **kafka_kwargs: Any) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topics = topics or TopicNames()
        self.codec: EventCodec = codec or AvroCodec()
        self.source = source
        self.watching = watch or watch_positions
        self.watch_positions = watch_positions
        self._kafka_kwargs = kafka_kwargs
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tracks: dict[str, OrderTrack] = {}
        self._listeners: list[Callable[[ClientEvent], None]] = []
        self._failure: BaseException | None = None
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> OrderClient:
        """A client for the brokers, security settings and topic names of ``settings``."""
        security: dict[str, Any] = kafka_client_kwargs(settings)
        if settings.schema_registry and "codec" not in options:
            # The contract's framing with a registry: Confluent, schemas registered under <topic>-value.
            options["codec"] = RegistryCodec(SchemaRegistryClient(settings.schema_registry))
        return cls(settings.kafka_bootstrap_servers, topics=settings.topics, **options, **security)

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming (positions fixed at the current end offsets), then the producer."""
        try:
            if self.watching:
                await self._start_consumer()
            self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, acks="all",
                                              enable_idempotence=True, linger_ms=1, **self._kafka_kwargs)
            await start_kafka_client(self._producer, self.bootstrap_servers, self._kafka_kwargs)
        except BaseException:
            await self.close()
            raise

    async def _start_consumer(self) -> None:
        names = [self.topics.orders_status, self.topics.fills_executed]
        if self.watch_positions:
            names.append(self.topics.positions_updated)
        self._consumer = await open_reader(self.bootstrap_servers, names, **self._kafka_kwargs)
        self._reader = asyncio.create_task(self._read(self._consumer), name="order-client-reader")

    async def close(self) -> None:
        """Stop consuming and producing; callers still waiting get :class:`ClientClosed`."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self._consumer = self._producer = None
        for track in self._tracks.values():
            track.wake()

    async def __aenter__(self) -> OrderClient:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # -- sending ----------------------------------------------------------------------------------

    async def submit(self, *, account: str, instrument_id: str, side: Side | str, quantity: Number,
                     order_type: OrderType | str = OrderType.MARKET, limit_price: Number | None = None,
                     stop_price: Number | None = None, tif: TimeInForce | str = TimeInForce.DAY,
                     outside_rth: bool = False, order_id: str | None = None,
                     source: str | None = None, expires_at: datetime | None = None,
                     trailing_amount: Number | None = None, trailing_percent: Number | None = None,
                     limit_offset: Number | None = None, good_till: datetime | None = None,
                     algo: Algo | str | None = None, algo_priority: AlgoPriority | str | None = None,
                     take_profit_price: Number | None = None, stop_loss_price: Number | None = None,
                     oca_group: str | None = None) -> str:
        """Produce an ``OrderRequested``; return its ``order_id`` (a new UUID unless given).

        ``expires_at`` (timezone-aware): when the order is no longer wanted; the worker rejects it
        (STALE_ORDER) from then on, instead of after its maximum order age.

        Trailing orders take ``trailing_amount`` or ``trailing_percent`` (and, for TRAILING_STOP_LIMIT,
        ``limit_offset``; ``stop_price`` is their optional initial stop). ``tif="GTD"`` takes ``good_till``
        (timezone-aware). ``algo="ADAPTIVE"`` works a stock's MARKET or LIMIT order with IBKR's Adaptive
        algo, at ``algo_priority`` (PATIENT, NORMAL (default) or URGENT).

        ``take_profit_price`` and/or ``stop_loss_price`` make the order a bracket's parent: its children (a
        LIMIT take-profit and a STOP stop-loss on the other side) have the ids
        ``uuid5(UUID(order_id), "take_profit" | "stop_loss")`` and statuses of their own. ``oca_group`` puts
        the order in a one-cancels-all group.

        The order-consumer validates it (a refusal is a REJECTED status, not an exception here). Raises
        ``ValueError`` for an unknown side, order type, time in force or algo, ``TypeError`` for a float amount.
        """
        quantity_value = _decimal(quantity, "quantity")
        assert quantity_value is not None
        order = OrderRequested(
            order_id=order_id or str(uuid.uuid4()), account=account, instrument_id=instrument_id,
            side=Side(side), quantity=quantity_value, order_type=OrderType(order_type),
            limit_price=_decimal(limit_price, "limit_price"), stop_price=_decimal(stop_price, "stop_price"),
            time_in_force=TimeInForce(tif), outside_rth=outside_rth, created_at=datetime.now(UTC),
            source=source if source is not None else self.source, expires_at=expires_at,
            trailing_amount=_decimal(trailing_amount, "trailing_amount"),
            trailing_percent=_decimal(trailing_percent, "trailing_percent"),
            limit_offset=_decimal(limit_offset, "limit_offset"), good_till=good_till,
            algo=None if algo is None else Algo(algo),
            algo_priority=None if algo_priority is None else AlgoPriority(algo_priority),
            take_profit_price=_decimal(take_profit_price, "take_profit_price"),
            stop_loss_price=_decimal(stop_loss_price, "stop_loss_price"), oca_group=oca_group,
        )
        return await self.submit_order(order)

    async def submit_order(self, order: OrderRequested) -> str:
        """Produce an already built ``OrderRequested``; return its ``order_id``."""
        self._follow(order.order_id, from_start=True)
        payload = await self.codec.serialize(self.topics.orders_requested, ORDER_REQUESTED,
                                             order_requested_record(order))
        await self._send(self.topics.orders_requested, order.order_id, payload)
        log.debug("order submitted", order_id=order.order_id, instrument_id=order.instrument_id)
        return order.order_id

    async def cancel(self, order_id: str, *, account: str, reason: str | None = None) -> None:
        """Produce an ``OrderCancelRequested`` for ``order_id`` (which may not have arrived yet)."""
        self.watch(order_id)
        cancel = OrderCancelRequested(order_id=order_id, account=account, requested_at=datetime.now(UTC),
                                      reason=reason)
        payload = await self.codec.serialize(self.topics.orders_cancel_requested, ORDER_CANCEL_REQUESTED,
                                             cancel_record(cancel))
        await self._send(self.topics.orders_cancel_requested, order_id, payload)
        log.debug("cancel requested", order_id=order_id)

    async def modify(self, order_id: str, *, account: str, quantity: Number | None = None,
                     limit_price: Number | None = None, stop_price: Number | None = None,
                     time_in_force: TimeInForce | str | None = None, modify_id: str | None = None,
                     source: str | None = None, trailing_amount: Number | None = None,
                     trailing_percent: Number | None = None, limit_offset: Number | None = None) -> str:
        """Produce an ``OrderModifyRequested`` changing the given terms of ``order_id`` (None keeps a term);
        return its ``modify_id`` (the outcome is the order's status carrying it: :meth:`wait_for_modification`)."""
        self.watch(order_id)
        request = OrderModifyRequested(
            modify_id=modify_id or str(uuid.uuid4()), order_id=order_id, account=account,
            requested_at=datetime.now(UTC), quantity=_decimal(quantity, "quantity"),
            limit_price=_decimal(limit_price, "limit_price"), stop_price=_decimal(stop_price, "stop_price"),
            time_in_force=None if time_in_force is None else TimeInForce(time_in_force),
            source=source if source is not None else self.source,
            trailing_amount=_decimal(trailing_amount, "trailing_amount"),
            trailing_percent=_decimal(trailing_percent, "trailing_percent"),
            limit_offset=_decimal(limit_offset, "limit_offset"),
        )
        payload = await self.codec.serialize(self.topics.orders_modify_requested, ORDER_MODIFY_REQUESTED,
                                             modify_record(request))
        await self._send(self.topics.orders_modify_requested, order_id, payload)
        log.debug("modification requested", order_id=order_id, modify_id=request.modify_id)
        return request.modify_id

    async def wait_for_modification(self, order_id: str, modify_id: str, *, timeout: float) -> OrderStatusChanged:
        """The status of ``order_id`` that settles ``modify_id`` (its reason says applied or refused)."""
        track = self.watch(order_id)
        deadline = asyncio.get_running_loop().time() + timeout
        index = 0
        while True:
            for event in track.events[index:]:
                if isinstance(event, OrderStatusChanged) and event.modify_id == modify_id:
                    return event
            index = len(track.events)
            await self._wait_change(track, deadline, f"the outcome of modification {modify_id}")

    async def _send(self, topic: str, key: str, payload: bytes) -> None:
        if self._producer is None:
            raise ClientClosed("the client is not started")
        await self._producer.send_and_wait(topic, payload, key=key.encode())

    # -- following --------------------------------------------------------------------------------

    def watch(self, order_id: str) -> OrderTrack:
        """Follow ``order_id`` from now on (an order sent elsewhere, maybe long ago); what was seen of it."""
        return self._follow(order_id, from_start=False)

    def _follow(self, order_id: str, from_start: bool) -> OrderTrack:
        track = self._tracks.get(order_id)
        if track is None:
            track = self._tracks[order_id] = OrderTrack(order_id, from_start=from_start)
        return track

    def forget(self, order_id: str) -> None:
        """Stop following ``order_id`` and drop what was seen of it (long-running clients)."""
        self._tracks.pop(order_id, None)

    def listen(self, callback: Callable[[ClientEvent], None]) -> None:
        """Call ``callback`` with every new status and fill of a followed order (and every position)."""
        self._listeners.append(callback)

    def last_status(self, order_id: str) -> OrderStatusChanged | None:
        track = self._tracks.get(order_id)
        return track.last if track is not None else None

    def fills(self, order_id: str) -> list[FillExecuted]:
        track = self._tracks.get(order_id)
        return list(track.fills.values()) if track is not None else []

    # The timeouts below are the API: OrderTimeout carries the order's last status, asyncio.timeout cannot.
    async def events(self, order_id: str, *, timeout: float | None = None) -> AsyncIterator[OrderEvent]:
        """Yield the order's status changes and fills as they arrive, until it is final with every fill.

        Events seen before the call (since the order was followed) come first. Raises
        :class:`OrderTimeout` when ``timeout`` seconds pass first, :class:`ClientClosed` when the client
        stops.
        """
        track = self.watch(order_id)
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        index = 0
        while True:
            while index < len(track.events):
                yield track.events[index]
                index += 1
            if track.complete:
                return
            await self._wait_change(track, deadline, "its final status and fills")

    async def wait_for_status(self, order_id: str, statuses: Collection[OrderState | str], *,
                              timeout: float) -> OrderStatusChanged:
        """The first status of ``order_id`` among ``statuses`` (seen already or still to come)."""
        wanted = {OrderState(s) for s in statuses}
        track = self.watch(order_id)
        deadline = asyncio.get_running_loop().time() + timeout
        index = 0
        while True:
            for event in track.events[index:]:
                if isinstance(event, OrderStatusChanged) and event.status in wanted:
                    return event
            index = len(track.events)
            await self._wait_change(track, deadline, " or ".join(sorted(wanted)))

    async def wait_for_final(self, order_id: str, *, timeout: float) -> OrderStatusChanged:
        """The order's final status: FILLED, CANCELLED or REJECTED."""
        track = self.watch(order_id)
        deadline = asyncio.get_running_loop().time() + timeout
        while track.final is None:
            await self._wait_change(track, deadline, "a final status")
        return track.final

    async def wait_for_fills(self, order_id: str, *, timeout: float) -> list[FillExecuted]:
        """Every fill of the order, once it is final and its fills add up to its filled quantity."""
        track = self.watch(order_id)
        deadline = asyncio.get_running_loop().time() + timeout
        while not track.complete:
            await self._wait_change(track, deadline, "its fills")
        return list(track.fills.values())

    async def _wait_change(self, track: OrderTrack, deadline: float | None, waited_for: str) -> None:
        if self._failure is not None:
            raise ClientClosed(f"the client's consumer failed: {self._failure}") from self._failure
        if self._closed or self._consumer is None:
            raise ClientClosed("the client is closed" if self._closed else "the client does not watch")
        changed = track.changed
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if remaining is not None and remaining <= 0:
            raise OrderTimeout(track.order_id, waited_for, track.last)
        try:
            await asyncio.wait_for(changed.wait(), remaining)
        except TimeoutError:
            raise OrderTimeout(track.order_id, waited_for, track.last) from None

    # -- the reader -------------------------------------------------------------------------------

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
                for records in batches.values():
                    for record in records:
                        await self._dispatch(record.topic, record.key, record.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failure = exc
            log.error("order client consumer failed", error=f"{type(exc).__name__}: {exc}")
            for track in self._tracks.values():
                track.wake()

    async def _dispatch(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        topics = self.topics
        if topic == topics.positions_updated:
            position = await self._decode(topic, value, POSITION_UPDATED, PositionUpdated.from_record)
            if position is not None:
                self._tell(position)
            return
        # The key is the order id: orders nobody follows are skipped without decoding.
        if key is not None and key.decode(errors="replace") not in self._tracks:
            return
        event: OrderEvent | None
        if topic == topics.orders_status:
            event = await self._decode(topic, value, ORDER_STATUS_CHANGED, OrderStatusChanged.from_record)
        else:
            event = await self._decode(topic, value, FILL_EXECUTED, FillExecuted.from_record)
        if event is None:
            return
        track = self._tracks.get(event.order_id)
        if track is not None and track.add(event):
            self._tell(event)

    async def _decode(self, topic: str, value: bytes | None, record: str,
                      build: Callable[[dict[str, Any]], _T]) -> _T | None:
        try:
            return build(await self.codec.deserialize(topic, value, record))
        except (DecodeError, KeyError, ValueError, TypeError) as exc:
            log.warning("order client skipped an unreadable record", topic=topic, error=str(exc))
            return None

    def _tell(self, event: ClientEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("order client listener failed")
