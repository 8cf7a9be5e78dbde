"""Positions (table ``positions``): IBKR's latest position per account and contract."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from workers.adapters.postgres._query import fetch_all
from workers.adapters.postgres.outbox import INSERT_MANY_SQL, outbox_arrays
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import OutboxMessage

_UPSERT = """
INSERT INTO positions (account, con_id, instrument_id, quantity, avg_cost, currency, as_of)
VALUES (%(account)s, %(con_id)s, %(instrument_id)s, %(quantity)s, %(avg_cost)s, %(currency)s, %(as_of)s)
ON CONFLICT (account, con_id) DO UPDATE SET
    instrument_id = EXCLUDED.instrument_id, quantity = EXCLUDED.quantity, avg_cost = EXCLUDED.avg_cost,
    currency = EXCLUDED.currency, as_of = EXCLUDED.as_of
WHERE positions.as_of <= EXCLUDED.as_of
"""
# The position and its event in one statement (one round trip, atomic without a transaction block).
_UPSERT_WITH_OUTBOX = f"""
WITH stored AS ({_UPSERT})
{INSERT_MANY_SQL}
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
        values = {"account": position.account, "con_id": position.con_id, "instrument_id": position.instrument_id,
                  "quantity": position.quantity, "avg_cost": position.avg_cost, "currency": position.currency,
                  "as_of": position.as_of}
        async with self._pool.connection() as conn:
            if outbox is None:
                await conn.execute(_UPSERT, values)
            else:
                await conn.execute(_UPSERT_WITH_OUTBOX, {**values, **outbox_arrays([outbox])})

    async def all(self) -> list[PositionRow]:
        async with self._pool.connection() as conn:
            return [PositionRow(**record) for record in await fetch_all(conn, _ALL)]
