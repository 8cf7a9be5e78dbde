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
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from ib_insync import Contract, Order

from workers.adapters.ibkr.builders import contract_for, order_for, state_for_ib_status
from workers.adapters.ibkr.gateway import (
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
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.positions import PositionRow, PositionStore
from workers.adapters.postgres.rows import Fill, OrderRow, OutboxMessage
from workers.domain.guards import GuardPolicy, OrderRejected, RejectReason, check_order
from workers.domain.orders import (
    IllegalTransition,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    Side,
)
from workers.logs import get_logger
from workers.metrics import Metrics
from workers.service_layer.instrument_cache import InstrumentCache

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

    def __init__(self, *, ledger: OrderLedger, fills: FillStore, outbox: Outbox,
                 instruments: InstrumentCache, broker: Broker, events: EventSink,
                 policy: Callable[[], GuardPolicy], readonly: bool = False,
                 on_published: Callable[[], None] = lambda: None,
                 on_fill: Callable[[], None] = lambda: None, metrics: Metrics | None = None,
                 positions: PositionStore | None = None) -> None:
        self.ledger = ledger
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
        self._to_place: asyncio.Queue[str] = asyncio.Queue()
        self._reconciled = asyncio.Event()
        self.placed = 0
        self.rejected: dict[str, int] = {}

    @property
    def reconciled(self) -> bool:
        """True once reconciliation has settled the ledger with IBKR since the last (re)connect."""
        return self._reconciled.is_set()

    # -- commands from Kafka ----------------------------------------------------------------------

    async def on_order_requested(self, order: OrderRequested, source_topic: str | None = None,
                                 source_partition: int | None = None, source_offset: int | None = None) -> None:
        """Record, check and queue one order; a known ``order_id`` only re-publishes its status."""
        known = await self.ledger.get(order.order_id)
        if known is not None:
            log.info("order redelivered; re-publishing its status", order_id=order.order_id,
                     state=known.state.value)
            await self.outbox.add(self.events.status(known, None))
            self.on_published()
            return
        try:
            instrument = await self.instruments.get(order.instrument_id)
            check_order(order, instrument, self.policy())
        except OrderRejected as rejection:
            await self._reject_new(order, rejection, source_topic, source_partition, source_offset)
            return
        inserted = await self.ledger.insert_accepted(
            order, source_topic=source_topic, source_partition=source_partition,
            source_offset=source_offset, owner_client_id=self.client_id,
            outbox=lambda row: self.events.status(row, None),
        )
        self.on_published()
        if not inserted:  # another consumer recorded it between our read and our insert
            return
        if await self.ledger.pending_cancel(order.order_id) is not None:
            await self._transition(order.order_id, OrderState.CANCELLED,
                                   reason=f"{RejectReason.CANCELLED_BEFORE_PLACED}: a cancel request "
                                          "arrived before the order")
            await self.ledger.mark_cancel_handled(order.order_id)
            return
        self._received_at[order.order_id] = time.monotonic()
        log.info("order accepted", order_id=order.order_id, instrument_id=order.instrument_id,
                 side=order.side.value, quantity=str(order.quantity), order_type=order.order_type.value)
        if not self.readonly:
            self._to_place.put_nowait(order.order_id)

    async def _reject_new(self, order: OrderRequested, rejection: OrderRejected, source_topic: str | None,
                          source_partition: int | None, source_offset: int | None) -> None:
        self.rejected[rejection.reason.value] = self.rejected.get(rejection.reason.value, 0) + 1
        if self.metrics is not None:
            self.metrics.order_rejected(rejection.reason.value)
        log.warning("order rejected", order_id=order.order_id, reason=rejection.reason.value,
                    detail=rejection.detail)
        if rejection.reason in (RejectReason.INVALID_ORDER_ID, RejectReason.INVALID_QUANTITY):
            # Too malformed for the ledger's constraints: announce the rejection, keep nothing.
            await self.outbox.add(self.events.rejection(order, rejection.text))
            self.on_published()
            return
        inserted = await self.ledger.insert_accepted(
            order, source_topic=source_topic, source_partition=source_partition,
            source_offset=source_offset, owner_client_id=self.client_id,
        )
        if inserted:
            await self._transition(order.order_id, OrderState.REJECTED, reason=rejection.text)

    async def on_cancel_requested(self, cancel: OrderCancelRequested) -> None:
        """Cancel an order; a cancel for an order not seen yet is kept for when the order arrives."""
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
        if row.state is not OrderState.CANCEL_PENDING:
            await self._transition(row.order_id, OrderState.CANCEL_PENDING, reason=text)
        await self.broker.cancel(row.ib_order_id)
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

    async def run_placer(self, stop: asyncio.Event) -> None:
        """Place queued orders one at a time, in id order, once reconciliation has run."""
        while not stop.is_set():
            order_id = await self._to_place.get()
            await self._reconciled.wait()
            try:
                await self._place(order_id)
            except ConnectionError as exc:
                log.warning("placing failed: not connected; the order stays for reconciliation",
                            order_id=order_id, error=str(exc))
            except Exception:
                log.exception("placing failed; the order stays for reconciliation", order_id=order_id)

    async def _place(self, order_id: str) -> None:
        row = await self.ledger.get(order_id)
        if row is None or row.state is not OrderState.ACCEPTED:
            return
        if not self.broker.connected:
            return  # reconciliation places it after the reconnect
        instrument = await self.instruments.get(row.instrument_id)
        if instrument is None:
            await self._transition(order_id, OrderState.REJECTED,
                                   reason=f"{RejectReason.UNKNOWN_INSTRUMENT}: {row.instrument_id}")
            return
        try:
            ib_order_id = await self.ledger.reserve_ib_order_id(
                order_id, self.client_id, self.broker.next_valid_id_at_connect
            )
        except IllegalTransition:
            return  # cancelled meanwhile
        request = _request_of(row)
        await self.broker.place(contract_for(instrument), order_for(request, ib_order_id))
        self.placed += 1
        if self.metrics is not None:
            received = self._received_at.pop(order_id, None)
            self.metrics.order_placed(time.monotonic() - received if received is not None else None)
        log.info("order placed", order_id=order_id, ib_order_id=ib_order_id, client_id=self.client_id)

    # -- reports from IBKR ------------------------------------------------------------------------

    async def on_report(self, report: IbReport) -> None:
        if isinstance(report, IbOrderStatus):
            await self._on_status(report)
        elif isinstance(report, IbExecution):
            await self._on_execution(report)
        elif isinstance(report, IbCommission):
            if await self.fills.set_commission(report.exec_id, report.commission, report.currency):
                self.on_fill()
        elif isinstance(report, IbError):
            self._on_error(report)
        elif isinstance(report, IbPosition):
            await self._on_position(report)
        elif isinstance(report, ConnectionChanged) and not report.connected:
            self._reconciled.clear()

    async def _on_position(self, report: IbPosition) -> None:
        instrument_id = await self.instruments.instrument_id_for(report.con_id)
        row = PositionRow(account=report.account, con_id=report.con_id, instrument_id=instrument_id,
                          quantity=report.quantity, avg_cost=report.avg_cost, currency=report.currency,
                          as_of=datetime.now(UTC))
        if self.positions is not None:
            await self.positions.upsert(row, self.events.position(report, instrument_id))
        else:
            await self.outbox.add(self.events.position(report, instrument_id))
        self.on_published()

    def _on_error(self, error: IbError) -> None:
        level = log.info if error.informational else log.warning
        level("ibkr message", code=error.code, req_id=error.req_id, message=error.message)

    async def _on_status(self, status: IbOrderStatus) -> None:
        if not status.order_ref:
            return
        row = await self.ledger.get(status.order_ref)
        if row is None or row.state.is_final:
            return
        new_state = state_for_ib_status(status.ib_status, float(status.filled), float(status.remaining))
        if new_state is None:
            return
        if new_state is row.state and status.filled == row.filled_quantity:
            return
        reason = None
        error_code = None
        if new_state is OrderState.REJECTED or (status.error_code and new_state is OrderState.CANCELLED):
            if row.state is not OrderState.PLACING and status.error_code:
                # ib_insync marks a working order cancelled on any order error; IBKR did not say so.
                log.warning("ignoring a cancel inferred from an error", order_id=row.order_id,
                            code=status.error_code, message=status.error_message)
                return
            new_state = OrderState.REJECTED
            error_code = status.error_code
            reason = f"{RejectReason.IBKR_REJECTED}: {status.error_message or status.ib_status}"
            if error_code:
                reason += f" (IBKR error {error_code})"
        elif new_state is OrderState.CANCELLED:
            reason = row.reason or "cancelled at IBKR"
        await self._transition(row.order_id, new_state, filled=status.filled, remaining=status.remaining,
                               avg_price=status.avg_fill_price, perm_id=status.perm_id or None,
                               reason=reason, error_code=error_code)

    async def _on_execution(self, execution: IbExecution) -> None:
        row = await self.ledger.get(execution.order_ref) if execution.order_ref else None
        if row is None:
            return
        corrects = await self._corrected_fill(row.order_id, execution.exec_id)
        fill = Fill(
            corrects_fill_id=corrects,
            fill_id=execution.exec_id, order_id=row.order_id, con_id=execution.con_id,
            side=Side(execution.side), quantity=execution.quantity, price=execution.price,
            currency=execution.currency, exchange=execution.exchange, executed_at=execution.executed_at,
            ib_order_id=execution.ib_order_id, ib_perm_id=execution.perm_id,
            cumulative_quantity=execution.cumulative_quantity, avg_price=execution.avg_price,
            commission=execution.commission, commission_currency=execution.commission_currency,
        )
        if await self.fills.insert(fill):
            if corrects is not None:
                log.warning("execution corrected", fill_id=fill.fill_id, corrects_fill_id=corrects,
                            order_id=row.order_id)
            log.info("fill recorded", fill_id=fill.fill_id, order_id=row.order_id,
                     quantity=str(fill.quantity), price=str(fill.price))
            self.on_fill()

    async def _corrected_fill(self, order_id: str, exec_id: str) -> str | None:
        """The execId that ``exec_id`` corrects: same execution, lower last part (``.01`` -> ``.02``)."""
        base, _, version = exec_id.rpartition(".")
        if not base or not version.isdigit() or int(version) <= 1:
            return None
        earlier = [f.fill_id for f in await self.fills.for_order(order_id)
                   if f.fill_id.rpartition(".")[0] == base and f.fill_id != exec_id]
        return max(earlier, key=lambda fid: int(fid.rpartition(".")[2] or 0)) if earlier else None

    async def _transition(self, order_id: str, state: OrderState, *, filled: Decimal | None = None,
                          remaining: Decimal | None = None, avg_price: Decimal | None = None,
                          perm_id: int | None = None, reason: str | None = None,
                          error_code: int | None = None) -> OrderRow | None:
        before = await self.ledger.get(order_id)
        previous = before.state if before is not None else None
        try:
            row = await self.ledger.transition(
                order_id, state, filled_quantity=filled, remaining_quantity=remaining,
                avg_fill_price=avg_price, ib_perm_id=perm_id, reason=reason, ib_error_code=error_code,
                outbox=lambda r: self.events.status(r, previous),
            )
        except IllegalTransition as exc:
            log.info("status change refused by the ledger", order_id=order_id, current=exc.current.value,
                     requested=exc.requested.value)
            return None
        self.on_published()
        if state is OrderState.CANCELLED and self.metrics is not None:
            self.metrics.order_cancelled()
        log.info("order status", order_id=order_id, state=state.value, previous=previous and previous.value)
        return row

    # -- reconciliation ---------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Settle every open order of this worker against IBKR, then let placement run."""
        self._reconciled.clear()
        at_ib = await self.broker.order_statuses()
        for execution in await self.broker.executions():
            await self._on_execution(execution)
        for row in await self.ledger.open_orders_owned_by(self.client_id):
            status = at_ib.get(row.order_id)
            if status is not None:
                await self._on_status(status)
            elif row.state is OrderState.ACCEPTED:
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

    async def _retry_unplaced(self, row: OrderRow) -> None:
        log.warning("order never reached IBKR; placing it again", order_id=row.order_id,
                    reserved_ib_order_id=row.ib_order_id)
        await self.ledger.release_unplaced(row.order_id)
        if not self.readonly:
            self._to_place.put_nowait(row.order_id)


def _request_of(row: OrderRow) -> OrderRequested:
    return OrderRequested(
        order_id=row.order_id, account=row.account, instrument_id=row.instrument_id, side=row.side,
        quantity=row.quantity, order_type=row.order_type, limit_price=row.limit_price,
        stop_price=row.stop_price, time_in_force=row.time_in_force, outside_rth=row.outside_rth,
        created_at=row.created_at, source=row.source,
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
