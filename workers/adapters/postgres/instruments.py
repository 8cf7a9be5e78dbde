"""The instrument mapper (table ``instruments``): our ``instrument_id`` to the IBKR contract (``con_id``).

Writes tell what they did (CREATED, UPDATED with the changed fields, DEACTIVATED, UNCHANGED), so
instrument-sync publishes ``instruments.updated`` only for real changes. They are set-based: a batch of
writes locks the rows it touches with one ``SELECT ... FOR UPDATE``, is planned in memory
(:class:`LockedInstruments`), and is applied in one pipelined round trip, whatever its size.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import DictRow, TupleRow, dict_row

from workers.adapters.postgres._query import (
    Record,
    assignments,
    column_list,
    fetch_all,
    fetch_one,
)
from workers.adapters.postgres.errors import ConIdConflict, UnknownInstrument
from workers.adapters.postgres.pool import Pool
from workers.domain.instruments import INSTRUMENT_FIELDS, Instrument
from workers.ports.instruments import (
    Deactivate,
    InstrumentChange,
    InstrumentRow,
    InstrumentUpsert,
    InstrumentWrite,
)

# The table's columns: the instrument's fields under the same names, and the row's timestamps.
_WRITTEN = ("instrument_id", *INSTRUMENT_FIELDS)
_STAMPS = ("created_at", "updated_at")
_COLUMNS = column_list((*_WRITTEN, *_STAMPS))

# Rendered once: composing a query on every execute costs more than running it on a warm connection.
_SELECT_BY_ID = sql.SQL("SELECT {} FROM instruments WHERE instrument_id = %s").format(_COLUMNS).as_string()
_SELECT_MANY = sql.SQL("SELECT {} FROM instruments WHERE instrument_id = ANY(%s)").format(_COLUMNS).as_string()
_SELECT_BY_CON_ID = sql.SQL("SELECT {} FROM instruments WHERE con_id = %s").format(_COLUMNS).as_string()
_SELECT_ACTIVE = sql.SQL("SELECT {} FROM instruments WHERE active ORDER BY instrument_id").format(_COLUMNS).as_string()
_SELECT_BY_PREFIX = (
    sql.SQL("SELECT {} FROM instruments WHERE starts_with(instrument_id, %s) ORDER BY instrument_id")
    .format(_COLUMNS)
    .as_string()
)
# Locked in instrument_id order, so two batches touching the same rows cannot deadlock.
_LOCK = (
    sql.SQL(
        "SELECT {} FROM instruments WHERE instrument_id = ANY(%(ids)s) OR con_id = ANY(%(con_ids)s) "
        "ORDER BY instrument_id FOR UPDATE"
    )
    .format(_COLUMNS)
    .as_string()
)
# last_trade_date is IBKR's text: YYYYMMDD, maybe with a time; a bare YYYYMM month counts until it ends.
_SELECT_EXPIRED = (
    sql.SQL(
        "SELECT {} FROM instruments WHERE active AND last_trade_date IS NOT NULL AND CASE "
        "WHEN last_trade_date ~ '^[0-9]{{8}}' THEN left(last_trade_date, 8) < %(day)s "
        "WHEN last_trade_date ~ '^[0-9]{{6}}$' THEN last_trade_date < left(%(day)s, 6) "
        "ELSE false END ORDER BY instrument_id"
    )
    .format(_COLUMNS)
    .as_string()
)
# DO NOTHING: a row another transaction inserted after the lock read comes back empty (InstrumentRace).
_INSERT = (
    sql.SQL("INSERT INTO instruments ({}) VALUES ({}) ON CONFLICT (instrument_id) DO NOTHING RETURNING {}")
    .format(column_list(_WRITTEN), sql.SQL(", ").join(sql.Placeholder(name) for name in _WRITTEN), _COLUMNS)
    .as_string()
)


@functools.lru_cache(maxsize=256)
def _update_query(columns: tuple[str, ...]) -> str:
    return (
        sql.SQL("UPDATE instruments SET {}, updated_at = now() WHERE instrument_id = %(instrument_id)s RETURNING {}")
        .format(assignments(dict.fromkeys(columns)), _COLUMNS)
        .as_string()
    )


class InstrumentRace(Exception):
    """Another transaction inserted an instrument between this one's lock read and its insert: retry."""

    def __init__(self, instrument_ids: Iterable[str]) -> None:
        ids = sorted(instrument_ids)
        super().__init__(f"instruments inserted concurrently: {', '.join(ids)}")
        self.instrument_ids = ids


class AlreadyPlanned(Exception):
    """The batch already writes this instrument: write it in a later transaction."""

    def __init__(self, instrument_id: str) -> None:
        super().__init__(f"instrument {instrument_id} is written twice in one batch")
        self.instrument_id = instrument_id


class _Action(enum.Enum):
    NOTHING = "nothing"
    INSERT = "insert"
    UPDATE = "update"


@dataclass(frozen=True)
class PlannedWrite:
    """What one write will do to the locked row ``current`` (None: there is none)."""

    instrument_id: str
    action: _Action
    change: InstrumentChange
    values: dict[str, Any]
    current: InstrumentRow | None

    @property
    def changed_fields(self) -> tuple[str, ...]:
        return tuple(self.values) if self.action is _Action.UPDATE else ()


def _instrument_row(record: Record) -> InstrumentRow:
    """The mapper row of one ``SELECT`` of :data:`_COLUMNS`."""
    instrument = Instrument(**{name: record[name] for name in _WRITTEN})
    return InstrumentRow(instrument, created_at=record["created_at"], updated_at=record["updated_at"])


def _values(instrument: Instrument) -> dict[str, Any]:
    values = {name: getattr(instrument, name) for name in INSTRUMENT_FIELDS}
    values["sec_type"] = str(values["sec_type"])
    return values


def _plan_one(write: InstrumentWrite, current: InstrumentRow | None) -> PlannedWrite:
    iid = write.instrument_id
    if isinstance(write, Deactivate):
        if current is None:
            raise UnknownInstrument(iid)
        if not current.instrument.active:
            return PlannedWrite(iid, _Action.NOTHING, InstrumentChange.UNCHANGED, {}, current)
        return PlannedWrite(iid, _Action.UPDATE, InstrumentChange.DEACTIVATED, {"active": False}, current)
    values = _values(write)
    if current is None:
        return PlannedWrite(iid, _Action.INSERT, InstrumentChange.CREATED, values, None)
    changed = {name: values[name] for name in write.changed_fields(current.instrument)}
    if not changed:
        return PlannedWrite(iid, _Action.NOTHING, InstrumentChange.UNCHANGED, {}, current)
    return PlannedWrite(iid, _Action.UPDATE, InstrumentChange.UPDATED, changed, current)


class LockedInstruments:
    """The mapper rows a batch of writes touches, locked in the caller's transaction, and the plan so far."""

    def __init__(self, rows: Iterable[InstrumentRow]) -> None:
        self._by_id = {row.instrument.instrument_id: row for row in rows}
        self._con_id_holders = {row.instrument.con_id: iid for iid, row in self._by_id.items()}
        self._planned_ids: set[str] = set()
        self.planned: list[PlannedWrite] = []

    def plan(self, writes: Sequence[InstrumentWrite]) -> list[PlannedWrite]:
        """Add ``writes`` to the plan, all of them or none.

        Raises :class:`ConIdConflict` when a conId belongs to another instrument (in the table or earlier in
        the plan), :class:`UnknownInstrument` when deactivating an instrument the mapper has never seen, and
        :class:`AlreadyPlanned` when the plan already writes one of the instruments.
        """
        planned: list[PlannedWrite] = []
        claims: dict[int, str] = {}
        for write in writes:
            iid = write.instrument_id
            if iid in self._planned_ids or any(p.instrument_id == iid for p in planned):
                raise AlreadyPlanned(iid)
            if not isinstance(write, Deactivate):
                holder = claims.get(write.con_id, self._con_id_holders.get(write.con_id))
                if holder is not None and holder != iid:
                    raise ConIdConflict(iid, write.con_id)
                claims[write.con_id] = iid
            planned.append(_plan_one(write, self._by_id.get(iid)))
        self._con_id_holders.update(claims)
        self._planned_ids.update(p.instrument_id for p in planned)
        self.planned.extend(planned)
        return planned


async def lock_instruments(conn: AsyncConnection[TupleRow], writes: Sequence[InstrumentWrite]) -> LockedInstruments:
    """Lock (``FOR UPDATE``) the rows ``writes`` name, by id or by conId, in the caller's transaction."""
    ids = sorted({w.instrument_id for w in writes})
    con_ids = sorted({w.con_id for w in writes if not isinstance(w, Deactivate)})
    records = await fetch_all(conn, _LOCK, {"ids": ids, "con_ids": con_ids}) if ids else []
    return LockedInstruments(_instrument_row(r) for r in records)


async def apply_planned(conn: AsyncConnection[TupleRow], planned: Sequence[PlannedWrite]) -> list[InstrumentUpsert]:
    """Run the plan's inserts and updates in one pipelined round trip; the outcomes, in plan order.

    Raises :class:`InstrumentRace` when another transaction inserted one of the new instruments since the
    lock read (the caller's transaction must then be rolled back and retried).
    """
    inserts = [p for p in planned if p.action is _Action.INSERT]
    updates = [p for p in planned if p.action is _Action.UPDATE]
    stored: dict[str, InstrumentRow] = {}
    if inserts or updates:
        insert_cursor = conn.cursor(row_factory=dict_row)
        update_cursors: list[AsyncCursor[DictRow]] = []
        try:
            async with conn.pipeline():
                if inserts:
                    await insert_cursor.executemany(
                        _INSERT, [{**p.values, "instrument_id": p.instrument_id} for p in inserts], returning=True
                    )
                for p in updates:
                    cursor = conn.cursor(row_factory=dict_row)
                    update_cursors.append(cursor)
                    await cursor.execute(_update_query(tuple(p.values)), {**p.values, "instrument_id": p.instrument_id})
            if inserts:
                while True:
                    for record in await insert_cursor.fetchall():
                        stored[record["instrument_id"]] = _instrument_row(record)
                    if not insert_cursor.nextset():
                        break
            for cursor in update_cursors:
                updated = await cursor.fetchone()
                if updated is not None:
                    stored[updated["instrument_id"]] = _instrument_row(updated)
        finally:
            await insert_cursor.close()
            for cursor in update_cursors:
                await cursor.close()
    raced = [p.instrument_id for p in inserts if p.instrument_id not in stored]
    if raced:
        raise InstrumentRace(raced)
    outcomes: list[InstrumentUpsert] = []
    for p in planned:
        row = stored.get(p.instrument_id, p.current)
        if row is None:  # an updated row vanished under its lock: nothing deletes instruments, but be exact
            raise UnknownInstrument(p.instrument_id)
        outcomes.append(InstrumentUpsert(p.change, p.changed_fields, row))
    return outcomes


async def write_instruments(
    conn: AsyncConnection[TupleRow], writes: Sequence[InstrumentWrite]
) -> list[InstrumentUpsert]:
    """Lock, plan and apply ``writes`` (all or none) in the caller's transaction; their outcomes."""
    locked = await lock_instruments(conn, writes)
    return await apply_planned(conn, locked.plan(writes))


_RACE_ATTEMPTS = 3
_T = TypeVar("_T")


async def retrying_races(attempt: Callable[[], Awaitable[_T]]) -> _T:
    """``attempt()`` (a whole transaction) again when it lost an insert race: the next attempt sees the
    other transaction's row under its lock. Raises :class:`InstrumentRace` after the last attempt."""
    for _ in range(_RACE_ATTEMPTS - 1):
        try:
            return await attempt()
        except InstrumentRace:
            continue
    return await attempt()


class InstrumentMapper:
    """Instruments by ``instrument_id`` and by IBKR ``con_id``."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def get(self, instrument_id: str) -> InstrumentRow | None:
        """The instrument ``instrument_id`` (active or not), or None."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_ID, (instrument_id,))
        return None if record is None else _instrument_row(record)

    async def get_many(self, instrument_ids: Sequence[str]) -> dict[str, InstrumentRow]:
        """The instruments among ``instrument_ids`` that the mapper knows (active or not), by id."""
        if not instrument_ids:
            return {}
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_MANY, (list(instrument_ids),))
        return {r["instrument_id"]: _instrument_row(r) for r in records}

    async def get_by_con_id(self, con_id: int) -> InstrumentRow | None:
        """The instrument mapped to IBKR contract ``con_id`` (active or not), or None."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_CON_ID, (con_id,))
        return None if record is None else _instrument_row(record)

    async def active(self) -> list[InstrumentRow]:
        """Every active instrument, by ``instrument_id``."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_ACTIVE)
        return [_instrument_row(r) for r in records]

    async def upsert(self, instrument: Instrument) -> InstrumentUpsert:
        """Create or update ``instrument``; report CREATED, UPDATED (with the changed fields) or UNCHANGED.

        Raises :class:`ConIdConflict` when another instrument already holds its ``con_id``.
        """
        return await self._write_one(instrument)

    async def deactivate(self, instrument_id: str) -> InstrumentUpsert:
        """Mark ``instrument_id`` inactive: DEACTIVATED, or UNCHANGED when it was inactive already.

        Raises :class:`UnknownInstrument` when the mapper has never seen it.
        """
        return await self._write_one(Deactivate(instrument_id))

    async def with_prefix(self, prefix: str) -> list[InstrumentRow]:
        """Every instrument whose id starts with ``prefix`` (active or not), by ``instrument_id``."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_BY_PREFIX, (prefix,))
        return [_instrument_row(r) for r in records]

    async def expired(self, day: str) -> list[InstrumentRow]:
        """Active instruments whose last trading day is before ``day`` (YYYYMMDD)."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_EXPIRED, {"day": day})
        return [_instrument_row(r) for r in records]

    async def _write_one(self, write: InstrumentWrite) -> InstrumentUpsert:
        async def attempt() -> InstrumentUpsert:
            async with self._pool.connection() as conn, conn.transaction():
                (outcome,) = await write_instruments(conn, [write])
                return outcome

        return await retrying_races(attempt)
