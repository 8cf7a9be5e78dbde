"""The outbox: encoded Kafka records written in the same transaction as the change they announce.

A publisher reads :meth:`Outbox.unpublished`, produces each record, and marks it published once Kafka has
acknowledged it; a crash in between publishes the record again (at least once, in ``id`` order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from workers.adapters.postgres._query import (
    Column,
    Record,
    column_list,
    column_names,
    execute_count,
    fetch_all,
    rows_from,
    rows_param,
)
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import OutboxRow
from workers.ports.outbox import OutboxMessage

_COLUMNS = column_list(column_names(OutboxRow))

_INSERT = "INSERT INTO outbox (topic, key, payload, writer) VALUES (%s, %s, %s, %s) RETURNING id"
OUTBOX_COLUMNS: tuple[Column, ...] = (("topic", "text"), ("key", "text"), ("payload", "bytea"), ("writer", "text"))
# In the messages' order (ids increase along it). A statement of its own, or the tail of a bigger one.
INSERT_MANY_SQL = (
    "INSERT INTO outbox (topic, key, payload, writer) "
    f"SELECT topic, key, payload, writer FROM {rows_from(OUTBOX_COLUMNS, 'm')} ORDER BY n"
)
_UNPUBLISHED = sql.SQL("SELECT {} FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT %s").format(
    _COLUMNS
)
_UNPUBLISHED_OF_WRITER = sql.SQL(
    "SELECT {} FROM outbox WHERE published_at IS NULL AND writer = %s ORDER BY id LIMIT %s"
).format(_COLUMNS)
_MARK_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = %s AND published_at IS NULL"
_MARK_MANY_PUBLISHED = "UPDATE outbox SET published_at = now() WHERE id = ANY(%s) AND published_at IS NULL"
_SET_ASIDE = (
    "UPDATE outbox SET published_at = now(), publish_error = e.error "
    "FROM unnest(%s::bigint[], %s::text[]) AS e(id, error) WHERE outbox.id = e.id AND outbox.published_at IS NULL"
)
_SET_ASIDE_ERRORS = "SELECT id, publish_error FROM outbox WHERE publish_error IS NOT NULL ORDER BY id"


async def add_to_outbox(conn: AsyncConnection[TupleRow], message: OutboxMessage) -> int:
    """Write ``message`` on ``conn`` (inside the caller's transaction); return its id."""
    cursor = await conn.execute(_INSERT, (message.topic, message.key, message.payload, message.writer))
    row = await cursor.fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])


def outbox_rows(messages: Sequence[OutboxMessage]) -> list[dict[str, Any]]:
    """``messages`` as rows of :data:`OUTBOX_COLUMNS` (a statement may add columns of its own)."""
    return [{"topic": m.topic, "key": m.key, "payload": m.payload, "writer": m.writer} for m in messages]


def outbox_params(messages: Sequence[OutboxMessage]) -> dict[str, str]:
    """The parameter of :data:`INSERT_MANY_SQL` (row source ``m``) for ``messages``."""
    return {"m": rows_param(outbox_rows(messages), OUTBOX_COLUMNS)}


async def add_many_to_outbox(conn: AsyncConnection[TupleRow], messages: Sequence[OutboxMessage]) -> None:
    """Write ``messages`` on ``conn`` in one statement (inside the caller's transaction, if any)."""
    if messages:
        await conn.execute(INSERT_MANY_SQL, outbox_params(messages))


class Outbox:
    """Pending Kafka records in table ``outbox``."""

    def __init__(self, pool: Pool, writer: str | None = None) -> None:
        self._pool = pool
        # With a writer, :meth:`unpublished` returns only the records that writer wrote.
        self.writer = writer

    async def add(self, message: OutboxMessage) -> int:
        """Write ``message`` on its own; return its id."""
        async with self._pool.connection() as conn, conn.transaction():
            return await add_to_outbox(conn, message)

    async def add_many(self, messages: Sequence[OutboxMessage]) -> None:
        """Write ``messages`` in one statement."""
        if messages:
            async with self._pool.connection() as conn:
                await add_many_to_outbox(conn, messages)

    async def unpublished(self, limit: int = 100) -> list[OutboxRow]:
        """Records not yet acknowledged by Kafka, oldest first."""
        async with self._pool.connection() as conn:
            if self.writer is not None:
                return [_outbox_row(r) for r in await fetch_all(conn, _UNPUBLISHED_OF_WRITER, (self.writer, limit))]
            return [_outbox_row(r) for r in await fetch_all(conn, _UNPUBLISHED, (limit,))]

    async def mark_published(self, message_id: int) -> bool:
        """Record that Kafka acknowledged message ``message_id``; False if unknown or marked already."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _MARK_PUBLISHED, (message_id,)) == 1

    async def mark_many_published(self, message_ids: list[int]) -> int:
        """Record that Kafka acknowledged all of ``message_ids``; return how many were newly marked."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _MARK_MANY_PUBLISHED, (message_ids,))

    async def set_aside(self, errors: dict[int, str]) -> int:
        """Give up on records Kafka refused for themselves (``errors``: id -> why); they are not retried."""
        if not errors:
            return 0
        async with self._pool.connection() as conn:
            return await execute_count(conn, _SET_ASIDE, (list(errors), list(errors.values())))

    async def set_aside_errors(self) -> dict[int, str]:
        """Every record set aside, with why (for operators and tests)."""
        async with self._pool.connection() as conn:
            return {r["id"]: r["publish_error"] for r in await fetch_all(conn, _SET_ASIDE_ERRORS, ())}


def _outbox_row(record: Record) -> OutboxRow:
    return OutboxRow(
        id=record["id"],
        topic=record["topic"],
        key=record["key"],
        payload=bytes(record["payload"]),
        created_at=record["created_at"],
        published_at=record["published_at"],
    )
