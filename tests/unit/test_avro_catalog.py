"""The schema catalog: the contract's file layout, history versions, and name lookups."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workers.adapters.avro import DEFAULT_SCHEMA_DIR, SchemaCatalog, SchemaError, UnknownRecordError
from workers.adapters.avro.catalog import snake_case

CONTRACT_RECORDS = [
    "OrderRequested",
    "OrderCancelRequested",
    "OrderModifyRequested",
    "OrderStatusChanged",
    "FillExecuted",
    "PositionUpdated",
    "InstrumentUpdated",
    "WorkerHealth",
]


def _record(name: str, *fields: str) -> dict[str, object]:
    return {
        "type": "record",
        "name": name,
        "namespace": "t",
        "fields": [{"name": f, "type": "string"} for f in fields],
    }


def _write(path: Path, schema: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema))


def test_each_contract_record_lives_in_its_snake_case_file() -> None:
    for name in CONTRACT_RECORDS:
        path = DEFAULT_SCHEMA_DIR / f"{snake_case(name)}.avsc"
        assert json.loads(path.read_text())["name"] == name
        assert SchemaCatalog().current(name).fullname == f"prometheus.execution.{name}"


def test_every_field_of_every_schema_has_a_doc() -> None:
    for version in SchemaCatalog():
        assert version.schema.get("doc"), version.fullname
        for field in version.schema["fields"]:
            assert field.get("doc"), f"{version.fullname}.{field['name']} ({version.label})"


def test_the_newest_history_version_of_each_record_is_the_current_one() -> None:
    # Whoever changes a schema also snapshots it as schemas/history/vN, so every version ever
    # published stays decodable.
    catalog = SchemaCatalog()
    for record in catalog.records():
        history = catalog.history(record)
        assert history, f"{record} has no history version"
        assert history[-1].canonical_form == catalog.current(record).canonical_form


def test_snake_case_follows_the_contract() -> None:
    assert snake_case("OrderCancelRequested") == "order_cancel_requested"
    assert snake_case("WorkerHealth") == "worker_health"


def test_a_file_named_after_another_record_is_refused(tmp_path: Path) -> None:
    _write(tmp_path / "wrong_name.avsc", _record("Thing", "a"))
    with pytest.raises(SchemaError, match="expected thing"):
        SchemaCatalog(tmp_path)


def test_a_missing_directory_is_a_schema_error(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match="no schema directory"):
        SchemaCatalog(tmp_path / "absent")


def test_invalid_json_is_a_schema_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "thing.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match=r"thing\.avsc"):
        SchemaCatalog(tmp_path)


def test_history_versions_are_ordered_by_number(tmp_path: Path) -> None:
    _write(tmp_path / "thing.avsc", _record("Thing", "a", "b", "c"))
    _write(tmp_path / "history" / "v10" / "thing.avsc", _record("Thing", "a", "b"))
    _write(tmp_path / "history" / "v2" / "thing.avsc", _record("Thing", "a"))
    catalog = SchemaCatalog(tmp_path)
    assert [v.label for v in catalog.history("Thing")] == ["v2", "v10"]
    assert catalog.by_fingerprint(catalog.history("t.Thing")[0].fingerprint) is catalog.history("Thing")[0]


def test_an_ambiguous_short_name_needs_the_fullname(tmp_path: Path) -> None:
    _write(tmp_path / "thing.avsc", _record("Thing", "a"))
    other = {**_record("Thing", "b"), "namespace": "u"}
    _write(tmp_path / "history" / "v1" / "thing.avsc", other)
    catalog = SchemaCatalog(tmp_path)
    with pytest.raises(UnknownRecordError):
        catalog.current("Thing")
    assert catalog.current("t.Thing").fullname == "t.Thing"


def test_the_schema_directory_can_be_given(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_SCHEMA_DIR, tmp_path / "s")
    catalog = SchemaCatalog(tmp_path / "s")
    assert catalog.directory == tmp_path / "s"
    assert len(catalog.records()) == len(CONTRACT_RECORDS)
