"""Property tests: valid records round-trip; bad input fails with DecodeError and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers.adapters.avro import AvroCodec, DecodeError, DecodeFailure, SchemaCatalog, SchemaVersion
from workers.adapters.avro.canonical import PRIMITIVES

CATALOG = SchemaCatalog()
CODEC = AvroCodec(CATALOG)
RECORDS = [CATALOG.current(name).short_name for name in CATALOG.records()]
HISTORY = [version for version in CATALOG if version.label != "current"]

_LONG = (-(2**63), 2**63 - 1)
_INT = (-(2**31), 2**31 - 1)


def _timestamps() -> st.SearchStrategy[datetime]:
    # Any UTC instant Python can represent, plus moderate dates in other offsets (converted on the way).
    utc = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
    offsets = st.builds(
        timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
    )
    local = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets)
    return st.one_of(utc, local)


def _decimals(schema: Mapping[str, Any]) -> st.SearchStrategy[Decimal]:
    limit = 10 ** schema["precision"] - 1
    scale = schema.get("scale", 0)
    return st.integers(-limit, limit).map(lambda unscaled: Decimal(unscaled).scaleb(-scale))


def strategy_for(schema: Any, names: Mapping[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for ``schema`` (self-contained JSON schema); optional fields are sometimes left out."""
    if isinstance(schema, list):
        return st.one_of([strategy_for(branch, names) for branch in schema])
    if isinstance(schema, str):
        return _primitive(schema) if schema in PRIMITIVES else strategy_for(names[schema], names)
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "decimal":
        return _decimals(schema)
    if logical == "timestamp-micros":
        return _timestamps()
    if logical == "date":
        return st.dates()
    if kind in PRIMITIVES:
        return _primitive(kind)
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(strategy_for(schema["items"], names), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), strategy_for(schema["values"], names), max_size=4)
    if kind == "record":
        required = {f["name"]: strategy_for(f["type"], names) for f in schema["fields"] if "default" not in f}
        optional = {f["name"]: strategy_for(f["type"], names) for f in schema["fields"] if "default" in f}
        return st.fixed_dictionaries(required, optional=optional)
    raise AssertionError(f"no strategy for {schema!r}")


def _primitive(kind: str) -> st.SearchStrategy[Any]:
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(*_INT),
        "long": st.integers(*_LONG),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": st.text(),
        "bytes": st.binary(),
    }
    return strategies[kind]


def records_of(version: SchemaVersion) -> st.SearchStrategy[dict[str, Any]]:
    """Valid records for one schema version."""
    strategy: st.SearchStrategy[dict[str, Any]] = strategy_for(version.schema, version.names)
    return strategy


def with_defaults(version: SchemaVersion, record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` as the reader of ``version`` returns it: left-out fields hold their defaults."""
    return {f["name"]: record.get(f["name"], f.get("default")) for f in version.schema["fields"]}


def encodings() -> st.SearchStrategy[tuple[str, bytes]]:
    """(record short name, a valid single-object encoding of it)."""
    return st.sampled_from(RECORDS).flatmap(
        lambda name: records_of(CATALOG.current(name)).map(lambda value: (name, CODEC.encode(name, value)))
    )


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", RECORDS)
@PROPERTY
@given(data=st.data())
def test_any_valid_record_round_trips(name: str, data: st.DataObject) -> None:
    version = CATALOG.current(name)
    value = data.draw(records_of(version))
    decoded = CODEC.decode(CODEC.encode(name, value), name)
    assert decoded == with_defaults(version, value)
    for field in version.schema["fields"]:
        if isinstance(decoded[field["name"]], datetime):
            assert decoded[field["name"]].tzinfo == UTC


@pytest.mark.parametrize("version", HISTORY, ids=lambda v: f"{v.short_name}-{v.label}")
@PROPERTY
@given(data=st.data())
def test_records_written_with_every_history_version_decode_with_the_current_one(
    version: SchemaVersion, data: st.DataObject
) -> None:
    current = CATALOG.current(version.fullname)
    value = data.draw(records_of(version))
    decoded = CODEC.decode(CODEC.encode(version.fullname, value, writer=version), version.fullname)
    assert set(decoded) == {f["name"] for f in current.schema["fields"]}
    old = with_defaults(version, value)
    assert {k: v for k, v in decoded.items() if k in old} == old


@PROPERTY
@given(data=st.binary(max_size=300), expected=st.sampled_from(RECORDS))
def test_random_bytes_raise_decode_error(data: bytes, expected: str) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(data, expected)


@PROPERTY
@given(body=st.binary(max_size=300), name=st.sampled_from(RECORDS))
def test_a_random_body_behind_a_valid_header_decodes_or_raises_decode_error(body: bytes, name: str) -> None:
    header = b"\xc3\x01" + CATALOG.current(name).fingerprint
    try:
        decoded = CODEC.decode(header + body, name)
    except DecodeError as error:
        assert error.reason
    else:
        assert set(decoded) == {f["name"] for f in CATALOG.current(name).schema["fields"]}


@PROPERTY
@given(encoded=encodings(), data=st.data())
def test_every_truncation_raises_decode_error(encoded: tuple[str, bytes], data: st.DataObject) -> None:
    name, full = encoded
    cut = data.draw(st.integers(0, len(full) - 1))
    with pytest.raises(DecodeError) as caught:
        CODEC.decode(full[:cut], name)
    assert caught.value.kind is DecodeFailure.TRUNCATED


@PROPERTY
@given(encoded=encodings(), position=st.integers(0, 10_000), flip=st.integers(1, 255))
def test_a_corrupted_byte_decodes_or_raises_decode_error(
    encoded: tuple[str, bytes], position: int, flip: int
) -> None:
    name, full = encoded
    position %= len(full)
    corrupted = full[:position] + bytes([full[position] ^ flip]) + full[position + 1 :]
    try:
        CODEC.decode(corrupted, name)
    except DecodeError as error:
        assert error.reason
    else:
        # Flipping a byte of a string's text or a number's value may still be a valid record.
        assert position >= 10


@PROPERTY
@given(encoded=encodings(), expected=st.sampled_from(RECORDS))
def test_a_record_of_another_type_raises_decode_error(encoded: tuple[str, bytes], expected: str) -> None:
    name, data = encoded
    if name == expected:
        assert CODEC.decode(data, expected)
    else:
        with pytest.raises(DecodeError, match="expected"):
            CODEC.decode(data, expected)
