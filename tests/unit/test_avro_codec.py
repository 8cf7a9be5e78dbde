"""Single-object encoding of the seven event records: round trips, exact values, and typed failures."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from workers.adapters.avro import (
    DEFAULT_SCHEMA_DIR,
    AvroCodec,
    DecodeError,
    DecodeFailure,
    EncodeError,
    SchemaCatalog,
    UnknownRecordError,
)
from workers.adapters.avro.single_object import HEADER_SIZE
from workers.adapters.kafka.records import ORDER_REQUESTED
from workers.domain.orders import OrderType, Side

AT = datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=UTC)

AT_LATER = AT + timedelta(hours=6)

SAMPLES: dict[str, dict[str, Any]] = {
    "OrderRequested": {
        "order_id": "6f1c2b1e-8c1a-4c55-9d5e-0d7f0a9d2b11",
        "account": "DU1234567",
        "instrument_id": "AAPL.US",
        "side": "BUY",
        "quantity": Decimal("100"),
        "order_type": "LIMIT",
        "limit_price": Decimal("187.25"),
        "stop_price": None,
        "time_in_force": "GTC",
        "outside_rth": True,
        "created_at": AT,
        "source": "strategy-7",
        "expires_at": AT_LATER,
        "trailing_amount": Decimal("0.5"),
        "trailing_percent": None,
        "limit_offset": Decimal("0.05"),
        "good_till": AT_LATER,
        "algo": "ADAPTIVE",
        "algo_priority": "PATIENT",
        "take_profit_price": Decimal("190"),
        "stop_loss_price": Decimal("180.5"),
        "oca_group": "pair-1",
    },
    "OrderCancelRequested": {
        "order_id": "6f1c2b1e-8c1a-4c55-9d5e-0d7f0a9d2b11",
        "account": "DU1234567",
        "requested_at": AT,
        "reason": "strategy stopped",
        "source": None,
    },
    "OrderModifyRequested": {
        "modify_id": "0b7e4c52-4f0e-4d3c-9a55-1f3e2d6c7b80",
        "order_id": "6f1c2b1e-8c1a-4c55-9d5e-0d7f0a9d2b11",
        "account": "DU1234567",
        "quantity": Decimal("150"),
        "limit_price": Decimal("187.50"),
        "stop_price": None,
        "time_in_force": "GTC",
        "requested_at": AT,
        "source": "strategy-7",
        "trailing_amount": None,
        "trailing_percent": None,
        "limit_offset": None,
    },
    "OrderStatusChanged": {
        "order_id": "6f1c2b1e-8c1a-4c55-9d5e-0d7f0a9d2b11",
        "account": "DU1234567",
        "instrument_id": "AAPL.US",
        "status": "REJECTED",
        "ib_order_id": 42,
        "ib_perm_id": 1_987_654_321_012,
        "filled_quantity": Decimal("0"),
        "remaining_quantity": Decimal("100"),
        "avg_fill_price": None,
        "reason": "IBKR 201: Order rejected - reason: insufficient margin",
        "event_time": AT,
        "ib_error_code": 201,
        "previous_status": "SUBMITTED",
        "quantity": Decimal("100"),
        "limit_price": Decimal("187.25"),
        "stop_price": None,
        "time_in_force": "GTC",
        "modify_id": None,
        "parent_order_id": None,
    },
    "FillExecuted": {
        "fill_id": "0000e0d5.65e1c2a4.01.01",
        "order_id": "6f1c2b1e-8c1a-4c55-9d5e-0d7f0a9d2b11",
        "account": "DU1234567",
        "instrument_id": "AAPL.US",
        "con_id": 265598,
        "side": "SELL",
        "quantity": Decimal("0.00000001"),
        "price": Decimal("-999999999999.99999999"),
        "currency": "USD",
        "exchange": "ISLAND",
        "executed_at": AT,
        "commission": Decimal("1.00012345"),
        "commission_currency": "USD",
        "ib_order_id": 42,
        "ib_perm_id": 1_987_654_321_012,
        "cumulative_quantity": Decimal("999999999999.99999999"),
        "avg_price": Decimal("187.24999999"),
        "corrects_fill_id": "0000e0d5.65e1c2a4.01.00",
    },
    "PositionUpdated": {
        "account": "DU1234567",
        "con_id": 265598,
        "instrument_id": None,
        "quantity": Decimal("-25"),
        "avg_cost": Decimal("150.12345678"),
        "currency": "USD",
        "as_of": AT,
        "avg_price": Decimal("150.12345678"),
    },
    "InstrumentUpdated": {
        "instrument_id": "ESZ4",
        "con_id": 495512563,
        "symbol": "ES",
        "sec_type": "FUT",
        "exchange": "CME",
        "primary_exchange": "",
        "currency": "USD",
        "local_symbol": "ESZ4",
        "trading_class": "ES",
        "multiplier": Decimal("50"),
        "min_tick": Decimal("0.25"),
        "last_trade_date": date(2024, 12, 20),
        "active": True,
        "change": "UPDATED",
        "updated_at": AT,
        "long_name": "E-mini S&P 500 — Dec '24",
        "changed_fields": ["min_tick", "local_symbol"],
    },
    "WorkerHealth": {
        "worker": "order-consumer",
        "instance_id": "pod-7:1234",
        "status": "DEGRADED",
        "ibkr_connected": False,
        "kafka_connected": True,
        "database_connected": True,
        "consumer_lag": 17,
        "orders_in_flight": 3,
        "last_error": "IBKR 1100: connectivity lost",
        "version": "0.1.0",
        "emitted_at": AT,
        "ibkr_rtt_ms": 12.5,
        "trading_state": "REDUCING",
    },
}


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec()


def test_every_contract_record_has_a_schema_and_a_sample() -> None:
    assert SchemaCatalog().records() == sorted(f"prometheus.execution.{name}" for name in SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_record_round_trips_through_single_object_encoding(codec: AvroCodec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.catalog.current(name).fingerprint
    assert codec.decode(data, name) == SAMPLES[name]


def test_fullnames_and_short_names_are_the_same_record(codec: AvroCodec) -> None:
    sample = SAMPLES["OrderCancelRequested"]
    data = codec.encode("prometheus.execution.OrderCancelRequested", sample)
    assert data == codec.encode("OrderCancelRequested", sample)
    assert codec.decode(data, "prometheus.execution.OrderCancelRequested") == sample


def test_decimals_come_back_exactly_with_scale_8(codec: AvroCodec) -> None:
    decoded = codec.decode(codec.encode("FillExecuted", SAMPLES["FillExecuted"]), "FillExecuted")
    assert decoded["quantity"].as_tuple() == Decimal("0.00000001").as_tuple()
    assert str(decoded["price"]) == "-999999999999.99999999"
    assert str(decoded["avg_price"]) == "187.24999999"
    assert decoded["commission"].as_tuple().exponent == -8


def test_timestamps_come_back_utc_aware_and_to_the_microsecond(codec: AvroCodec) -> None:
    paris = timezone(timedelta(hours=1))
    sample = {**SAMPLES["OrderCancelRequested"], "requested_at": AT.astimezone(paris)}
    decoded = codec.decode(codec.encode("OrderCancelRequested", sample), "OrderCancelRequested")
    assert decoded["requested_at"] == AT
    assert decoded["requested_at"].tzinfo == UTC
    assert decoded["requested_at"].microsecond == 123456


def test_missing_fields_with_defaults_take_the_default(codec: AvroCodec) -> None:
    minimal = {k: v for k, v in SAMPLES["OrderRequested"].items() if k in _required("OrderRequested")}
    decoded = codec.decode(codec.encode("OrderRequested", minimal), "OrderRequested")
    assert decoded["time_in_force"] == "DAY"
    assert decoded["outside_rth"] is False
    assert decoded["source"] is None
    assert decoded["stop_price"] is None


def test_domain_enums_are_accepted_as_their_values(codec: AvroCodec) -> None:
    sample = {
        **SAMPLES["OrderRequested"],
        "side": Side.SELL,
        "order_type": OrderType.MARKET,
        "limit_price": None,
    }
    assert codec.decode(codec.encode("OrderRequested", sample), "OrderRequested")["side"] == "SELL"


def _required(name: str) -> set[str]:
    fields = AvroCodec().catalog.current(name).schema["fields"]
    return {f["name"] for f in fields if "default" not in f}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", Decimal("0.000000001"), "more than 8 decimal places"),
        ("quantity", Decimal("1000000000000"), "exceeds decimal"),
        ("quantity", Decimal("999999999999.999999995"), "more than 8 decimal places"),
        ("quantity", Decimal("NaN"), "not a finite"),
        ("quantity", 1.5, "expected a Decimal"),
        ("created_at", datetime(2024, 1, 1, 12, 0), "naive datetime"),
        ("created_at", "2024-01-01T00:00:00Z", "expected a datetime"),
        ("side", "HOLD", "not one of"),
        ("outside_rth", 1, "expected a bool"),
        ("account", None, "expected a str"),
        ("source", 7, "expected a str"),
        ("sorce", "typo", "unknown fields"),
    ],
)
def test_values_that_do_not_fit_raise_encode_error(
    codec: AvroCodec, field: str, value: Any, message: str
) -> None:
    with pytest.raises(EncodeError, match=message):
        codec.encode("OrderRequested", {**SAMPLES["OrderRequested"], field: value})


def test_a_missing_required_field_raises_encode_error(codec: AvroCodec) -> None:
    sample = {k: v for k, v in SAMPLES["OrderRequested"].items() if k != "account"}
    with pytest.raises(EncodeError, match=r"OrderRequested\.account: missing"):
        codec.encode("OrderRequested", sample)


def test_an_int_outside_its_avro_range_raises_encode_error(codec: AvroCodec) -> None:
    with pytest.raises(EncodeError, match="does not fit an Avro int"):
        codec.encode("WorkerHealth", {**SAMPLES["WorkerHealth"], "orders_in_flight": 2**31})


def test_an_unknown_record_name_is_a_lookup_error(codec: AvroCodec) -> None:
    with pytest.raises(UnknownRecordError):
        codec.encode("OrderTeleported", {})
    with pytest.raises(UnknownRecordError):
        codec.decode(b"", "OrderTeleported")


def _failure(codec: AvroCodec, data: bytes | None, expected: str = "OrderRequested") -> DecodeFailure:
    with pytest.raises(DecodeError) as caught:
        codec.decode(data, expected)
    assert caught.value.reason
    return caught.value.kind


def test_a_record_of_another_type_is_a_wrong_record_decode_error(codec: AvroCodec) -> None:
    data = codec.encode("OrderCancelRequested", SAMPLES["OrderCancelRequested"])
    assert _failure(codec, data, "OrderRequested") is DecodeFailure.WRONG_RECORD


def test_an_unknown_fingerprint_is_an_unknown_schema_decode_error(codec: AvroCodec) -> None:
    data = codec.encode("OrderRequested", SAMPLES["OrderRequested"])
    assert _failure(codec, data[:2] + bytes(8) + data[10:]) is DecodeFailure.UNKNOWN_SCHEMA


@pytest.mark.parametrize("data", [b"", b"\xc3", b"\xc3\x01\x00\x01"])
def test_input_shorter_than_the_header_is_truncated(codec: AvroCodec, data: bytes) -> None:
    assert _failure(codec, data) is DecodeFailure.TRUNCATED


@pytest.mark.parametrize("data", [b"{}", b"\x00\x00\x00\x00\x01hello", b"\xc3\x02" + bytes(20)])
def test_input_without_the_marker_is_garbage(codec: AvroCodec, data: bytes) -> None:
    assert _failure(codec, data) is DecodeFailure.GARBAGE


def test_a_cut_body_is_truncated(codec: AvroCodec) -> None:
    data = codec.encode("OrderRequested", SAMPLES["OrderRequested"])
    assert _failure(codec, data[:-1]) is DecodeFailure.TRUNCATED


def test_bytes_after_the_record_are_rejected(codec: AvroCodec) -> None:
    data = codec.encode("OrderRequested", SAMPLES["OrderRequested"])
    assert _failure(codec, data + b"\x00") is DecodeFailure.TRAILING_BYTES


def test_an_enum_index_out_of_range_is_a_malformed_body(codec: AvroCodec) -> None:
    # WorkerHealth.status comes right after two strings; index 9 (zigzag 18) names no symbol.
    header = codec.encode("WorkerHealth", SAMPLES["WorkerHealth"])[:10]
    body = b"\x02a" + b"\x02b" + bytes([18]) + b"\x00" * 20
    assert _failure(codec, header + body, "WorkerHealth") is DecodeFailure.MALFORMED_BODY


def test_a_decimal_beyond_its_precision_is_not_silently_rounded(codec: AvroCodec) -> None:
    # A foreign producer may write more digits than decimal(20, 8) allows; fastavro would round them.
    sample = SAMPLES["PositionUpdated"]
    data = codec.encode("PositionUpdated", sample)
    quantity = (-25 * 10**8).to_bytes(5, "big", signed=True)
    huge = (10**25 + 1).to_bytes(11, "big", signed=True)
    assert quantity in data
    tampered = data.replace(bytes([len(quantity) * 2]) + quantity, bytes([len(huge) * 2]) + huge)
    assert _failure(codec, tampered, "PositionUpdated") is DecodeFailure.MALFORMED_BODY


def _catalog_with_old_order_requested(tmp_path: Path) -> SchemaCatalog:
    """The real schemas plus a test-only history version of OrderRequested without ``source``."""
    root = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMA_DIR, root, ignore=shutil.ignore_patterns("history"))
    old = json.loads((root / "order_requested.avsc").read_text())
    old["fields"] = [f for f in old["fields"] if f["name"] != "source"]
    (root / "history" / "v0").mkdir(parents=True)
    (root / "history" / "v0" / "order_requested.avsc").write_text(json.dumps(old))
    return SchemaCatalog(root)


def test_a_record_written_with_an_old_version_decodes_with_the_current_default(tmp_path: Path) -> None:
    catalog = _catalog_with_old_order_requested(tmp_path)
    codec = AvroCodec(catalog)
    (old,) = catalog.history("OrderRequested")
    assert old.fingerprint != catalog.current("OrderRequested").fingerprint
    value = {k: v for k, v in SAMPLES["OrderRequested"].items() if k != "source"}
    data = codec.encode("OrderRequested", value, writer=old)
    assert data[2:10] == old.fingerprint
    assert codec.decode(data, "OrderRequested") == {**value, "source": None}


def test_the_old_version_refuses_the_field_it_does_not_have(tmp_path: Path) -> None:
    catalog = _catalog_with_old_order_requested(tmp_path)
    (old,) = catalog.history("OrderRequested")
    with pytest.raises(EncodeError, match="unknown fields"):
        AvroCodec(catalog).encode("OrderRequested", SAMPLES["OrderRequested"], writer=old)


def test_a_missing_value_is_a_decode_error(codec: AvroCodec) -> None:
    # Compacted topics carry tombstones: a record with no value at all.
    assert _failure(codec, None, "PositionUpdated") is DecodeFailure.TRUNCATED


def test_a_pinned_writer_must_be_of_the_record_being_encoded(codec: AvroCodec) -> None:
    other = codec.catalog.current("WorkerHealth")
    with pytest.raises(EncodeError, match=r"writer schema is prometheus\.execution\.WorkerHealth"):
        codec.encode("OrderRequested", SAMPLES["OrderRequested"], writer=other)


def test_a_huge_decimal_is_refused_before_it_is_converted_naming_the_field() -> None:
    codec = AvroCodec()
    good = codec.encode(ORDER_REQUESTED, {
        "order_id": "o", "account": "a", "instrument_id": "i", "side": "BUY", "quantity": Decimal(1),
        "order_type": "MARKET", "created_at": datetime(2026, 1, 1, tzinfo=UTC)})
    # The body: order_id, account, instrument_id (each a length 1 and a character), the side, then the
    # quantity's bytes: its length (zigzag varint) and its value. Replace the value with 1 MiB.
    head = good[: HEADER_SIZE + 7]
    quantity_length = good[HEADER_SIZE + 7]
    rest = good[HEADER_SIZE + 8 + quantity_length // 2:]
    size = 1024 * 1024
    varint = bytearray()
    n = size * 2
    while n >= 0x80:
        varint.append((n & 0x7F) | 0x80)
        n >>= 7
    varint.append(n)
    hostile = head + bytes(varint) + b"\x7f" + b"\xff" * (size - 1) + rest
    started = time.perf_counter()
    with pytest.raises(DecodeError, match=r"OrderRequested\.quantity: decimal of 1048576 bytes"):
        codec.decode(hostile, ORDER_REQUESTED)
    assert time.perf_counter() - started < 0.05
    assert codec.decode(good, ORDER_REQUESTED)["quantity"] == Decimal("1.00000000")


V4_FIELDS = ("trailing_amount", "trailing_percent", "limit_offset", "good_till", "algo", "algo_priority",
             "take_profit_price", "stop_loss_price", "oca_group")


@pytest.mark.parametrize("label", ["v1", "v2", "v3"])
def test_an_order_requested_written_with_an_old_version_decodes_as_v4_without_the_new_terms(
        codec: AvroCodec, label: str) -> None:
    (old,) = [v for v in codec.catalog.history("OrderRequested") if v.label == label]
    old_fields = {f["name"] for f in old.schema["fields"]}
    value = {k: v for k, v in SAMPLES["OrderRequested"].items() if k in old_fields}
    decoded = codec.decode(codec.encode("OrderRequested", value, writer=old), "OrderRequested")
    assert {k: decoded[k] for k in value} == value
    assert {name: decoded[name] for name in V4_FIELDS} == dict.fromkeys(V4_FIELDS)


@pytest.mark.parametrize("order_type", ["TRAILING_STOP", "TRAILING_STOP_LIMIT", "MARKET_ON_CLOSE", "LIMIT_ON_CLOSE",
                                        "MARKET_IF_TOUCHED", "LIMIT_IF_TOUCHED"])
def test_each_new_order_type_round_trips_in_v4(codec: AvroCodec, order_type: str) -> None:
    value = {**SAMPLES["OrderRequested"], "order_type": order_type, "time_in_force": "GTD"}
    assert codec.decode(codec.encode("OrderRequested", value), "OrderRequested") == value


def test_a_worker_on_v3_does_not_read_a_v4_order_as_another_order(tmp_path: Path) -> None:
    # The enums have no reader default on purpose: a worker that does not know TRAILING_STOP must not read it
    # as a symbol it knows. Without the v4 schema the record is undecodable (dead-lettered), not misread.
    root = tmp_path / "schemas"
    shutil.copytree(DEFAULT_SCHEMA_DIR, root, ignore=shutil.ignore_patterns("history"))
    shutil.copy(DEFAULT_SCHEMA_DIR / "history" / "v3" / "order_requested.avsc", root / "order_requested.avsc")
    old_worker = AvroCodec(SchemaCatalog(root))
    value = {**SAMPLES["OrderRequested"], "order_type": "TRAILING_STOP"}
    assert _failure(old_worker, AvroCodec().encode("OrderRequested", value)) is DecodeFailure.UNKNOWN_SCHEMA
