"""The order ledger (table ``orders``): every order is recorded here before it reaches IBKR.

The ledger enforces the life cycle of :mod:`workers.domain.orders`: a state change locks the row
(``SELECT ... FOR UPDATE``), checks the transition and writes it in one transaction, so two handlers racing
on the same order cannot take it through an illegal path.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from workers.adapters.postgres._query import (
    Record,
    assignments,
    column_list,
    column_names,
    execute_count,
    fetch_all,
    fetch_one,
)
from workers.adapters.postgres.errors import UnknownOrder
from workers.adapters.postgres.outbox import add_to_outbox
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import CancelRequestRow, OrderRow, OutboxMessage
from workers.domain.orders import (
    FINAL_STATES,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    check_transition,
)

OutboxFor = Callable[[OrderRow], OutboxMessage]
"""Builds the Kafka record announcing an order's new row; written in the same transaction."""

_ORDER_COLUMNS = column_list(column_names(OrderRow))
_CANCEL_COLUMNS = column_list(column_names(CancelRequestRow))
_FINAL = tuple(str(state) for state in FINAL_STATES)

_INSERT = sql.SQL(
    """
    INSERT INTO orders (
        order_id, account, instrument_id, side, quantity, order_type, limit_price, stop_price,
        time_in_force, outside_rth, source, created_at, state, filled_quantity, remaining_quantity,
        source_topic, source_partition, source_offset, owner_client_id
    ) VALUES (
        %(order_id)s, %(account)s, %(instrument_id)s, %(side)s, %(quantity)s, %(order_type)s,
        %(limit_price)s, %(stop_price)s, %(time_in_force)s, %(outside_rth)s, %(source)s, %(created_at)s,
        %(state)s, 0, %(quantity)s, %(source_topic)s, %(source_partition)s, %(source_offset)s,
        %(owner_client_id)s
    )
    ON CONFLICT (order_id) DO NOTHING
    RETURNING {}
    """
).format(_ORDER_COLUMNS)
_SELECT_BY_ID = sql.SQL("SELECT {} FROM orders WHERE order_id = %s").format(_ORDER_COLUMNS)
_SELECT_FOR_UPDATE = sql.SQL("SELECT {} FROM orders WHERE order_id = %s FOR UPDATE").format(_ORDER_COLUMNS)
_SELECT_BY_IB_ORDER_ID = sql.SQL("SELECT {} FROM orders WHERE ib_client_id = %s AND ib_order_id = %s").format(
    _ORDER_COLUMNS
)
_SELECT_BY_PERM_ID = sql.SQL(
    "SELECT {} FROM orders WHERE ib_perm_id = %s ORDER BY accepted_at DESC LIMIT 1"
).format(_ORDER_COLUMNS)
_SELECT_OPEN = sql.SQL("SELECT {} FROM orders WHERE state <> ALL(%s) ORDER BY accepted_at, order_id").format(
    _ORDER_COLUMNS
)
_SELECT_OPEN_OWNED = sql.SQL(
    "SELECT {} FROM orders WHERE owner_client_id = %s AND state <> ALL(%s) ORDER BY accepted_at, order_id"
).format(_ORDER_COLUMNS)
_COUNT_OPEN_OWNED = "SELECT count(*) FROM orders WHERE owner_client_id = %s AND state <> ALL(%s)"
_SELECT_PENDING_CANCELS_OWNED = sql.SQL(
    "SELECT {} FROM orders WHERE owner_client_id = %s AND state <> ALL(%s) AND order_id IN "
    "(SELECT order_id FROM cancel_requests WHERE handled_at IS NULL) ORDER BY accepted_at"
).format(_ORDER_COLUMNS)

_INSERT_CANCEL = """
INSERT INTO cancel_requests (order_id, account, requested_at, reason)
VALUES (%s, %s, %s, %s)
ON CONFLICT (order_id) DO NOTHING
"""
_PENDING_CANCEL = sql.SQL("SELECT {} FROM cancel_requests WHERE order_id = %s AND handled_at IS NULL").format(
    _CANCEL_COLUMNS
)
# Recovery only: IBKR never received the order, so the id reserved for it was never used and the order
# goes back to ACCEPTED to be placed again under a new id (the high-water mark keeps the old one spent).
_RELEASE_UNPLACED = sql.SQL(
    "UPDATE orders SET state = 'ACCEPTED', ib_client_id = NULL, ib_order_id = NULL, updated_at = now() "
    "WHERE order_id = %s AND state = 'PLACING'"
)
_MARK_CANCEL_HANDLED = (
    "UPDATE cancel_requests SET handled_at = now() WHERE order_id = %s AND handled_at IS NULL"
)


class OrderLedger:
    """Orders, their IBKR ids and cancel requests, in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def insert_accepted(
        self,
        order: OrderRequested,
        *,
        source_topic: str | None = None,
        source_partition: int | None = None,
        source_offset: int | None = None,
        owner_client_id: int | None = None,
        outbox: OutboxFor | None = None,
    ) -> bool:
        """Record ``order`` as ACCEPTED; False when its ``order_id`` is known already (a redelivery).

        ``outbox``, when given, builds the status record to publish; it is written only when the order is new.
        """
        params = {
            "order_id": order.order_id,
            "account": order.account,
            "instrument_id": order.instrument_id,
            "side": str(order.side),
            "quantity": order.quantity,
            "order_type": str(order.order_type),
            "limit_price": order.limit_price,
            "stop_price": order.stop_price,
            "time_in_force": str(order.time_in_force),
            "outside_rth": order.outside_rth,
            "source": order.source,
            "created_at": order.created_at,
            "state": str(OrderState.ACCEPTED),
            "source_topic": source_topic,
            "source_partition": source_partition,
            "source_offset": source_offset,
            "owner_client_id": owner_client_id,
        }
        async with self._pool.connection() as conn, conn.transaction():
            record = await fetch_one(conn, _INSERT, params)
            if record is None:
                return False
            if outbox is not None:
                await add_to_outbox(conn, outbox(_order_row(record)))
            return True

    async def get(self, order_id: str) -> OrderRow | None:
        """The order ``order_id``, or None when the ledger has never seen it."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_ID, (order_id,))
        return None if record is None else _order_row(record)

    async def transition(
        self,
        order_id: str,
        new_state: OrderState,
        *,
        filled_quantity: Decimal | None = None,
        remaining_quantity: Decimal | None = None,
        avg_fill_price: Decimal | None = None,
        ib_perm_id: int | None = None,
        con_id: int | None = None,
        reason: str | None = None,
        ib_error_code: int | None = None,
        outbox: OutboxFor | None = None,
    ) -> OrderRow:
        """Move order ``order_id`` to ``new_state``, setting the fields given (None leaves a field as is).

        Raises :class:`~workers.domain.orders.IllegalTransition` (nothing is written) when the life cycle
        forbids the change, and :class:`UnknownOrder` when the order is not in the ledger. Returns the row
        as written. ``outbox``, when given, builds the status record written in the same transaction.
        """
        changes = _changes(
            filled_quantity=filled_quantity,
            remaining_quantity=remaining_quantity,
            avg_fill_price=avg_fill_price,
            ib_perm_id=ib_perm_id,
            con_id=con_id,
            reason=reason,
            ib_error_code=ib_error_code,
        )
        async with self._pool.connection() as conn, conn.transaction():
            current = await _lock(conn, order_id)
            check_transition(order_id, current.state, new_state)
            row = await _update(conn, order_id, {"state": str(new_state), **changes})
            if outbox is not None:
                await add_to_outbox(conn, outbox(row))
            return row

    async def update(
        self,
        order_id: str,
        *,
        filled_quantity: Decimal | None = None,
        remaining_quantity: Decimal | None = None,
        avg_fill_price: Decimal | None = None,
        ib_perm_id: int | None = None,
        con_id: int | None = None,
        reason: str | None = None,
        ib_error_code: int | None = None,
    ) -> OrderRow:
        """Set the fields given on order ``order_id`` without changing its state (e.g. a late permId)."""
        changes = _changes(
            filled_quantity=filled_quantity,
            remaining_quantity=remaining_quantity,
            avg_fill_price=avg_fill_price,
            ib_perm_id=ib_perm_id,
            con_id=con_id,
            reason=reason,
            ib_error_code=ib_error_code,
        )
        async with self._pool.connection() as conn, conn.transaction():
            current = await _lock(conn, order_id)
            if not changes:
                return current
            return await _update(conn, order_id, changes)

    async def find_by_ib_order_id(self, client_id: int, ib_order_id: int) -> OrderRow | None:
        """The order placed by API client ``client_id`` under IBKR order id ``ib_order_id``."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_IB_ORDER_ID, (client_id, ib_order_id))
        return None if record is None else _order_row(record)

    async def find_by_ib_perm_id(self, ib_perm_id: int) -> OrderRow | None:
        """The order IBKR knows by permanent id ``ib_perm_id``."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT_BY_PERM_ID, (ib_perm_id,))
        return None if record is None else _order_row(record)

    async def open_orders(self) -> list[OrderRow]:
        """Every order not in a final state, oldest first."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_OPEN, (list(_FINAL),))
        return [_order_row(r) for r in records]

    async def open_orders_owned_by(self, client_id: int) -> list[OrderRow]:
        """The orders not in a final state that the worker with ``client_id`` accepted, oldest first."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_OPEN_OWNED, (client_id, list(_FINAL)))
        return [_order_row(r) for r in records]

    async def count_open_owned_by(self, client_id: int) -> int:
        """How many orders of ``client_id`` are not in a final state (the worker's orders in flight)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_COUNT_OPEN_OWNED, (client_id, list(_FINAL)))
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def owned_with_pending_cancel(self, client_id: int) -> list[OrderRow]:
        """Open orders of ``client_id`` with a cancel request nobody has acted on yet."""
        async with self._pool.connection() as conn:
            records = await fetch_all(conn, _SELECT_PENDING_CANCELS_OWNED, (client_id, list(_FINAL)))
        return [_order_row(r) for r in records]

    async def release_unplaced(self, order_id: str) -> bool:
        """PLACING back to ACCEPTED for an order reconciliation proved IBKR never received."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _RELEASE_UNPLACED, (order_id,)) == 1

    async def record_cancel_request(self, cancel: OrderCancelRequested) -> bool:
        """Remember a cancel request (its order may not have arrived); False when one is known already."""
        async with self._pool.connection() as conn:
            inserted = await execute_count(
                conn, _INSERT_CANCEL, (cancel.order_id, cancel.account, cancel.requested_at, cancel.reason)
            )
        return inserted == 1

    async def pending_cancel(self, order_id: str) -> CancelRequestRow | None:
        """The cancel request for ``order_id`` not yet acted on, or None."""
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _PENDING_CANCEL, (order_id,))
        return None if record is None else CancelRequestRow(**record)

    async def mark_cancel_handled(self, order_id: str) -> bool:
        """Record that the cancel request for ``order_id`` was acted on; False when none was pending."""
        async with self._pool.connection() as conn:
            return await execute_count(conn, _MARK_CANCEL_HANDLED, (order_id,)) == 1


def _changes(**fields: object) -> dict[str, object]:
    return {name: value for name, value in fields.items() if value is not None}


async def _lock(conn: AsyncConnection[TupleRow], order_id: str) -> OrderRow:
    record = await fetch_one(conn, _SELECT_FOR_UPDATE, (order_id,))
    if record is None:
        raise UnknownOrder(order_id)
    return _order_row(record)


async def _update(conn: AsyncConnection[TupleRow], order_id: str, changes: dict[str, object]) -> OrderRow:
    query = sql.SQL(
        "UPDATE orders SET {}, updated_at = now() WHERE order_id = %(order_id)s RETURNING {}"
    ).format(assignments(changes), _ORDER_COLUMNS)
    record = await fetch_one(conn, query, {**changes, "order_id": order_id})
    if record is None:
        raise UnknownOrder(order_id)
    return _order_row(record)


def _order_row(record: Record) -> OrderRow:
    return OrderRow(
        **{
            **record,
            "side": Side(record["side"]),
            "order_type": OrderType(record["order_type"]),
            "time_in_force": TimeInForce(record["time_in_force"]),
            "state": OrderState(record["state"]),
        }
    )
