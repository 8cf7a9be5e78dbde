"""Batch statements pass their rows as one JSON parameter: every value must come back from PostgreSQL exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum

import pytest

from workers.adapters.postgres._query import Column, fetch_all, rows_from, rows_param
from workers.adapters.postgres.pool import Pool

pytestmark = pytest.mark.integration

COLUMNS: tuple[Column, ...] = (
    ("label", "text"), ("amount", "numeric"), ("at", "timestamptz"), ("payload", "bytea"), ("count", "bigint"),
    ("small", "integer"), ("flag", "boolean"),
)


class Side(StrEnum):
    BUY = "BUY"


async def test_values_of_every_column_kind_come_back_unchanged_and_in_order(pool: Pool) -> None:
    rows = [
        {"label": "quote \" backslash \\ newline \n unicode é€ 日本", "amount": Decimal("123456789.123456789012"),
         "at": datetime(2026, 11, 28, 15, 41, 26, 123456, tzinfo=UTC), "payload": bytes(range(256)),
         "count": 2**62, "small": -7, "flag": True},
        {"label": Side.BUY, "amount": Decimal("1E+2"), "at": datetime(2026, 1, 2, 3, 4, 5, 6,
                                                                       tzinfo=timezone(timedelta(hours=-5))),
         "payload": b"", "count": 0, "small": 0, "flag": False},
        {"label": None, "amount": None, "at": None, "payload": None, "count": None, "small": None, "flag": None},
        {"label": "", "amount": 3, "at": datetime(2026, 6, 1, tzinfo=UTC), "payload": b"\x00\\x",
         "count": -1, "small": 2**31 - 1, "flag": True},
    ]
    async with pool.connection() as conn:
        back = await fetch_all(conn, f"SELECT * FROM {rows_from(COLUMNS, 'r')} ORDER BY n",
                               {"r": rows_param(rows, COLUMNS)})

    assert [record["n"] for record in back] == [1, 2, 3, 4]
    for sent, received in zip(rows, back, strict=True):
        expected = dict(sent)
        if expected["amount"] is not None:
            expected["amount"] = Decimal(expected["amount"])
        assert {name: received[name] for name, _ in COLUMNS} == expected
    assert back[0]["amount"].as_tuple() == Decimal("123456789.123456789012").as_tuple()  # no digit lost


async def test_no_rows_is_an_empty_source(pool: Pool) -> None:
    async with pool.connection() as conn:
        back = await fetch_all(conn, f"SELECT * FROM {rows_from(COLUMNS, 'r')}", {"r": rows_param([], COLUMNS)})

    assert back == []


def test_a_timestamp_without_a_time_zone_is_refused() -> None:
    row = {"label": "x", "amount": 1, "at": datetime(2026, 1, 1), "payload": b"", "count": 1, "small": 1,
           "flag": True}

    with pytest.raises(ValueError, match="without a time zone"):
        rows_param([row], COLUMNS)
