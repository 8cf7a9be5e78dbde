"""Conversions between the contract's Avro records (plain dicts) and our domain objects and rows."""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

from workers.adapters.kafka.failures import bounded, printable
from workers.adapters.postgres.rows import FillRow
from workers.domain.modifications import OrderModifyRequested
from workers.domain.orders import (
    Algo,
    AlgoPriority,
    Order,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
)
from workers.domain.text import (
    ACCOUNT_MAX,
    CANCEL_REASON_MAX,
    INSTRUMENT_ID_MAX,
    ORDER_ID_MAX,
    SOURCE_MAX,
    TextProblem,
    escaped,
    first_problem,
)

# The fields of an OrderModifyRequested record are the domain request's, by the same names.
MODIFY_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(OrderModifyRequested))

ORDER_REQUESTED = "prometheus.execution.OrderRequested"
ORDER_CANCEL_REQUESTED = "prometheus.execution.OrderCancelRequested"
ORDER_MODIFY_REQUESTED = "prometheus.execution.OrderModifyRequested"
ORDER_STATUS_CHANGED = "prometheus.execution.OrderStatusChanged"
FILL_EXECUTED = "prometheus.execution.FillExecuted"
POSITION_UPDATED = "prometheus.execution.PositionUpdated"
INSTRUMENT_UPDATED = "prometheus.execution.InstrumentUpdated"
WORKER_HEALTH = "prometheus.execution.WorkerHealth"

_SCALE = Decimal("1e-8")
_E = TypeVar("_E", bound=Enum)
# A status's reason is a sentence for people (with an IBKR code): bounded, so no record grows with the
# text it quotes.
STATUS_REASON_MAX = 1000


def d8(value: Decimal) -> Decimal:
    """``value`` at the contract's scale of 8 (averages computed by IBKR or SQL may carry more digits)."""
    return value.quantize(_SCALE)


def d8_or_none(value: Decimal | None) -> Decimal | None:
    return None if value is None else d8(value)


class InvalidText(ValueError):
    """A record whose text cannot be taken at all (its key field, or any field of a cancel): dead-lettered."""

    def __init__(self, problem: TextProblem) -> None:
        super().__init__(problem.text)
        self.problem = problem


def _refuse(problem: TextProblem | None) -> None:
    if problem is not None:
        raise InvalidText(problem)


def order_requested_from_record(record: dict[str, Any]) -> OrderRequested:
    """The order of ``record``; raises :class:`InvalidText` when its ``order_id`` cannot be a key.

    Its other text fields are checked by the guards (the order is REJECTED, naming the field).
    """
    _refuse(first_problem(("order_id", record["order_id"], ORDER_ID_MAX)))
    return OrderRequested(
        order_id=record["order_id"],
        account=record["account"],
        instrument_id=record["instrument_id"],
        side=Side(record["side"]),
        quantity=record["quantity"],
        order_type=OrderType(record["order_type"]),
        limit_price=record.get("limit_price"),
        stop_price=record.get("stop_price"),
        time_in_force=TimeInForce(record.get("time_in_force") or "DAY"),
        outside_rth=bool(record.get("outside_rth", False)),
        created_at=record["created_at"],
        source=record.get("source"),
        expires_at=record.get("expires_at"),
        trailing_amount=record.get("trailing_amount"),
        trailing_percent=record.get("trailing_percent"),
        limit_offset=record.get("limit_offset"),
        good_till=record.get("good_till"),
        algo=_optional(Algo, record.get("algo")),
        algo_priority=_optional(AlgoPriority, record.get("algo_priority")),
        take_profit_price=record.get("take_profit_price"),
        stop_loss_price=record.get("stop_loss_price"),
        oca_group=record.get("oca_group"),
    )


def _optional(kind: type[_E], value: str | None) -> _E | None:
    return None if value is None else kind(value)


def order_requested_record(order: OrderRequested) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "account": order.account,
        "instrument_id": order.instrument_id,
        "side": order.side.value,
        "quantity": order.quantity,
        "order_type": order.order_type.value,
        "limit_price": order.limit_price,
        "stop_price": order.stop_price,
        "time_in_force": order.time_in_force.value,
        "outside_rth": order.outside_rth,
        "created_at": order.created_at,
        "source": order.source,
        "expires_at": order.expires_at,
        "trailing_amount": order.trailing_amount,
        "trailing_percent": order.trailing_percent,
        "limit_offset": order.limit_offset,
        "good_till": order.good_till,
        "algo": None if order.algo is None else order.algo.value,
        "algo_priority": None if order.algo_priority is None else order.algo_priority.value,
        "take_profit_price": order.take_profit_price,
        "stop_loss_price": order.stop_loss_price,
        "oca_group": order.oca_group,
    }


def cancel_from_record(record: dict[str, Any]) -> OrderCancelRequested:
    """The cancel of ``record``; raises :class:`InvalidText` naming a text field the rules refuse."""
    _refuse(first_problem(("order_id", record["order_id"], ORDER_ID_MAX), ("account", record["account"], ACCOUNT_MAX),
                          ("reason", record.get("reason"), CANCEL_REASON_MAX),
                          ("source", record.get("source"), SOURCE_MAX)))
    return OrderCancelRequested(
        order_id=record["order_id"],
        account=record["account"],
        requested_at=record["requested_at"],
        reason=record.get("reason"),
    )


def cancel_record(cancel: OrderCancelRequested) -> dict[str, Any]:
    return {
        "order_id": cancel.order_id,
        "account": cancel.account,
        "requested_at": cancel.requested_at,
        "reason": cancel.reason,
    }


def modify_from_record(record: dict[str, Any]) -> OrderModifyRequested:
    """The modification of ``record``; raises :class:`InvalidText` naming a text field the rules refuse."""
    _refuse(first_problem(("modify_id", record["modify_id"], ORDER_ID_MAX),
                          ("order_id", record["order_id"], ORDER_ID_MAX), ("account", record["account"], ACCOUNT_MAX),
                          ("source", record.get("source"), SOURCE_MAX)))
    values: dict[str, Any] = {name: record.get(name) for name in MODIFY_FIELDS}
    if values["time_in_force"] is not None:
        values["time_in_force"] = TimeInForce(values["time_in_force"])
    return OrderModifyRequested(**values)


def modify_record(modify: OrderModifyRequested) -> dict[str, Any]:
    record = {name: getattr(modify, name) for name in MODIFY_FIELDS}
    if modify.time_in_force is not None:
        record["time_in_force"] = modify.time_in_force.value
    return record


def modification_status_record(row: Order, modify_id: str, reason: str, event_time: datetime) -> dict[str, Any]:
    """The ``OrderStatusChanged`` record of a modification's outcome: the order's state (unchanged) and the
    terms it works with, the ``modify_id``, and what was applied or why it was refused."""
    record = status_record(row, event_time, row.state)
    record["modify_id"] = modify_id
    record["reason"] = bounded(reason, STATUS_REASON_MAX)
    return record


def status_record(row: Order, event_time: datetime, previous: OrderState | None = None) -> dict[str, Any]:
    """The ``OrderStatusChanged`` record announcing ``row``'s current state."""
    return {
        "order_id": row.order_id,
        "account": row.account,
        "instrument_id": row.instrument_id,
        "status": row.state.published_status.value,
        "ib_order_id": row.ib_order_id,
        "ib_perm_id": row.ib_perm_id,
        "filled_quantity": d8(row.filled_quantity),
        "remaining_quantity": d8(row.remaining_quantity),
        "avg_fill_price": d8_or_none(row.avg_fill_price),
        "reason": None if row.reason is None else bounded(row.reason, STATUS_REASON_MAX),
        "event_time": event_time,
        "ib_error_code": row.ib_error_code,
        "previous_status": previous.published_status.value if previous is not None else None,
        "quantity": d8(row.quantity),
        "limit_price": d8_or_none(row.limit_price),
        "stop_price": d8_or_none(row.stop_price),
        "time_in_force": row.time_in_force.value,
        "modify_id": None,
        "parent_order_id": row.parent_order_id,
    }


def instrument_id_from_record(record: dict[str, Any]) -> str:
    """The ``instrument_id`` of an ``InstrumentUpdated`` record; raises :class:`InvalidText`."""
    _refuse(first_problem(("instrument_id", record["instrument_id"], INSTRUMENT_ID_MAX)))
    return str(record["instrument_id"])


def _echo(value: str, limit: int) -> str:
    # A rejected request's own text, repeated in its status: refused characters escaped, length bounded, so
    # the status can be stored and read by anyone downstream; text the rules allow is repeated as it is.
    return escaped(value, limit)


def rejection_record(order: OrderRequested, reason: str, event_time: datetime) -> dict[str, Any]:
    """A REJECTED status for an order too malformed to be kept in the ledger (its text fields made safe)."""
    quantity = order.quantity if order.quantity.is_finite() and order.quantity >= 0 else Decimal(0)
    return {
        "order_id": order.order_id,  # checked where it was decoded: the status's key is the request's
        "account": _echo(order.account, ACCOUNT_MAX),
        "instrument_id": _echo(order.instrument_id, INSTRUMENT_ID_MAX),
        "status": OrderState.REJECTED.value,
        "ib_order_id": None,
        "ib_perm_id": None,
        "filled_quantity": Decimal(0),
        "remaining_quantity": quantity,
        "avg_fill_price": None,
        "reason": bounded(printable(reason), STATUS_REASON_MAX),
        "event_time": event_time,
        "ib_error_code": None,
        "previous_status": None,
        "quantity": _finite_or_none(order.quantity) if order.quantity.is_finite() and order.quantity > 0 else None,
        "limit_price": _finite_or_none(order.limit_price),
        "stop_price": _finite_or_none(order.stop_price),
        "time_in_force": order.time_in_force.value,
        "modify_id": None,
        "parent_order_id": None,
    }


def _finite_or_none(price: Decimal | None) -> Decimal | None:
    """A rejected request's price as it can be published (a NaN or an infinity cannot)."""
    return d8_or_none(price) if price is not None and price.is_finite() and abs(price) < 10**12 else None


def fill_record(row: FillRow) -> dict[str, Any]:
    return {
        "fill_id": row.fill_id,
        "order_id": row.order_id,
        "account": row.account,
        "instrument_id": row.instrument_id,
        "con_id": row.con_id,
        "side": row.side.value,
        "quantity": d8(row.quantity),
        "price": d8(row.price),
        "currency": row.currency,
        "exchange": row.exchange,
        "executed_at": row.executed_at,
        "commission": d8_or_none(row.commission),
        "commission_currency": row.commission_currency,
        "ib_order_id": row.ib_order_id,
        "ib_perm_id": row.ib_perm_id,
        "cumulative_quantity": d8(row.cumulative_quantity),
        "avg_price": d8(row.avg_price),
        "corrects_fill_id": row.corrects_fill_id,
    }


def position_record(account: str, con_id: int, instrument_id: str | None, quantity: Decimal,
                    avg_cost: Decimal, currency: str, as_of: datetime,
                    avg_price: Decimal | None = None) -> dict[str, Any]:
    return {
        "account": account,
        "con_id": con_id,
        "instrument_id": instrument_id,
        "quantity": d8(quantity),
        "avg_cost": d8(avg_cost),
        "currency": currency,
        "as_of": as_of,
        "avg_price": None if avg_price is None else d8(avg_price),
    }
