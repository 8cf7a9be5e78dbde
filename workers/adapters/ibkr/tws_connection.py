"""The single façade over one TWS API connection (ib_insync), for both workers.

It owns the ``ib_insync.IB`` object, reconnects with back-off, sends every request through the pacing
limiter, and turns ib_insync's callbacks into our own typed reports, delivered in arrival order to one
async listener. Nothing outside this package imports ib_insync.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

from ib_insync import IB, Contract, ContractDetails, Trade
from ib_insync import Order as IbOrder
from ib_insync.objects import CommissionReport, Fill, Position
from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception_type, wait_exponential_jitter

from workers.adapters.ibkr import compact_repr, retention
from workers.adapters.ibkr.builders import contract_for, order_for
from workers.adapters.ibkr.pacing import PacingLimiter, Priority
from workers.adapters.ibkr.reports import (
    DONE,
    contract_multiplier,
    execution_report,
    known_status,
    status_report,
    terms_of,
    to_decimal,
)
from workers.domain.instruments import Instrument
from workers.domain.orders import Order
from workers.domain.trading_mode import ModeMismatch, check_accounts
from workers.logs import get_logger
from workers.ports.ibkr import (
    ConnectionChanged,
    IbCommission,
    IbError,
    IbExecution,
    IbkrListener,
    IbOrderStatus,
    IbOrderTerms,
    IbPosition,
    IbReport,
)

log = get_logger(__name__)

# ib_insync's record of a done order is forgotten this long after it is settled (every execution and
# commission in, the ledger has them): at 40 orders/s, a few hundred trades, a few MB. One still missing an
# execution or a commission is kept up to UNSETTLED_RETENTION seconds untouched, for ib_insync to report it
# (see retention.py).
SETTLED_RETENTION = 5.0
UNSETTLED_RETENTION = 600.0
PRUNE_EVERY = 5.0


class TwsConnection:
    """One connection to IB Gateway / TWS (or the sim) with a pacing limiter and typed reports."""

    def __init__(self, host: str, port: int, client_id: int, *, limiter: PacingLimiter,
                 connect_timeout: float = 10.0, readonly: bool = False, account: str = "",
                 trading_mode: str = "paper", request_timeout: float = 30.0, report_linger: float = 0.0) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.limiter = limiter
        self.connect_timeout = connect_timeout
        # IB answers a query or drops it (over its pacing limit, with error 100 naming no request): the
        # queries reconciliation depends on give up after this long, and the caller reconnects.
        self.request_timeout = request_timeout
        # Reports are delivered this long after the first of a batch arrived, with all that came meanwhile:
        # IBKR's messages about an order come over several milliseconds, and about the orders placed just
        # after it; one bigger batch costs the worker less than several small ones.
        self.report_linger = report_linger
        self.readonly = readonly
        self.account = account
        self.ib = IB()
        # Our PacingLimiter does the pacing, with priorities (cancels first); ib_insync's own FIFO
        # throttle (45 requests/s) would queue behind it and undo the priorities.
        self.ib.client.MaxRequests = 0
        self._listener: IbkrListener | None = None
        self._reports: asyncio.Queue[IbReport] = asyncio.Queue()
        # Our order ids modified on this connection and not done: their openOrders are reported as terms.
        self._modified: set[str] = set()
        self._pump: asyncio.Task[None] | None = None
        self.trading_mode = trading_mode
        self.next_valid_id_at_connect = 0
        self.reconnects = 0
        self.heartbeat_failures = 0
        self.rtt_ms: float | None = None
        self.last_error: str | None = None
        self.errors_by_code: dict[int, int] = {}
        self._wire_events()
        retention.report_untracked(self.ib.wrapper, self._on_untracked_execution, self._queue_commission)
        retention.keep_completed_orders_as(self.ib.wrapper, known_status)
        self._report_terms()
        compact_repr.install()

    # -- life cycle -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self.ib.isConnected())

    def listen(self, listener: IbkrListener) -> None:
        """Deliver every report, in arrival order and in batches, to ``listener`` (one batch at a time; a
        batch holds what arrived within ``report_linger`` seconds of its first report, and what was queued)."""
        self._listener = listener
        if self._pump is None:
            self._pump = asyncio.create_task(self._deliver(), name="ibkr-reports")

    async def connect(self) -> None:
        """Connect once; raises on failure (callers decide how to retry)."""
        await self.ib.connectAsync(self.host, self.port, clientId=self.client_id,
                                   timeout=self.connect_timeout, readonly=self.readonly,
                                   account=self.account)
        self.next_valid_id_at_connect = int(self.ib.client._reqIdSeq)
        # ib_insync's start-up requests (positions, open and completed orders, executions, account
        # updates) go out without the limiter: they count against the same per-second budget at IB.
        self.limiter.charge(int(getattr(self.ib.client.conn, "numMsgSent", 0)))
        # Its start-up answers include the day's executions, kept as fills: forgotten now, not 5 s later,
        # so they are gone before reconciliation asks for them all again (two copies of a busy day at once).
        self.prune_done(SETTLED_RETENTION)
        log.info("ibkr connected", host=self.host, port=self.port, client_id=self.client_id,
                 next_valid_id=self.next_valid_id_at_connect,
                 accounts=self.ib.wrapper.accounts)
        self._reports.put_nowait(ConnectionChanged(connected=True))

    async def connect_with_retry(self, *, stop: asyncio.Event | None = None,
                                 max_delay: float = 10.0) -> bool:
        """Connect, retrying forever with exponential back-off and jitter, until ``stop`` is set.

        A mode mismatch (paper worker facing live accounts, …) is retried slowly: an operator has to fix
        the configuration, and until then the worker trades nothing.
        """
        stop = stop or asyncio.Event()

        async def pause(seconds: float) -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

        def log_failure(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            self.last_error = f"{type(error).__name__}: {error}" if error else None
            level = log.error if isinstance(error, ModeMismatch) else log.warning
            level("ibkr connect failed", error=self.last_error, attempt=state.attempt_number,
                  retry_in=round(state.upcoming_sleep, 2))

        retrying = AsyncRetrying(
            retry=retry_if_exception_type((OSError, TimeoutError, ConnectionError, ModeMismatch)),
            wait=wait_exponential_jitter(multiplier=0.2, max=max_delay, jitter=0.2),
            stop=lambda _: stop.is_set(),
            sleep=pause,
            before_sleep=log_failure,
            reraise=False,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if stop.is_set():
                        return False
                    await self._connect_checked()
        except RetryError:
            return False
        return self.connected

    async def _connect_checked(self) -> None:
        try:
            await self.connect()
            check_accounts(self.trading_mode, self.managed_accounts)
        except BaseException:
            self.ib.disconnect()
            raise
        self.last_error = None

    def prune_done(self, older_than: float, unsettled_after: float = UNSETTLED_RETENTION) -> int:
        """Forget ib_insync's done trades settled and untouched for ``older_than`` seconds, with their fills.

        ib_insync keeps every trade and fill of a session in memory, so a connection that lives for weeks
        would grow without bound. The ledger is the record; what reconciliation asks IBKR for comes back
        from IBKR. A done trade still missing an execution or a commission (ib_insync needs it to report
        them), an Inactive one or one IBKR never acknowledged is forgotten after ``unsettled_after`` seconds
        untouched; an order working at IBKR never is. Returns how many trades were forgotten.
        """
        return retention.prune(self.ib.wrapper, datetime.now(UTC), settled_for=older_than,
                               unsettled_for=max(older_than, unsettled_after))

    async def run_pruning(self, stop: asyncio.Event, *, every: float = PRUNE_EVERY,
                          older_than: float = SETTLED_RETENTION,
                          unsettled_after: float = UNSETTLED_RETENTION) -> None:
        """:meth:`prune_done` every ``every`` seconds until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
            try:
                forgotten = self.prune_done(older_than, unsettled_after)
            except Exception:
                # Pruning must not stop for good over one odd trade: memory would grow again.
                log.exception("pruning ib_insync's done trades failed")
                continue
            if forgotten:
                log.debug("done trades forgotten", count=forgotten, kept=len(self.ib.wrapper.trades))

    async def run_heartbeat(self, stop: asyncio.Event, interval: float, timeout: float) -> None:
        """Ask for the current time every ``interval`` s; no answer within ``timeout`` means a dead link.

        A half-open socket or a frozen gateway answers nothing and raises nothing: only a request that
        goes unanswered shows it. The connection is then dropped, so the reconnect path takes over.
        """
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set() or not self.connected:
                continue
            started = time.monotonic()
            try:
                await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), timeout)
            except (TimeoutError, ConnectionError) as exc:
                self.heartbeat_failures += 1
                self.last_error = f"heartbeat: no answer to reqCurrentTime within {timeout}s"
                log.error("ibkr heartbeat missed; dropping the connection", timeout=timeout,
                          error=type(exc).__name__)
                self.ib.disconnect()
                continue
            self.rtt_ms = (time.monotonic() - started) * 1000

    def disconnect(self) -> None:
        """Drop the connection (the supervisor reconnects and reconciles)."""
        self.ib.disconnect()

    async def close(self) -> None:
        self.ib.disconnect()
        if self._pump is not None:
            # Let the reports already queued be handled before the pump stops.
            await self._reports.join()
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    @property
    def managed_accounts(self) -> list[str]:
        return list(self.ib.wrapper.accounts)

    # -- requests ---------------------------------------------------------------------------------

    async def place(self, instrument: Instrument, order: Order, ib_order_id: int, *,
                    parent_ib_order_id: int | None = None, transmit: bool = True) -> None:
        """Send ``order`` for ``instrument`` under ``ib_order_id`` (its ``orderRef``: our ``order_id``)."""
        contract = contract_for(instrument)
        ib_order = order_for(order.request, ib_order_id, parent_ib_order_id=parent_ib_order_id, transmit=transmit)
        await self.limiter.acquire(Priority.PLACE)
        self.ib.placeOrder(contract, ib_order)

    async def modify(self, instrument: Instrument, order: Order, ib_order_id: int, *,
                     parent_ib_order_id: int | None = None) -> None:
        """Place ``order`` again under ``ib_order_id`` with its current terms: IBKR modifies it in place.

        Sent on the client directly: ib_insync's ``placeOrder`` refuses to re-place an order it has marked
        done itself (it does so on any error about the order, e.g. a refused earlier modification).
        """
        contract = contract_for(instrument)
        ib_order = order_for(order.request, ib_order_id, parent_ib_order_id=parent_ib_order_id)
        await self.limiter.acquire(Priority.PLACE)
        self._modified.add(order.order_id)
        self.ib.client.placeOrder(ib_order_id, contract, ib_order)

    async def cancel(self, ib_order_id: int) -> None:
        await self.limiter.acquire(Priority.CANCEL)
        self.ib.client.cancelOrder(ib_order_id, "")

    async def global_cancel(self) -> None:
        await self.limiter.acquire(Priority.CANCEL)
        self.ib.reqGlobalCancel()

    async def contract_details(self, contract: Contract) -> list[ContractDetails]:
        await self.limiter.acquire(Priority.QUERY)
        details: list[ContractDetails] = await self.ib.reqContractDetailsAsync(contract)
        return details

    async def current_time(self) -> datetime:
        await self.limiter.acquire(Priority.QUERY)
        now: datetime = await self.ib.reqCurrentTimeAsync()
        return now

    async def order_statuses(self) -> dict[str, IbOrderStatus]:
        """IB's open and completed orders of this client, keyed by orderRef (our order_id)."""
        await self.limiter.acquire(Priority.QUERY)
        # Completed orders come as our own status records (see retention.keep_completed_orders_as).
        answer: list[Any] = await asyncio.wait_for(self.ib.reqCompletedOrdersAsync(apiOnly=True),
                                                   self.request_timeout)
        completed: list[IbOrderStatus] = answer
        await self.limiter.acquire(Priority.QUERY)
        open_trades: list[Trade] = await asyncio.wait_for(self.ib.reqOpenOrdersAsync(), self.request_timeout)
        result = {status.order_ref: status for status in completed}
        for trade in [*open_trades, *self.ib.openTrades()]:
            status = known_status(trade)
            if status is not None:
                result[status.order_ref] = status
        return result

    async def executions(self) -> list[IbExecution]:
        """Today's executions (IB replays them with the same execIds), with commissions where known."""
        await self.limiter.acquire(Priority.QUERY)
        fills: list[Fill] = await asyncio.wait_for(self.ib.reqExecutionsAsync(), self.request_timeout)
        return [execution_report(fill, fill.execution.orderRef) for fill in fills]

    async def positions(self) -> list[IbPosition]:
        await self.limiter.acquire(Priority.QUERY)
        positions: list[Position] = await asyncio.wait_for(self.ib.reqPositionsAsync(), self.request_timeout)
        return [self._position_report(p) for p in positions]

    # -- events -----------------------------------------------------------------------------------

    def _wire_events(self) -> None:
        ib = self.ib
        ib.orderStatusEvent += self._on_order_status
        ib.execDetailsEvent += self._on_exec_details
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.positionEvent += self._on_position
        ib.disconnectedEvent += self._on_disconnected

    def _report_terms(self) -> None:
        """Report the terms of each openOrder IBKR sends for an order modified on this connection (how a
        modification is confirmed); the others, one for every order placed, are not worth a report.

        ib_insync updates a known order's size and prices from an openOrder but not its time in force, and
        tells nothing of it: its handler is wrapped here.
        """
        wrapper = self.ib.wrapper
        handle_open_order = wrapper.openOrder

        def open_order(order_id: int, contract: Contract, order: IbOrder, order_state: Any) -> None:
            handle_open_order(order_id, contract, order, order_state)
            if order.whatIf or not order.orderRef:
                return
            trade = wrapper.trades.get(wrapper.orderKey(order.clientId, order.orderId, order.permId))
            if trade is not None:
                trade.order.tif = order.tif
            if order.orderRef in self._modified:
                self._reports.put_nowait(IbOrderTerms(order_ref=order.orderRef, ib_order_id=order.orderId,
                                                      terms=terms_of(order)))

        wrapper.openOrder = open_order  # type: ignore[method-assign, assignment]

    def _on_order_status(self, trade: Trade) -> None:
        report = status_report(trade)
        if trade.orderStatus.status in DONE and trade.order.orderRef in self._modified:
            if report.error_code is not None and len(trade.log) >= 2:
                # ib_insync marks an order cancelled on any error about it. For an order modified here the
                # error refuses the modification: the order works on, and ib_insync must keep following it
                # (a trade it thinks done is forgotten, and IBKR's later statuses of the order with it).
                trade.orderStatus.status = trade.log[-2].status
            else:
                self._modified.discard(trade.order.orderRef)
        self._reports.put_nowait(report)

    def _on_exec_details(self, trade: Trade, fill: Fill) -> None:
        self._reports.put_nowait(execution_report(fill, trade.order.orderRef))

    def _on_commission(self, trade: Trade, fill: Fill, report: CommissionReport) -> None:
        self._queue_commission(report)

    def _on_untracked_execution(self, fill: Fill) -> None:
        self._reports.put_nowait(execution_report(fill, fill.execution.orderRef))

    def _queue_commission(self, report: CommissionReport) -> None:
        self._reports.put_nowait(
            IbCommission(exec_id=report.execId, commission=to_decimal(report.commission),
                         currency=report.currency)
        )

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1
        self._reports.put_nowait(IbError(req_id=req_id, code=code, message=message))

    def _position_report(self, position: Position) -> IbPosition:
        return IbPosition(account=position.account, con_id=position.contract.conId,
                          quantity=to_decimal(position.position), avg_cost=to_decimal(position.avgCost),
                          currency=position.contract.currency,
                          multiplier=contract_multiplier(position.contract.multiplier))

    def _on_position(self, position: Position) -> None:
        self._reports.put_nowait(self._position_report(position))

    def _on_disconnected(self) -> None:
        log.warning("ibkr disconnected", host=self.host, port=self.port, client_id=self.client_id)
        self._modified.clear()  # reconciliation compares the terms; a modification sent again asks anew
        self._reports.put_nowait(ConnectionChanged(connected=False))

    async def _deliver(self, batch_size: int = 500) -> None:
        while True:
            reports = [await self._reports.get()]
            if self.report_linger > 0:
                await asyncio.sleep(self.report_linger)
            while not self._reports.empty() and len(reports) < batch_size:
                reports.append(self._reports.get_nowait())
            try:
                if self._listener is not None:
                    await self._listener(reports)
            except Exception:
                # The ledger is untouched by a failed batch; reconciliation after the next reconnect
                # settles what IBKR said meanwhile. Drop the connection so that happens soon.
                log.exception("ibkr report handler failed; reconnecting to reconcile", count=len(reports))
                self.ib.disconnect()
            finally:
                for _ in reports:
                    self._reports.task_done()


