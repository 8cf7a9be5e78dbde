"""The trading state (tables ``trading_state`` and ``trading_state_changes``), in PostgreSQL.

A change takes the row lock of the one ``trading_state`` row, so concurrent changes (two operators, a
worker starting with ``KILL_SWITCH``) are written one after the other and each history row names the
state it really left.
"""

from __future__ import annotations

from datetime import datetime

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from workers.adapters.postgres.order_statements import FINAL
from workers.adapters.postgres.pool import Pool
from workers.domain.trading_state import TradingState, TradingStateChange, TradingStateRecord

_CURRENT = "SELECT state, reason, changed_by, changed_at, version FROM trading_state"
_LOCK = "SELECT state FROM trading_state FOR UPDATE"
_SET = """
UPDATE trading_state SET state = %(state)s, reason = %(reason)s, changed_by = %(by)s, changed_at = now(),
       version = version + 1
RETURNING state, reason, changed_by, changed_at, version
"""
# Every open order of the deployment gets a cancel request; the worker that owns it acts on it in its
# cancel sweep (an order not sent yet is simply CANCELLED). A request already there is left as it is.
_REQUEST_CANCELS = """
INSERT INTO cancel_requests (order_id, account, requested_at, reason)
SELECT order_id, account, now(), %(reason)s FROM orders WHERE state <> ALL(%(final)s)
ON CONFLICT (order_id) DO NOTHING
"""
_REQUEST_OWN_CANCELS = """
INSERT INTO cancel_requests (order_id, account, requested_at, reason)
SELECT order_id, account, now(), %(reason)s FROM orders
WHERE owner_client_id = %(owner)s AND state <> ALL(%(final)s)
ON CONFLICT (order_id) DO NOTHING
"""
_RECORD = """
INSERT INTO trading_state_changes (action, state, previous, reason, changed_by, changed_at, cancels_requested)
VALUES (%(action)s, %(state)s, %(previous)s, %(reason)s, %(by)s, coalesce(%(at)s::timestamptz, now()),
        %(cancels)s)
"""
_HISTORY = """
SELECT state, reason, changed_by, changed_at, id FROM trading_state_changes WHERE action = 'SET'
ORDER BY id DESC LIMIT %s
"""


def _record(row: tuple[str, str, str, datetime, int]) -> TradingStateRecord:
    state, reason, changed_by, changed_at, version = row
    return TradingStateRecord(TradingState(state), reason, changed_by, changed_at, version)


class PostgresTradingStateStore:
    """The deployment's trading state and its history (see :class:`~workers.ports.trading_state.TradingStateStore`)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def current(self) -> TradingStateRecord:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_CURRENT)
            row = await cursor.fetchone()
        if row is None:  # only if someone deleted the row: fail closed
            raise LookupError("the trading_state table has no row; run `ibkr-workers migrate`")
        return _record(row)

    async def change(self, state: TradingState, *, reason: str, changed_by: str) -> TradingStateChange:
        async with self._pool.connection() as conn, conn.transaction():
            previous = await _locked_state(conn)
            cursor = await conn.execute(_SET, {"state": state.value, "reason": reason, "by": changed_by})
            row = await cursor.fetchone()
            assert row is not None  # the row was locked above
            current = _record(row)
            cancels = 0
            if state is TradingState.HALTED:
                # On every HALTED, also a repeated one: an order recorded since the last halt is asked too.
                cursor = await conn.execute(_REQUEST_CANCELS, {
                    "reason": f"{TradingState.HALTED}: {reason}", "final": FINAL})
                cancels = max(cursor.rowcount, 0)
            await conn.execute(_RECORD, {
                "action": "SET", "state": state.value, "previous": previous.value, "reason": reason,
                "by": changed_by, "at": current.changed_at, "cancels": cancels})
        return TradingStateChange(current, previous, cancels)

    async def request_cancels(self, owner_client_id: int, reason: str) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_REQUEST_OWN_CANCELS, {
                "owner": owner_client_id, "reason": reason, "final": FINAL})
            return max(cursor.rowcount, 0)

    async def history(self, limit: int = 20) -> list[TradingStateRecord]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_HISTORY, (limit,))
            return [_record(row) for row in await cursor.fetchall()]

    async def record_global_cancel(self, *, reason: str, changed_by: str) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            previous = await _locked_state(conn)
            await conn.execute(_RECORD, {
                "action": "GLOBAL_CANCEL", "state": previous.value, "previous": previous.value,
                "reason": reason, "by": changed_by, "at": None, "cancels": None})


async def _locked_state(conn: AsyncConnection[TupleRow]) -> TradingState:
    cursor = await conn.execute(_LOCK)
    row = await cursor.fetchone()
    if row is None:
        raise LookupError("the trading_state table has no row; run `ibkr-workers migrate`")
    return TradingState(row[0])
