"""Cancel requests (table ``cancel_requests``), kept as received: one may arrive before its order.

The order's owner acts on a request once (placing it CANCELLED before it reaches IBKR, or cancelling it at
IBKR) and marks it handled; a request still pending is picked up again by the owner's sweep.
"""

from __future__ import annotations

from psycopg.rows import dict_row

from workers.adapters.postgres.pool import Pool
from workers.domain.orders import OrderCancelRequested

_INSERT = """
INSERT INTO cancel_requests (order_id, account, requested_at, reason)
VALUES (%s, %s, %s, %s)
ON CONFLICT (order_id) DO NOTHING
"""
_PENDING = (
    "SELECT order_id, account, requested_at, reason FROM cancel_requests "
    "WHERE order_id = %s AND handled_at IS NULL"
)
_MARK_HANDLED = "UPDATE cancel_requests SET handled_at = now() WHERE order_id = %s AND handled_at IS NULL"


class CancelRequests:
    """The cancel requests of every order, in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record(self, cancel: OrderCancelRequested) -> bool:
        """Remember a cancel request (its order may not have arrived); False when one is known already."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_INSERT, (cancel.order_id, cancel.account, cancel.requested_at,
                                                  cancel.reason))
            return cursor.rowcount == 1

    async def pending(self, order_id: str) -> OrderCancelRequested | None:
        """The cancel request for ``order_id`` not yet acted on, or None."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(_PENDING, (order_id,))
            record = await cursor.fetchone()
        return None if record is None else OrderCancelRequested(**record)

    async def mark_handled(self, order_id: str) -> bool:
        """Record that the cancel request for ``order_id`` was acted on; False when none was pending."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_MARK_HANDLED, (order_id,))
            return cursor.rowcount == 1
