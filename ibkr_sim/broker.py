"""The sim's order desk: accepts, modifies and cancels orders, matches them against prices, books fills.

State lives here, not in a connection, so a client reconnecting with the same clientId finds its
orders and executions. The broker talks to connections only through :class:`Delivery`.

What it holds is bounded: it keeps every working order, and the last :data:`FINISHED_KEPT` finished
orders with their executions (what ``reqCompletedOrders`` and ``reqExecutions`` answer, as IBKR answers
with the day's); older ones are forgotten :data:`FORGET_AT_ONCE` at a time, as IBKR forgets the previous
days'. Their fills stay booked in the portfolio. The introspection list of placeOrder requests keeps the
last :data:`REQUESTS_KEPT`.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from ibkr_sim import messages as m
from ibkr_sim.admission import account_for, check_order, resolve_contract
from ibkr_sim.config import SimConfig
from ibkr_sim.framing import encode_body
from ibkr_sim.market import PriceProcess
from ibkr_sim.matching import Rejection, opening_plan, plan_fill, side_of
from ibkr_sim.orders import CANCELLED, FILLED, INACTIVE, PRE_SUBMITTED, SUBMITTED, SimExecution, SimOrder
from ibkr_sim.portfolio import Portfolio
from ibkr_sim.requests import OrderRequest
from ibkr_sim.universe import SimContract, Universe

# About 3.5 KB each (the order, its request and its execution): ~75 MB at the bound, where the sim's RSS levels
# off at ~115 MB (bench/soak.py); an hour of orders at 5 a second, 9 minutes at 40 a second.
FINISHED_KEPT = 20_000
FORGET_AT_ONCE = 2_000
REQUESTS_KEPT = 20_000


class Delivery(Protocol):
    """Where the broker's messages go (implemented by the gateway)."""

    def to_client(self, client_id: int, frames: list[bytes]) -> None:
        """Send frames to the client's live connection and to the master client."""

    def position_changed(self, account: str, inst: SimContract) -> None:
        """A fill changed an account's position, cash and values."""


class SimBroker:
    """The simulated broker's order desk: orders, executions and the matching of working orders."""

    def __init__(
        self,
        config: SimConfig,
        universe: Universe,
        prices: PriceProcess,
        portfolio: Portfolio,
        delivery: Delivery,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.universe = universe
        self.prices = prices
        self.portfolio = portfolio
        self.delivery = delivery
        self.clock = clock
        self.version = config.server_version
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.by_perm_id: dict[int, SimOrder] = {}
        self.working: dict[int, dict[SimOrder, None]] = {}
        self.executions: list[SimExecution] = []
        self.exec_by_id: dict[str, SimExecution] = {}
        self.max_order_id: dict[int, int] = {}
        self.requests_seen: list[tuple[int, OrderRequest]] = []
        self.place_count_by_ref: Counter[str] = Counter()
        self.fills_held = False
        self.rejections: list[Rejection] = []
        # Finished orders in the order they finished (the oldest are forgotten first), and the portfolio
        # booked from the executions already forgotten (where a correction's rebooking starts from).
        self._finished: dict[SimOrder, None] = {}
        self._booked_before = Portfolio(list(portfolio.accounts), portfolio.initial_cash)
        started = int(clock())
        self._next_perm_id = config.perm_id_base or 1_000_000_000 + (started % 500_000) * 2_000
        self._exec_prefix = config.exec_id_prefix or "0000e0d5"
        self._zone = ZoneInfo(config.time_zone)
        self._continuing: set[SimOrder] = set()
        self._time_cache: tuple[int, str] = (-1, "")

    # --- helpers -----------------------------------------------------------------------------

    def format_time(self, epoch: float) -> str:
        """IB's ``YYYYMMDD HH:MM:SS <zone>``."""
        second = int(epoch)
        if second != self._time_cache[0]:
            stamp = datetime.fromtimestamp(second, self._zone).strftime("%Y%m%d %H:%M:%S")
            self._time_cache = (second, f"{stamp} {self.config.time_zone}")
        return self._time_cache[1]

    def _error(self, client_id: int, req_id: int, code: int, text: str) -> None:
        self.delivery.to_client(client_id, [m.error(req_id, code, text, self.version)])

    def _emit(self, order: SimOrder, frames: list[bytes]) -> None:
        self.delivery.to_client(order.client_id, frames)

    def _status_frames(self, order: SimOrder) -> list[bytes]:
        return [m.open_order(order), m.order_status(order)]

    def _finish(self, order: SimOrder, status: str, text: str) -> None:
        order.status = status
        order.completed_time = self.format_time(self.clock())
        order.completed_status = text
        working = self.working.get(order.instrument.con_id)
        if working is not None:
            working.pop(order, None)
        self._finished[order] = None
        if len(self._finished) > FINISHED_KEPT + FORGET_AT_ONCE:
            self._forget_oldest(FORGET_AT_ONCE)

    def _forget_oldest(self, count: int) -> None:
        """Forget the ``count`` orders that finished first, with their executions (their fills stay booked)."""
        gone = set(itertools.islice(self._finished, count))
        for order in gone:
            del self._finished[order]
            if self.orders.get(order.key) is order:
                del self.orders[order.key]
            if self.by_perm_id.get(order.perm_id) is order:
                del self.by_perm_id[order.perm_id]
        kept = []
        for ex in self.executions:
            if ex.order not in gone:
                kept.append(ex)
            elif not ex.superseded:
                # Booked again in execution order; a correction later rebooks the account from here.
                self._booked_before.apply_fill(ex.order.account, ex.order.instrument, ex.order.side, ex.shares,
                                               price=ex.price, commission=ex.commission)
        self.executions = kept
        for exec_id in [e for e, ex in self.exec_by_id.items() if ex.order in gone]:
            del self.exec_by_id[exec_id]
        refs_kept = {order.request.order_ref for order in self.orders.values()}
        for ref in {order.request.order_ref for order in gone} - refs_kept:
            self.place_count_by_ref.pop(ref, None)

    def _venue(self, order: SimOrder) -> str:
        exchange = order.request.contract.exchange.upper()
        inst = order.instrument
        if exchange and exchange != "SMART":
            return exchange
        return inst.primary_exchange or inst.exchange

    # --- placing and modifying ---------------------------------------------------------------

    def place(self, client_id: int, req: OrderRequest) -> None:
        """Handle placeOrder: a new order, or a modification of the client's working order."""
        self.requests_seen.append((client_id, req))
        if len(self.requests_seen) > REQUESTS_KEPT + FORGET_AT_ONCE:
            del self.requests_seen[:FORGET_AT_ONCE]
        self.place_count_by_ref[req.order_ref] += 1
        self.max_order_id[client_id] = max(self.max_order_id.get(client_id, 0), req.order_id)
        existing = self.orders.get((client_id, req.order_id)) or self._master_target(client_id, req.order_id)
        if existing is not None:
            self._modify(client_id, existing, req)
            return
        inst, rejection = resolve_contract(self.universe, req)
        account = ""
        if rejection is None and inst is not None:
            account, rejection = account_for(req, self.config.accounts)
        if rejection is None and inst is not None:
            rejection = check_order(req, inst)
        if rejection is not None or inst is None:
            assert rejection is not None
            self._error(client_id, req.order_id, rejection.code, rejection.text)
            return
        order = SimOrder(
            client_id=client_id, order_id=req.order_id, perm_id=self._next_perm_id, instrument=inst,
            request=req, account=account, side=side_of(req.action),
        )
        self._next_perm_id += 1
        order.open_order_head, order.open_order_tail = m.open_order_parts(order, self.version)
        if req.what_if:
            self._what_if(order)
            return
        self.orders[order.key] = order
        self.by_perm_id[order.perm_id] = order
        if self.rejections:
            fault = self.rejections.pop(0)
            self._reject_accepted(order, fault)
            return
        order.status = self._resting_status(order)
        self.working.setdefault(inst.con_id, {})[order] = None
        self._emit(order, self._status_frames(order))
        self._match(order, liquidity=2)

    def _master_target(self, client_id: int, order_id: int) -> SimOrder | None:
        if client_id != self.config.master_client_id:
            return None
        found = [o for o in self.orders.values() if o.order_id == order_id and not o.done]
        return found[0] if len(found) == 1 else None

    def _resting_status(self, order: SimOrder) -> str:
        if order.order_type in ("STP", "STP LMT") and not order.triggered:
            return PRE_SUBMITTED
        if order.tif == "OPG":
            return PRE_SUBMITTED
        if not self.config.regular_trading_hours and not order.request.outside_rth:
            return PRE_SUBMITTED
        return SUBMITTED

    def _reject_accepted(self, order: SimOrder, rejection: Rejection) -> None:
        self._finish(order, INACTIVE, "Rejected")
        frames = [m.error(order.order_id, rejection.code, rejection.text, self.version)]
        if rejection.code == 201:
            frames += self._status_frames(order)
        self._emit(order, frames)

    def _what_if(self, order: SimOrder) -> None:
        price = order.lmt_price or self.prices.price(order.instrument)
        value = order.total_quantity * price * order.instrument.multiplier_value
        margin = f"{0.25 * value:.2f}"
        head, tail = m.open_order_parts(order, self.version, what_if_margin=margin)
        frame = encode_body(head + PRE_SUBMITTED + tail)
        self.delivery.to_client(order.client_id, [frame])

    def _modify(self, client_id: int, order: SimOrder, req: OrderRequest) -> None:
        if order.done:
            if order.status == FILLED:
                self._error(client_id, req.order_id, 104, "Can't modify a filled order.")
            else:
                self._error(client_id, req.order_id, 103, "Duplicate order id")
            return
        q = req.contract
        inst = order.instrument
        other_contract = (q.con_id and q.con_id != inst.con_id) or (
            q.symbol and q.symbol.upper() != inst.symbol.upper()
        )
        if other_contract or side_of(req.action) != order.side:
            self._error(client_id, req.order_id, 105, "Order being modified does not match original order.")
            return
        rejection = check_order(req, inst)
        if rejection is None and req.total_quantity < order.filled:
            rejection = Rejection(201, "Order rejected - reason:The quantity is below the filled quantity")
        if rejection is not None:
            self._error(client_id, req.order_id, rejection.code, rejection.text)
            return
        if not req.account:
            req.account = order.account
        order.request = req
        if order.order_type not in ("STP", "STP LMT"):
            order.triggered = False
        order.open_order_head, order.open_order_tail = m.open_order_parts(order, self.version)
        if order.status == PRE_SUBMITTED or not order.triggered:
            order.status = self._resting_status(order)
        if order.filled >= req.total_quantity:
            self._finish(order, FILLED, "Filled")
        self._emit(order, self._status_frames(order))
        self._match(order, liquidity=2)

    # --- cancelling --------------------------------------------------------------------------

    def cancel(self, client_id: int, order_id: int) -> None:
        """Handle cancelOrder from ``client_id``."""
        order = self.orders.get((client_id, order_id))
        if order is None and client_id == self.config.master_client_id:
            order = self._master_target(client_id, order_id)
        if order is None:
            self._error(
                client_id, order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found."
            )
            return
        if order.done:
            self._error(
                client_id, order_id, 10148,
                f"OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {order.status}.",
            )
            return
        self.cancel_order(order, notify=True)

    def cancel_order(self, order: SimOrder, notify: bool = True, text: str = "Cancelled by Trader") -> None:
        """Cancel a working order (error 202 when ``notify``, then orderStatus Cancelled)."""
        self._finish(order, CANCELLED, text)
        frames = [m.error(order.order_id, 202, "Order Canceled - reason:", self.version)] if notify else []
        frames += self._status_frames(order)
        self._emit(order, frames)

    def global_cancel(self) -> None:
        """reqGlobalCancel: cancel every working order of every client."""
        for order in [o for o in self.orders.values() if not o.done]:
            self.cancel_order(order)

    def expire_day_orders(self) -> None:
        """End of the trading day: DAY and OPG orders are cancelled."""
        for order in [o for o in self.orders.values() if not o.done and o.tif in ("DAY", "OPG")]:
            self.cancel_order(order, notify=False, text="Expired")

    # --- matching ----------------------------------------------------------------------------

    def working_orders(self, con_id: int | None = None) -> list[SimOrder]:
        """Orders still working (all instruments, or one)."""
        if con_id is not None:
            return list(self.working.get(con_id, {}))
        return [o for orders in self.working.values() for o in orders]

    def match_instrument(self, con_id: int, liquidity: int = 1) -> None:
        """Match every working order of an instrument at its current price."""
        for order in list(self.working.get(con_id, {})):
            self._match(order, liquidity)

    def match_all(self) -> None:
        """Match every working order."""
        for con_id in list(self.working):
            self.match_instrument(con_id)

    def run_opening_auction(self) -> None:
        """Fill or cancel every OPG order at the current (opening) price."""
        for order in [o for o in self.working_orders() if o.tif == "OPG"]:
            plan = opening_plan(order, self.prices.price(order.instrument))
            if plan.quantity > 0 and plan.price is not None:
                order.status = SUBMITTED
                self._execute(order, plan.quantity, plan.price, liquidity=2)
            else:
                self.cancel_order(order, notify=False, text="Not filled at the open")

    def _match(self, order: SimOrder, liquidity: int) -> None:
        if order.done or self.fills_held or order.tif == "OPG":
            return
        if not self.config.regular_trading_hours and not order.request.outside_rth:
            return
        price = self.prices.price(order.instrument)
        plan = plan_fill(order, price, self.config.clip_size)
        if plan.triggered and not order.triggered:
            order.triggered = True
            if order.status == PRE_SUBMITTED:
                order.status = SUBMITTED
                self._emit(order, self._status_frames(order))
        if plan.quantity > 0 and plan.price is not None:
            self._execute(order, plan.quantity, plan.price, liquidity)
        if plan.cancel_rest and not order.done:
            self.cancel_order(order, notify=False, text="Cancelled (IOC/FOK)")
        elif plan.quantity > 0 and not order.done and order not in self._continuing:
            self._continuing.add(order)
            asyncio.get_running_loop().call_later(self.config.clip_interval, self._continue, order, liquidity)

    def _continue(self, order: SimOrder, liquidity: int) -> None:
        self._continuing.discard(order)
        self._match(order, liquidity)

    def _execute(self, order: SimOrder, quantity: float, price: float, liquidity: int) -> None:
        inst = order.instrument
        order.fills += 1
        order.filled += quantity
        order.notional += quantity * price
        order.last_fill_price = price
        rate = self.config.commissions.get(inst.sec_type)
        total = rate.for_order(order.filled, order.notional * inst.multiplier_value) if rate else 0.0
        commission = round(total - order.commission_charged, 4)
        order.commission_charged = total
        _, realized = self.portfolio.apply_fill(
            order.account, inst, order.side, quantity, price=price, commission=commission
        )
        now = self.clock()
        ex = SimExecution(
            base_id=f"{self._exec_prefix}.{order.perm_id:08x}.{order.fills:02d}", revision=1, order=order,
            shares=quantity, price=price, time=self.format_time(now), epoch=now, cum_qty=order.filled,
            avg_price=order.avg_fill_price, venue=self._venue(order), liquidity=liquidity,
            commission=commission, realized_pnl=realized,
        )
        self.executions.append(ex)
        self.exec_by_id[ex.exec_id] = ex
        frames = [m.exec_details(-1, ex)]
        if order.filled >= order.total_quantity - 1e-9:
            self._finish(order, FILLED, "Filled")
            frames.append(m.open_order(order))
        frames += [m.order_status(order), m.commission_report(ex)]
        self._emit(order, frames)
        self.delivery.position_changed(order.account, inst)

    # --- ids and corrections -----------------------------------------------------------------

    def next_valid_id(self, client_id: int) -> int:
        """One above every order id the client has used (at least the configured first id)."""
        return max(self.config.first_order_id, self.max_order_id.get(client_id, 0) + 1)

    def correct_execution(
        self, exec_id: str, price: float | None = None, shares: float | None = None
    ) -> SimExecution:
        """Re-send an execution with its revision bumped (``.01`` → ``.02``), optionally changed."""
        old = self.exec_by_id[exec_id]
        if old.superseded:
            raise ValueError(f"execution {exec_id} was already corrected")
        order = old.order
        new = SimExecution(
            base_id=old.base_id, revision=old.revision + 1, order=order,
            shares=old.shares if shares is None else shares, price=old.price if price is None else price,
            time=old.time, epoch=old.epoch, cum_qty=old.cum_qty, avg_price=old.avg_price, venue=old.venue,
            liquidity=old.liquidity, commission=old.commission,
        )
        old.superseded = True
        order.filled += new.shares - old.shares
        order.notional += new.shares * new.price - old.shares * old.price
        new.cum_qty = old.cum_qty + new.shares - old.shares
        new.avg_price = order.avg_fill_price
        self.executions[self.executions.index(old)] = new
        self.exec_by_id[new.exec_id] = new
        self._rebook(order.account)
        self._emit(order, [m.exec_details(-1, new), m.commission_report(new)])
        self.delivery.position_changed(order.account, order.instrument)
        return new

    def _rebook(self, account: str) -> None:
        self.portfolio.accounts[account] = copy.deepcopy(self._booked_before.account(account))
        for ex in self.executions:
            if ex.order.account == account and not ex.superseded:
                _, ex.realized_pnl = self.portfolio.apply_fill(
                    account, ex.order.instrument, ex.order.side, ex.shares, price=ex.price,
                    commission=ex.commission,
                )
