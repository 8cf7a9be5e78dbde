"""Check a record against its schema before encoding, so nothing is silently rounded or guessed.

fastavro takes a naive datetime as local time, and its decimal precision check counts only the
digits written (``Decimal("1E+30")`` passes); either would put a value on the wire other than the one
meant, so this module refuses such values with an :class:`EncodeError` that names the field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from workers.adapters.avro.canonical import PRIMITIVES, Schema
from workers.adapters.avro.errors import EncodeError

_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TIMESTAMPS = frozenset({"timestamp-millis", "timestamp-micros"})


def prepare_record(schema: Schema, names: Mapping[str, Mapping[str, Any]], value: Any) -> dict[str, Any]:
    """``value`` checked against the self-contained record ``schema``, defaults filled, ready for fastavro."""
    prepared = _Preparer(names).prepare(schema, value, schema["name"])
    assert isinstance(prepared, dict)  # a record schema always yields a dict
    return prepared


class _Preparer:
    def __init__(self, names: Mapping[str, Mapping[str, Any]]) -> None:
        self.names = names

    def prepare(self, schema: Schema, value: Any, path: str) -> Any:
        if isinstance(schema, list):
            return self._union(schema, value, path)
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return _primitive(schema, value, path)
            return self.prepare(self.names[schema], value, path)
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "decimal" and kind == "bytes":
            return _decimal(schema, value, path)
        if logical in _TIMESTAMPS and kind == "long":
            return _timestamp(value, path)
        if logical == "date" and kind == "int":
            return _date(value, path)
        if kind in PRIMITIVES:
            # Other logical types (uuid, time-*) go to fastavro as they are.
            return value if logical else _primitive(kind, value, path)
        if kind in ("record", "error"):
            return self._record(schema, value, path)
        if kind == "enum":
            return _enum(schema, value, path)
        if kind == "array":
            if not isinstance(value, (list, tuple)):
                raise EncodeError(f"{path}: expected a list, got {type(value).__name__}")
            return [self.prepare(schema["items"], item, f"{path}[{i}]") for i, item in enumerate(value)]
        if kind == "map":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise EncodeError(f"{path}: expected a mapping with string keys")
            return {k: self.prepare(schema["values"], v, f"{path}[{k!r}]") for k, v in value.items()}
        if kind == "fixed":
            if not isinstance(value, (bytes, bytearray)) or len(value) != schema["size"]:
                raise EncodeError(f"{path}: expected {schema['size']} bytes")
            return bytes(value)
        raise EncodeError(f"{path}: unsupported schema {schema!r}")

    def _record(self, schema: Mapping[str, Any], value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise EncodeError(f"{path}: expected a mapping, got {type(value).__name__}")
        fields = schema["fields"]
        unknown = set(value) - {field["name"] for field in fields}
        if unknown:
            # A misspelt optional field would otherwise be dropped without a word.
            raise EncodeError(f"{path}: unknown fields {sorted(map(str, unknown))}")
        out: dict[str, Any] = {}
        for field in fields:
            name = field["name"]
            if name in value:
                out[name] = self.prepare(field["type"], value[name], f"{path}.{name}")
            elif "default" in field:
                out[name] = field["default"]
            else:
                raise EncodeError(f"{path}.{name}: missing, and the schema gives no default")
        return out

    def _union(self, branches: list[Schema], value: Any, path: str) -> Any:
        if value is None:
            if "null" in branches:
                return None
            raise EncodeError(f"{path}: None is not allowed")
        errors: list[EncodeError] = []
        for branch in branches:
            if branch == "null":
                continue
            try:
                return self.prepare(branch, value, path)
            except EncodeError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise EncodeError(f"{path}: {type(value).__name__} matches no branch of the union")


def _primitive(kind: str, value: Any, path: str) -> Any:
    if kind == "null":
        if value is not None:
            raise EncodeError(f"{path}: expected None")
        return None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise EncodeError(f"{path}: expected a bool, got {type(value).__name__}")
        return value
    if kind in _INT_RANGE:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EncodeError(f"{path}: expected an int, got {type(value).__name__}")
        low, high = _INT_RANGE[kind]
        if not low <= value <= high:
            raise EncodeError(f"{path}: {value} does not fit an Avro {kind}")
        return int(value)
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EncodeError(f"{path}: expected a float, got {type(value).__name__}")
        return float(value)
    if kind == "string":
        if not isinstance(value, str):
            raise EncodeError(f"{path}: expected a str, got {type(value).__name__}")
        return str(value)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise EncodeError(f"{path}: expected bytes, got {type(value).__name__}")
    return bytes(value)


def _enum(schema: Mapping[str, Any], value: Any, path: str) -> str:
    # Domain enums (StrEnum or Enum with str values) are accepted as their value.
    symbol = value.value if isinstance(value, enum.Enum) else value
    if not isinstance(symbol, str) or symbol not in schema["symbols"]:
        raise EncodeError(f"{path}: {value!r} is not one of {schema['symbols']}")
    return str(symbol)


def _decimal(schema: Mapping[str, Any], value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int)):
        # A float has already lost the exact value; refuse it rather than guess.
        raise EncodeError(f"{path}: expected a Decimal, got {type(value).__name__}")
    number = Decimal(value)
    precision: int = schema["precision"]
    scale: int = schema.get("scale", 0)
    if not number.is_finite():
        raise EncodeError(f"{path}: {number} is not a finite decimal")
    if number and number.adjusted() >= precision - scale:
        raise EncodeError(f"{path}: {number} exceeds decimal({precision},{scale})")
    try:
        # One spare digit: rounding 999...9.999999995 up must show as "too many places", not overflow.
        quantized = number.quantize(Decimal(1).scaleb(-scale), context=Context(prec=precision + 1))
    except InvalidOperation:
        raise EncodeError(f"{path}: {number} exceeds decimal({precision},{scale})") from None
    if quantized != number:
        raise EncodeError(f"{path}: {number} has more than {scale} decimal places")
    return quantized


def _timestamp(value: Any, path: str) -> datetime:
    if not isinstance(value, datetime):
        raise EncodeError(f"{path}: expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise EncodeError(f"{path}: naive datetime {value.isoformat()}; give a timezone-aware one (UTC)")
    return value


def _date(value: Any, path: str) -> date:
    # A datetime is a date subclass, but passing one here would silently drop its time.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise EncodeError(f"{path}: expected a date, got {type(value).__name__}")
    return value
