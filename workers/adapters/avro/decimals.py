"""Decimals read as their raw bytes first, so a huge value is refused before it costs any time.

fastavro turns a decimal's bytes into a number before anything can check its size, in time quadratic in
the length (a 64 KiB value blocks the event loop for most of a second). Records are therefore read with
decimal logical types stripped (the bytes come back as they are) and converted here, where a value longer
than its precision allows is refused after a length check that costs nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from workers.adapters.avro.canonical import PRIMITIVES, Schema

# Bytes a writer may add in front of the shortest two's-complement form (sign extension, fixed widths).
_PADDING = 8


class DecimalOutOfRange(ValueError):
    """A decimal's bytes hold more digits than its schema's precision; ``path`` names the field."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path


def without_decimals(schema: Schema) -> Schema:
    """A copy of ``schema`` whose decimal logical types are plain ``bytes``/``fixed``."""
    stripped = copy.deepcopy(schema)
    _strip(stripped)
    return stripped


def _strip(schema: Any) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _strip(branch)
    elif isinstance(schema, dict):
        if schema.get("logicalType") == "decimal":
            del schema["logicalType"]
        for key in ("fields", "items", "values"):
            if key in schema:
                _strip(schema[key])
        if "type" in schema and isinstance(schema["type"], (dict, list)):
            _strip(schema["type"])


def max_decimal_bytes(precision: int) -> int:
    """Bytes the two's-complement form of a ``precision``-digit number needs, plus some padding."""
    return int(((10**precision - 1).bit_length() + 8) // 8) + _PADDING


def read_decimals(schema: Schema, names: Mapping[str, Mapping[str, Any]], value: Any, path: str = "") -> Any:
    """``value`` (read with :func:`without_decimals`) with its decimals converted; raises
    :class:`DecimalOutOfRange` for one too long or beyond its precision."""
    if value is None:
        return None
    if isinstance(schema, list):
        if isinstance(value, (bytes, bytearray)):
            for branch in schema:
                if _is_decimal(branch, names):
                    return read_decimals(branch, names, value, path)
            return value
        # Records, arrays and maps may hold decimals: the branch of the value's kind converts them (the
        # contract's unions hold one such branch at most).
        wanted: tuple[str, ...] = (("record", "error", "map") if isinstance(value, dict)
                                   else ("array",) if isinstance(value, list) else ())
        for branch in schema:
            resolved = names.get(branch, branch) if isinstance(branch, str) else branch
            if isinstance(resolved, dict) and resolved.get("type") in wanted:
                return read_decimals(resolved, names, value, path)
        return value
    if isinstance(schema, str):
        return value if schema in PRIMITIVES else read_decimals(names[schema], names, value, path)
    kind = schema["type"]
    if schema.get("logicalType") == "decimal" and isinstance(value, (bytes, bytearray)):
        return _decimal(schema, bytes(value), path or ".")
    if kind in ("record", "error") and isinstance(value, dict):
        for field in schema["fields"]:
            name = field["name"]
            if name in value:
                value[name] = read_decimals(field["type"], names, value[name], f"{path}.{name}")
    elif kind == "array" and isinstance(value, list):
        value[:] = [read_decimals(schema["items"], names, item, f"{path}[{i}]") for i, item in enumerate(value)]
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            value[key] = read_decimals(schema["values"], names, item, f"{path}[{key!r}]")
    return value


def _is_decimal(schema: Schema, names: Mapping[str, Mapping[str, Any]]) -> bool:
    if isinstance(schema, str):
        return schema not in PRIMITIVES and _is_decimal(names[schema], names)
    return isinstance(schema, dict) and schema.get("logicalType") == "decimal"


def _decimal(schema: Mapping[str, Any], raw: bytes, path: str) -> Decimal:
    precision: int = schema["precision"]
    scale: int = schema.get("scale", 0)
    if len(raw) > max_decimal_bytes(precision):
        raise DecimalOutOfRange(path, f"decimal of {len(raw)} bytes, more than decimal({precision},{scale}) takes")
    unscaled = int.from_bytes(raw, "big", signed=True)
    if abs(unscaled) >= 10**precision:
        raise DecimalOutOfRange(path, f"decimal beyond its precision ({precision} digits)")
    return Decimal(unscaled).scaleb(-scale)
