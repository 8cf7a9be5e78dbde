"""Fills (table ``fills``): one row per IBKR execution, keyed by execId, and the marker of its publication.

``published_at`` is the outbox marker of ``fills.executed``: a fill is inserted once (a replayed
execDetails is refused by its ``fill_id``), published from :meth:`FillStore.unpublished`, and marked once
Kafka has acknowledged it.
"""

from __future__ import annotations

from decimal import Decimal

from psycopg import sql

from workers.adapters.postgres._query import (
    Record,
    column_list,
    column_names,
    execute_count,
    fetch_all,
    fetch_one,
)
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import FillRow
from workers.domain.fills import Fill
from workers.domain.orders import Side

_FROM_ORDER = ("account", "instrument_id")
_FILL_COLUMNS = column_names(FillRow, exclude=_FROM_ORDER)
_SELECT = sql.SQL("SELECT {}, {} FROM fills AS f JOIN orders AS o USING (order_id)").format(
    column_list(_FILL_COLUMNS, table="f"), column_list(_FROM_ORDER, table="o")
)
_INSERTED = column_names(FillRow, exclude=(*_FROM_ORDER, "recorded_at", "published_at"))

_INSERT = sql.SQL("INSERT INTO fills ({}) VALUES ({}) ON CONFLICT (fill_id) DO NOTHING").format(
    column_list(_INSERTED), sql.SQL(", ").join(sql.Placeholder(name) for name in _INSERTED)
)
_GET = sql.SQL("{} WHERE f.fill_id = %s").format(_SELECT)
_FOR_ORDER = sql.SQL("{} WHERE f.order_id = %s ORDER BY f.executed_at, f.fill_id").format(_SELECT)
_UNPUBLISHED = sql.SQL("{} WHERE f.published_at IS NULL ORDER BY f.recorded_at, f.fill_id LIMIT %s").format(
    _SELECT
)
# With several order-consumers, each publishes only the fills of the orders it owns, so no two replicas
# can race to publish the same execution.
_UNPUBLISHED_OWNED = sql.SQL(
    "{} WHERE f.published_at IS NULL AND o.owner_client_id = %s ORDER BY f.recorded_at, f.fill_id LIMIT %s"
).format(_SELECT)
_MARK_PUBLISHED = "UPDATE fills SET published_at = now() WHERE fill_id = %s AND published_at IS NULL"
_MARK_MANY_PUBLISHED = (
    "UPDATE fills SET published_at = now() WHERE fill_id = ANY(%s) AND published_at IS NULL"
)
_SET_COMMISSION = "UPDATE fills SET commission = %s, commission_currency = %s WHERE fill_id = %s"


class FillStore:
    """IBKR executions of ledger orders."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def insert(self, fill: Fill) -> bool:
        """Record ``fill``; False when its ``fill_id`` (execId) is known already.

        Its order must be in the ledger (the foreign key refuses a fill of an unknown order).
        """
        params = {name: getattr(fill, name) for name in _INSERTED}
        params["side"] = str(fill.side)
        async with self._pool.connection() as conn:
            return await execute_count(conn, _INSERT, params) == 1

    async def get(self, fill_id: str) -> FillRow | None:
        """The fill with execId ``fill_id``, or None."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _GET, (fill_id,))
        return None if record is None else _fill_row(record)

    async def for_order(self, order_id: str) -> list[FillRow]:
        """Every fill of order ``order_id``, in execution order."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _FOR_ORDER, (order_id,))
        return [_fill_row(r) for r in records]

    async def fill_ids_of(self, order_id: str) -> list[str]:
        """The execIds of every fill of order ``order_id``."""
        return [fill.fill_id for fill in await self.for_order(order_id)]

    async def unpublished(self, limit: int = 100, *, owner_client_id: int | None = None) -> list[FillRow]:
        """Fills whose ``fills.executed`` record Kafka has not acknowledged yet, oldest first.

        ``owner_client_id`` keeps only the fills of orders that worker owns.
        """
        async with self._pool.connection() as conn:
            if owner_client_id is None:
                records = await fetch_all(conn, _UNPUBLISHED, (limit,))
            else:
                records = await fetch_all(conn, _UNPUBLISHED_OWNED, (owner_client_id, limit))
        return [_fill_row(r) for r in records]

    async def mark_published(self, fill_id: str) -> bool:
        """Record that Kafka acknowledged fill ``fill_id``; False if unknown or marked already."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _MARK_PUBLISHED, (fill_id,)) == 1

    async def mark_many_published(self, fill_ids: list[str]) -> int:
        """Record that Kafka holds all of ``fill_ids``; return how many were newly marked."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _MARK_MANY_PUBLISHED, (fill_ids,))

    async def set_commission(self, fill_id: str, commission: Decimal, currency: str) -> bool:
        """Attach IBKR's commission report to fill ``fill_id``; False when the fill is unknown."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _SET_COMMISSION, (commission, currency, fill_id)) == 1


def _fill_row(record: Record) -> FillRow:
    return FillRow(**{**record, "side": Side(record["side"])})
