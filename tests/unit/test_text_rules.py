"""Text from outside: control characters and lengths are refused, naming the field; ordinary text passes."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from workers.adapters.kafka.records import (
    InvalidText,
    cancel_from_record,
    instrument_id_from_record,
    order_requested_from_record,
    rejection_record,
)
from workers.domain.guards import GuardPolicy, OrderRejected, RejectReason, check_order
from workers.domain.orders import OrderRequested, OrderType, Side, TimeInForce
from workers.domain.text import text_problem

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def an_order(**changes: object) -> OrderRequested:
    values: dict[str, object] = {
        "order_id": "0b8f8c5e-3a1c-4c59-9f4e-8d2f7e1b6a00", "account": "DU1234567",
        "instrument_id": "STK:AAPL:USD", "side": Side.BUY, "quantity": Decimal(1),
        "order_type": OrderType.MARKET, "limit_price": None, "stop_price": None,
        "time_in_force": TimeInForce.DAY, "outside_rth": False, "created_at": NOW, "source": "tests"}
    values.update(changes)
    return OrderRequested(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["STK:AAPL:USD", "OPT:SPY   261218C00600000:USD", "Société Générale", "",
                                   "x" * 128])
def test_ordinary_text_passes(value: str) -> None:
    assert text_problem("instrument_id", value, 128) is None


@pytest.mark.parametrize(("value", "problem"), [
    ("AAPL\x00", "contains the control character U+0000 at position 4"),
    ("\x1b[31mred", "contains the control character U+001B at position 0"),
    ("a\x85b", "contains the control character U+0085 at position 1"),
    ("ab\u202egnp.exe", "contains the control character U+202E at position 2"),
    ("line\u2028two", "contains the control character U+2028 at position 4"),
    ("x" * 129, "is 129 characters long, more than 128"),
])
def test_control_characters_and_long_values_are_refused_naming_the_field(value: str, problem: str) -> None:
    found = text_problem("instrument_id", value, 128)
    assert found is not None and found.text == f"instrument_id {problem}"


@pytest.mark.parametrize(("field", "value"), [
    ("account", "DU\x001234567"), ("instrument_id", "STK:AAPL\x00:USD"), ("source", "s" * 129),
    ("account", "D" * 33),
])
def test_an_order_with_bad_text_is_rejected_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(OrderRejected) as rejected:
        check_order(an_order(**{field: value}), None, GuardPolicy(allowed_accounts=frozenset({"DU1234567"})))
    assert rejected.value.reason is RejectReason.INVALID_TEXT
    assert rejected.value.detail.startswith(f"{field} ")


def test_an_order_whose_order_id_cannot_be_a_key_is_refused_at_decoding() -> None:
    record = {"order_id": "o" * 600_000, "account": "DU1", "instrument_id": "X", "side": "BUY",
              "quantity": Decimal(1), "order_type": "MARKET", "created_at": NOW}
    with pytest.raises(InvalidText, match="order_id is 600000 characters long, more than 64"):
        order_requested_from_record(record)
    record["order_id"] = "abc\x00"
    with pytest.raises(InvalidText, match="order_id contains the control character U\\+0000"):
        order_requested_from_record(record)


@pytest.mark.parametrize(("field", "value"), [
    ("order_id", "\x00"), ("account", "a" * 33), ("reason", "r" * 513), ("reason", "stop\x07"),
    ("source", "\u2029"),
])
def test_a_cancel_with_bad_text_is_refused_at_decoding_naming_the_field(field: str, value: str) -> None:
    record: dict[str, object] = {"order_id": "0b8f8c5e-3a1c-4c59-9f4e-8d2f7e1b6a00", "account": "DU1",
                                 "requested_at": NOW, "reason": "tests", "source": "tests"}
    record[field] = value
    with pytest.raises(InvalidText, match=f"^{field} "):
        cancel_from_record(record)


def test_an_instrument_change_with_a_control_character_in_its_id_is_refused() -> None:
    with pytest.raises(InvalidText, match=r"^instrument_id contains"):
        instrument_id_from_record({"instrument_id": "STK:\x00"})
    assert instrument_id_from_record({"instrument_id": "STK:AAPL:USD"}) == "STK:AAPL:USD"


def test_a_rejection_repeats_the_orders_text_escaped_and_bounded() -> None:
    record = rejection_record(an_order(instrument_id="STK:\x00" + "x" * 500, account="DU\x1b"), "r" * 5000, NOW)
    assert record["instrument_id"].startswith("STK:\\x00xxx") and len(record["instrument_id"]) == 128
    assert record["account"] == "DU\\x1b"
    assert len(record["reason"]) == 1000


def test_an_id_may_not_hold_invisible_characters_but_free_text_may() -> None:
    zero_width = "AAPL\ufeff"
    found = text_problem("instrument_id", zero_width, 128)
    assert found is not None and found.text == "instrument_id contains the control character U+FEFF at position 4"
    assert text_problem("instrument_id", "A\u00a0B", 128) is not None  # a no-break space looks like a space
    assert text_problem("source", "desk \U0001f468\u200d\U0001f4bb", 128, free_text=True) is None


def test_a_rejection_repeats_an_order_id_the_rules_allow_exactly() -> None:
    record = rejection_record(an_order(order_id="not-a-uuid é"), "INVALID_ORDER_ID: …", NOW)
    assert record["order_id"] == "not-a-uuid é"
