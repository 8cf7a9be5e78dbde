"""IBKR's reports: fills, commissions, status changes and positions, a batch at a time.

Each batch's fills, commissions and status changes are written in one statement; a fill is recorded once
(a replayed execution has the same execId) and published from the ledger by the fill relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal

from workers.domain.fills import Fill, corrected_fill_id, is_correction
from workers.domain.orders import Order, Side
from workers.logs import get_logger
from workers.ports.ibkr import (
    PACING_VIOLATION,
    ConnectionChanged,
    IbCommission,
    IbError,
    IbExecution,
    IbOrderStatus,
    IbPosition,
    IbReport,
)
from workers.ports.orders import EventSink, FillHistory, OrderRepository
from workers.service_layer.orders.market_views import PositionCache
from workers.service_layer.orders.positions import PositionBook
from workers.service_layer.orders.status_writer import StatusWriter
from workers.service_layer.orders.watchdog import PlacementWatchdog
from workers.service_layer.orders_first import OrdersFirst

log = get_logger(__name__)


class ReportHandler:
    """Applies IBKR's reports to the ledger."""

    def __init__(self, *, ledger: OrderRepository, fills: FillHistory, events: EventSink, status: StatusWriter,
                 watchdog: PlacementWatchdog, positions: PositionBook, position_cache: PositionCache,
                 orders_first: OrdersFirst,
                 reconciled: asyncio.Event, on_fill: Callable[[], None]) -> None:
        self.ledger = ledger
        self.fills = fills
        self.events = events
        self.status = status
        self.watchdog = watchdog
        self.positions = positions
        self.position_cache = position_cache
        self.orders_first = orders_first
        self.reconciled = reconciled
        self.on_fill = on_fill

    async def on_reports(self, reports: Sequence[IbReport]) -> None:
        """Handle a batch of IBKR reports: fills first, then commissions, statuses and positions."""
        await self.orders_first.turn()
        for report in reports:
            if isinstance(report, IbOrderStatus | IbExecution) and report.order_ref:
                self.watchdog.answered(report.order_ref)
        executions = [r for r in reports if isinstance(r, IbExecution)]
        commissions = {r.exec_id: (r.commission, r.currency) for r in reports if isinstance(r, IbCommission)}
        statuses = [r for r in reports if isinstance(r, IbOrderStatus)]
        # The orders the batch is about, read once for the fills and the status changes alike.
        about = {e.order_ref for e in executions if e.order_ref} | {s.order_ref for s in statuses if s.order_ref}
        read = await self.ledger.read_versions(sorted(about))
        # A commission that came with its execution is written with the new fill.
        fills = await self._fills_of(executions, {k: order for k, (order, _) in read.items()}, commissions)
        in_batch = {fill.fill_id for fill in fills}
        changes = [s.change for s in statuses if s.change is not None]
        of_earlier_fills = [(e, c, cur) for e, (c, cur) in commissions.items() if e not in in_batch]
        if fills or of_earlier_fills or changes:
            # The batch's fills, commissions and status changes: one statement.
            recorded = await self.ledger.record_reports(fills, of_earlier_fills, changes, self.events.status, read)
            # A replayed execution wrote nothing: a commission that came with it is set on the fill recorded before.
            replayed = in_batch - set(recorded.new_fill_ids)
            await self.ledger.set_commissions([(e, c, cur) for e, (c, cur) in commissions.items() if e in replayed])
            if recorded.new_fill_ids:
                log.info("fills recorded", count=len(recorded.new_fill_ids))
            self.status.applied(recorded.applied)
        if executions or commissions:
            self.on_fill()  # once the batch's commissions are in too, not before
        positions = [r for r in reports if isinstance(r, IbPosition)]
        if positions:
            self.position_cache.note(positions)
            await self.positions.note(positions)
        for report in reports:
            if isinstance(report, IbError):
                self._on_error(report)
            elif isinstance(report, ConnectionChanged) and not report.connected:
                self.reconciled.clear()
                self.position_cache.connection_lost()

    async def on_executions(self, executions: Sequence[IbExecution]) -> None:
        """Record the fills of ledger orders among ``executions`` (IBKR's, fetched on reconciliation)."""
        orders = await self.ledger.get_many([e.order_ref for e in executions if e.order_ref])
        new = await self.ledger.insert_fills(await self._fills_of(executions, orders, {}))
        if new:
            log.info("fills recorded", count=len(new))
            self.on_fill()

    def _on_error(self, error: IbError) -> None:
        if error.code == PACING_VIOLATION:
            self.watchdog.pacing_violated()
        level = log.info if error.informational else log.warning
        level("ibkr message", code=error.code, req_id=error.req_id, message=error.message)

    async def _fills_of(self, executions: Sequence[IbExecution], orders: dict[str, Order],
                        commissions: dict[str, tuple[Decimal, str]]) -> list[Fill]:
        """The fills of the ledger orders (``orders``) among ``executions``; a commission in ``commissions``
        (by execId) goes in with its fill."""
        fills: list[Fill] = []
        for execution in executions:
            order = orders.get(execution.order_ref)
            if order is None:
                continue  # not one of ours
            corrects = await self._corrected_fill(order.order_id, execution.exec_id)
            if corrects is not None:
                log.warning("execution corrected", fill_id=execution.exec_id, corrects_fill_id=corrects,
                            order_id=order.order_id)
            commission, commission_currency = _commission_of(execution, commissions)
            fills.append(Fill(
                corrects_fill_id=corrects,
                fill_id=execution.exec_id, order_id=order.order_id, con_id=execution.con_id,
                side=Side(execution.side), quantity=execution.quantity, price=execution.price,
                currency=execution.currency, exchange=execution.exchange, executed_at=execution.executed_at,
                ib_order_id=execution.ib_order_id, ib_perm_id=execution.perm_id,
                cumulative_quantity=execution.cumulative_quantity, avg_price=execution.avg_price,
                commission=commission, commission_currency=commission_currency,
            ))
        return fills

    async def _corrected_fill(self, order_id: str, exec_id: str) -> str | None:
        if not is_correction(exec_id):
            return None  # no need to read the order's fills
        return corrected_fill_id(exec_id, await self.fills.fill_ids_of(order_id))


def _commission_of(execution: IbExecution,
                   commissions: dict[str, tuple[Decimal, str]]) -> tuple[Decimal | None, str | None]:
    """The commission of the fill of ``execution`` and its currency: its own, else the report that came
    with it."""
    if execution.commission is None and execution.exec_id in commissions:
        return commissions[execution.exec_id]
    return execution.commission, execution.commission_currency
