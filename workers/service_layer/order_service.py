"""The order-consumer's handlers: order and cancel requests in, IBKR reports in, ledger and events out.

The rules that make "one event = at most one IBKR order" hold:

* the order is committed to the ledger (ACCEPTED) before anything is sent to IBKR, and the Kafka offset
  is committed only after that;
* an IBKR order id is reserved (state PLACING) in its own transaction before ``placeOrder``, and ids are
  never reused (max of IB's nextValidId and the stored high-water mark + 1);
* a redelivered event finds its ``order_id`` in the ledger and only re-publishes the current status;
* after a crash or a disconnect, :meth:`OrderService.reconcile` matches every open ledger order with
  IBKR's orders by ``orderRef`` (our ``order_id``) before anything is placed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from ib_insync import Contract, Order

from workers.adapters.ibkr.builders import contract_for, order_for, state_for_ib_status
from workers.adapters.ibkr.gateway import (
    PACING_VIOLATION,
    ConnectionChanged,
    IbCommission,
    IbError,
    IbExecution,
    IbOrderStatus,
    IbPosition,
    IbReport,
)
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.order_batches import AppliedChange, NewOrder, OrderBatches, StatusChange
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.positions import PositionRow, PositionStore
from workers.adapters.postgres.rows import Fill, OrderRow, OutboxMessage
from workers.domain.guards import GuardPolicy, OrderRejected, RejectReason, check_order
from workers.domain.orders import (
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    Side,
)
from workers.logs import get_logger
from workers.metrics import Metrics
from workers.service_layer.instrument_cache import InstrumentCache
from workers.service_layer.orders_first import OrdersFirst

log = get_logger(__name__)


class Broker(Protocol):
    """What the service needs of the IBKR connection (``IbkrGateway``, or a fake in unit tests)."""

    client_id: int
    next_valid_id_at_connect: int

    @property
    def connected(self) -> bool: ...

    async def place(self, contract: Contract, order: Order) -> None: ...
    async def cancel(self, ib_order_id: int) -> None: ...
    async def global_cancel(self) -> None: ...
    async def order_statuses(self) -> dict[str, IbOrderStatus]: ...
    async def executions(self) -> list[IbExecution]: ...


class EventSink(Protocol):
    """Builds the encoded Kafka records the service writes to the outbox."""

    def status(self, row: OrderRow, previous: OrderState | None) -> OutboxMessage: ...
    def rejection(self, order: OrderRequested, reason: str) -> OutboxMessage: ...
    def position(self, report: IbPosition, instrument_id: str | None) -> OutboxMessage: ...


class OrderService:
    """Handles commands from Kafka and reports from IBKR for one worker (one IBKR client id)."""

    def __init__(self, *, ledger: OrderLedger, batches: OrderBatches, fills: FillStore, outbox: Outbox,
                 instruments: InstrumentCache, broker: Broker, events: EventSink,
                 policy: Callable[[], GuardPolicy], readonly: bool = False,
                 on_published: Callable[[], None] = lambda: None,
                 on_fill: Callable[[], None] = lambda: None, metrics: Metrics | None = None,
                 positions: PositionStore | None = None, orders_first: OrdersFirst | None = None) -> None:
        self.ledger = ledger
        self.batches = batches
        self.fills = fills
        self.outbox = outbox
        self.instruments = instruments
        self.broker = broker
        self.events = events
        self.policy = policy
        self.readonly = readonly
        self.on_published = on_published
        self.on_fill = on_fill
        self.client_id = broker.client_id
        self.metrics = metrics
        self.positions = positions
        self._received_at: dict[str, float] = {}
        # placeOrder sent, no word from IBKR yet: order_id -> when (see run_placement_watchdog).
        self._sent_at: dict[str, float] = {}
        self._pacing_violated = asyncio.Event()
        # IBKR order ids are handed out here, in increasing order, from above the highest id ever reserved
        # (set by reconcile). Each batch takes its ids and its place in the line of batches sending to
        # IBKR in one step, so ids reach IBKR in increasing order while batches record concurrently.
        self._next_ib_order_id: int | None = None
        self._last_in_line: asyncio.Future[None] | None = None
        self._to_place: asyncio.Queue[str] = asyncio.Queue()
        self._reconciled = asyncio.Event()
        self.placed = 0
        self.rejected: dict[str, int] = {}
        # IBKR's latest position report (and when it came) per (account, con_id), not written yet.
        self._positions_due: dict[tuple[str, int], tuple[IbPosition, datetime]] = {}
        self._positions_arrived = asyncio.Event()
        self._position_writer_running = False
        # IBKR's reports wait (boundedly) while a batch of orders is on its way to IBKR; without an
        # OrdersFirst given (tests, tools), they never wait.
        self.orders_first = orders_first or OrdersFirst(max_wait=0.0)

    @property
    def unanswered(self) -> int:
        """Orders sent to IBKR that IBKR has said nothing about yet (what the placement watchdog checks)."""
        return len(self._sent_at)

    @property
    def reconciled(self) -> bool:
        """True once reconciliation has settled the ledger with IBKR since the last (re)connect."""
        return self._reconciled.is_set()

    # -- commands from Kafka ----------------------------------------------------------------------

    async def on_order_requested(self, order: OrderRequested, source_topic: str | None = None,
                                 source_partition: int | None = None, source_offset: int | None = None) -> None:
        """Record, check and queue one order (see :meth:`on_orders_requested`)."""
        await self.on_orders_requested([(order, OrderSource(source_topic, source_partition, source_offset))])

    async def on_orders_requested(self, items: Sequence[tuple[OrderRequested, OrderSource]]) -> None:
        """Record, check and place a batch of orders; one transaction records (and reserves) them all.

        A known ``order_id`` (a redelivery, or twice in the batch) only re-publishes its current status.
        """
        with self.orders_first.order_batch():
            await self._on_orders_requested(items)

    async def _on_orders_requested(self, items: Sequence[tuple[OrderRequested, OrderSource]]) -> None:
        started = time.monotonic()
        if self.metrics is not None:
            wall = time.time()
            for _, source in items:
                if source.timestamp is not None:
                    self.metrics.order_stage("queued", wall - source.timestamp)
        new, republish, loose, rejections = await self._check(items)
        # Connected and reconciled (the consume gate makes sure of it): the IBKR ids are reserved in the
        # recording statement and the orders placed at once; otherwise the placer reserves them later.
        place_now = (not self.readonly and self.broker.connected and self._reconciled.is_set()
                     and self._next_ib_order_id is not None)
        to_place = [n.order.order_id for n in new if n.state is OrderState.ACCEPTED] if place_now else []
        ids, turn = self._take_ib_order_ids(to_place) if to_place else ({}, None)
        try:
            # A cancel that came first turns an ACCEPTED order CANCELLED inside the insert.
            inserted = await self.batches.record_new(new, self.client_id, self.events.status, ids)
            if self.metrics is not None:
                self.metrics.order_stage("record", time.monotonic() - started)
            self.on_published()
            if turn is not None:
                await turn.wait()
            await self._place_recorded(inserted)
        finally:
            if turn is not None:
                turn.done()
        # An order_id the ledger knew already was not inserted: a redelivery, its status goes out again.
        inserted_ids = {row.order_id for row in inserted}
        republish.extend(n.order.order_id for n in new if n.order.order_id not in inserted_ids)
        for row in inserted:
            if row.order_id in rejections:
                self._count_rejection(_request_of(row), rejections[row.order_id])
        if republish:
            rows = await self.batches.get_many(republish)
            loose.extend(self.events.status(rows[i], None) for i in republish if i in rows)
            log.info("orders redelivered; re-publishing their status", count=len(republish))
            self._watch_unsent(rows.values())
        if loose:
            await self.outbox.add_many(loose)
            self.on_published()
        log.info("orders recorded", count=len(inserted),
                 accepted=sum(r.state in (OrderState.ACCEPTED, OrderState.PLACING) for r in inserted))

    async def _check(self, items: Sequence[tuple[OrderRequested, OrderSource]]) -> tuple[
            list[NewOrder], list[str], list[OutboxMessage], dict[str, OrderRejected]]:
        """Guards for each new order: what to record, what to re-publish, what to announce only."""
        policy = self.policy()
        new: list[NewOrder] = []
        republish: list[str] = []
        loose: list[OutboxMessage] = []
        rejections: dict[str, OrderRejected] = {}
        seen: set[str] = set()
        for order, source in items:
            if order.order_id in seen:
                republish.append(order.order_id)
                continue
            seen.add(order.order_id)
            state, reason = OrderState.ACCEPTED, None
            try:
                check_order(order, await self.instruments.get(order.instrument_id), policy)
            except OrderRejected as rejection:
                if rejection.reason in (RejectReason.INVALID_ORDER_ID, RejectReason.INVALID_QUANTITY):
                    # Too malformed for the ledger's constraints: announce the rejection, keep nothing.
                    self._count_rejection(order, rejection)
                    loose.append(self.events.rejection(order, rejection.text))
                    continue
                rejections[order.order_id] = rejection
                state, reason = OrderState.REJECTED, rejection.text
            new.append(NewOrder(order, state, reason, source.topic, source.partition, source.offset))
        return new, republish, loose, rejections

    async def _place_recorded(self, inserted: Sequence[OrderRow]) -> None:
        """Send the orders reserved while recording; queue the ACCEPTED ones for the placer."""
        now = time.monotonic()
        reserved: list[tuple[OrderRow, int]] = []
        for row in inserted:
            if row.state is OrderState.PLACING and row.ib_order_id is not None:
                self._received_at[row.order_id] = now
                reserved.append((row, row.ib_order_id))
            elif row.state is OrderState.ACCEPTED:
                self._received_at[row.order_id] = now
                if not self.readonly:
                    self._to_place.put_nowait(row.order_id)
            elif row.state is OrderState.CANCELLED and self.metrics is not None:
                self.metrics.order_cancelled()
        if not reserved:
            return
        try:
            await self._send(reserved)
        except ConnectionError as exc:
            # Recorded and reserved: reconciliation finds IBKR never got them and places them again.
            log.warning("placing failed: not connected; the orders stay for reconciliation",
                        count=len(reserved), error=str(exc))

    def _watch_unsent(self, rows: Iterable[OrderRow]) -> None:
        """Hand this worker's PLACING orders that it has not sent to the placement watchdog.

        A recording statement can commit and its answer be lost (the database connection breaks): the
        batch is then handled again as a redelivery, which inserts nothing, so the orders it recorded
        PLACING would wait, unsent, for the next reconnect's reconciliation. The watchdog looks them up
        at IBKR once their answer is overdue and places again only those IBKR never received, so an order
        that did reach IBKR (sent before a restart, say) is never placed twice.
        """
        if self.readonly:
            return
        now = time.monotonic()
        for row in rows:
            if (row.state is OrderState.PLACING and row.ib_client_id == self.client_id
                    and row.order_id not in self._sent_at):
                self._sent_at[row.order_id] = now
                log.warning("redelivered order is PLACING but was not sent by this worker; "
                            "the placement watchdog checks it at IBKR", order_id=row.order_id)

    def _count_rejection(self, order: OrderRequested, rejection: OrderRejected) -> None:
        self.rejected[rejection.reason.value] = self.rejected.get(rejection.reason.value, 0) + 1
        if self.metrics is not None:
            self.metrics.order_rejected(rejection.reason.value)
        log.warning("order rejected", order_id=order.order_id, reason=rejection.reason.value,
                    detail=rejection.detail)

    async def on_cancel_requested(self, cancel: OrderCancelRequested) -> None:
        """Cancel an order; a cancel for an order not seen yet is kept for when the order arrives."""
        with self.orders_first.order_batch():
            await self._on_cancel_requested(cancel)

    async def _on_cancel_requested(self, cancel: OrderCancelRequested) -> None:
        await self.ledger.record_cancel_request(cancel)
        row = await self.ledger.get(cancel.order_id)
        if row is None:
            log.info("cancel recorded before its order", order_id=cancel.order_id)
            return
        if row.account != cancel.account:
            log.warning("cancel ignored: account does not match the order", order_id=cancel.order_id)
            await self.ledger.mark_cancel_handled(cancel.order_id)
            return
        await self._cancel(row, cancel.reason)

    async def _cancel(self, row: OrderRow, reason: str | None) -> None:
        text = f"cancel requested: {reason}" if reason else "cancel requested"
        if row.state.is_final:
            await self.ledger.mark_cancel_handled(row.order_id)
            return
        if row.state is OrderState.ACCEPTED:
            await self._transition(row.order_id, OrderState.CANCELLED, reason=text)
            await self.ledger.mark_cancel_handled(row.order_id)
            return
        if row.owner_client_id != self.client_id:
            # Only the client id that placed an order may cancel it at IBKR; its owner picks the
            # request up from the cancel_requests table (see sweep_cancels).
            log.info("cancel left for the owning worker", order_id=row.order_id,
                     owner_client_id=row.owner_client_id)
            return
        if row.ib_order_id is None or not self.broker.connected:
            return  # stays pending; the sweep retries once connected
        # The batch that reserved the order's id may still be sending: the cancel must reach IBKR after its
        # placeOrder, or IBKR would refuse it (10147) and the order would then go out uncancelled.
        await self._sends_settled()
        current = await self.ledger.get(row.order_id)
        if current is None or current.state.is_final or current.ib_order_id is None:
            await self.ledger.mark_cancel_handled(row.order_id)
            return
        if current.state is not OrderState.CANCEL_PENDING:
            await self._transition(row.order_id, OrderState.CANCEL_PENDING, reason=text)
        await self.broker.cancel(current.ib_order_id)
        await self.ledger.mark_cancel_handled(row.order_id)

    async def sweep_cancels(self) -> None:
        """Act on cancel requests for orders this worker owns that nobody has acted on yet."""
        for row in await self.ledger.owned_with_pending_cancel(self.client_id):
            cancel = await self.ledger.pending_cancel(row.order_id)
            if cancel is not None:
                await self._cancel(row, cancel.reason)

    async def kill_switch_flipped(self) -> None:
        """The kill switch went on: cancel this worker's open orders at IBKR."""
        log.warning("kill switch on: cancelling open orders", client_id=self.client_id)
        if self.broker.connected:
            await self.broker.global_cancel()

    # -- placing ----------------------------------------------------------------------------------

    async def run_placer(self, stop: asyncio.Event, batch: int = 200) -> None:
        """Place queued orders in batches (ids reserved in one transaction), once reconciliation has run."""
        while not stop.is_set():
            order_ids = [await self._to_place.get()]
            while not self._to_place.empty() and len(order_ids) < batch:
                order_ids.append(self._to_place.get_nowait())
            await self._reconciled.wait()
            try:
                await self._place(order_ids)
            except ConnectionError as exc:
                log.warning("placing failed: not connected; the orders stay for reconciliation",
                            count=len(order_ids), error=str(exc))
            except Exception:
                log.exception("placing failed; the orders stay for reconciliation", count=len(order_ids))

    async def _place(self, order_ids: list[str]) -> None:
        if not self.broker.connected or self._next_ib_order_id is None:
            return  # still ACCEPTED: reconciliation queues them again after the reconnect
        ids, turn = self._take_ib_order_ids(list(dict.fromkeys(order_ids)))
        try:
            reserved = await self.batches.reserve_ib_order_ids(ids, self.client_id)
            now = time.monotonic()
            if self.metrics is not None:
                for row, _ in reserved:
                    received = self._received_at.get(row.order_id)
                    if received is not None:
                        self.metrics.order_stage("waiting", now - received)
            await turn.wait()
            await self._send(reserved)
        finally:
            turn.done()

    def _take_ib_order_ids(self, order_ids: Sequence[str]) -> tuple[dict[str, int], SendingTurn]:
        """Fresh IBKR order ids for ``order_ids`` (in order) and the batch's turn to send them.

        No await between the two: batches send in the order they took their ids, so ids reach IBKR in
        increasing order. Ids are above IB's nextValidId and every id handed out since reconciliation
        (which starts above the highest the ledger ever reserved); an id never sent is a gap IB allows.
        """
        assert self._next_ib_order_id is not None, "ids are handed out only once reconciled"
        first = max(self._next_ib_order_id, self.broker.next_valid_id_at_connect)
        self._next_ib_order_id = first + len(order_ids)
        turn = SendingTurn(self._last_in_line)
        self._last_in_line = turn.finished
        return {order_id: first + n for n, order_id in enumerate(order_ids)}, turn

    async def _sends_settled(self) -> None:
        """Wait until every batch that took ids so far has sent its orders (or given up)."""
        if self._last_in_line is not None:
            await asyncio.shield(self._last_in_line)

    async def _send(self, reserved: Sequence[tuple[OrderRow, int]]) -> None:
        """placeOrder for each reserved order, in id order (none while the kill switch is on)."""
        if reserved and self.policy().kill_switch:
            # Accepted before the switch went on, not sent yet: they never reach IBKR.
            for row, _ in reserved:
                await self._transition(row.order_id, OrderState.CANCELLED,
                                       reason=f"{RejectReason.KILL_SWITCH}: the kill switch went on before "
                                              "the order was placed")
            return
        now = time.monotonic()
        for row, ib_order_id in reserved:
            instrument = await self.instruments.get(row.instrument_id)
            if instrument is None:
                await self._transition(row.order_id, OrderState.REJECTED,
                                       reason=f"{RejectReason.UNKNOWN_INSTRUMENT}: {row.instrument_id}")
                continue
            await self.broker.place(contract_for(instrument), order_for(_request_of(row), ib_order_id))
            self._sent_at[row.order_id] = time.monotonic()
            self.placed += 1
            if self.metrics is not None:
                received = self._received_at.pop(row.order_id, None)
                self.metrics.order_placed(time.monotonic() - received if received is not None else None)
                self.metrics.order_stage("send", time.monotonic() - now)
        if reserved:
            log.info("orders placed", count=len(reserved), client_id=self.client_id,
                     first_ib_order_id=reserved[0][1], last_ib_order_id=reserved[-1][1])

    # -- reports from IBKR ------------------------------------------------------------------------

    async def on_report(self, report: IbReport) -> None:
        await self.on_reports([report])

    async def on_reports(self, reports: Sequence[IbReport]) -> None:
        """Handle a batch of IBKR reports: fills first, then commissions, statuses and positions."""
        await self.orders_first.turn()
        for report in reports:
            if isinstance(report, IbOrderStatus | IbExecution) and report.order_ref:
                self._sent_at.pop(report.order_ref, None)  # IBKR answered: the watchdog can forget it
        executions = [r for r in reports if isinstance(r, IbExecution)]
        commissions = {r.exec_id: (r.commission, r.currency) for r in reports if isinstance(r, IbCommission)}
        statuses = [r for r in reports if isinstance(r, IbOrderStatus)]
        # The orders the batch is about, read once for the fills and the status changes alike.
        about = {e.order_ref for e in executions if e.order_ref} | {s.order_ref for s in statuses if s.order_ref}
        read = await self.batches.read_versions(sorted(about))
        # A commission that came with its execution is written with the new fill.
        fills = await self._fills_of(executions, {k: row for k, (row, _) in read.items()}, commissions)
        in_batch = {fill.fill_id for fill in fills}
        changes = [change for change in map(_status_change, statuses) if change is not None]
        of_earlier_fills = [(e, c, cur) for e, (c, cur) in commissions.items() if e not in in_batch]
        if fills or of_earlier_fills or changes:
            # The batch's fills, commissions and status changes: one statement.
            recorded = await self.batches.record_reports(fills, of_earlier_fills, changes, self.events.status, read)
            # A replayed execution wrote nothing: a commission that came with it is set on the fill recorded before.
            replayed = set(in_batch) - set(recorded.new_fill_ids)
            await self.batches.set_commissions([(e, c, cur) for e, (c, cur) in commissions.items() if e in replayed])
            if recorded.new_fill_ids:
                log.info("fills recorded", count=len(recorded.new_fill_ids))
            self._applied(recorded.applied)
        if executions or commissions:
            self.on_fill()  # once the batch's commissions are in too, not before
        positions = [r for r in reports if isinstance(r, IbPosition)]
        if positions:
            await self._on_positions(positions)
        for report in reports:
            if isinstance(report, IbError):
                self._on_error(report)
            elif isinstance(report, ConnectionChanged) and not report.connected:
                self._reconciled.clear()

    async def _on_positions(self, reports: Sequence[IbPosition]) -> None:
        """Note IBKR's latest positions; written at once, or by :meth:`run_position_writer` when it runs."""
        received = datetime.now(UTC)
        for report in reports:
            self._positions_due[(report.account, report.con_id)] = (report, received)
        if self._position_writer_running:
            self._positions_arrived.set()
        else:
            await self.write_positions()

    async def write_positions(self) -> None:
        """Store the latest position of each account and contract noted since the last write, with their
        ``positions.updated`` records, in one statement. On failure they stay due (newer reports win)."""
        due, self._positions_due = self._positions_due, {}
        if not due:
            return
        rows: list[PositionRow] = []
        events: list[OutboxMessage] = []
        try:
            for report, received in due.values():
                instrument_id = await self.instruments.instrument_id_for(report.con_id)
                rows.append(PositionRow(account=report.account, con_id=report.con_id, instrument_id=instrument_id,
                                        quantity=report.quantity, avg_cost=report.avg_cost,
                                        currency=report.currency, as_of=received))
                events.append(self.events.position(report, instrument_id))
            if self.positions is not None:
                await self.positions.upsert_many(rows, events)
            else:
                await self.outbox.add_many(events)
        except BaseException:
            for key, noted in due.items():
                self._positions_due.setdefault(key, noted)
            raise
        self.on_published()

    async def run_position_writer(self, stop: asyncio.Event, every: float) -> None:
        """Write noted positions at most once per ``every`` seconds: a position reported again meanwhile
        (each fill moves it) is written once, at its latest. Orders first: a write waits its turn."""
        self._position_writer_running = True
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._positions_arrived.wait(), 0.5)
                if not self._positions_arrived.is_set():
                    continue
                self._positions_arrived.clear()
                await asyncio.sleep(every)
                await self.orders_first.turn()
                try:
                    await self.write_positions()
                except Exception as exc:  # PostgreSQL away: the positions stay due; try again
                    log.warning("positions not written; will retry", error=f"{type(exc).__name__}: {exc}")
                    self._positions_arrived.set()
                    await asyncio.sleep(1.0)
        finally:
            self._position_writer_running = False

    def _on_error(self, error: IbError) -> None:
        if error.code == PACING_VIOLATION:
            self._pacing_violated.set()
        level = log.info if error.informational else log.warning
        level("ibkr message", code=error.code, req_id=error.req_id, message=error.message)

    async def _on_statuses(self, statuses: Sequence[IbOrderStatus]) -> None:
        await self._apply([change for change in map(_status_change, statuses) if change is not None])

    async def _apply(self, changes: Sequence[StatusChange]) -> int:
        """Write the legal ones of ``changes`` (with their status records); return how many were written."""
        applied = await self.batches.apply(changes, self.events.status)
        self._applied(applied)
        return len(applied)

    def _applied(self, applied: Sequence[AppliedChange]) -> None:
        """Status changes written: wake the outbox relay; count and log them."""
        if not applied:
            return
        self.on_published()
        for change in applied:
            if self.metrics is not None:
                self.metrics.order_transition(change.previous.value, change.row.state.value)
                if change.row.state is OrderState.CANCELLED:
                    self.metrics.order_cancelled()
            log.info("order status", order_id=change.row.order_id, state=change.row.state.value,
                     previous=change.previous.value)

    async def _on_executions(self, executions: Sequence[IbExecution]) -> None:
        """Record the fills of ledger orders among ``executions`` (IBKR's, fetched on reconciliation)."""
        rows = await self.batches.get_many([e.order_ref for e in executions if e.order_ref])
        new = await self.batches.insert_fills(await self._fills_of(executions, rows, {}))
        if new:
            log.info("fills recorded", count=len(new))
            self.on_fill()

    async def _fills_of(self, executions: Sequence[IbExecution], rows: dict[str, OrderRow],
                        commissions: dict[str, tuple[Decimal, str]]) -> list[Fill]:
        """The fills of the ledger orders (``rows``) among ``executions``; a commission in ``commissions``
        (by execId) goes in with its fill."""
        fills: list[Fill] = []
        for execution in executions:
            row = rows.get(execution.order_ref)
            if row is None:
                continue  # not one of ours
            corrects = await self._corrected_fill(row.order_id, execution.exec_id)
            if corrects is not None:
                log.warning("execution corrected", fill_id=execution.exec_id, corrects_fill_id=corrects,
                            order_id=row.order_id)
            commission, commission_currency = _commission_of(execution, commissions)
            fills.append(Fill(
                corrects_fill_id=corrects,
                fill_id=execution.exec_id, order_id=row.order_id, con_id=execution.con_id,
                side=Side(execution.side), quantity=execution.quantity, price=execution.price,
                currency=execution.currency, exchange=execution.exchange, executed_at=execution.executed_at,
                ib_order_id=execution.ib_order_id, ib_perm_id=execution.perm_id,
                cumulative_quantity=execution.cumulative_quantity, avg_price=execution.avg_price,
                commission=commission, commission_currency=commission_currency,
            ))
        return fills

    async def _corrected_fill(self, order_id: str, exec_id: str) -> str | None:
        """The execId that ``exec_id`` corrects: same execution, lower last part (``.01`` -> ``.02``)."""
        base, _, version = exec_id.rpartition(".")
        if not base or not version.isdigit() or int(version) <= 1:
            return None
        earlier = [f.fill_id for f in await self.fills.for_order(order_id)
                   if f.fill_id.rpartition(".")[0] == base and f.fill_id != exec_id]
        return max(earlier, key=lambda fid: int(fid.rpartition(".")[2] or 0)) if earlier else None

    async def _transition(self, order_id: str, state: OrderState, *, reason: str | None = None) -> None:
        """One state change decided by the worker itself (cancel, rejection), through the same path as IBKR's."""
        if not await self._apply([StatusChange(order_id, state, reason=reason)]):
            log.info("status change refused by the ledger", order_id=order_id, requested=state.value)

    # -- reconciliation ---------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Settle every open order of this worker against IBKR, then let placement run."""
        self._reconciled.clear()
        self._sent_at.clear()  # every open order is settled here
        # IB's nextValidId can be lower after a gateway restart: ids go on from above every id ever reserved.
        self._next_ib_order_id = max(self.broker.next_valid_id_at_connect, self._next_ib_order_id or 0,
                                     await self.batches.highest_ib_order_id(self.client_id) + 1)
        at_ib = await self.broker.order_statuses()
        await self._on_executions(await self.broker.executions())
        open_rows = await self.ledger.open_orders_owned_by(self.client_id)
        await self._on_statuses([at_ib[row.order_id] for row in open_rows if row.order_id in at_ib])
        for row in open_rows:
            if row.order_id in at_ib:
                continue
            if row.state is OrderState.ACCEPTED:
                if not self.readonly:
                    self._to_place.put_nowait(row.order_id)
            elif row.state is OrderState.PLACING:
                # IBKR never received it (it would be among its open or completed orders): the
                # reserved id was not used, so the order may go out under a new one.
                await self._retry_unplaced(row)
            elif row.state in (OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED, OrderState.CANCEL_PENDING):
                log.warning("open order unknown to IBKR; left for an operator", order_id=row.order_id,
                            state=row.state.value)
        self._reconciled.set()
        self.on_fill()
        log.info("reconciled with IBKR", client_id=self.client_id, ib_orders=len(at_ib))

    async def run_placement_watchdog(self, stop: asyncio.Event, *, answer_within: float = 5.0,
                                     every: float = 2.0) -> None:
        """Find placed orders IBKR never answered, and place them again.

        IBKR answers a placeOrder within milliseconds (openOrder, orderStatus). One it dropped — IB drops a
        message that exceeds its pacing limit, answering only error 100 without naming it — would stay
        PLACING until the next reconnect. An order sent ``answer_within`` seconds ago and still PLACING is
        looked up among IBKR's open and completed orders (asked on the same connection, so after the
        placeOrder): found, its status is applied; not found, IBKR never received it and it is placed
        again under a new id, as reconciliation does. Checked every ``every`` seconds, and soon after an
        error 100.
        """
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
        """One pass of :meth:`run_placement_watchdog`; returns how many orders were placed again."""
        now = time.monotonic()
        due = [order_id for order_id, sent in self._sent_at.items() if now - sent >= answer_within]
        if not due or not self.broker.connected or not self._reconciled.is_set():
            return 0
        rows = await self.batches.get_many(due)
        placing = [rows[i] for i in due if i in rows and rows[i].state is OrderState.PLACING]
        for order_id in due:
            if order_id not in rows or rows[order_id].state is not OrderState.PLACING:
                self._sent_at.pop(order_id, None)
        if not placing:
            return 0
        # A query can be dropped over the pacing limit as well: never wait for an answer forever.
        at_ib = await asyncio.wait_for(self.broker.order_statuses(), max(2 * answer_within, 5.0))
        answered = [at_ib[row.order_id] for row in placing if row.order_id in at_ib]
        if answered:
            await self._on_statuses(answered)
        retried = 0
        for row in placing:
            self._sent_at.pop(row.order_id, None)
            if row.order_id not in at_ib:
                await self._retry_unplaced(row)
                retried += 1
        return retried

    async def _retry_unplaced(self, row: OrderRow) -> None:
        log.warning("order never reached IBKR; placing it again", order_id=row.order_id,
                    reserved_ib_order_id=row.ib_order_id)
        await self.ledger.release_unplaced(row.order_id)
        self.batches.forget([row.order_id])
        if not self.readonly:
            self._to_place.put_nowait(row.order_id)


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


@dataclass(frozen=True)
class OrderSource:
    """Where an order request was read from (kept in the ledger for operators)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None  # the Kafka record's timestamp, seconds since the epoch


def _status_change(status: IbOrderStatus) -> StatusChange | None:
    """The ledger change an IBKR status asks for, or None when it changes nothing."""
    if not status.order_ref:
        return None
    state = state_for_ib_status(status.ib_status, float(status.filled), float(status.remaining))
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


def _commission_of(execution: IbExecution,
                   commissions: dict[str, tuple[Decimal, str]]) -> tuple[Decimal | None, str | None]:
    """The commission of the fill of ``execution`` and its currency: its own, else the report that came
    with it."""
    if execution.commission is None and execution.exec_id in commissions:
        return commissions[execution.exec_id]
    return execution.commission, execution.commission_currency


def _request_of(row: OrderRow) -> OrderRequested:
    return OrderRequested(
        order_id=row.order_id, account=row.account, instrument_id=row.instrument_id, side=row.side,
        quantity=row.quantity, order_type=row.order_type, limit_price=row.limit_price,
        stop_price=row.stop_price, time_in_force=row.time_in_force, outside_rth=row.outside_rth,
        created_at=row.created_at, source=row.source,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
