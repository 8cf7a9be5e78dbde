"""The shared async pool: opens explicitly, hands out autocommit connections, fails fast when unreachable."""

from __future__ import annotations

import socket

import pytest
from psycopg_pool import PoolTimeout

from workers.adapters.postgres.pool import build_pool, close_pool, open_pool


@pytest.mark.integration
async def test_open_pool_hands_out_working_autocommit_connections(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=2)
    try:
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT current_schema()")
            row = await cursor.fetchone()
            autocommit = conn.autocommit
        stats = pool.get_stats()
    finally:
        await close_pool(pool)

    assert row is not None
    assert row[0].startswith("t_")
    assert autocommit is True
    assert stats["pool_max"] == 2
    assert pool.closed


def test_built_pool_is_not_open_until_asked() -> None:
    pool = build_pool("postgresql://127.0.0.1:1/none", max_size=3, min_size=5)

    assert pool.closed
    assert (pool.min_size, pool.max_size) == (3, 3)


async def test_unreachable_database_fails_within_the_wait() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    dsn = f"postgresql://nobody@127.0.0.1:{free_port}/none?connect_timeout=1"

    with pytest.raises(PoolTimeout):
        await open_pool(dsn, wait_seconds=1.0)
