"""Small helpers the stores share: column lists from row dataclasses and dict-row fetches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
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


def unnest_from(columns: Sequence[Column], alias: str) -> str:
    """``unnest(%(a)s::t[], ...) WITH ORDINALITY AS alias(a, ..., n)``: many rows as one parameter per column.

    One statement for a batch costs one round trip and no pipeline (psycopg's pipeline mode, which
    ``executemany`` uses, costs more CPU than the round trips it saves on a local database).
    """
    arrays = ", ".join(f"%({name})s::{kind}[]" for name, kind in columns)
    names = ", ".join(name for name, _ in columns)
    return f"unnest({arrays}) WITH ORDINALITY AS {alias}({names}, n)"


def column_arrays(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> dict[str, list[Any]]:
    """The parameters of :func:`unnest_from`: one list per column (numerics as Decimal, as psycopg needs
    one Python type per list)."""
    arrays: dict[str, list[Any]] = {}
    for name, kind in columns:
        values = [row[name] for row in rows]
        if kind == "numeric":
            values = [None if v is None else v if isinstance(v, Decimal) else Decimal(v) for v in values]
        arrays[name] = values
    return arrays
