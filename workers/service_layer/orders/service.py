"""The order-consumer's service: order and cancel requests in, IBKR's reports in, ledger and events out.

The rules that make "one event = at most one IBKR order" hold are stated where they are kept: recording
before placing (:mod:`.intake`), ids reserved and never reused (:mod:`.placing`), orders IBKR never
answered (:mod:`.watchdog`), settling with IBKR after a (re)connect (:mod:`.reconciliation`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime

from workers.domain.guards import GuardPolicy, OrderRejected
from workers.domain.modifications import OrderModifyRequested
from workers.domain.orders import OrderCancelRequested, OrderRequested
from workers.domain.risk import OrderRate
from workers.domain.trading_state import TradingState
from workers.ports.ibkr import IbkrConnection, IbReport
from workers.ports.market_data import ReferencePrices
from workers.ports.orders import (
    CancelRequestStore,
    EventSink,
    FillHistory,
    InstrumentSource,
    ModificationStore,
    NoMetrics,
    OrderMetrics,
    OrderRepository,
    PositionWriter,
)
from workers.ports.outbox import OutboxWriter
from workers.service_layer.orders.cancels import Cancels
from workers.service_layer.orders.ibkr_reports import ReportHandler
from workers.service_layer.orders.intake import OrderIdConflict, OrderIntake, OrderSource
from workers.service_layer.orders.market_views import MarketViews, PositionCache
from workers.service_layer.orders.modifications import Modifications
from workers.service_layer.orders.placing import Placer
from workers.service_layer.orders.positions import PositionBook
from workers.service_layer.orders.pre_trade import PreTradeRules, utc_now
from workers.service_layer.orders.reconciliation import Reconciler
from workers.service_layer.orders.status_writer import StatusWriter
from workers.service_layer.orders.watchdog import PlacementWatchdog
from workers.service_layer.orders_first import OrdersFirst


class OrderService:
    """Handles commands from Kafka and reports from IBKR for one worker (one IBKR client id)."""

    def __init__(self, *, ledger: OrderRepository, cancel_requests: CancelRequestStore, fills: FillHistory,
                 outbox: OutboxWriter, positions: PositionWriter, instruments: InstrumentSource,
                 broker: IbkrConnection, events: EventSink, policy: Callable[[], GuardPolicy],
                 readonly: bool = False, on_published: Callable[[], None] = lambda: None,
                 on_fill: Callable[[], None] = lambda: None, metrics: OrderMetrics | None = None,
                 orders_first: OrdersFirst | None = None, prices: ReferencePrices | None = None,
                 rate: OrderRate | None = None, clock: Callable[[], datetime] = utc_now,
                 trading_state: Callable[[], TradingState] = lambda: TradingState.ACTIVE,
                 modifications: ModificationStore | None = None) -> None:
        self.ledger = ledger
        self.client_id = broker.client_id
        metrics = metrics or NoMetrics()
        # IBKR's reports wait (boundedly) while a batch of orders is on its way to IBKR; without an
        # OrdersFirst given (tests, tools), they never wait.
        self.orders_first = orders_first or OrdersFirst(max_wait=0.0)
        self._reconciled = asyncio.Event()
        status = StatusWriter(ledger, events, metrics, on_published)
        self.position_cache = PositionCache()
        self.rules = PreTradeRules(
            instruments=instruments, rate=rate, clock=clock,
            views=MarketViews(ledger=ledger, prices=prices, positions=self.position_cache))

        def current_policy() -> GuardPolicy:
            return replace(policy(), trading_state=trading_state())

        async def recheck(orders: Sequence[OrderRequested]) -> dict[str, OrderRejected]:
            # Orders that waited (IBKR away): every rule again but the order rate, which they passed when
            # they came, and HALTED, under which the placer cancels them unsent.
            now = current_policy()
            if now.trading_state is TradingState.HALTED:
                now = replace(now, trading_state=TradingState.ACTIVE)
            return await self.rules.check(orders, now, count_rate=False)

        self.watchdog = PlacementWatchdog(ledger=ledger, broker=broker, status=status,
                                          reconciled=self._reconciled, readonly=readonly)
        self.placer = Placer(ledger=ledger, broker=broker, instruments=instruments, status=status,
                             watchdog=self.watchdog, metrics=metrics,
                             halted=lambda: trading_state() is TradingState.HALTED,
                             reconciled=self._reconciled, readonly=readonly, recheck=recheck)
        self.watchdog.retry = self.placer.retry_unplaced
        self.intake = OrderIntake(ledger=ledger, rules=self.rules, events=events, outbox=outbox,
                                  placer=self.placer, watchdog=self.watchdog, policy=current_policy,
                                  metrics=metrics, on_published=on_published)
        self.cancels = Cancels(ledger=ledger, requests=cancel_requests, broker=broker, status=status,
                               placer=self.placer)
        self.positions = PositionBook(store=positions, instruments=instruments, events=events,
                                      orders_first=self.orders_first, on_published=on_published)
        self.reports = ReportHandler(ledger=ledger, fills=fills, events=events, status=status,
                                     watchdog=self.watchdog, positions=self.positions,
                                     position_cache=self.position_cache,
                                     orders_first=self.orders_first, reconciled=self._reconciled,
                                     on_fill=on_fill)
        self.modifications = Modifications(
            ledger=ledger, store=modifications, broker=broker, instruments=instruments, events=events,
            rules=self.rules, policy=current_policy, placer=self.placer, reconciled=self._reconciled,
            on_published=on_published, readonly=readonly) if modifications is not None else None
        self.reconciler = Reconciler(ledger=ledger, broker=broker, placer=self.placer, watchdog=self.watchdog,
                                     reports=self.reports, status=status, reconciled=self._reconciled,
                                     on_fill=on_fill, modifications=self.modifications)

    @property
    def reconciled(self) -> bool:
        """True once reconciliation has settled the ledger with IBKR since the last (re)connect."""
        return self._reconciled.is_set()

    @property
    def unanswered(self) -> int:
        """Orders sent to IBKR that IBKR has said nothing about yet (what the placement watchdog checks)."""
        return self.watchdog.unanswered

    async def on_orders_requested(self, items: Sequence[tuple[OrderRequested, OrderSource]],
                                  ) -> list[OrderIdConflict]:
        """Record, check and place a batch of orders (see :class:`~.intake.OrderIntake`); returns the
        requests whose order_id conflicts with a recorded order's terms."""
        with self.orders_first.order_batch():
            return await self.intake.on_orders_requested(items)

    async def reject_unprocessable(self, order: OrderRequested, error: str) -> None:
        """Announce REJECTED for an order request the worker failed on (see :class:`~.intake.OrderIntake`)."""
        await self.intake.reject_unprocessable(order, error)

    async def on_cancel_requested(self, cancel: OrderCancelRequested) -> None:
        """Cancel an order; a cancel for an order not seen yet is kept for when the order arrives."""
        with self.orders_first.order_batch():
            await self.cancels.on_cancel_requested(cancel)

    async def on_modify_requested(self, request: OrderModifyRequested, source: OrderSource | None = None,
                                  ) -> str | None:
        """Record and act on a modification (see :class:`~.modifications.Modifications`); returns why it is
        dead-lettered instead, or None."""
        if self.modifications is None:
            return "MODIFY_UNAVAILABLE: this worker was started without a modification ledger"
        with self.orders_first.order_batch():
            return await self.modifications.on_modify_requested(request, source)

    async def on_reports(self, reports: Sequence[IbReport]) -> None:
        if self.modifications is None:
            await self.reports.on_reports(reports)
            return
        settled = await self.modifications.confirm(reports)
        await self.reports.on_reports(reports)
        await self.modifications.settle(reports, settled)

    async def reconcile(self) -> None:
        await self.reconciler.reconcile()

    async def sweep_cancels(self) -> None:
        """Act on the cancel requests and modifications left for this worker (or for the connection)."""
        await self.cancels.sweep()
        if self.modifications is not None:
            await self.modifications.sweep()

    async def global_cancel(self) -> None:
        await self.cancels.global_cancel()

    async def write_positions(self) -> None:
        await self.positions.write()

    async def run_placer(self, stop: asyncio.Event, batch: int = 200) -> None:
        await self.placer.run(stop, batch)

    async def run_placement_watchdog(self, stop: asyncio.Event, *, answer_within: float = 5.0,
                                     every: float = 2.0) -> None:
        await self.watchdog.run(stop, answer_within=answer_within, every=every)

    async def check_unanswered(self, answer_within: float) -> int:
        return await self.watchdog.check_unanswered(answer_within)

    async def run_position_writer(self, stop: asyncio.Event, every: float) -> None:
        await self.positions.run_writer(stop, every)
