"""Positions (table ``positions``): IBKR's latest position per account and contract."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from workers.adapters.postgres._query import Column, fetch_all, rows_from, rows_param
from workers.adapters.postgres.outbox import INSERT_MANY_SQL, outbox_params
from workers.adapters.postgres.pool import Pool
from workers.domain.positions import Position
from workers.ports.outbox import OutboxMessage

_POSITION_FIELDS: tuple[Column, ...] = (
    ("account", "text"), ("con_id", "bigint"), ("instrument_id", "text"), ("quantity", "numeric"),
    ("avg_cost", "numeric"), ("currency", "text"), ("as_of", "timestamptz"),
)
# Many positions (one per account and contract) and their events in one statement.
_UPSERT_MANY_WITH_OUTBOX = f"""
WITH stored AS (
    INSERT INTO positions (account, con_id, instrument_id, quantity, avg_cost, currency, as_of)
    SELECT account, con_id, instrument_id, quantity, avg_cost, currency, as_of
    FROM {rows_from(_POSITION_FIELDS, "p")} ORDER BY n
    ON CONFLICT (account, con_id) DO UPDATE SET
        instrument_id = EXCLUDED.instrument_id, quantity = EXCLUDED.quantity, avg_cost = EXCLUDED.avg_cost,
        currency = EXCLUDED.currency, as_of = EXCLUDED.as_of
    WHERE positions.as_of <= EXCLUDED.as_of
)
{INSERT_MANY_SQL}
"""
_ALL = "SELECT account, con_id, instrument_id, quantity, avg_cost, currency, as_of FROM positions"


class PositionStore:
    """Upserts positions, with their ``positions.updated`` record in the same transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def upsert_many(self, positions: Sequence[Position], outbox: Sequence[OutboxMessage]) -> None:
        """Store ``positions`` (at most one per account and contract; an older report never overwrites a
        newer one) and queue ``outbox`` (their events), in one statement."""
        if len({(p.account, p.con_id) for p in positions}) != len(positions):
            raise ValueError("one position per account and contract")
        params = {"p": rows_param([asdict(p) for p in positions], _POSITION_FIELDS), **outbox_params(outbox)}
        async with self._pool.connection() as conn:
            await conn.execute(_UPSERT_MANY_WITH_OUTBOX, params)

    async def all(self) -> list[Position]:
        async with self._pool.connection() as conn:
            return [Position(**record) for record in await fetch_all(conn, _ALL)]
