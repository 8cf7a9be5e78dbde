"""Parsing Canonical Form and CRC-64-AVRO fingerprints, against the Avro specification's own vectors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro.schema
import pytest

from workers.adapters.avro import SchemaCatalog, crc64_avro, parsing_canonical_form, schema_fingerprint
from workers.adapters.avro.canonical import self_contained
from workers.adapters.avro.errors import SchemaError
from workers.adapters.avro.fingerprint import EMPTY, as_signed

VECTORS_FILE = Path(__file__).parent / "data" / "avro_schema_tests.txt"


@dataclass(frozen=True)
class Vector:
    """One entry of the spec's schema-tests.txt."""

    number: str
    input: str
    canonical: str
    fingerprint: int | None


def load_vectors(path: Path) -> list[Vector]:
    """Parse the spec's test file format: ``<<INPUT``, ``<<canonical``, ``<<fingerprint`` entries."""
    vectors: list[Vector] = []
    entry: dict[str, Any] = {}
    lines = iter(path.read_text(encoding="utf-8").splitlines())
    for line in lines:
        if line.startswith("// ") and line[3:].strip().isdigit():
            entry = {"number": line[3:].strip()}
        elif line == "<<INPUT":
            # A multi-line input runs until a line that is just "INPUT".
            body = []
            for inner in lines:
                if inner == "INPUT":
                    break
                body.append(inner)
            entry["input"] = "\n".join(body)
        elif line.startswith("<<INPUT "):
            entry["input"] = line[len("<<INPUT ") :]
        elif line.startswith("<<canonical "):
            entry["canonical"] = line[len("<<canonical ") :]
        elif line.startswith("<<fingerprint "):
            entry["fingerprint"] = int(line[len("<<fingerprint ") :])
        elif not line.strip() and "canonical" in entry:
            vectors.append(
                Vector(entry["number"], entry["input"], entry["canonical"], entry.get("fingerprint"))
            )
            entry = {}
    if "canonical" in entry:
        vectors.append(Vector(entry["number"], entry["input"], entry["canonical"], entry.get("fingerprint")))
    return vectors


VECTORS = load_vectors(VECTORS_FILE)
WITH_FINGERPRINT = [v for v in VECTORS if v.fingerprint is not None]


def test_the_vector_file_is_read_whole() -> None:
    assert [v.number for v in VECTORS] == [f"{i:03d}" for i in range(34)]
    assert len(WITH_FINGERPRINT) == 26


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.number)
def test_canonical_form_matches_the_spec_vector(vector: Vector) -> None:
    assert parsing_canonical_form(json.loads(vector.input)) == vector.canonical


@pytest.mark.parametrize("vector", WITH_FINGERPRINT, ids=lambda v: v.number)
def test_fingerprint_matches_the_spec_vector(vector: Vector) -> None:
    fingerprint = crc64_avro(vector.canonical.encode("utf-8"))
    assert as_signed(fingerprint) == vector.fingerprint


@pytest.mark.parametrize("vector", WITH_FINGERPRINT, ids=lambda v: v.number)
def test_fingerprint_bytes_are_little_endian(vector: Vector) -> None:
    assert vector.fingerprint is not None
    expected = (vector.fingerprint % (1 << 64)).to_bytes(8, "little")
    assert schema_fingerprint(vector.canonical) == expected


def test_known_primitive_fingerprints() -> None:
    assert as_signed(crc64_avro(b'"int"')) == 8247732601305521295
    assert as_signed(crc64_avro(b'"string"')) == -8142146995180207161
    assert schema_fingerprint('"null"') == (7195948357588979594).to_bytes(8, "little")


def test_fingerprint_of_nothing_is_the_empty_constant() -> None:
    assert crc64_avro(b"") == EMPTY == 0xC15D213AA4D7A795


def test_logical_types_are_stripped_to_their_underlying_type() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "n",
        "fields": [
            {
                "name": "price",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 20, "scale": 8},
            },
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}, "doc": "when"},
        ],
    }
    assert parsing_canonical_form(schema) == (
        '{"name":"n.R","type":"record","fields":[{"name":"price","type":"bytes"},{"name":"at","type":"long"}]}'
    )


def test_nested_named_types_inherit_the_namespace_and_are_referenced_by_fullname_after_first_use() -> None:
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "a.b",
        "fields": [
            {"name": "s1", "type": {"type": "enum", "name": "Side", "symbols": ["BUY", "SELL"]}},
            {"name": "s2", "type": ["null", "Side"], "default": None},
            {"name": "other", "type": {"type": "fixed", "name": "x.Hash", "size": 4}},
            {"name": "again", "type": "x.Hash"},
        ],
    }
    assert parsing_canonical_form(schema) == (
        '{"name":"a.b.Outer","type":"record","fields":['
        '{"name":"s1","type":{"name":"a.b.Side","type":"enum","symbols":["BUY","SELL"]}},'
        '{"name":"s2","type":["null","a.b.Side"]},'
        '{"name":"other","type":{"name":"x.Hash","type":"fixed","size":4}},'
        '{"name":"again","type":"x.Hash"}]}'
    )


def test_a_named_type_from_another_file_is_inlined_at_its_first_use() -> None:
    side = {"type": "enum", "name": "Side", "namespace": "p", "symbols": ["BUY", "SELL"], "doc": "d"}
    schema = {
        "type": "record",
        "name": "p.Fill",
        "fields": [{"name": "a", "type": "Side"}, {"name": "b", "type": "p.Side"}],
    }
    assert parsing_canonical_form(schema, {"p.Side": side}) == (
        '{"name":"p.Fill","type":"record","fields":['
        '{"name":"a","type":{"name":"p.Side","type":"enum","symbols":["BUY","SELL"]}},'
        '{"name":"b","type":"p.Side"}]}'
    )


def test_an_unknown_type_name_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="Nope"):
        parsing_canonical_form({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]})


def test_non_ascii_text_is_written_as_utf8_not_escaped() -> None:
    assert parsing_canonical_form(json.loads('{"type":"enum","name":"E","symbols":["\\u00e9"]}')) == (
        '{"name":"E","type":"enum","symbols":["é"]}'
    )


def test_self_contained_keeps_docs_and_defaults_but_uses_fullnames() -> None:
    schema = {
        "type": "record",
        "name": "R",
        "namespace": "n",
        "doc": "a record",
        "fields": [
            {"name": "e", "type": ["null", {"type": "enum", "name": "E", "symbols": ["A"]}], "default": None}
        ],
    }
    assert self_contained(schema) == {
        "type": "record",
        "name": "n.R",
        "doc": "a record",
        "fields": [
            {
                "name": "e",
                "type": ["null", {"type": "enum", "name": "n.E", "symbols": ["A"]}],
                "default": None,
            }
        ],
    }


@pytest.mark.parametrize("version", list(SchemaCatalog()), ids=lambda v: f"{v.short_name}-{v.label}")
def test_event_schema_fingerprints_agree_with_fastavro(version: Any) -> None:
    # fastavro is an independent implementation of the same spec: both must give the same bytes.
    theirs = fastavro.schema.to_parsing_canonical_form(version.schema)
    assert version.canonical_form == theirs
    assert version.fingerprint.hex() == fastavro.schema.fingerprint(theirs, "CRC-64-AVRO")
