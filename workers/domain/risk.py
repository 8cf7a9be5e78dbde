"""Pre-trade risk rules that need the market or time: reference prices, the price band, stale orders, the
size increment, position limits and the order rate.

Pure: the caller supplies what it knows (the quote, the position, the working orders, the clock). Every
refusal is an :class:`~workers.domain.guards.OrderRejected` with a machine code and a sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from workers.domain.guards import GuardPolicy, OrderRejected, RejectReason
from workers.domain.instruments import Instrument
from workers.domain.orders import OrderRequested, Side
from workers.domain.trading_state import admits, refusal_detail


@dataclass(frozen=True)
class Quote:
    """IBKR's latest prices of one contract (None when unknown) and how old the newest of them is."""

    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    close: Decimal | None
    age_seconds: float
    delayed: bool = False

    def reference(self, side: Side) -> Decimal | None:
        """The price an order of ``side`` is measured against: the ask for a BUY, the bid for a SELL, else
        the last trade, else the close (non-positive prices, IB's "no price", are skipped)."""
        near = self.ask if side is Side.BUY else self.bid
        for price in (near, self.last, self.close):
            if price is not None and price.is_finite() and price > 0:
                return price
        return None


@dataclass(frozen=True)
class MarketView:
    """What the worker knows of the market and the account when it checks one order.

    ``quote``: None when IBKR has given no prices for the contract. ``position``: the account's signed
    position in the contract (IBKR's). ``working_buy`` / ``working_sell``: the remaining quantity of the
    account's working orders in the instrument, by side (this order not included).
    """

    quote: Quote | None = None
    position: Decimal = Decimal(0)
    working_buy: Decimal = Decimal(0)
    working_sell: Decimal = Decimal(0)


def fresh_reference(order: OrderRequested, view: MarketView, max_age: float) -> Decimal | None:
    """The order's reference price when one is known and no older than ``max_age`` seconds, else None."""
    quote = view.quote
    if quote is None or quote.age_seconds > max_age:
        return None
    return quote.reference(order.side)


def no_reference(order: OrderRequested, why: str) -> OrderRejected:
    return OrderRejected(
        RejectReason.NO_REFERENCE_PRICE,
        f"no fresh market price for {order.instrument_id} to check {why} against; check the market data "
        "subscription (IBKR_MARKET_DATA_TYPE) or retry when IBKR sends prices",
    )


def check_price_band(order: OrderRequested, reference: Decimal, band: Decimal) -> None:
    """Refuse a limit price that would trade worse than ``reference`` ± ``band`` (a fraction): a BUY limit
    above the band, a SELL limit below it; and a trigger on the wrong side of the market by more than the
    band, a mistyped price: a BUY stop far below the market, a SELL stop far above, and the mirror for
    touched orders (a BUY touch price far above the market, a SELL far below). A trigger just through the
    market fires at once and trades at the market: it passes. A trailing stop limit's ``limit_offset`` may
    not exceed the band's width: its limit would be outside the band when the stop fires at the market."""
    high, low = reference * (1 + band), reference * (1 - band)
    buying = order.side is Side.BUY
    if order.limit_price is not None:
        if buying and order.limit_price > high:
            raise _out_of_band("BUY limit_price", order.limit_price, "above", high, reference, band)
        if not buying and order.limit_price < low:
            raise _out_of_band("SELL limit_price", order.limit_price, "below", low, reference, band)
    if order.stop_price is not None:
        # A BUY stop waits above the market, a BUY touched order below it (SELL: the other way round).
        waits_above = buying != order.order_type.is_touched
        name = f"{order.side} stop_price"
        if waits_above and order.stop_price < low:
            raise _out_of_band(name, order.stop_price, "below", low, reference, band)
        if not waits_above and order.stop_price > high:
            raise _out_of_band(name, order.stop_price, "above", high, reference, band)
    if order.limit_offset is not None and order.limit_offset > reference * band:
        raise OrderRejected(
            RejectReason.PRICE_OUT_OF_BAND,
            f"limit_offset {order.limit_offset} is more than {_round(reference * band)}, the market price "
            f"{reference} × {band:%} (PRICE_BAND): the limit would trade outside the band when the stop fires; "
            "check the offset, or widen the band for this instrument",
        )


def _out_of_band(what: str, price: Decimal, side: str, bound: Decimal, reference: Decimal,
                 band: Decimal) -> OrderRejected:
    return OrderRejected(
        RejectReason.PRICE_OUT_OF_BAND,
        f"{what} {price} is {side} {_round(bound)}, the market price {reference} ± {band:%} (PRICE_BAND); "
        "check the price, or widen the band for this instrument",
    )


def _round(value: Decimal) -> str:
    """``value`` to four decimals, in plain notation (``100100``, not ``1.001E+5``)."""
    return format(value.quantize(Decimal("0.0001")).normalize(), "f")


def check_age(order: OrderRequested, now: datetime, max_age: timedelta | None) -> None:
    """Refuse an order whose own ``expires_at`` has come, or, without one, that was created more than
    ``max_age`` before ``now`` (a backlog after an outage, say)."""
    if order.expires_at is not None:
        if now >= order.expires_at:
            raise OrderRejected(
                RejectReason.STALE_ORDER,
                f"expired at {order.expires_at.isoformat()} (its expires_at); send a new order if it is still "
                "wanted",
            )
        return
    age = now - order.created_at
    if max_age is not None and age > max_age:
        raise OrderRejected(
            RejectReason.STALE_ORDER,
            f"created {age.total_seconds():.0f} s ago (at {order.created_at.isoformat()}), older than "
            f"MAX_ORDER_AGE ({max_age.total_seconds():.0f} s); send a new order if it is still wanted",
        )


def check_good_till(order: OrderRequested, now: datetime) -> None:
    """Refuse a GTD order whose ``good_till`` has come: IBKR would cancel it at once, or refuse it."""
    if order.good_till is not None and order.good_till <= now:
        raise OrderRejected(
            RejectReason.GOOD_TILL_PASSED,
            f"good_till {order.good_till.isoformat()} has passed; send the order with a later good_till",
        )


def size_increment(instrument: Instrument) -> Decimal:
    """The quantity step of ``instrument``: IBKR's size increment where the mapper has it, else one share,
    one contract or one unit of currency."""
    increment = instrument.size_increment
    return increment if increment is not None and increment > 0 else Decimal(1)


def check_increment(order: OrderRequested, instrument: Instrument) -> None:
    """Refuse a quantity that is not a whole number of the instrument's size increment (0.5 shares)."""
    step = size_increment(instrument)
    if order.quantity % step != 0:
        raise OrderRejected(
            RejectReason.INVALID_QUANTITY_INCREMENT,
            f"quantity {order.quantity} is not a multiple of {instrument.instrument_id}'s size increment "
            f"{step}; IBKR refuses fractional API orders for it",
        )


def reduces_position(order: OrderRequested, view: MarketView) -> bool:
    """True when the order only brings the position towards zero (a SELL of at most a long position, a BUY
    of at most a short one), counting the working orders on its side as done."""
    if order.side is Side.SELL:
        return view.position > 0 and order.quantity + view.working_sell <= view.position
    return view.position < 0 and order.quantity + view.working_buy <= -view.position


def check_position(order: OrderRequested, view: MarketView, limit: Decimal, scope: str) -> None:
    """Refuse an order that could take the absolute position past ``limit``: the position, plus the
    working orders on the order's side, plus the order. An order that reduces the position always passes."""
    if reduces_position(order, view):
        return
    if order.side is Side.BUY:
        worst = view.position + view.working_buy + order.quantity
    else:
        worst = view.position - view.working_sell - order.quantity
    if abs(worst) > limit:
        raise OrderRejected(
            RejectReason.MAX_POSITION_EXCEEDED,
            f"position {view.position} with working {order.side} orders and this one could reach {worst}, "
            f"beyond the {scope} MAX_POSITION of {limit}; reduce the position or the order",
        )


def market_notional(order: OrderRequested, reference: Decimal, instrument: Instrument) -> Decimal:
    return order.quantity * reference * instrument.price_multiplier


def has_banded_price(order: OrderRequested) -> bool:
    """Whether the order has a price the price band measures (a limit, a trigger, a trailing limit offset)."""
    return any(price is not None for price in (order.limit_price, order.stop_price, order.limit_offset))


def needs_reference_for_notional(order: OrderRequested) -> bool:
    """An order without a fixed price (market, market on close, trailing) has its notional measured at the
    reference price."""
    return not order.order_type.has_fixed_price


class OrderRate:
    """A token bucket per account: ``per_second`` orders a second on average, bursts up to ``burst``.

    An order over the rate is refused, not delayed, so the sender learns at once.
    """

    def __init__(self, per_second: float, burst: float, clock: Callable[[], float]) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}  # account -> (tokens, at)

    def take(self, account: str) -> None:
        """Take one order's token for ``account`` or raise ``ORDER_RATE_EXCEEDED``."""
        now = self.clock()
        tokens, at = self._tokens.get(account, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.per_second)
        if tokens < 1:
            self._tokens[account] = (tokens, now)
            raise OrderRejected(
                RejectReason.ORDER_RATE_EXCEEDED,
                f"account {account!r} sent more than MAX_ORDERS_PER_SECOND ({self.per_second:g}/s, bursts of "
                f"{self.burst:g}); slow down and send the order again",
            )
        self._tokens[account] = (tokens - 1, now)
        self._prune(now)

    def give_back(self, account: str) -> None:
        """Return a token taken by an order that was not new after all (a redelivery)."""
        tokens, at = self._tokens.get(account, (self.burst, self.clock()))
        self._tokens[account] = (min(self.burst, tokens + 1), at)

    def _prune(self, now: float) -> None:
        if len(self._tokens) > 10_000:  # accounts that stopped sending: their buckets are full again
            full = [a for a, (t, when) in self._tokens.items() if t + (now - when) * self.per_second >= self.burst]
            for stale in full:
                del self._tokens[stale]


def check_risk(order: OrderRequested, instrument: Instrument, policy: GuardPolicy, view: MarketView,
               now: datetime) -> list[str]:
    """Raise :class:`OrderRejected` for the first risk rule ``order`` breaks (after :func:`check_order`).

    Returns warnings to log loudly: a rule that needed a reference price and let the order pass without one
    (``require_reference`` off).
    """
    refused = admits(policy.trading_state, reduces_position(order, view))
    if refused is not None:
        raise OrderRejected(refused, refusal_detail(policy.trading_state))
    check_age(order, now, policy.max_order_age)
    check_good_till(order, now)
    check_increment(order, instrument)
    band = policy.price_band_for(instrument)
    priced = has_banded_price(order)
    notional_limits = _limits(policy.global_limits.max_notional,
                              policy.limits_for(order.instrument_id).max_notional, order.instrument_id)
    market_notional_checked = needs_reference_for_notional(order) and bool(notional_limits)
    warnings: list[str] = []
    if (band is not None and priced) or market_notional_checked:
        reference = fresh_reference(order, view, policy.reference_max_age)
        what = "the price band" if band is not None and priced else "the notional limit"
        if reference is None:
            if policy.require_reference:
                raise no_reference(order, what)
            warnings.append(f"{RejectReason.NO_REFERENCE_PRICE}: {what} not checked (REQUIRE_REFERENCE_PRICE off)")
        else:
            if band is not None and priced:
                check_price_band(order, reference, band)
            if market_notional_checked:
                notional = market_notional(order, reference, instrument)
                for limit, scope in notional_limits:
                    if notional > limit:
                        raise OrderRejected(
                            RejectReason.MAX_NOTIONAL_EXCEEDED,
                            f"notional {_round(notional)} at the market price {reference} exceeds the {scope} "
                            f"maximum of {limit}",
                        )
    for limit, scope in _limits(policy.global_limits.max_position,
                                policy.limits_for(order.instrument_id).max_position, order.instrument_id):
        check_position(order, view, limit, scope)
    return warnings


def _limits(global_limit: Decimal | None, instrument_limit: Decimal | None,
            instrument_id: str) -> list[tuple[Decimal, str]]:
    """The limits in force, each with the scope that sets it (for the reason's sentence)."""
    scoped = [(global_limit, "global"), (instrument_limit, f"instrument {instrument_id}")]
    return [(limit, scope) for limit, scope in scoped if limit is not None]
