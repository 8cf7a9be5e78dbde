"""The async connection pool every store shares."""

from __future__ import annotations

from typing import TypeAlias

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

Pool: TypeAlias = AsyncConnectionPool[AsyncConnection[TupleRow]]


def build_pool(
    dsn: str,
    *,
    max_size: int = 5,
    min_size: int = 1,
    wait_seconds: float = 10.0,
    name: str = "ibkr-workers",
) -> Pool:
    """A pool for ``dsn``, not opened yet: call :func:`open_pool` (or ``await pool.open()``).

    Connections are in autocommit mode, so a plain read holds no transaction open; the stores open a
    transaction explicitly where they need one. Connections are not checked before they are handed out
    (that would cost a round trip per use): a query on a broken connection fails, its caller retries, and
    the pool replaces the connection.
    """
    return AsyncConnectionPool(
        dsn,
        min_size=min(min_size, max_size),
        max_size=max_size,
        timeout=wait_seconds,
        name=name,
        kwargs={"autocommit": True},
        open=False,
    )


async def open_pool(
    dsn: str,
    *,
    max_size: int = 5,
    min_size: int = 1,
    wait_seconds: float = 10.0,
    name: str = "ibkr-workers",
) -> Pool:
    """Build a pool for ``dsn`` and open it, waiting until ``min_size`` connections are up.

    Raises ``psycopg_pool.PoolTimeout`` when the database cannot be reached within ``wait_seconds``.
    """
    pool = build_pool(dsn, max_size=max_size, min_size=min_size, wait_seconds=wait_seconds, name=name)
    try:
        await pool.open(wait=True, timeout=wait_seconds)
    except BaseException:
        await pool.close()
        raise
    return pool


async def close_pool(pool: Pool, wait_seconds: float = 5.0) -> None:
    """Close ``pool``, giving connections in use ``wait_seconds`` to come back."""
    await pool.close(timeout=wait_seconds)
