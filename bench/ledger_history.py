"""A ledger with history, for benchmarks: past orders, their fills and their published status records.

A database in service holds the orders of earlier days, and autovacuum keeps statistics on its tables. A
benchmark against freshly created, empty tables measures something else: PostgreSQL plans (and caches, for
prepared statements) as if the tables were empty, then scans them whole as they fill during the run. So the
benchmarks record ``count`` finished orders first (spread over several client ids, like several
order-consumer replicas over time) and ANALYZE, as autovacuum would have.
"""

from __future__ import annotations

import psycopg

# Past orders: FILLED, owned by client ids 1-8, IBKR ids below anything the run will reserve.
_ORDERS = """
INSERT INTO orders (order_id, account, instrument_id, side, quantity, order_type, time_in_force, created_at,
                    state, ib_client_id, ib_order_id, ib_perm_id, con_id, filled_quantity, remaining_quantity,
                    avg_fill_price, source_topic, source_partition, source_offset, accepted_at, updated_at,
                    owner_client_id)
SELECT 'history-' || n, %(account)s, %(instrument_id)s, CASE WHEN n %% 2 = 0 THEN 'BUY' ELSE 'SELL' END, 1, 'MARKET',
       'DAY', at, 'FILLED', 1 + n %% 8, 1 + n / 8, 1000000 + n, %(con_id)s, 1, 0, 100, 'orders.requested', n %% 6,
       n / 6, at, at, 1 + n %% 8
FROM generate_series(1, %(count)s) AS n, LATERAL (SELECT now() - make_interval(secs => %(count)s - n + 60)) AS t(at)
"""
_FILLS = """
INSERT INTO fills (fill_id, order_id, con_id, side, quantity, price, currency, exchange, executed_at, commission,
                   commission_currency, ib_order_id, ib_perm_id, cumulative_quantity, avg_price, recorded_at,
                   published_at)
SELECT 'history-exec-' || order_id || '.01', order_id, con_id, side, 1, 100, 'USD', 'SIM', updated_at, 1, 'USD',
       ib_order_id, ib_perm_id, 1, 100, updated_at, updated_at
FROM orders WHERE order_id LIKE 'history-%'
"""
# Three status records per order (ACCEPTED, SUBMITTED, FILLED), all published long ago.
_OUTBOX = """
INSERT INTO outbox (topic, key, payload, created_at, published_at, writer)
SELECT 'orders.status', order_id, '\\x00'::bytea, updated_at, updated_at, 'order-consumer:' || owner_client_id
FROM orders, generate_series(1, 3) WHERE order_id LIKE 'history-%'
"""
_TABLES = ("orders", "fills", "outbox")


def seed_history(database_url: str, count: int, *, account: str, instrument_id: str, con_id: int) -> None:
    """Record ``count`` finished orders with their fills and outbox records, then ANALYZE the tables."""
    params = {"count": count, "account": account, "instrument_id": instrument_id, "con_id": con_id}
    with psycopg.connect(database_url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(_ORDERS, params)
            conn.execute(_FILLS)
            conn.execute(_OUTBOX)
        for table in _TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")
