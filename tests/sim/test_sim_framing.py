"""Frame encoding/decoding and field parsing (pure)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibkr_sim.framing import (
    MAX_FRAME_LENGTH,
    FieldError,
    FrameReader,
    FrameTooLarge,
    encode_frame,
    fmt_float,
    fmt_qty,
    parse_bool,
    parse_decimal_qty,
    parse_float,
    parse_int,
    parse_version_range,
)

field_text = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))
frames_strategy = st.lists(st.lists(field_text, min_size=1, max_size=12), min_size=1, max_size=8)


@given(frames_strategy, st.data())
def test_frames_survive_any_chunking(frames: list[list[str]], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FrameReader()
    decoded: list[list[str]] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        decoded += reader.feed(stream[start:cut])
        start = cut
    assert decoded == frames
    assert reader.pending == 0


def test_frame_is_length_prefixed_and_nul_terminated() -> None:
    assert encode_frame(("49", "1")) == struct.pack(">I", 5) + b"49\x001\x00"


def test_oversized_frame_is_refused() -> None:
    with pytest.raises(FrameTooLarge):
        FrameReader().feed(struct.pack(">I", MAX_FRAME_LENGTH + 1))


def test_invalid_utf8_does_not_raise() -> None:
    body = b"\xff\xfe\x00"
    (fields,) = FrameReader().feed(struct.pack(">I", len(body)) + body)
    assert len(fields) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("7", 7), ("7.0", 7), ("-1", -1), ("2147483647", 0), ("1.7976931348623157e+308", 0)],
)
def test_parse_int_accepts_every_client_form(text: str, expected: int) -> None:
    assert parse_int(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", None), ("1.7976931348623157e+308", None), ("1.7976931348623157E308", None), ("100", 100.0),
     ("100.0", 100.0), ("0.25", 0.25), ("Infinite", None), ("nan", None)],
)
def test_parse_float_accepts_every_client_form(text: str, expected: float | None) -> None:
    assert parse_float(text) == expected


def test_quantities_and_booleans() -> None:
    assert parse_decimal_qty("100") == parse_decimal_qty("100.0") == 100.0
    assert parse_decimal_qty("") == 0.0
    assert parse_bool("1") is True
    assert parse_bool("0") is False
    assert parse_bool("") is False
    assert parse_bool("true") is True
    with pytest.raises(FieldError):
        parse_bool("maybe")
    with pytest.raises(FieldError):
        parse_int("seven")
    with pytest.raises(FieldError):
        parse_int("7.5")


@pytest.mark.parametrize(
    ("offer", "expected"),
    [("v157..176", (157, 176)), ("v100..157 +PACEAPI", (100, 157)), ("v157", (157, 157)), ("x157", None),
     ("v176..157", None), ("v..", None), ("", None)],
)
def test_version_offer(offer: str, expected: tuple[int, int] | None) -> None:
    assert parse_version_range(offer) == expected


def test_number_formats() -> None:
    assert fmt_float(231.4) == "231.4"
    assert fmt_float(100.0) == "100.0"
    assert fmt_float(0.00005) == "5e-05"
    assert fmt_float(None) == ""
    assert fmt_qty(100.0) == "100"
    assert fmt_qty(0.5) == "0.5"
