"""The instrument-sync tables: the universe (``instrument_universe``), the passes over it
(``instrument_sync_passes``), and the per-entry transaction that writes instruments with their events.

A pass is resumable: each entry is marked with the pass that handled it (``synced_pass``), in the same
transaction as the instrument rows and outbox records it wrote, so after a crash the pass goes on with the
entries not marked yet and no row is ever half written.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from workers.adapters.postgres._query import (
    Record,
    column_list,
    column_names,
    execute_count,
    fetch_all,
    fetch_one,
)
from workers.adapters.postgres.errors import ConIdConflict, UnknownInstrument
from workers.adapters.postgres.instruments import (
    AlreadyPlanned,
    InstrumentRace,
    apply_planned,
    lock_instruments,
    retrying_races,
    write_instruments,
)
from workers.adapters.postgres.outbox import Outbox, add_many_to_outbox
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import OutboxRow
from workers.domain.universe import UniverseEntry, entry_from_dict, entry_to_dict, spec_hash
from workers.ports.instruments import (
    EntryCommitted,
    EntryWrites,
    EventFactory,
    InstrumentChange,
    InstrumentUpsert,
    InstrumentWrite,
    PassFailure,
    SyncPass,
    UniverseRow,
)


@dataclass(frozen=True)
class LoadResult:
    """What ``instruments load`` changed in the universe."""

    added: int
    changed: int
    removed: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.added + self.changed + self.unchanged


_UNIVERSE_COLUMNS = ("instrument_id", "kind", "spec", "spec_hash", "position", "synced_pass",
                     "synced_spec_hash", "last_synced_at", "last_error")
_SELECT_UNIVERSE = sql.SQL("SELECT {} FROM instrument_universe").format(column_list(_UNIVERSE_COLUMNS))
_ORDER = sql.SQL(" ORDER BY position, instrument_id")

_UPSERT_ENTRY = """
INSERT INTO instrument_universe (instrument_id, kind, spec, spec_hash, position)
VALUES (%(instrument_id)s, %(kind)s, %(spec)s, %(spec_hash)s, %(position)s)
ON CONFLICT (instrument_id) DO UPDATE SET
    kind = EXCLUDED.kind, spec = EXCLUDED.spec, spec_hash = EXCLUDED.spec_hash, position = EXCLUDED.position,
    loaded_at = CASE WHEN instrument_universe.spec_hash = EXCLUDED.spec_hash
                     THEN instrument_universe.loaded_at ELSE now() END,
    -- A changed entry is handled again, even by a pass that has already handled it.
    synced_pass = CASE WHEN instrument_universe.spec_hash = EXCLUDED.spec_hash
                       THEN instrument_universe.synced_pass END
RETURNING (xmax = 0) AS inserted
"""
_LOCK_UNIVERSE = "LOCK TABLE instrument_universe IN SHARE ROW EXCLUSIVE MODE"
_HASHES = "SELECT instrument_id, spec_hash FROM instrument_universe"
_DELETE_OTHERS = "DELETE FROM instrument_universe WHERE NOT (instrument_id = ANY(%s))"

_OPEN_PASS = (
    "SELECT pass_id, started_at FROM instrument_sync_passes WHERE finished_at IS NULL ORDER BY pass_id"
)
_ABANDON_PASS = "UPDATE instrument_sync_passes SET finished_at = now() WHERE pass_id = %s"
_RESUME_PASS = (
    "UPDATE instrument_sync_passes SET resumes = resumes + 1, entries_total = %s WHERE pass_id = %s"
)
_NEW_PASS = "INSERT INTO instrument_sync_passes (entries_total) VALUES (%s) RETURNING pass_id, started_at"
_PASS_COUNTS = """
SELECT count(*) AS done, count(*) FILTER (WHERE last_error IS NOT NULL) AS failed
FROM instrument_universe WHERE synced_pass = %s
"""
_PASS_FAILURES = """
SELECT instrument_id, last_error FROM instrument_universe
WHERE synced_pass = %s AND last_error IS NOT NULL ORDER BY position, instrument_id
"""
_FINISH_PASS = """
UPDATE instrument_sync_passes SET finished_at = now(), entries_total = %(total)s, entries_done = %(done)s,
    entries_failed = %(failed)s, created = created + %(created)s, updated = updated + %(updated)s,
    deactivated = deactivated + %(deactivated)s
WHERE pass_id = %(pass_id)s
"""
# Marks are applied only while the entry is still the one that was synced: an entry the operator changed
# in the meantime stays pending.
_MARK_SYNCED = """
UPDATE instrument_universe AS u
SET synced_pass = %s, synced_spec_hash = m.spec_hash, last_synced_at = now(), last_error = NULL
FROM unnest(%s::text[], %s::text[]) AS m(instrument_id, spec_hash)
WHERE u.instrument_id = m.instrument_id AND u.spec_hash = m.spec_hash
"""
_MARK_FAILED = """
UPDATE instrument_universe SET synced_pass = %s, last_synced_at = now(), last_error = %s
WHERE instrument_id = %s AND spec_hash = %s
"""
_LOCK_KEY = "hashtext('ibkr-workers.instrument-sync'), hashtext(coalesce(current_schema(), ''))"
_TRY_LOCK = f"SELECT pg_try_advisory_lock({_LOCK_KEY})"
_UNLOCK = f"SELECT pg_advisory_unlock({_LOCK_KEY})"

_OUTBOX_COLUMNS = column_list(column_names(OutboxRow))
_UNPUBLISHED_OF_TOPIC = sql.SQL(
    "SELECT {} FROM outbox WHERE published_at IS NULL AND topic = %s ORDER BY id LIMIT %s"
).format(_OUTBOX_COLUMNS)

_PENDING_OF_TOPIC = "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL AND topic = %s"


def _universe_row(record: Record) -> UniverseRow:
    return UniverseRow(
        entry=entry_from_dict(record["instrument_id"], record["spec"]),
        spec_hash=record["spec_hash"],
        position=record["position"],
        synced_pass=record["synced_pass"],
        synced_spec_hash=record["synced_spec_hash"],
        last_synced_at=record["last_synced_at"],
        last_error=record["last_error"],
    )


class UniverseStore:
    """The universe entries, the passes over them, and the per-entry sync transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    # -- the universe ---------------------------------------------------------------------------

    async def replace(self, entries: Sequence[UniverseEntry]) -> LoadResult:
        """Make ``entries`` the whole universe, in one transaction.

        Entries that did not change keep their sync bookkeeping; changed and new ones are synced by the
        next pass (or the running one, if it has not reached them); removed ones are deleted (their
        instruments stay in the mapper as they are).
        """
        ids = [entry.instrument_id for entry in entries]
        async with self._pool.connection() as conn, conn.transaction():
            # One load at a time, and no mark of a running pass in between.
            await conn.execute(_LOCK_UNIVERSE)
            before = {r["instrument_id"]: r["spec_hash"] for r in await fetch_all(conn, _HASHES)}
            added = changed = unchanged = 0
            for position, entry in enumerate(entries):
                fingerprint = spec_hash(entry)
                await conn.execute(_UPSERT_ENTRY, {
                    "instrument_id": entry.instrument_id, "kind": entry.kind.value,
                    "spec": Jsonb(entry_to_dict(entry)), "spec_hash": fingerprint, "position": position,
                })
                previous = before.get(entry.instrument_id)
                if previous is None:
                    added += 1
                elif previous != fingerprint:
                    changed += 1
                else:
                    unchanged += 1
            removed = await execute_count(conn, _DELETE_OTHERS, (ids,))
        return LoadResult(added=added, changed=changed, removed=removed, unchanged=unchanged)

    async def entries(self) -> list[UniverseRow]:
        """Every entry, in file order."""
        async with self._pool.connection() as conn:
            return [_universe_row(r) for r in await fetch_all(conn, _SELECT_UNIVERSE + _ORDER)]

    async def pending(self, pass_id: int) -> list[UniverseRow]:
        """The entries pass ``pass_id`` has not handled yet, in file order."""
        query = _SELECT_UNIVERSE + sql.SQL(" WHERE synced_pass IS DISTINCT FROM %s") + _ORDER
        async with self._pool.connection() as conn:
            return [_universe_row(r) for r in await fetch_all(conn, query, (pass_id,))]

    # -- passes ---------------------------------------------------------------------------------

    async def open_pass(self, entries_total: int, max_age: timedelta) -> SyncPass:
        """Resume the unfinished pass if it started less than ``max_age`` ago, else start a new one.

        Older unfinished passes are closed as they are: their entries are simply synced again.
        """
        async with self._pool.connection() as conn, conn.transaction():
            now_record = await fetch_one(conn, "SELECT now() AS now")
            assert now_record is not None
            now: datetime = now_record["now"]
            resumable: SyncPass | None = None
            for record in await fetch_all(conn, _OPEN_PASS):
                if resumable is None and now - record["started_at"] < max_age:
                    resumable = SyncPass(record["pass_id"], record["started_at"], resumed=True)
                else:
                    await conn.execute(_ABANDON_PASS, (record["pass_id"],))
            if resumable is not None:
                await conn.execute(_RESUME_PASS, (entries_total, resumable.pass_id))
                return resumable
            created = await fetch_one(conn, _NEW_PASS, (entries_total,))
            assert created is not None
            return SyncPass(created["pass_id"], created["started_at"], resumed=False)

    async def pass_counts(self, pass_id: int) -> tuple[int, int]:
        """(entries handled, entries failed) by pass ``pass_id`` so far, across resumptions."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _PASS_COUNTS, (pass_id,))
        assert record is not None
        return int(record["done"]), int(record["failed"])

    async def pass_failures(self, pass_id: int) -> list[PassFailure]:
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _PASS_FAILURES, (pass_id,))
        return [PassFailure(r["instrument_id"], r["last_error"]) for r in records]

    async def finish_pass(self, pass_id: int, *, total: int, created: int, updated: int,
                          deactivated: int) -> tuple[int, int]:
        """Close pass ``pass_id``; return its (entries handled, entries failed)."""
        done, failed = await self.pass_counts(pass_id)
        async with self._pool.connection() as conn:
            await conn.execute(_FINISH_PASS, {"pass_id": pass_id, "total": total, "done": done,
                                              "failed": failed, "created": created, "updated": updated,
                                              "deactivated": deactivated})
        return done, failed

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[bool]:
        """Hold the instrument-sync lock of this schema while inside; yields False if another has it."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _TRY_LOCK + " AS locked")
            locked = bool(record and record["locked"])
            try:
                yield locked
            finally:
                if locked:
                    await conn.execute(_UNLOCK)

    # -- per entry --------------------------------------------------------------------------------

    async def mark_failed(self, pass_id: int, instrument_id: str, fingerprint: str, error: str) -> None:
        """Mark an entry handled by ``pass_id`` with ``error`` (the next pass tries it again)."""
        async with self._pool.connection() as conn:
            await conn.execute(_MARK_FAILED, (pass_id, error, instrument_id, fingerprint))

    async def commit_entry(self, pass_id: int | None, entry: tuple[str, str] | None,
                           writes: Sequence[InstrumentWrite], event: EventFactory) -> list[InstrumentUpsert]:
        """Apply ``writes`` in one transaction, with one outbox record per real change, and mark ``entry``.

        Raises ``ConIdConflict`` (nothing is written) when an instrument's conId belongs to another id.
        """

        async def attempt() -> list[InstrumentUpsert]:
            async with self._pool.connection() as conn, conn.transaction():
                outcomes = await write_instruments(conn, writes)
                await _record(conn, pass_id, [entry] if entry is not None else [], outcomes, event)
                return outcomes

        return await retrying_races(attempt)

    async def commit_entries(self, pass_id: int, batch: Sequence[EntryWrites],
                             event: EventFactory) -> list[EntryCommitted]:
        """Commit many entries' writes in one transaction and a fixed number of round trips.

        Each entry's writes get one outbox record per real change, and the entry is marked synced by
        ``pass_id``, together. An entry whose writes cannot be applied (a conId another instrument holds,
        deactivating an instrument the mapper has never seen, a value PostgreSQL refuses) is left out with
        its error, and the others are committed; an entry is never half written. Results are in batch order.
        """
        try:
            results = await retrying_races(lambda: self._commit_batch(pass_id, batch, event))
        except (psycopg.IntegrityError, psycopg.DataError) as exc:
            if len(batch) == 1:
                return [EntryCommitted([], error=str(exc).splitlines()[0])]
            # One entry's data broke the whole transaction: commit entry by entry to find it.
            return [result for one in batch for result in await self.commit_entries(pass_id, [one], event)]
        except InstrumentRace as exc:
            return [EntryCommitted([], error=str(exc)) for _ in batch]
        deferred = [n for n, result in enumerate(results) if result is None]
        if deferred:
            # Entries writing an instrument another entry of the batch writes: after it, in a later transaction.
            later = await self.commit_entries(pass_id, [batch[n] for n in deferred], event)
            for n, result in zip(deferred, later, strict=True):
                results[n] = result
        return [result for result in results if result is not None]

    async def _commit_batch(self, pass_id: int, batch: Sequence[EntryWrites],
                            event: EventFactory) -> list[EntryCommitted | None]:
        results: list[EntryCommitted | None] = []
        async with self._pool.connection() as conn, conn.transaction():
            locked = await lock_instruments(conn, [w for one in batch for w in one.writes])
            planned: list[int] = []  # how many planned writes each entry has (-1: left out or deferred)
            for one in batch:
                try:
                    planned.append(len(locked.plan(one.writes)))
                    results.append(EntryCommitted([]))
                except AlreadyPlanned:
                    planned.append(-1)
                    results.append(None)
                except (ConIdConflict, UnknownInstrument) as exc:
                    planned.append(-1)
                    results.append(EntryCommitted([], error=str(exc)))
            outcomes = iter(await apply_planned(conn, locked.planned))
            committed: list[tuple[str, str]] = []
            all_outcomes: list[InstrumentUpsert] = []
            for n, (one, count) in enumerate(zip(batch, planned, strict=True)):
                if count < 0:
                    continue
                mine = [next(outcomes) for _ in range(count)]
                results[n] = EntryCommitted(mine)
                all_outcomes.extend(mine)
                if one.entry is not None:
                    committed.append(one.entry)
            await _record(conn, pass_id, committed, all_outcomes, event)
        return results


async def _record(conn: AsyncConnection[TupleRow], pass_id: int | None, entries: Sequence[tuple[str, str]],
                  outcomes: Sequence[InstrumentUpsert], event: EventFactory) -> None:
    """The outbox records of the real changes among ``outcomes``, and the entries' marks."""
    messages = [event(o) for o in outcomes if o.change is not InstrumentChange.UNCHANGED]
    mark = pass_id is not None and bool(entries)
    if not messages and not mark:
        return
    await add_many_to_outbox(conn, messages)
    if mark:
        await conn.execute(_MARK_SYNCED, (pass_id, [e[0] for e in entries], [e[1] for e in entries]))


class TopicOutbox(Outbox):
    """The outbox restricted to one topic: what the instrument-sync relay publishes."""

    def __init__(self, pool: Pool, topic: str) -> None:
        super().__init__(pool)
        self.topic = topic

    async def unpublished(self, limit: int = 100) -> list[OutboxRow]:
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _UNPUBLISHED_OF_TOPIC, (self.topic, limit))
        return [OutboxRow(id=r["id"], topic=r["topic"], key=r["key"], payload=bytes(r["payload"]),
                          created_at=r["created_at"], published_at=r["published_at"]) for r in records]

    async def pending_count(self) -> int:
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _PENDING_OF_TOPIC, (self.topic,))
        return int(record["n"]) if record else 0
