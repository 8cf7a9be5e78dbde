"""The person-facing commands' pure parts: argument parsing, topic names, record lines, demo samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import ORDER_STATUS_CHANGED
from workers.cli import build_parser
from workers.client import OrderStatusChanged
from workers.domain.instruments import Instrument
from workers.entrypoints.demo_board import Board
from workers.entrypoints.demo_orders import TEMPLATES, on_tick, sample_orders
from workers.entrypoints.tail import UnknownTopic, describe_record, jsonable, readable_line, resolve_topic
from workers.settings import TopicNames

NOW = datetime(2026, 11, 2, 15, 30, tzinfo=UTC)


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def test_submit_arguments_are_parsed_into_decimals_and_upper_case_choices() -> None:
    args = build_parser().parse_args(["submit", "--account", "DU0000001", "--instrument", "STK:AAPL:USD",
                                      "--side", "buy", "--qty", "10", "--type", "limit", "--limit", "187.25",
                                      "--wait", "--timeout", "5"])
    assert (args.side, args.type, args.tif) == ("BUY", "LIMIT", "DAY")
    assert args.qty == Decimal(10) and args.limit == Decimal("187.25") and args.stop is None
    assert args.wait and args.timeout == 5.0 and not args.outside_rth


def test_submit_takes_the_order_types_trailing_fields_gtd_and_algo_of_orderrequested_v4() -> None:
    args = build_parser().parse_args(["submit", "--account", "A", "--instrument", "I", "--side", "sell", "--qty", "5",
                                      "--order-type", "trailing_stop_limit", "--trailing-percent", "1.5",
                                      "--limit-offset", "0.10", "--tif", "gtd", "--good-till", "2026-12-08T21:00Z",
                                      "--algo", "adaptive", "--algo-priority", "urgent"])
    assert (args.type, args.tif, args.algo, args.algo_priority) == ("TRAILING_STOP_LIMIT", "GTD", "ADAPTIVE", "URGENT")
    assert (args.trailing_percent, args.limit_offset, args.trailing_amount) == (Decimal("1.5"), Decimal("0.10"), None)
    assert args.good_till == datetime(2026, 12, 8, 21, tzinfo=UTC)


def test_submit_takes_a_bracket_and_an_oca_group_and_modify_takes_the_terms_it_changes() -> None:
    bracket = build_parser().parse_args(["submit", "--account", "A", "--instrument", "I", "--side", "buy", "--qty", "5",
                                         "--take-profit", "190.5", "--stop-loss", "180", "--oca-group", "g"])
    assert (bracket.take_profit, bracket.stop_loss, bracket.oca_group) == (Decimal("190.5"), Decimal(180), "g")
    modify = build_parser().parse_args(["modify", "some-id", "--account", "A", "--limit", "187.5", "--tif", "gtc",
                                        "--wait"])
    assert (modify.order_id, modify.limit, modify.qty, modify.stop, modify.tif) == (
        "some-id", Decimal("187.5"), None, None, "GTC")
    assert modify.wait and modify.timeout == 30.0


@pytest.mark.parametrize("argv", [
    ["modify", "some-id", "--account", "A", "--tif", "IOC"],
    ["modify", "some-id", "--limit", "1"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "BUY", "--qty", "1", "--good-till", "2026-12-08 21:00"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "BUY", "--qty", "1", "--good-till", "tomorrow"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "BUY", "--qty", "1", "--algo", "VWAP"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "BUY", "--qty", "1", "--order-type", "PEG"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "BUY", "--qty", "ten"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "HOLD", "--qty", "1"],
    ["submit", "--account", "A", "--instrument", "I", "--side", "BUY", "--qty", "1", "--timeout", "0"],
    ["cancel", "some-id"],
    ["tail", "orders.status", "--max", "x"],
])
def test_bad_arguments_exit_two(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def test_a_topic_is_found_by_contract_name_configured_name_or_field() -> None:
    topics = TopicNames(orders_status="team-a.orders.status")
    assert resolve_topic("orders.status", topics) == ("team-a.orders.status", "orders_status")
    assert resolve_topic("team-a.orders.status", topics) == ("team-a.orders.status", "orders_status")
    assert resolve_topic("orders_requested_dlq", topics) == ("orders.requested.dlq", "orders_requested_dlq")
    with pytest.raises(UnknownTopic, match=r"orders\.requested\.dlq"):
        resolve_topic("orders", topics)


def test_a_status_record_becomes_a_readable_line_and_json() -> None:
    codec = AvroCodec()
    value = codec.encode(ORDER_STATUS_CHANGED, {
        "order_id": "o-1", "account": "DU0000001", "instrument_id": "STK:AAPL:USD", "status": "FILLED",
        "filled_quantity": Decimal(10), "remaining_quantity": Decimal(0), "avg_fill_price": Decimal("187.25"),
        "event_time": NOW})
    shown = describe_record(FakeRecord("orders.status", 2, 15, 1_700_000_000_000, b"o-1", value), codec,
                            ORDER_STATUS_CHANGED)
    line = readable_line(shown)
    assert line.startswith("2023-11-14T22:13:20.000+00:00 orders.status[2]@15 key=o-1  order_id=o-1")
    assert "status=FILLED" in line and "filled_quantity=10 " in line and "avg_fill_price=187.25" in line
    assert "reason=" not in line  # nulls are left out
    parsed = json.loads(json.dumps(jsonable(shown)))
    assert parsed["value"]["event_time"] == NOW.isoformat()
    assert OrderStatusChanged.from_record(shown["value"]).status.value == "FILLED"


def test_a_dead_letter_is_shown_with_its_headers_and_bytes() -> None:
    headers = (("error.reason", b"GARBAGE: not single-object encoded"), ("error.stage", b"decode"),
               ("source.topic", b"orders.requested"), ("source.partition", b"1"), ("source.offset", b"42"))
    shown = describe_record(FakeRecord("orders.requested.dlq", 0, 3, 0, b"k", b"\x01\x02junk", headers),
                            AvroCodec(), None)
    assert shown["headers"]["source.offset"] == "42" and shown["value_hex"] == "01026a756e6b"
    line = readable_line(shown)
    assert "bytes=6 hex=01026a756e6b" in line
    assert "[error.stage=decode]" in line and "[source.topic=orders.requested]" in line


def test_an_undecodable_record_on_a_decoded_topic_says_why() -> None:
    shown = describe_record(FakeRecord("orders.status", 0, 0, 0, None, b"nope"), AvroCodec(),
                            ORDER_STATUS_CHANGED)
    assert shown["error"].startswith("undecodable")
    assert "error=undecodable" in readable_line(shown)


def row(instrument_id: str, con_id: int, sec_type: str, tick: str) -> Instrument:
    return Instrument(instrument_id=instrument_id, con_id=con_id, symbol=instrument_id.split(":")[1],
                      sec_type=sec_type, exchange="SMART", currency="USD", min_tick=Decimal(tick))


INSTRUMENTS = {"AAPL": row("STK:AAPL:USD", 1, "STK", "0.01"), "MSFT": row("STK:MSFT:USD", 2, "STK", "0.01"),
               "NVDA": row("STK:NVDA:USD", 3, "STK", "0.01"), "AMZN": row("STK:AMZN:USD", 4, "STK", "0.01"),
               "EURUSD": row("CASH:EUR.USD", 5, "CASH", "0.00005"), "ES": row("FUT:ES:202612", 6, "FUT", "0.25"),
               "SPY_OPT": row("OPT:SPY:20261218:600:C", 7, "OPT", "0.01")}


def test_prices_are_put_on_the_tick_grid_away_from_the_market() -> None:
    assert on_tick(231.4, 1.005, Decimal("0.01")) == Decimal("232.56")
    assert on_tick(231.4, 0.97, Decimal("0.01")) == Decimal("224.45")
    assert on_tick(6050.0, 0.97, Decimal("0.25")) == Decimal("5868.5")
    assert on_tick(1.085, 0.995, Decimal("0.00005")) == Decimal("1.07955")


def test_samples_cover_every_type_side_tif_and_sec_type_with_a_few_invalid_ones() -> None:
    samples = sample_orders(2 * len(TEMPLATES), INSTRUMENTS, lambda r: 100.0 + r.con_id, "DU0000001", {"DU0000001"})
    assert len(samples) == 2 * len(TEMPLATES)
    fields = [s.fields for s in samples]
    assert {f["order_type"] for f in fields} == {
        "MARKET", "LIMIT", "STOP", "STOP_LIMIT", "TRAILING_STOP", "TRAILING_STOP_LIMIT", "MARKET_ON_CLOSE",
        "LIMIT_ON_CLOSE", "MARKET_IF_TOUCHED", "LIMIT_IF_TOUCHED"}
    assert {f["side"] for f in fields} == {"BUY", "SELL"}
    assert {f["tif"] for f in fields} == {"DAY", "GTC", "IOC", "FOK", "OPG", "GTD"}
    assert all(f.get("good_till") is not None for f in fields if f["tif"] == "GTD")
    brackets = [f for f in fields if f.get("take_profit_price") is not None]
    assert brackets and all(f["stop_loss_price"] < f["take_profit_price"] for f in brackets)
    assert sum(1 for f in fields if f.get("oca_group") == "demo-oco") >= 2
    assert any(f.get("algo") == "ADAPTIVE" for f in fields)
    assert any(s.modify for s in samples)
    assert {f["instrument_id"].split(":")[0] for f in fields if f["instrument_id"] != "STK:NOPE:USD"} == {
        "STK", "CASH", "FUT", "OPT"}
    invalid = [s for s in samples if not s.valid]
    assert len(invalid) == 2 * sum(1 for t in TEMPLATES if t.invalid)
    assert {s.fields["account"] for s in invalid} == {"DU0000001", "DU0009999"}
    assert any(s.fields["instrument_id"] == "STK:NOPE:USD" for s in invalid)
    off_tick = next(s for s in invalid if "off-tick" in s.label)
    assert off_tick.fields["limit_price"] % Decimal("0.01") != 0
    for sample in samples:
        if sample.valid and sample.fields.get("limit_price") is not None:
            tick = INSTRUMENTS[next(k for k, v in INSTRUMENTS.items()
                                    if v.instrument_id == sample.fields["instrument_id"])].min_tick
            assert sample.fields["limit_price"] % tick == 0


def test_samples_skip_missing_instruments_and_go_market_without_a_price() -> None:
    only_stocks = {k: v for k, v in INSTRUMENTS.items() if k in ("AAPL", "MSFT", "NVDA", "AMZN")}
    samples = sample_orders(2 * len(TEMPLATES), only_stocks, lambda r: None, "DU0000001", {"DU0000001"})
    assert all(s.fields["instrument_id"].startswith("STK:") for s in samples)
    # Without a price, only the types that need none keep their type; every price-based term is left out.
    assert {s.fields["order_type"] for s in samples} == {"MARKET", "TRAILING_STOP", "MARKET_ON_CLOSE"}
    for name in ("limit_price", "stop_price", "take_profit_price", "stop_loss_price", "limit_offset", "good_till"):
        assert all(s.fields.get(name) is None for s in samples), name
    assert "GTD" not in {s.fields["tif"] for s in samples}


def test_the_board_counts_final_orders_for_the_summary_line() -> None:
    board = Board(headless=False, log_file=None)
    samples = sample_orders(3, INSTRUMENTS, lambda r: 100.0, "DU0000001", {"DU0000001"})
    board.start(4, 10, "sim", {"DU0000001"})
    for number, sample in enumerate(samples):
        board.add(f"o-{number}", sample)

    def changed(order_id: str, state: str, filled: str) -> Any:
        return OrderStatusChanged.from_record({
            "order_id": order_id, "account": "DU0000001", "instrument_id": "STK:AAPL:USD", "status": state,
            "filled_quantity": Decimal(filled), "remaining_quantity": Decimal(0), "event_time": NOW})

    board.on_event(changed("o-0", "FILLED", "10"))
    board.on_event(changed("o-1", "REJECTED", "0"))
    assert board.open_orders() == ["o-2"] and not board.all_final() and not board.fills_complete()
    line = board.summary(1.0).line()
    assert line.startswith("demo: 4 orders, 2 final (1 FILLED, 0 CANCELLED, 1 REJECTED), 2 not final; "
                           "invalid 0/0 rejected, valid 1 rejected; 0 fills")
    assert "o-2"[:8] in board.frame(clear=False)
