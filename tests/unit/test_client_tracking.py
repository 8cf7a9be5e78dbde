"""OrderTrack: what the client has seen of one order, and when it is complete."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from workers.client import FillExecuted, OrderStatusChanged, OrderTrack, PositionUpdated
from workers.domain.orders import OrderState, Side

NOW = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)


def status(state: str, filled: str = "0", remaining: str = "10", **extra: Any) -> OrderStatusChanged:
    record = {"order_id": "o-1", "account": "DU0000001", "instrument_id": "STK:AAPL:USD", "status": state,
              "filled_quantity": Decimal(filled), "remaining_quantity": Decimal(remaining),
              "avg_fill_price": None, "reason": None, "event_time": NOW, **extra}
    return OrderStatusChanged.from_record(record)


def fill(fill_id: str, quantity: str, corrects: str | None = None) -> FillExecuted:
    return FillExecuted.from_record({
        "fill_id": fill_id, "order_id": "o-1", "account": "DU0000001", "instrument_id": "STK:AAPL:USD",
        "con_id": 265598, "side": "BUY", "quantity": Decimal(quantity), "price": Decimal("187.25"),
        "currency": "USD", "exchange": "ISLAND", "executed_at": NOW, "commission": Decimal("1.0"),
        "commission_currency": "USD", "ib_order_id": 7, "ib_perm_id": 99,
        "cumulative_quantity": Decimal(quantity), "avg_price": Decimal("187.25"), "corrects_fill_id": corrects,
    })


def test_records_become_typed_frozen_events() -> None:
    changed = status("FILLED", "10", "0", avg_fill_price=Decimal("187.25"), previous_status="SUBMITTED",
                     ib_order_id=7)
    assert changed.status is OrderState.FILLED and changed.previous_status is OrderState.SUBMITTED
    assert changed.is_final
    assert changed.describe().split() == ["FILLED", "10/10", "@", "187.25", "ib_order_id=7"]
    executed = fill("0001.01", "10")
    assert executed.side is Side.BUY
    assert "10 @ 187.25 USD on ISLAND" in executed.describe()
    with pytest.raises(AttributeError):
        changed.status = OrderState.REJECTED  # type: ignore[misc]
    position = PositionUpdated.from_record({"account": "DU0000001", "con_id": 1, "instrument_id": None,
                                            "quantity": Decimal("-5.00000000"), "avg_cost": Decimal("2.5"),
                                            "currency": "USD", "as_of": NOW})
    # Written before avg_price existed: IBKR's average cost, said to be one.
    assert position.describe() == "DU0000001 con_id 1  -5 @ cost 2.5 USD"
    future = PositionUpdated.from_record({"account": "DU0000001", "con_id": 2, "instrument_id": "FUT:ES:202612",
                                          "quantity": Decimal("10"), "avg_cost": Decimal("301910.85"),
                                          "currency": "USD", "as_of": NOW, "avg_price": Decimal("6038.217")})
    assert future.describe() == "DU0000001 FUT:ES:202612  10 @ 6038.217 USD"
    assert future.avg_cost == Decimal("301910.85")


def test_a_cancelled_or_rejected_status_reads_as_filled_so_much_with_its_reason() -> None:
    line = status("REJECTED", "0", "0", reason="UNKNOWN_INSTRUMENT: no such thing").describe()
    assert line.split()[:3] == ["REJECTED", "filled", "0"]
    assert line.endswith("reason: UNKNOWN_INSTRUMENT: no such thing")


def test_repeated_statuses_and_fills_are_dropped() -> None:
    track = OrderTrack("o-1")
    assert track.add(status("ACCEPTED"))
    assert not track.add(status("ACCEPTED"))  # the outbox delivers at least once
    assert track.add(status("PARTIALLY_FILLED", "4", "6"))
    assert track.add(status("PARTIALLY_FILLED", "8", "2"))
    assert track.add(fill("e1", "4"))
    assert not track.add(fill("e1", "4"))
    assert [type(e).__name__ for e in track.events] == ["OrderStatusChanged"] * 3 + ["FillExecuted"]


def test_complete_only_once_final_and_every_fill_arrived() -> None:
    track = OrderTrack("o-1")
    track.add(status("SUBMITTED"))
    track.add(fill("e1", "6"))
    assert not track.complete
    track.add(status("FILLED", "10", "0"))
    assert track.final is not None and not track.complete  # 4 still to come on fills.executed
    track.add(fill("e2", "4"))
    assert track.complete


def test_a_corrected_execution_counts_once() -> None:
    track = OrderTrack("o-1")
    track.add(fill("e1.01", "6"))
    track.add(fill("e1.02", "6", corrects="e1.01"))
    track.add(status("FILLED", "10", "0"))
    assert track.filled == Decimal(6) and not track.complete
    track.add(fill("e2.01", "4"))
    assert track.complete


def test_an_order_followed_midway_waits_only_for_fills_after_the_first_status_seen() -> None:
    track = OrderTrack("o-1", from_start=False)
    track.add(status("PARTIALLY_FILLED", "5", "5"))
    track.add(status("CANCELLED", "5", "0"))
    assert track.complete  # the 5 filled before it was followed were never going to arrive here
    from_start = OrderTrack("o-1")
    from_start.add(status("CANCELLED", "5", "0"))
    assert not from_start.complete


def test_a_waiter_is_woken_by_each_change() -> None:
    track = OrderTrack("o-1")
    before = track.changed
    track.add(status("ACCEPTED"))
    assert before.is_set() and not track.changed.is_set()
