"""Reconciliation: after a (re)connect, every open order of this worker is settled against IBKR's orders
(matched by ``orderRef``, our ``order_id``) before anything is placed again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from workers.domain.orders import OrderState
from workers.logs import get_logger
from workers.ports.ibkr import IbkrConnection
from workers.ports.orders import OrderRepository
from workers.service_layer.orders.ibkr_reports import ReportHandler
from workers.service_layer.orders.modifications import Modifications
from workers.service_layer.orders.placing import Placer
from workers.service_layer.orders.status_writer import StatusWriter
from workers.service_layer.orders.watchdog import PlacementWatchdog

log = get_logger(__name__)


class Reconciler:
    """Settles the ledger with IBKR, then opens placement (``reconciled``)."""

    def __init__(self, *, ledger: OrderRepository, broker: IbkrConnection, placer: Placer,
                 watchdog: PlacementWatchdog, reports: ReportHandler, status: StatusWriter,
                 reconciled: asyncio.Event, on_fill: Callable[[], None],
                 modifications: Modifications | None = None) -> None:
        self.ledger = ledger
        self.broker = broker
        self.placer = placer
        self.watchdog = watchdog
        self.reports = reports
        self.status = status
        self.reconciled = reconciled
        self.on_fill = on_fill
        self.modifications = modifications
        self.client_id = broker.client_id

    async def reconcile(self) -> None:
        """Settle every open order of this worker against IBKR, then let placement run.

        Open orders IBKR knows get IBKR's status; an ACCEPTED one IBKR does not know is placed; a PLACING
        one IBKR does not know never reached it, and is placed again under a new id; a working one IBKR
        does not know is left for an operator (never guessed).
        """
        self.reconciled.clear()
        self.watchdog.forget_all()  # every open order is settled here
        self.placer.restart_ids(await self.ledger.highest_ib_order_id(self.client_id))
        at_ib = await self.broker.order_statuses()
        await self.reports.on_executions(await self.broker.executions())
        open_orders = await self.ledger.open_orders_owned_by(self.client_id)
        changes = [change for order in open_orders if order.order_id in at_ib
                   for change in [at_ib[order.order_id].change] if change is not None]
        await self.status.apply(changes)
        for order in open_orders:
            if order.order_id in at_ib:
                continue
            if order.state is OrderState.ACCEPTED:
                self.placer.queue(order.order_id)
            elif order.state is OrderState.PLACING:
                await self.placer.retry_unplaced(order)
            elif order.state in (OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED, OrderState.CANCEL_PENDING):
                log.warning("open order unknown to IBKR; left for an operator", order_id=order.order_id,
                            state=order.state.value)
        self.reconciled.set()
        if self.modifications is not None:
            await self.modifications.reconcile(at_ib)
        self.on_fill()
        log.info("reconciled with IBKR", client_id=self.client_id, ib_orders=len(at_ib))
