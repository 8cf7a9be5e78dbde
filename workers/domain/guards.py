"""Validation and pre-trade guards: everything checked before an order may reach IBKR.

Each refusal is an :class:`OrderRejected` carrying a machine-readable reason and a sentence a person can
act on. Pure logic: the caller supplies the instrument (or ``None``) and the limits.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from workers.domain.instruments import Instrument
from workers.domain.orders import OrderRequested, OrderType, Side, TimeInForce
from workers.domain.text import (
    ACCOUNT_MAX,
    INSTRUMENT_ID_MAX,
    OCA_GROUP_MAX,
    ORDER_ID_MAX,
    SOURCE_MAX,
    first_problem,
)
from workers.domain.trading_state import TradingState, refusal_detail


class RejectReason(enum.StrEnum):
    INVALID_ORDER_ID = "INVALID_ORDER_ID"
    INVALID_TEXT = "INVALID_TEXT"  # a text field with control characters or longer than its maximum
    INVALID_QUANTITY = "INVALID_QUANTITY"
    MISSING_LIMIT_PRICE = "MISSING_LIMIT_PRICE"
    UNEXPECTED_LIMIT_PRICE = "UNEXPECTED_LIMIT_PRICE"
    MISSING_STOP_PRICE = "MISSING_STOP_PRICE"
    UNEXPECTED_STOP_PRICE = "UNEXPECTED_STOP_PRICE"
    MISSING_TRAILING_AMOUNT = "MISSING_TRAILING_AMOUNT"  # neither trailing_amount nor trailing_percent
    UNEXPECTED_TRAILING_AMOUNT = "UNEXPECTED_TRAILING_AMOUNT"
    UNEXPECTED_TRAILING_PERCENT = "UNEXPECTED_TRAILING_PERCENT"  # not trailing, or with trailing_amount
    MISSING_LIMIT_OFFSET = "MISSING_LIMIT_OFFSET"
    UNEXPECTED_LIMIT_OFFSET = "UNEXPECTED_LIMIT_OFFSET"
    MISSING_GOOD_TILL = "MISSING_GOOD_TILL"
    UNEXPECTED_GOOD_TILL = "UNEXPECTED_GOOD_TILL"
    GOOD_TILL_PASSED = "GOOD_TILL_PASSED"
    ALGO_NOT_ALLOWED = "ALGO_NOT_ALLOWED"  # the algo does not take this order type or security type
    UNEXPECTED_ALGO_PRIORITY = "UNEXPECTED_ALGO_PRIORITY"
    INVALID_BRACKET = "INVALID_BRACKET"  # a take-profit or stop-loss on the wrong side, or an unfit parent
    INVALID_PRICE = "INVALID_PRICE"
    PRICE_OFF_TICK = "PRICE_OFF_TICK"
    ACCOUNT_NOT_ALLOWED = "ACCOUNT_NOT_ALLOWED"
    UNKNOWN_INSTRUMENT = "UNKNOWN_INSTRUMENT"
    INACTIVE_INSTRUMENT = "INACTIVE_INSTRUMENT"
    MAX_QUANTITY_EXCEEDED = "MAX_QUANTITY_EXCEEDED"
    MAX_NOTIONAL_EXCEEDED = "MAX_NOTIONAL_EXCEEDED"
    NO_REFERENCE_PRICE = "NO_REFERENCE_PRICE"
    PRICE_OUT_OF_BAND = "PRICE_OUT_OF_BAND"
    STALE_ORDER = "STALE_ORDER"
    INVALID_QUANTITY_INCREMENT = "INVALID_QUANTITY_INCREMENT"
    MAX_POSITION_EXCEEDED = "MAX_POSITION_EXCEEDED"
    ORDER_RATE_EXCEEDED = "ORDER_RATE_EXCEEDED"
    TRADING_REDUCING = "TRADING_REDUCING"
    TRADING_HALTED = "TRADING_HALTED"
    IBKR_REJECTED = "IBKR_REJECTED"
    CANCELLED_BEFORE_PLACED = "CANCELLED_BEFORE_PLACED"
    UNPROCESSABLE = "UNPROCESSABLE"  # the worker failed on the request itself; it is on the dead-letter topic


class OrderRejected(Exception):
    """An order refused before (or by) IBKR: ``reason`` for machines, ``detail`` for people."""

    def __init__(self, reason: RejectReason, detail: str, ib_code: int | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.ib_code = ib_code

    @property
    def text(self) -> str:
        """The ``reason`` field of the published status."""
        code = f" (IBKR error {self.ib_code})" if self.ib_code is not None else ""
        return f"{self.reason}: {self.detail}{code}"


@dataclass(frozen=True)
class OrderLimits:
    """Limits of one order and of a position; ``None`` means no limit (for the price band: the next scope's).

    ``max_quantity`` and ``max_notional`` of one order; ``max_position`` the absolute position an account
    may reach in an instrument; ``price_band`` how far (a fraction of the market price) a limit or stop
    price may be on the worse side.
    """

    max_quantity: Decimal | None = None
    max_notional: Decimal | None = None
    max_position: Decimal | None = None
    price_band: Decimal | None = None


@dataclass(frozen=True)
class GuardPolicy:
    """The pre-trade guards in force: allowlisted accounts, limits, the trading state, and the risk rules'
    settings (see :mod:`workers.domain.risk`)."""

    allowed_accounts: frozenset[str]
    global_limits: OrderLimits = OrderLimits()
    instrument_limits: dict[str, OrderLimits] = field(default_factory=dict)
    # The deployment's trading state (REDUCING and HALTED refuse orders: see workers.domain.trading_state).
    trading_state: TradingState = TradingState.ACTIVE
    # The price band by security type where no instrument limit sets one (else the global limit's).
    sec_type_price_bands: dict[str, Decimal] = field(default_factory=dict)
    max_order_age: timedelta | None = None
    # Seconds after which a market price is no longer a reference.
    reference_max_age: float = 60.0
    # Without a fresh reference, a rule that needs one rejects the order (False: lets it pass, loudly).
    require_reference: bool = True

    def limits_for(self, instrument_id: str) -> OrderLimits:
        """The instrument's own limits (none set: no extra limits)."""
        return self.instrument_limits.get(instrument_id, OrderLimits())

    def price_band_for(self, instrument: Instrument) -> Decimal | None:
        """The price band of ``instrument``: its own, else its security type's, else the global one."""
        own = self.limits_for(instrument.instrument_id).price_band
        if own is not None:
            return own
        return self.sec_type_price_bands.get(instrument.sec_type, self.global_limits.price_band)


def check_order(order: OrderRequested, instrument: Instrument | None, policy: GuardPolicy) -> None:
    """Raise :class:`OrderRejected` for the first rule ``order`` breaks; return when it may be placed."""
    _check_shape(order)
    if policy.trading_state is TradingState.HALTED:
        # REDUCING needs the position: it is checked with the risk rules (workers.domain.risk).
        raise OrderRejected(RejectReason.TRADING_HALTED, refusal_detail(policy.trading_state))
    if order.account not in policy.allowed_accounts:
        raise OrderRejected(
            RejectReason.ACCOUNT_NOT_ALLOWED,
            f"account {order.account!r} is not in IBKR_ACCOUNTS",
        )
    if instrument is None:
        raise OrderRejected(
            RejectReason.UNKNOWN_INSTRUMENT,
            f"instrument {order.instrument_id!r} is not in the instrument mapper",
        )
    if not instrument.active:
        raise OrderRejected(
            RejectReason.INACTIVE_INSTRUMENT,
            f"instrument {order.instrument_id!r} (conId {instrument.con_id}) is inactive",
        )
    if order.algo is not None and instrument.sec_type not in ADAPTIVE_SEC_TYPES:
        raise OrderRejected(
            RejectReason.ALGO_NOT_ALLOWED,
            f"the {order.algo} algo takes stocks only; {order.instrument_id!r} is {instrument.sec_type}",
        )
    _check_ticks(order, instrument)
    _check_limits(order, instrument, policy.global_limits, "global")
    per_instrument = policy.instrument_limits.get(order.instrument_id)
    if per_instrument is not None:
        _check_limits(order, instrument, per_instrument, f"instrument {order.instrument_id}")


def check_text(order: OrderRequested) -> None:
    """Raise :class:`OrderRejected` (INVALID_TEXT, naming the field) for a text field the rules refuse.

    Checked before anything else reads the order: such a value cannot be stored, looked up or logged.
    """
    problem = first_problem(("order_id", order.order_id, ORDER_ID_MAX), ("account", order.account, ACCOUNT_MAX),
                            ("instrument_id", order.instrument_id, INSTRUMENT_ID_MAX),
                            ("source", order.source, SOURCE_MAX), ("oca_group", order.oca_group, OCA_GROUP_MAX))
    if problem is not None:
        raise OrderRejected(RejectReason.INVALID_TEXT, problem.text)


def _check_shape(order: OrderRequested) -> None:
    check_text(order)
    try:
        uuid.UUID(order.order_id)
    except ValueError:
        raise OrderRejected(
            RejectReason.INVALID_ORDER_ID, f"order_id {order.order_id!r} is not a UUID"
        ) from None
    if not order.quantity.is_finite() or order.quantity <= 0:
        raise OrderRejected(RejectReason.INVALID_QUANTITY, f"quantity must be > 0, got {order.quantity}")
    kind = order.order_type
    if kind.needs_limit_price and order.limit_price is None:
        raise OrderRejected(RejectReason.MISSING_LIMIT_PRICE, f"a {kind} order needs limit_price")
    if not kind.needs_limit_price and order.limit_price is not None:
        raise OrderRejected(RejectReason.UNEXPECTED_LIMIT_PRICE, f"a {kind} order takes no limit_price")
    if kind.needs_stop_price and order.stop_price is None:
        raise OrderRejected(RejectReason.MISSING_STOP_PRICE, f"a {kind} order needs stop_price")
    # A trailing order's stop_price is optional: its initial stop (IB's trailStopPrice).
    if not kind.needs_stop_price and not kind.is_trailing and order.stop_price is not None:
        raise OrderRejected(RejectReason.UNEXPECTED_STOP_PRICE, f"a {kind} order takes no stop_price")
    _check_trailing(order)
    for name, price in (("limit_price", order.limit_price), ("stop_price", order.stop_price),
                        ("trailing_amount", order.trailing_amount)):
        if price is not None and (not price.is_finite() or price <= 0):
            raise OrderRejected(RejectReason.INVALID_PRICE, f"{name} must be > 0, got {price}")
    percent = order.trailing_percent
    if percent is not None and (not percent.is_finite() or not 0 < percent < 100):
        raise OrderRejected(RejectReason.INVALID_PRICE,
                            f"trailing_percent must be above 0 and below 100, got {percent}")
    offset = order.limit_offset
    if offset is not None and (not offset.is_finite() or offset < 0):
        raise OrderRejected(RejectReason.INVALID_PRICE, f"limit_offset must be >= 0, got {offset}")
    _check_good_till(order)
    _check_algo(order)
    _check_group(order)


# IBKR's Adaptive algo: the order types and security types it takes.
ADAPTIVE_ORDER_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT})
ADAPTIVE_SEC_TYPES = frozenset({"STK"})


def _check_trailing(order: OrderRequested) -> None:
    kind = order.order_type
    amount, percent = order.trailing_amount, order.trailing_percent
    if kind.is_trailing:
        if amount is None and percent is None:
            raise OrderRejected(RejectReason.MISSING_TRAILING_AMOUNT,
                                f"a {kind} order needs trailing_amount or trailing_percent")
        if amount is not None and percent is not None:
            raise OrderRejected(RejectReason.UNEXPECTED_TRAILING_PERCENT,
                                f"a {kind} order takes trailing_amount or trailing_percent, not both")
    else:
        if amount is not None:
            raise OrderRejected(RejectReason.UNEXPECTED_TRAILING_AMOUNT, f"a {kind} order takes no trailing_amount")
        if percent is not None:
            raise OrderRejected(RejectReason.UNEXPECTED_TRAILING_PERCENT,
                                f"a {kind} order takes no trailing_percent")
    if kind is OrderType.TRAILING_STOP_LIMIT and order.limit_offset is None:
        raise OrderRejected(RejectReason.MISSING_LIMIT_OFFSET, f"a {kind} order needs limit_offset")
    if kind is not OrderType.TRAILING_STOP_LIMIT and order.limit_offset is not None:
        raise OrderRejected(RejectReason.UNEXPECTED_LIMIT_OFFSET, f"a {kind} order takes no limit_offset")


def _check_good_till(order: OrderRequested) -> None:
    # Whether good_till is still in the future needs the clock: see workers.domain.risk.check_good_till.
    gtd = order.time_in_force is TimeInForce.GTD
    if gtd and order.good_till is None:
        raise OrderRejected(RejectReason.MISSING_GOOD_TILL, "time_in_force GTD needs good_till")
    if not gtd and order.good_till is not None:
        raise OrderRejected(RejectReason.UNEXPECTED_GOOD_TILL,
                            f"good_till goes with time_in_force GTD only, not {order.time_in_force}")


def _check_algo(order: OrderRequested) -> None:
    # The security type is checked once the instrument is known (check_order).
    if order.algo is None:
        if order.algo_priority is not None:
            raise OrderRejected(RejectReason.UNEXPECTED_ALGO_PRIORITY, "algo_priority goes with an algo only")
        return
    if order.order_type not in ADAPTIVE_ORDER_TYPES:
        raise OrderRejected(RejectReason.ALGO_NOT_ALLOWED,
                            f"the {order.algo} algo takes MARKET and LIMIT orders only, not {order.order_type}")


# A bracket's parent: the order types and times in force it takes (its children rest until it fills).
BRACKET_PARENT_TYPES = frozenset({OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT})
BRACKET_PARENT_TIFS = frozenset({TimeInForce.DAY, TimeInForce.GTC, TimeInForce.GTD})


def _check_group(order: OrderRequested) -> None:
    """A bracket's prices on the right sides of each other and of the parent's price."""
    take_profit, stop_loss = order.take_profit_price, order.stop_loss_price
    if take_profit is None and stop_loss is None:
        return
    if order.oca_group is not None:
        raise OrderRejected(RejectReason.INVALID_BRACKET,
                            "a bracket's children have an OCA group of their own: send it without oca_group")
    if order.order_type not in BRACKET_PARENT_TYPES or order.time_in_force not in BRACKET_PARENT_TIFS:
        raise OrderRejected(RejectReason.INVALID_BRACKET,
                            f"a bracket's parent is a MARKET, LIMIT, STOP or STOP_LIMIT order, DAY, GTC or GTD; "
                            f"not {order.order_type} {order.time_in_force}")
    for name, price in (("take_profit_price", take_profit), ("stop_loss_price", stop_loss)):
        if price is not None and (not price.is_finite() or price <= 0):
            raise OrderRejected(RejectReason.INVALID_PRICE, f"{name} must be > 0, got {price}")
    buying = order.side is Side.BUY
    entry = order.limit_price if order.limit_price is not None else order.stop_price
    # Above the entry for a BUY's take-profit, below it for its stop-loss (and the mirror for a SELL).
    bounds = [("take_profit_price", take_profit, "above" if buying else "below"),
              ("stop_loss_price", stop_loss, "below" if buying else "above")]
    for name, price, side in bounds:
        if price is None:
            continue
        if entry is not None and ((price <= entry) if side == "above" else (price >= entry)):
            raise OrderRejected(RejectReason.INVALID_BRACKET,
                                f"{name} {price} must be {side} the {order.side} order's price {entry}")
    if take_profit is not None and stop_loss is not None and (
            (take_profit <= stop_loss) if buying else (take_profit >= stop_loss)):
        raise OrderRejected(RejectReason.INVALID_BRACKET,
                            f"take_profit_price {take_profit} must be {'above' if buying else 'below'} "
                            f"stop_loss_price {stop_loss} for a {order.side} order")


def _check_ticks(order: OrderRequested, instrument: Instrument) -> None:
    tick = instrument.min_tick
    if not tick:
        return
    for name, price in (("limit_price", order.limit_price), ("stop_price", order.stop_price),
                        ("trailing_amount", order.trailing_amount), ("limit_offset", order.limit_offset),
                        ("take_profit_price", order.take_profit_price), ("stop_loss_price", order.stop_loss_price)):
        if price is not None and price % tick != 0:
            raise OrderRejected(
                RejectReason.PRICE_OFF_TICK,
                f"{name} {price} is not a multiple of the instrument's minimum tick {tick}",
            )


def _reference_price(order: OrderRequested) -> Decimal | None:
    # The worst price the order accepts: the limit where there is one, else the stop or touch trigger. A
    # trailing order's stop_price is only where it starts: its notional is measured at the market price
    # (workers.domain.risk).
    if not order.order_type.has_fixed_price:
        return None
    return order.limit_price if order.limit_price is not None else order.stop_price


def _check_limits(order: OrderRequested, instrument: Instrument, limits: OrderLimits, scope: str) -> None:
    if limits.max_quantity is not None and order.quantity > limits.max_quantity:
        raise OrderRejected(
            RejectReason.MAX_QUANTITY_EXCEEDED,
            f"quantity {order.quantity} exceeds the {scope} maximum of {limits.max_quantity}",
        )
    price = _reference_price(order)
    if limits.max_notional is not None and price is not None:
        notional = order.quantity * price * instrument.price_multiplier
        if notional > limits.max_notional:
            raise OrderRejected(
                RejectReason.MAX_NOTIONAL_EXCEEDED,
                f"notional {notional} exceeds the {scope} maximum of {limits.max_notional}",
            )
