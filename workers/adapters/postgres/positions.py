"""Positions (table ``positions``): IBKR's latest position per account and contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from workers.adapters.postgres._query import fetch_all
from workers.adapters.postgres.outbox import add_to_outbox
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import OutboxMessage

_UPSERT = """
INSERT INTO positions (account, con_id, instrument_id, quantity, avg_cost, currency, as_of)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (account, con_id) DO UPDATE SET
    instrument_id = EXCLUDED.instrument_id, quantity = EXCLUDED.quantity, avg_cost = EXCLUDED.avg_cost,
    currency = EXCLUDED.currency, as_of = EXCLUDED.as_of
WHERE positions.as_of <= EXCLUDED.as_of
"""
_ALL = "SELECT account, con_id, instrument_id, quantity, avg_cost, currency, as_of FROM positions"


@dataclass(frozen=True)
class PositionRow:
    account: str
    con_id: int
    instrument_id: str | None
    quantity: Decimal
    avg_cost: Decimal
    currency: str
    as_of: datetime


class PositionStore:
    """Upserts positions, with their ``positions.updated`` record in the same transaction."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def upsert(self, position: PositionRow, outbox: OutboxMessage | None = None) -> None:
        """Store ``position`` (an older report never overwrites a newer one) and queue its event."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_UPSERT, (position.account, position.con_id, position.instrument_id,
                                         position.quantity, position.avg_cost, position.currency,
                                         position.as_of))
            if outbox is not None:
                await add_to_outbox(conn, outbox)

    async def all(self) -> list[PositionRow]:
        async with self._pool.connection() as conn:
            return [PositionRow(**record) for record in await fetch_all(conn, _ALL)]
