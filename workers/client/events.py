"""What an :class:`~workers.client.OrderClient` hands back: typed, frozen views of the published records.

The order-consumer publishes ``OrderStatusChanged`` (``orders.status``), ``FillExecuted``
(``fills.executed``) and ``PositionUpdated`` (``positions.updated``) as Avro records; these classes are the
same records as Python objects, built from the decoded dicts with :meth:`from_record`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from workers.domain.orders import OrderState, Side


def plain(value: Decimal | None) -> str:
    """A decimal without the contract's trailing zeros (``10.00000000`` -> ``10``)."""
    if value is None:
        return "-"
    return format(value.normalize(), "f")


@dataclass(frozen=True)
class OrderStatusChanged:
    """The order reached ``status`` (an ``orders.status`` record)."""

    order_id: str
    account: str
    instrument_id: str
    status: OrderState
    filled_quantity: Decimal
    remaining_quantity: Decimal
    avg_fill_price: Decimal | None
    reason: str | None
    event_time: datetime
    ib_order_id: int | None = None
    ib_perm_id: int | None = None
    ib_error_code: int | None = None
    previous_status: OrderState | None = None
    # The order's working terms at IBKR (records written before version 3 carry none).
    quantity: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    modify_id: str | None = None
    parent_order_id: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> OrderStatusChanged:
        previous = record.get("previous_status")
        return cls(
            order_id=record["order_id"], account=record["account"], instrument_id=record["instrument_id"],
            status=OrderState(record["status"]), filled_quantity=record["filled_quantity"],
            remaining_quantity=record["remaining_quantity"], avg_fill_price=record.get("avg_fill_price"),
            reason=record.get("reason"), event_time=record["event_time"],
            ib_order_id=record.get("ib_order_id"), ib_perm_id=record.get("ib_perm_id"),
            ib_error_code=record.get("ib_error_code"),
            previous_status=OrderState(previous) if previous else None,
            quantity=record.get("quantity"), limit_price=record.get("limit_price"),
            stop_price=record.get("stop_price"), time_in_force=record.get("time_in_force"),
            modify_id=record.get("modify_id"), parent_order_id=record.get("parent_order_id"),
        )

    @property
    def is_final(self) -> bool:
        """FILLED, CANCELLED or REJECTED: nothing changes after this."""
        return self.status.is_final

    def same_state(self, other: OrderStatusChanged) -> bool:
        """True when ``other`` announces the same state (a repeat, as at-least-once delivery may bring)."""
        return (self.status, self.filled_quantity, self.remaining_quantity, self.reason, self.modify_id) == (
            other.status, other.filled_quantity, other.remaining_quantity, other.reason, other.modify_id)

    def describe(self) -> str:
        """One line for people: ``FILLED  10/10 @ 187.25``, ``CANCELLED  filled 0  reason: ...``."""
        if self.status in (OrderState.CANCELLED, OrderState.REJECTED):
            amount = f"filled {plain(self.filled_quantity)}"
        else:
            amount = f"{plain(self.filled_quantity)}/{plain(self.filled_quantity + self.remaining_quantity)}"
        text = f"{self.status.value:<16} {amount}"
        if self.avg_fill_price is not None:
            text += f" @ {plain(self.avg_fill_price)}"
        if self.ib_order_id is not None:
            text += f"  ib_order_id={self.ib_order_id}"
        if self.reason:
            text += f"  reason: {self.reason}"
        return text


@dataclass(frozen=True)
class FillExecuted:
    """One IBKR execution of the order (a ``fills.executed`` record); ``fill_id`` is IBKR's execId."""

    fill_id: str
    order_id: str
    account: str
    instrument_id: str
    con_id: int
    side: Side
    quantity: Decimal
    price: Decimal
    currency: str
    exchange: str
    executed_at: datetime
    cumulative_quantity: Decimal
    avg_price: Decimal
    commission: Decimal | None = None
    commission_currency: str | None = None
    ib_order_id: int | None = None
    ib_perm_id: int | None = None
    corrects_fill_id: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FillExecuted:
        return cls(
            fill_id=record["fill_id"], order_id=record["order_id"], account=record["account"],
            instrument_id=record["instrument_id"], con_id=record["con_id"], side=Side(record["side"]),
            quantity=record["quantity"], price=record["price"], currency=record["currency"],
            exchange=record["exchange"], executed_at=record["executed_at"],
            cumulative_quantity=record["cumulative_quantity"], avg_price=record["avg_price"],
            commission=record.get("commission"), commission_currency=record.get("commission_currency"),
            ib_order_id=record.get("ib_order_id"), ib_perm_id=record.get("ib_perm_id"),
            corrects_fill_id=record.get("corrects_fill_id"),
        )

    def describe(self) -> str:
        """One line for people: ``FILL  10 @ 187.25 USD on ISLAND  commission 1 USD  fill_id=...``."""
        text = f"{'FILL':<16} {plain(self.quantity)} @ {plain(self.price)} {self.currency} on {self.exchange}"
        if self.commission is not None:
            text += f"  commission {plain(self.commission)} {self.commission_currency or ''}".rstrip()
        text += f"  fill_id={self.fill_id}"
        if self.corrects_fill_id:
            text += f" (corrects {self.corrects_fill_id})"
        return text


@dataclass(frozen=True)
class PositionUpdated:
    """The account's position in a contract changed (a ``positions.updated`` record)."""

    account: str
    con_id: int
    instrument_id: str | None
    quantity: Decimal
    avg_cost: Decimal
    currency: str
    as_of: datetime
    avg_price: Decimal | None = None
    """The average price as quoted (``avg_cost`` over the multiplier); None in records older than it."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PositionUpdated:
        return cls(account=record["account"], con_id=record["con_id"],
                   instrument_id=record.get("instrument_id"), quantity=record["quantity"],
                   avg_cost=record["avg_cost"], currency=record["currency"], as_of=record["as_of"],
                   avg_price=record.get("avg_price"))

    def describe(self) -> str:
        """One line for people: ``DU0000001 FUT:ES:202612  10 @ 6038.22 USD``, the average price as quoted.

        A record without ``avg_price`` (written before it existed) shows IBKR's average cost, marked so.
        """
        name = self.instrument_id or f"con_id {self.con_id}"
        if self.avg_price is None:
            return f"{self.account} {name}  {plain(self.quantity)} @ cost {plain(self.avg_cost)} {self.currency}"
        return f"{self.account} {name}  {plain(self.quantity)} @ {plain(self.avg_price)} {self.currency}"


OrderEvent = OrderStatusChanged | FillExecuted
"""What :meth:`OrderClient.events` yields for one order."""

ClientEvent = OrderStatusChanged | FillExecuted | PositionUpdated
"""What an :meth:`OrderClient.listen` callback receives."""
