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
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Protocol, TypeVar
from zoneinfo import ZoneInfo

from ibkr_sim import messages as m
from ibkr_sim.admission import account_for, check_order, good_till, resolve_contract
from ibkr_sim.config import SimConfig
from ibkr_sim.framing import encode_body
from ibkr_sim.market import PriceProcess, on_grid
from ibkr_sim.matching import (
    ON_CLOSE_TYPES,
    TRAILING_TYPES,
    TRIGGERED_TYPES,
    Rejection,
    auction_plan,
    plan_fill,
    side_of,
    trail_follows,
    trail_stop,
)
from ibkr_sim.orders import CANCELLED, FILLED, INACTIVE, PRE_SUBMITTED, SUBMITTED, SimExecution, SimOrder
from ibkr_sim.portfolio import Portfolio
from ibkr_sim.requests import OrderRequest
from ibkr_sim.universe import SimContract, Universe

# About 3.5 KB each (the order, its request and its execution): ~75 MB at the bound, where the sim's RSS levels
# off at ~115 MB (bench/soak.py); an hour of orders at 5 a second, 9 minutes at 40 a second.
FINISHED_KEPT = 20_000
FORGET_AT_ONCE = 2_000
REQUESTS_KEPT = 20_000

_K = TypeVar("_K")

MISSING_PARENT = "Missing parent order."
MODIFY_MISMATCH = "Order being modified does not match original order."
# ocaType: 1 cancels the other members on a fill, 2 and 3 reduce them by the quantity filled.
OCA_CANCEL = 1
OCA_REDUCE = 2


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
        # Orders linked to others: children by (clientId, parentId), OCA members by (account, ocaGroup).
        self._children: dict[tuple[int, int], list[SimOrder]] = {}
        self._oca: dict[tuple[str, str], list[SimOrder]] = {}
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
        _prune_links(self._children, gone)
        _prune_links(self._oca, gone)
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
        expires_at: float | None = None
        if rejection is None and inst is not None and req.tif == "GTD" and req.good_till_date:
            expires_at, rejection = good_till(req.good_till_date, self.config.time_zone)
        parent: SimOrder | None = None
        if rejection is None and req.parent_id:
            parent = self.orders.get((client_id, req.parent_id))
            if parent is None:
                rejection = Rejection(10006, MISSING_PARENT)
            elif parent.done and parent.status != FILLED:
                rejection = Rejection(201, "Order rejected - reason:Parent order is being cancelled.")
        if rejection is not None or inst is None:
            assert rejection is not None
            self._error(client_id, req.order_id, rejection.code, rejection.text)
            return
        order = SimOrder(
            client_id=client_id, order_id=req.order_id, perm_id=self._next_perm_id, instrument=inst,
            request=req, account=account, side=side_of(req.action), expires_at=expires_at,
        )
        self._next_perm_id += 1
        if req.order_type in TRAILING_TYPES:
            self._start_trail(order)
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
        if parent is not None:
            self._children.setdefault((client_id, parent.order_id), []).append(order)
        if req.oca_group:
            self._oca.setdefault((account, req.oca_group), []).append(order)
        if expires_at is not None:
            self._schedule_expiry(order)
        if not req.transmit:
            # Held until a transmitted order names it as parent, or it is placed again with transmit on.
            order.held = True
            order.status = PRE_SUBMITTED
            return
        self._transmit(order)

    def _transmit(self, order: SimOrder) -> None:
        """Send an order to work, with what it brings along: its held parent and the parent's other held
        children (the rest of a bracket), the parent first."""
        parent = self._parent(order)
        group = [parent] if parent is not None and parent.held else []
        if parent is not None:
            group += [c for c in self._children.get(parent.key, []) if c.held and c is not order]
        for member in [*group, order]:
            if not member.done:
                self._release(member)

    def _release(self, order: SimOrder) -> None:
        order.held = False
        parent = self._parent(order)
        order.awaiting_parent = parent is not None and parent.status != FILLED
        order.status = self._resting_status(order)
        if not order.awaiting_parent:
            self.working.setdefault(order.instrument.con_id, {})[order] = None
        self._emit(order, self._status_frames(order))
        if not order.awaiting_parent:
            self._match(order, liquidity=2)

    def _parent(self, order: SimOrder) -> SimOrder | None:
        if not order.request.parent_id:
            return None
        return self.orders.get((order.client_id, order.request.parent_id))

    def _start_trail(self, order: SimOrder) -> None:
        r = order.request
        price = self.prices.price(order.instrument)
        start = r.trail_stop_price
        if start is None:
            start = trail_stop(order.side, price, r.aux_price, r.trailing_percent)
        order.trail_start = (price, start)
        order.trail_best = price
        order.trail_stop = on_grid(start, order.instrument.min_tick)

    def _follow_trail(self, order: SimOrder, price: float) -> None:
        """Move a trailing stop with the market, only in the order's favour, until it triggers.

        The stop moves by as much as the trailing stop of the best price seen has moved since the order
        started, so a stop given explicitly (trailStopPrice) keeps its distance.
        """
        if (price - order.trail_best) * order.side >= 0:  # no new high for a sell, no new low for a buy
            return
        r = order.request
        order.trail_best = price
        start_price, start_stop = order.trail_start
        moved = start_stop + trail_stop(order.side, price, r.aux_price, r.trailing_percent) - trail_stop(
            order.side, start_price, r.aux_price, r.trailing_percent
        )
        stop = on_grid(moved, order.instrument.min_tick)
        assert order.trail_stop is not None
        if trail_follows(order.side, order.trail_stop, stop) != order.trail_stop:
            order.trail_stop = stop
            order.open_order_head, order.open_order_tail = m.open_order_parts(order, self.version)

    def _schedule_expiry(self, order: SimOrder) -> None:
        assert order.expires_at is not None
        delay = max(order.expires_at - self.clock(), 0.0)
        asyncio.get_running_loop().call_later(delay, self._expire, order)

    def _expire(self, order: SimOrder) -> None:
        if order.done or order.tif != "GTD" or order.expires_at is None:
            return
        if self.clock() < order.expires_at:
            self._schedule_expiry(order)  # the order was modified to a later time
            return
        self.cancel_order(order, notify=False, text="Expired")

    def _master_target(self, client_id: int, order_id: int) -> SimOrder | None:
        if client_id != self.config.master_client_id:
            return None
        found = [o for o in self.orders.values() if o.order_id == order_id and not o.done]
        return found[0] if len(found) == 1 else None

    def _resting_status(self, order: SimOrder) -> str:
        if order.held or order.awaiting_parent:
            return PRE_SUBMITTED
        if order.order_type in TRIGGERED_TYPES and not order.triggered:
            return PRE_SUBMITTED
        if order.tif == "OPG" or order.order_type in ON_CLOSE_TYPES:
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
        self._cancel_children(order, notify=False)

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
        if not self._same_order(order, req):
            self._refuse_modification(order, Rejection(105, MODIFY_MISMATCH))
            return
        rejection = check_order(req, order.instrument)
        if rejection is None and req.total_quantity < order.filled:
            rejection = Rejection(201, "Order rejected - reason:The quantity is below the filled quantity")
        expires_at = None
        if rejection is None and req.tif == "GTD" and req.good_till_date:
            expires_at, rejection = good_till(req.good_till_date, self.config.time_zone)
        if rejection is not None:
            self._refuse_modification(order, rejection)
            return
        if not req.account:
            req.account = order.account
        trail_changed = order.order_type in TRAILING_TYPES and (
            (req.aux_price, req.trailing_percent, req.trail_stop_price)
            != (order.request.aux_price, order.request.trailing_percent, order.request.trail_stop_price)
        )
        order.request = req
        if trail_changed and not order.triggered:
            self._start_trail(order)
        if order.order_type not in TRIGGERED_TYPES:
            order.triggered = False
        if expires_at != order.expires_at:
            order.expires_at = expires_at
            if expires_at is not None:
                self._schedule_expiry(order)
        order.open_order_head, order.open_order_tail = m.open_order_parts(order, self.version)
        if order.held:
            if req.transmit:
                self._transmit(order)
            return
        if order.status == PRE_SUBMITTED or not order.triggered:
            order.status = self._resting_status(order)
        if order.filled >= req.total_quantity:
            self._finish(order, FILLED, "Filled")
        self._emit(order, self._status_frames(order))
        if order.done:
            self._after_fill(order, 0.0)
        else:
            self._match(order, liquidity=2)

    def _refuse_modification(self, order: SimOrder, rejection: Rejection) -> None:
        """The error, then the order's unchanged terms and status: it keeps working as it was."""
        frames = [m.error(order.order_id, rejection.code, rejection.text, self.version)]
        if not order.held:
            frames += self._status_frames(order)
        self._emit(order, frames)

    @staticmethod
    def _same_order(order: SimOrder, req: OrderRequest) -> bool:
        """Whether a modification keeps what IBKR does not change in place: contract, side, order type,
        account, parent and OCA group."""
        q = req.contract
        inst = order.instrument
        r = order.request
        other_contract = (q.con_id and q.con_id != inst.con_id) or (
            q.symbol and q.symbol.upper() != inst.symbol.upper()
        )
        return not (
            other_contract
            or side_of(req.action) != order.side
            or req.order_type != r.order_type
            or (req.account and req.account != order.account)
            or req.parent_id != r.parent_id
            or req.oca_group != r.oca_group
        )

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
        self._cancel_children(order, notify)

    def _cancel_children(self, parent: SimOrder, notify: bool) -> None:
        """A parent that is cancelled or rejected (even after a partial fill) takes its children with it."""
        for child in self._children.get(parent.key, ()):
            if not child.done:
                self.cancel_order(child, notify=notify, text="Parent order cancelled")

    def _after_fill(self, order: SimOrder, quantity: float) -> None:
        """What a fill sets off: the other members of its OCA group, and the children of a filled parent."""
        if order.request.oca_group or order.request.parent_id:
            self._settle_oca(order, quantity)
        if order.status == FILLED:
            for child in self._children.get(order.key, ()):
                if child.awaiting_parent and not child.done:
                    self._release(child)

    def _oca_members(self, order: SimOrder) -> tuple[list[SimOrder], int]:
        """The other live members of the order's one-cancels-all group, and the group's ocaType.

        The children of one parent without an OCA group of their own (a bracket's take-profit and
        stop-loss) are one group that reduces with block, as IBKR links them.
        """
        r = order.request
        if r.oca_group:
            members = self._oca.get((order.account, r.oca_group), [])
            kind = r.oca_type or OCA_CANCEL
        else:
            members = [
                c for c in self._children.get((order.client_id, r.parent_id), []) if not c.request.oca_group
            ]
            kind = OCA_REDUCE
        return [o for o in members if o is not order and not o.done], kind

    def _settle_oca(self, order: SimOrder, quantity: float) -> None:
        others, kind = self._oca_members(order)
        for other in others:
            if other.done:
                continue
            if kind == OCA_CANCEL:
                self.cancel_order(other, notify=False, text="Cancelled by OCA group")
                continue
            left = other.total_quantity - quantity
            if left <= other.filled + 1e-9:
                self.cancel_order(other, notify=False, text="Cancelled by OCA group")
                continue
            other.request = dataclasses.replace(other.request, total_quantity=left)
            other.open_order_head, other.open_order_tail = m.open_order_parts(other, self.version)
            if not other.held:
                self._emit(other, self._status_frames(other))

    def global_cancel(self) -> None:
        """reqGlobalCancel: cancel every working order of every client."""
        for order in [o for o in self.orders.values() if not o.done]:
            if not order.done:  # a parent's cancel may have taken it already
                self.cancel_order(order)

    def expire_day_orders(self) -> None:
        """End of the trading day: DAY and OPG orders are cancelled."""
        for order in [o for o in self.orders.values() if not o.done and o.tif in ("DAY", "OPG")]:
            if not order.done:  # a parent's cancel may have taken it already
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
            self._match(order, liquidity)  # a fill may cancel or release others: _match skips what is done

    def match_all(self) -> None:
        """Match every working order."""
        for con_id in list(self.working):
            self.match_instrument(con_id)

    def run_opening_auction(self) -> None:
        """Fill or cancel every OPG order at the current (opening) price."""
        self._auction([o for o in self.working_orders() if o.tif == "OPG"], "Not filled at the open")

    def close_session(self) -> None:
        """The closing auction: fill (or cancel) every MOC and LOC order at the current (closing) price."""
        self._auction(
            [o for o in self.working_orders() if o.order_type in ON_CLOSE_TYPES], "Not filled at the close"
        )

    def _auction(self, orders: list[SimOrder], unfilled: str) -> None:
        for order in orders:
            if order.done:
                continue
            plan = auction_plan(order, self.prices.price(order.instrument))
            if plan.quantity > 0 and plan.price is not None:
                order.status = SUBMITTED
                self._execute(order, plan.quantity, plan.price, liquidity=2)
            else:
                self.cancel_order(order, notify=False, text=unfilled)

    def _match(self, order: SimOrder, liquidity: int) -> None:
        if not order.working:
            return
        price = self.prices.price(order.instrument)
        if order.trail_stop is not None and not order.triggered:
            self._follow_trail(order, price)
        if self.fills_held or order.tif == "OPG" or order.order_type in ON_CLOSE_TYPES:
            return
        if not self.config.regular_trading_hours and not order.request.outside_rth:
            return
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
        self._after_fill(order, quantity)

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


def _prune_links(links: dict[_K, list[SimOrder]], gone: set[SimOrder]) -> None:
    """Drop forgotten orders from a link index (and the keys left with none)."""
    for key in [k for k, members in links.items() if any(o in gone for o in members)]:
        kept = [o for o in links[key] if o not in gone]
        if kept:
            links[key] = kept
        else:
            del links[key]
