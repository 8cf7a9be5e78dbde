"""The instrument mapper (table ``instruments``): our ``instrument_id`` to the IBKR contract (``con_id``).

:meth:`InstrumentMapper.upsert` tells what it did, so instrument-sync publishes ``instruments.updated``
only for real changes.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.errors import UniqueViolation
from psycopg.rows import TupleRow

from workers.adapters.postgres._query import (
    assignments,
    column_list,
    column_names,
    fetch_all,
    fetch_one,
)
from workers.adapters.postgres.errors import ConIdConflict, UnknownInstrument
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import (
    INSTRUMENT_FIELDS,
    InstrumentChange,
    InstrumentFields,
    InstrumentRow,
    InstrumentUpsert,
)

_CON_ID_KEY = "instruments_con_id_key"
_COLUMNS = column_list(column_names(InstrumentRow))
_WRITTEN = ("instrument_id", *INSTRUMENT_FIELDS)

_SELECT_BY_ID = sql.SQL("SELECT {} FROM instruments WHERE instrument_id = %s").format(_COLUMNS)
_SELECT_FOR_UPDATE = sql.SQL("SELECT {} FROM instruments WHERE instrument_id = %s FOR UPDATE").format(
    _COLUMNS
)
_SELECT_BY_CON_ID = sql.SQL("SELECT {} FROM instruments WHERE con_id = %s").format(_COLUMNS)
_SELECT_ACTIVE = sql.SQL("SELECT {} FROM instruments WHERE active ORDER BY instrument_id").format(_COLUMNS)
_SELECT_BY_PREFIX = sql.SQL(
    "SELECT {} FROM instruments WHERE starts_with(instrument_id, %s) ORDER BY instrument_id"
).format(_COLUMNS)
# last_trade_date is IBKR's text: YYYYMMDD, maybe with a time; a bare YYYYMM month counts until it ends.
_SELECT_EXPIRED = sql.SQL(
    "SELECT {} FROM instruments WHERE active AND last_trade_date IS NOT NULL AND CASE "
    "WHEN last_trade_date ~ '^[0-9]{{8}}' THEN left(last_trade_date, 8) < %(day)s "
    "WHEN last_trade_date ~ '^[0-9]{{6}}$' THEN last_trade_date < left(%(day)s, 6) "
    "ELSE false END ORDER BY instrument_id"
).format(_COLUMNS)
_INSERT = sql.SQL(
    "INSERT INTO instruments ({}) VALUES ({}) ON CONFLICT (instrument_id) DO NOTHING RETURNING {}"
).format(column_list(_WRITTEN), sql.SQL(", ").join(sql.Placeholder(name) for name in _WRITTEN), _COLUMNS)


class InstrumentMapper:
    """Instruments by ``instrument_id`` and by IBKR ``con_id``."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def get(self, instrument_id: str) -> InstrumentRow | None:
        """The instrument ``instrument_id`` (active or not), or None."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_ID, (instrument_id,))
        return None if record is None else InstrumentRow(**record)

    async def get_by_con_id(self, con_id: int) -> InstrumentRow | None:
        """The instrument mapped to IBKR contract ``con_id`` (active or not), or None."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_CON_ID, (con_id,))
        return None if record is None else InstrumentRow(**record)

    async def active(self) -> list[InstrumentRow]:
        """Every active instrument, by ``instrument_id``."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_ACTIVE)
        return [InstrumentRow(**r) for r in records]

    async def upsert(self, instrument: InstrumentFields) -> InstrumentUpsert:
        """Create or update ``instrument``; report CREATED, UPDATED (with the changed fields) or UNCHANGED.

        Raises :class:`ConIdConflict` when another instrument already holds its ``con_id``.
        """
        async with self._pool.connection() as conn, conn.transaction():
            return await upsert_instrument(conn, instrument)

    async def deactivate(self, instrument_id: str) -> InstrumentUpsert:
        """Mark ``instrument_id`` inactive: DEACTIVATED, or UNCHANGED when it was inactive already.

        Raises :class:`UnknownInstrument` when the mapper has never seen it.
        """
        async with self._pool.connection() as conn, conn.transaction():
            return await deactivate_instrument(conn, instrument_id)

    async def with_prefix(self, prefix: str) -> list[InstrumentRow]:
        """Every instrument whose id starts with ``prefix`` (active or not), by ``instrument_id``."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_BY_PREFIX, (prefix,))
        return [InstrumentRow(**r) for r in records]

    async def expired(self, day: str) -> list[InstrumentRow]:
        """Active instruments whose last trading day is before ``day`` (YYYYMMDD)."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_EXPIRED, {"day": day})
        return [InstrumentRow(**r) for r in records]


async def upsert_instrument(
    conn: AsyncConnection[TupleRow], instrument: InstrumentFields
) -> InstrumentUpsert:
    """:meth:`InstrumentMapper.upsert` inside the caller's transaction on ``conn``.

    Raises :class:`ConIdConflict` (the transaction is then aborted) when another instrument holds the
    ``con_id``.
    """
    values = {name: getattr(instrument, name) for name in INSTRUMENT_FIELDS}
    values["sec_type"] = str(values["sec_type"])
    try:
        return await _upsert(conn, instrument.instrument_id, values)
    except UniqueViolation as exc:
        if exc.diag.constraint_name == _CON_ID_KEY:
            raise ConIdConflict(instrument.instrument_id, instrument.con_id) from exc
        raise


async def deactivate_instrument(conn: AsyncConnection[TupleRow], instrument_id: str) -> InstrumentUpsert:
    """:meth:`InstrumentMapper.deactivate` inside the caller's transaction on ``conn``."""
    record = await fetch_one(conn, _SELECT_FOR_UPDATE, (instrument_id,))
    if record is None:
        raise UnknownInstrument(instrument_id)
    current = InstrumentRow(**record)
    if not current.active:
        return InstrumentUpsert(InstrumentChange.UNCHANGED, (), current)
    row = await _update(conn, instrument_id, {"active": False})
    return InstrumentUpsert(InstrumentChange.DEACTIVATED, ("active",), row)


async def _upsert(
    conn: AsyncConnection[TupleRow], instrument_id: str, values: dict[str, Any]
) -> InstrumentUpsert:
    # Insert first: the common case after the first sync is "exists", but ON CONFLICT makes two syncs
    # creating the same instrument at once safe without an exception.
    created = await fetch_one(conn, _INSERT, {**values, "instrument_id": instrument_id})
    if created is not None:
        return InstrumentUpsert(InstrumentChange.CREATED, (), InstrumentRow(**created))
    record = await fetch_one(conn, _SELECT_FOR_UPDATE, (instrument_id,))
    if record is None:  # deleted between the two statements; nothing deletes instruments, but be exact
        raise UnknownInstrument(instrument_id)
    current = InstrumentRow(**record)
    changed = {name: value for name, value in values.items() if getattr(current, name) != value}
    if not changed:
        return InstrumentUpsert(InstrumentChange.UNCHANGED, (), current)
    row = await _update(conn, instrument_id, changed)
    return InstrumentUpsert(InstrumentChange.UPDATED, tuple(changed), row)


async def _update(
    conn: AsyncConnection[TupleRow], instrument_id: str, changes: dict[str, Any]
) -> InstrumentRow:
    query = sql.SQL(
        "UPDATE instruments SET {}, updated_at = now() WHERE instrument_id = %(instrument_id)s RETURNING {}"
    ).format(assignments(changes), _COLUMNS)
    record = await fetch_one(conn, query, {**changes, "instrument_id": instrument_id})
    if record is None:
        raise UnknownInstrument(instrument_id)
    return InstrumentRow(**record)
