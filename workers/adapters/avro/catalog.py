"""The event schemas on disk: the current version of each record and every old one in ``history/``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

import workers
from workers.adapters.avro.canonical import named_types, parsing_canonical_form, self_contained
from workers.adapters.avro.decimals import without_decimals
from workers.adapters.avro.errors import SchemaError, UnknownRecordError
from workers.adapters.avro.fingerprint import schema_fingerprint

DEFAULT_SCHEMA_DIR = Path(workers.__file__).resolve().parent.parent / "schemas"
"""``schemas/`` at the root of the repository."""

CURRENT = "current"


def snake_case(name: str) -> str:
    """``OrderRequested`` -> ``order_requested`` (the contract's file naming rule)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _version_order(folder: Path) -> tuple[int, str]:
    # v10 after v2: compare the number, not the text.
    match = re.fullmatch(r"v(\d+)", folder.name)
    return (int(match.group(1)) if match else 1 << 62, folder.name)


@dataclass(frozen=True, eq=False)
class SchemaVersion:
    """One version of one record schema, with everything the codec needs precomputed.

    Compared by identity: two versions with the same text are told apart by ``fingerprint``.
    """

    fullname: str
    label: str
    """``current`` for ``schemas/*.avsc``, else the history folder's name (``v1``, ``v2`` ...)."""
    schema: dict[str, Any] = field(repr=False)
    """Self-contained JSON schema: fullnames everywhere, docs, defaults and logical types kept."""
    canonical_form: str = field(repr=False)
    fingerprint: bytes = field(repr=False)
    parsed: dict[str, Any] = field(repr=False, compare=False)
    """The schema as fastavro's ``parse_schema`` returns it."""
    parsed_raw: dict[str, Any] = field(repr=False, compare=False)
    """``parsed`` with decimals as plain bytes: what records are read with (see :mod:`.decimals`)."""
    names: dict[str, dict[str, Any]] = field(repr=False, compare=False)
    """Named types defined in ``schema``, by fullname."""

    @property
    def short_name(self) -> str:
        """The record name without its namespace."""
        return self.fullname.rpartition(".")[2]

    @property
    def schema_text(self) -> str:
        """``schema`` as compact JSON, the text given to a schema registry."""
        return json.dumps(self.schema, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: Any, label: str) -> SchemaVersion:
        """Build a version from a parsed ``.avsc`` document; raises :class:`SchemaError`."""
        schema = self_contained(raw)
        if not isinstance(schema, dict) or schema.get("type") != "record":
            raise SchemaError("top-level schema must be a record")
        canonical = parsing_canonical_form(schema)
        try:
            parsed = fastavro.parse_schema(schema)
            parsed_raw = fastavro.parse_schema(without_decimals(schema))
        except Exception as error:  # fastavro raises several unrelated types for a bad schema
            raise SchemaError(f"{schema['name']}: {error}") from error
        if not isinstance(parsed, dict) or not isinstance(parsed_raw, dict):
            raise SchemaError(f"{schema['name']}: fastavro did not parse it as a record")
        return cls(
            fullname=schema["name"],
            label=label,
            schema=schema,
            canonical_form=canonical,
            fingerprint=schema_fingerprint(canonical),
            parsed=parsed,
            parsed_raw=parsed_raw,
            names=named_types(schema),
        )


class SchemaCatalog:
    """Every schema version found under one directory, by record name and by fingerprint."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory) if directory is not None else DEFAULT_SCHEMA_DIR
        if not self.directory.is_dir():
            raise SchemaError(f"no schema directory at {self.directory}")
        self._current: dict[str, SchemaVersion] = {}
        self._history: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(self.directory.glob("*.avsc")):
            version = self._load(path, CURRENT)
            self._current[version.fullname] = version
        if not self._current:
            raise SchemaError(f"no .avsc files in {self.directory}")
        history = self.directory / "history"
        if history.is_dir():
            for folder in sorted((p for p in history.iterdir() if p.is_dir()), key=_version_order):
                for path in sorted(folder.glob("*.avsc")):
                    version = self._load(path, folder.name)
                    self._history.setdefault(version.fullname, []).append(version)
        self._short = self._short_names()

    def _load(self, path: Path, label: str) -> SchemaVersion:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            version = SchemaVersion.from_json(raw, label)
        except (OSError, ValueError, SchemaError) as error:
            raise SchemaError(f"{path}: {error}") from error
        if path.stem != snake_case(version.short_name):
            raise SchemaError(f"{path}: holds {version.fullname}, expected {snake_case(version.short_name)}")
        known = self._by_fingerprint.get(version.fingerprint)
        if known is None:
            self._by_fingerprint[version.fingerprint] = version
        elif known.canonical_form != version.canonical_form:
            raise SchemaError(f"{path}: fingerprint collides with {known.fullname} ({known.label})")
        return version

    def _short_names(self) -> dict[str, str]:
        short: dict[str, str] = {}
        ambiguous: set[str] = set()
        for full in [*self._current, *self._history]:
            name = full.rpartition(".")[2]
            if short.setdefault(name, full) != full:
                ambiguous.add(name)
        return {name: full for name, full in short.items() if name not in ambiguous}

    def resolve(self, record: str) -> str:
        """The fullname of ``record``, given as a fullname or an unambiguous short name."""
        if record in self._current or record in self._history:
            return record
        full = self._short.get(record)
        if full is None:
            raise UnknownRecordError(f"no schema for record {record!r} in {self.directory}")
        return full

    def current(self, record: str) -> SchemaVersion:
        """The current version of ``record`` (fullname or short name)."""
        full = self.resolve(record)
        try:
            return self._current[full]
        except KeyError:
            raise UnknownRecordError(f"{full} has only history versions, no current schema") from None

    def history(self, record: str) -> list[SchemaVersion]:
        """The old versions of ``record``, oldest first."""
        return list(self._history.get(self.resolve(record), []))

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion | None:
        """The version whose canonical form has this 8-byte fingerprint, if any."""
        return self._by_fingerprint.get(bytes(fingerprint))

    def records(self) -> list[str]:
        """Fullnames of the records that have a current version."""
        return sorted(self._current)

    def __iter__(self) -> Iterator[SchemaVersion]:
        """Every version held: current ones first, then history."""
        yield from self._current.values()
        for versions in self._history.values():
            yield from versions
