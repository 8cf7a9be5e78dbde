"""The pre-trade checks of a batch of orders: the guards (:mod:`workers.domain.guards`), then the risk rules
(:mod:`workers.domain.risk`) against what the worker knows of the market and the accounts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from workers.domain.guards import GuardPolicy, OrderRejected, check_order, check_text
from workers.domain.instruments import Instrument
from workers.domain.modifications import OrderModifyRequested, WorkingTerms, checked_request
from workers.domain.orders import Order, OrderRequested, Side
from workers.domain.risk import OrderRate, check_risk
from workers.logs import get_logger
from workers.ports.orders import InstrumentSource
from workers.service_layer.orders.market_views import MarketViews

log = get_logger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


class PreTradeRules:
    """Checks orders before they are recorded (and again before the placer sends those that waited)."""

    def __init__(self, *, instruments: InstrumentSource, views: MarketViews, rate: OrderRate | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.instruments = instruments
        self.views = views
        self.rate = rate
        self.clock = clock

    def give_back(self, orders: Sequence[OrderRequested]) -> None:
        """Orders that took their account's token and were not recorded (redeliveries): tokens back."""
        if self.rate is not None:
            for order in orders:
                self.rate.give_back(order.account)

    async def check(self, orders: Sequence[OrderRequested], policy: GuardPolicy, *,
                    count_rate: bool) -> dict[str, OrderRejected]:
        """The rejection of each order that breaks a rule, by ``order_id``; the others may be placed.

        Orders of one batch count against each other's limits in their order (the position of two orders
        is both). ``count_rate``: each order that passes takes its account's token (not when an order that
        waited is checked again).
        """
        rejected: dict[str, OrderRejected] = {}
        passed: list[tuple[OrderRequested, Instrument]] = []
        for order in orders:
            try:
                check_text(order)  # before the instrument lookup: the mapper cannot take such a value
            except OrderRejected as rejection:
                rejected[order.order_id] = rejection
                continue
            instrument = await self.instruments.get(order.instrument_id)
            try:
                check_order(order, instrument, policy)
            except OrderRejected as rejection:
                rejected[order.order_id] = rejection
                continue
            assert instrument is not None  # check_order refuses an unknown instrument
            passed.append((order, instrument))
        if not passed:
            return rejected
        views = await self.views.views(passed, policy)
        now = self.clock()
        in_batch: dict[tuple[str, str, Side], Decimal] = {}
        for order, instrument in passed:
            view = views[order.order_id]
            earlier_buy = in_batch.get((order.account, order.instrument_id, Side.BUY), Decimal(0))
            earlier_sell = in_batch.get((order.account, order.instrument_id, Side.SELL), Decimal(0))
            view = replace(view, working_buy=view.working_buy + earlier_buy,
                           working_sell=view.working_sell + earlier_sell)
            try:
                for warning in check_risk(order, instrument, policy, view, now):
                    log.warning("risk rule not applied", order_id=order.order_id, warning=warning)
                if count_rate and self.rate is not None:
                    self.rate.take(order.account)
            except OrderRejected as rejection:
                rejected[order.order_id] = rejection
                continue
            key = (order.account, order.instrument_id, order.side)
            in_batch[key] = in_batch.get(key, Decimal(0)) + order.quantity
        return rejected

    async def check_modified(self, order: Order, target: WorkingTerms, request: OrderModifyRequested,
                             policy: GuardPolicy) -> OrderRejected | None:
        """The rejection of ``order`` working with ``target`` by a rule (None: it may be modified so).

        What is checked is the quantity still to trade at the new terms; the order's own remaining quantity
        leaves the working orders of its side, so it is not counted twice. A modification takes its
        account's token of the order rate, as IBKR counts it against its message rate.
        """
        checked = checked_request(order, target, request)
        instrument = await self.instruments.get(order.instrument_id)
        try:
            check_order(checked, instrument, policy)
        except OrderRejected as rejection:
            return rejection
        assert instrument is not None  # check_order refuses an unknown instrument
        view = (await self.views.views([(checked, instrument)], policy))[order.order_id]
        own = order.remaining_quantity
        if order.side is Side.BUY:
            view = replace(view, working_buy=max(Decimal(0), view.working_buy - own))
        else:
            view = replace(view, working_sell=max(Decimal(0), view.working_sell - own))
        try:
            for warning in check_risk(checked, instrument, policy, view, self.clock()):
                log.warning("risk rule not applied", order_id=order.order_id, warning=warning)
            if self.rate is not None:
                self.rate.take(order.account)
        except OrderRejected as rejection:
            return rejection
        return None
