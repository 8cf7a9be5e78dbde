"""Avro schema normalisation and the specification's Parsing Canonical Form.

Two views of one schema are computed here:

* :func:`self_contained` keeps every attribute (docs, defaults, logical types) but writes every name as
  a fullname and inlines each named type at its first use, so the schema can be read without any
  other file or any namespace context.
* :func:`parsing_canonical_form` is the specification's PCF (the same text Java's
  ``SchemaNormalization.toParsingForm`` produces), whose CRC-64-AVRO fingerprint identifies the writer
  schema in single-object encoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workers.adapters.avro.errors import SchemaError

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_TYPES = frozenset({"record", "error", "enum", "fixed"})

# The attributes PCF keeps, in the order PCF writes them.
_PCF_ORDER = ("name", "type", "fields", "symbols", "items", "values", "size")

Schema = Any
"""A schema as parsed from JSON: a str, a list (union) or a dict."""


def fullname(name: str, namespace: str | None) -> str:
    """The fullname of ``name`` seen from ``namespace`` (a dotted name is already full)."""
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def namespace_of(full: str) -> str | None:
    """The namespace part of a fullname, or None for the null namespace."""
    head, dot, _ = full.rpartition(".")
    return head if dot else None


class _Normaliser:
    """One pass over a schema: resolve names, inline named types at first use."""

    def __init__(self, external: Mapping[str, Schema]) -> None:
        self.external = external
        self.defined: dict[str, dict[str, Any]] = {}

    def visit(self, schema: Schema, namespace: str | None) -> Schema:
        if isinstance(schema, str):
            return self._reference(schema, namespace)
        if isinstance(schema, list):
            return [self.visit(branch, namespace) for branch in schema]
        if isinstance(schema, dict):
            return self._object(schema, namespace)
        raise SchemaError(f"not a schema: {schema!r}")

    def _reference(self, name: str, namespace: str | None) -> Schema:
        if name in PRIMITIVES:
            return name
        # The spec resolves a short name in the enclosing namespace; falling back to the null
        # namespace accepts schemas that other implementations accept too.
        for candidate in (fullname(name, namespace), name):
            if candidate in self.defined:
                return candidate
            if candidate in self.external:
                # Defined in another file: inline it here, at its first use.
                return self.visit(self.external[candidate], namespace_of(candidate))
        raise SchemaError(f"unknown type {name!r}")

    def _object(self, schema: dict[str, Any], namespace: str | None) -> Schema:
        if "type" not in schema:
            raise SchemaError(f"schema object without a type: {schema!r}")
        kind = schema["type"]
        if isinstance(kind, (list, dict)):
            return self.visit(kind, namespace)
        if not isinstance(kind, str):
            raise SchemaError(f"bad type {kind!r}")
        if kind in PRIMITIVES:
            # A primitive with attributes (e.g. a logical type) keeps them here; PCF drops them.
            return dict(schema) if len(schema) > 1 else kind
        if kind in NAMED_TYPES:
            return self._named(schema, kind, namespace)
        if kind == "array":
            return {**schema, "items": self.visit(_required(schema, "items"), namespace)}
        if kind == "map":
            return {**schema, "values": self.visit(_required(schema, "values"), namespace)}
        # {"type": "SomeName"} is a reference to a named type.
        return self._reference(kind, namespace)

    def _named(self, schema: dict[str, Any], kind: str, namespace: str | None) -> Schema:
        name = _required(schema, "name")
        if not isinstance(name, str) or not name:
            raise SchemaError(f"bad name {name!r}")
        own = schema.get("namespace")
        if own is not None and not isinstance(own, str):
            raise SchemaError(f"bad namespace {own!r}")
        # An explicit "" namespace means the null namespace, not "inherit".
        full = fullname(name, own if own is not None else namespace)
        if full in self.defined:
            # Already defined earlier (e.g. inlined from another file): from here on it is a reference.
            return full
        out: dict[str, Any] = {key: value for key, value in schema.items() if key != "namespace"}
        out["name"] = full
        self.defined[full] = out
        if kind in ("record", "error"):
            fields = _required(schema, "fields")
            if not isinstance(fields, list):
                raise SchemaError(f"{full}: fields must be a list")
            out["fields"] = [self._field(field, full) for field in fields]
        elif kind == "enum":
            symbols = _required(schema, "symbols")
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                raise SchemaError(f"{full}: symbols must be a list of strings")
        else:
            out["size"] = _size(schema, full)
        return out

    def _field(self, field: Any, record: str) -> dict[str, Any]:
        if not isinstance(field, dict) or not isinstance(field.get("name"), str):
            raise SchemaError(f"{record}: bad field {field!r}")
        return {**field, "type": self.visit(_required(field, "type"), namespace_of(record))}


def _required(schema: Mapping[str, Any], key: str) -> Any:
    if key not in schema:
        raise SchemaError(f"schema lacks {key!r}: {dict(schema)!r}")
    return schema[key]


def _size(schema: Mapping[str, Any], name: str) -> int:
    size = _required(schema, "size")
    # PCF's [INTEGERS] rule: a quoted or zero-padded size is written as a plain integer.
    if isinstance(size, str) and size.isdigit():
        return int(size)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0:
        return size
    raise SchemaError(f"{name}: bad fixed size {size!r}")


def self_contained(schema: Schema, external: Mapping[str, Schema] | None = None) -> Schema:
    """The schema with fullnames everywhere and named types from ``external`` inlined at first use."""
    return _Normaliser(external or {}).visit(schema, None)


def _strip(schema: Schema) -> Schema:
    """PCF's [STRIP] and [ORDER] rules on a self-contained schema."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return [_strip(branch) for branch in schema]
    kind = schema["type"]
    if kind in PRIMITIVES:
        return kind
    out: dict[str, Any] = {}
    for key in _PCF_ORDER:
        if key not in schema:
            continue
        value = schema[key]
        if key == "type" and kind == "error":
            value = "record"
        elif key == "fields":
            value = [{"name": field["name"], "type": _strip(field["type"])} for field in value]
        elif key in ("items", "values"):
            value = _strip(value)
        out[key] = value
    return out


def parsing_canonical_form(schema: Schema, external: Mapping[str, Schema] | None = None) -> str:
    """The Parsing Canonical Form of ``schema`` (a parsed JSON schema), as the spec defines it."""
    stripped = _strip(self_contained(schema, external))
    # [STRINGS]: no escapes beyond what JSON needs; [WHITESPACE]: none.
    return json.dumps(stripped, ensure_ascii=False, separators=(",", ":"))


def named_types(schema: Schema) -> dict[str, dict[str, Any]]:
    """Every named type defined in a self-contained schema, by fullname."""
    found: dict[str, dict[str, Any]] = {}

    def walk(node: Schema) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch)
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in NAMED_TYPES:
                found[node["name"]] = node
                for field in node.get("fields", ()):
                    walk(field["type"])
            elif kind == "array":
                walk(node["items"])
            elif kind == "map":
                walk(node["values"])

    walk(schema)
    return found
