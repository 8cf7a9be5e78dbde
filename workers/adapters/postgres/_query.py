"""Small helpers the stores share: column lists from row dataclasses and dict-row fetches."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.abc import Params
from psycopg.rows import TupleRow, dict_row

Record = dict[str, Any]
Query = str | sql.SQL | sql.Composed


def column_names(row_type: type[Any], *, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    """The field names of dataclass ``row_type`` (the columns a ``SELECT`` must return)."""
    skipped = set(exclude)
    return tuple(f.name for f in fields(row_type) if f.name not in skipped)


def column_list(names: Iterable[str], *, table: str | None = None) -> sql.Composable:
    """``a, b, c`` (or ``t.a, t.b, t.c``) as quoted identifiers."""
    if table is None:
        return sql.SQL(", ").join(sql.Identifier(name) for name in names)
    return sql.SQL(", ").join(sql.Identifier(table, name) for name in names)


def assignments(values: Mapping[str, object]) -> sql.Composable:
    """``a = %(a)s, b = %(b)s`` for an ``UPDATE`` whose parameters are ``values``."""
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in values
    )


async def fetch_one(
    conn: AsyncConnection[TupleRow], query: Query, params: Params | None = None
) -> Record | None:
    """The first row of ``query`` as a dict, or None."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchone()


async def fetch_all(
    conn: AsyncConnection[TupleRow], query: Query, params: Params | None = None
) -> list[Record]:
    """Every row of ``query`` as dicts."""
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, params)
        return await cursor.fetchall()


async def execute_count(conn: AsyncConnection[TupleRow], query: Query, params: Params | None = None) -> int:
    """Run ``query``; return how many rows it affected."""
    cursor = await conn.execute(query, params)
    return cursor.rowcount


Column = tuple[str, str]  # (name, PostgreSQL type)


def rows_from(columns: Sequence[Column], alias: str) -> str:
    """``ROWS FROM (json_to_recordset(%(alias)s::json) AS (a t, ...)) WITH ORDINALITY AS alias(a, ..., n)``:
    many rows as one JSON parameter, named after ``alias`` (its value from :func:`rows_param`).

    One statement for a batch costs one round trip and no pipeline (psycopg's pipeline mode, which
    ``executemany`` uses, costs more CPU than the round trips it saves on a local database). One JSON text
    rather than an array per column: psycopg adapts one string instead of inspecting every list, and
    PostgreSQL parses one value. For a 20-column row that halved the statement's cost on this machine
    (client CPU 0.30 -> 0.16 ms, round trip 0.42 -> 0.22 ms).
    """
    declared = ", ".join(f"{name} {kind}" for name, kind in columns)
    names = ", ".join(name for name, _ in columns)
    return f"ROWS FROM (json_to_recordset(%({alias})s::json) AS ({declared})) WITH ORDINALITY AS {alias}({names}, n)"


def rows_param(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """The parameter of :func:`rows_from`: ``rows`` as a JSON array of objects, each value written as text
    PostgreSQL reads back exactly (numerics as decimal strings, timestamps in ISO 8601, bytea as hex)."""
    convert = [(name, _TO_JSON.get(kind)) for name, kind in columns]
    return json.dumps([{name: value if to_json is None or value is None else to_json(value)
                        for name, to_json in convert for value in (row[name],)} for row in rows],
                      separators=(",", ":"))


def _numeric_text(value: Any) -> str:
    return str(value if isinstance(value, Decimal) else Decimal(value))


def _timestamp_text(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    return value.isoformat()


_TO_JSON: dict[str, Callable[[Any], Any]] = {
    "numeric": _numeric_text,
    "timestamptz": _timestamp_text,
    "bytea": lambda value: "\\x" + bytes(value).hex(),
}
