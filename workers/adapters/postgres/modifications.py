"""Modifications of working orders (table ``order_modifications``), recorded before IBKR is asked.

A modification's outcome (applied or refused) is written in one transaction with its ``orders.status``
record, and, when applied, with the order's new working terms: a crash leaves either all of it or none.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from workers.adapters.postgres._query import fetch_all, fetch_one
from workers.adapters.postgres.order_statements import ORDER_COLUMNS, order_from_record
from workers.adapters.postgres.outbox import add_to_outbox
from workers.adapters.postgres.pool import Pool
from workers.domain.modifications import (
    Modification,
    ModifyState,
    OrderModifyRequested,
    WorkingTerms,
)
from workers.domain.orders import Order, OrderState, TimeInForce
from workers.ports.orders import ModificationStatus

# The terms a modification may change: requested as given (null: unchanged), sent as target_*.
_TERMS = ("quantity", "limit_price", "stop_price", "time_in_force", "trailing_amount", "trailing_percent",
          "limit_offset")
_FIELDS = ", ".join(("modify_id", "order_id", "account", *_TERMS, "requested_at", "source", "state",
                     *(f"target_{term}" for term in _TERMS), "reason", "ib_error_code", "attempts"))
_INSERT = f"""
INSERT INTO order_modifications (
    modify_id, order_id, account, {", ".join(_TERMS)}, requested_at, source, state, source_topic,
    source_partition, source_offset
) VALUES (
    %(modify_id)s, %(order_id)s, %(account)s, {", ".join(f"%({term})s" for term in _TERMS)}, %(requested_at)s,
    %(source)s, 'REQUESTED', %(source_topic)s, %(source_partition)s, %(source_offset)s
)
ON CONFLICT (modify_id) DO NOTHING
RETURNING {_FIELDS}
"""
_SELECT = f"SELECT {_FIELDS} FROM order_modifications WHERE modify_id = %s"
_UNSETTLED_OF_ORDER = (
    f"SELECT {_FIELDS} FROM order_modifications WHERE order_id = %s AND state IN ('REQUESTED', 'SENT') "
    "ORDER BY seq"
)
_UNSETTLED_OWNED_BY = f"""
SELECT {", ".join("m." + name.strip() for name in _FIELDS.split(","))}
FROM order_modifications m JOIN orders o ON o.order_id = m.order_id
WHERE m.state IN ('REQUESTED', 'SENT') AND o.owner_client_id = %s
ORDER BY m.seq
"""
_SET_TARGET = ", ".join(f"target_{term} = %({term})s" for term in _TERMS)
_MARK_SENT = f"""
UPDATE order_modifications SET state = 'SENT', {_SET_TARGET}, attempts = attempts + 1, sent_at = now()
WHERE modify_id = %(modify_id)s AND state IN ('REQUESTED', 'SENT') AND attempts = %(attempts)s
"""
# Settled: applied with the terms given, or refused (no terms given: the ones it was sent with stay).
_KEEP_TARGET = ", ".join(f"target_{term} = CASE WHEN %(terms)s THEN %({term})s ELSE target_{term} END"
                         for term in _TERMS)
_SETTLE = f"""
UPDATE order_modifications SET state = %(state)s, reason = %(reason)s, ib_error_code = %(ib_error_code)s,
    {_KEEP_TARGET}, settled_at = now()
WHERE modify_id = %(modify_id)s AND state IN ('REQUESTED', 'SENT')
"""
_LOCK_ORDER = f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = %s FOR UPDATE"
# The order's new working terms; the terms it was requested with are kept the first time they change.
_SET_TERMS = f"""
UPDATE orders SET
    {", ".join(f"requested_{term} = CASE WHEN requested_quantity IS NULL THEN {term} ELSE requested_{term} END"
               for term in _TERMS)},
    {", ".join(f"{term} = %({term})s" for term in _TERMS)},
    remaining_quantity = CASE WHEN state IN ('FILLED', 'CANCELLED', 'REJECTED') THEN remaining_quantity
                              ELSE GREATEST(%(quantity)s - filled_quantity, 0) END,
    updated_at = now()
WHERE order_id = %(order_id)s
RETURNING {ORDER_COLUMNS}
"""


def _terms(record: dict[str, object], prefix: str) -> WorkingTerms | None:
    if record[f"{prefix}quantity"] is None:
        return None
    values = {term: record[f"{prefix}{term}"] for term in _TERMS}
    values["time_in_force"] = TimeInForce(str(values["time_in_force"]))
    return WorkingTerms(**values)  # type: ignore[arg-type]


def _modification(record: dict[str, object]) -> Modification:
    tif = record["time_in_force"]
    request = OrderModifyRequested(
        modify_id=str(record["modify_id"]), order_id=str(record["order_id"]), account=str(record["account"]),
        requested_at=record["requested_at"],  # type: ignore[arg-type]
        quantity=record["quantity"], limit_price=record["limit_price"],  # type: ignore[arg-type]
        stop_price=record["stop_price"],  # type: ignore[arg-type]
        time_in_force=None if tif is None else TimeInForce(str(tif)),
        source=None if record["source"] is None else str(record["source"]),
        trailing_amount=record["trailing_amount"], trailing_percent=record["trailing_percent"],  # type: ignore[arg-type]
        limit_offset=record["limit_offset"],  # type: ignore[arg-type]
    )
    error_code = record["ib_error_code"]
    return Modification(
        request=request, state=ModifyState(str(record["state"])), target=_terms(record, "target_"),
        reason=None if record["reason"] is None else str(record["reason"]),
        ib_error_code=None if error_code is None else int(str(error_code)),
        attempts=int(str(record["attempts"])),
    )


def _terms_params(terms: WorkingTerms | None) -> dict[str, object]:
    if terms is None:
        return {term: None for term in _TERMS} | {"terms": False}
    values: dict[str, object] = {term: getattr(terms, term) for term in _TERMS}
    return values | {"time_in_force": terms.time_in_force.value, "terms": True}


class ModificationLedger:
    """The modifications of every order, in PostgreSQL."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def record(self, request: OrderModifyRequested, source_topic: str | None = None,
                     source_partition: int | None = None, source_offset: int | None = None,
                     ) -> tuple[Modification, bool]:
        """Record ``request`` (REQUESTED); returns the modification the ledger holds under its ``modify_id``
        and whether it is new (a redelivered one is not)."""
        params = {
            "modify_id": request.modify_id, "order_id": request.order_id, "account": request.account,
            "quantity": request.quantity, "limit_price": request.limit_price, "stop_price": request.stop_price,
            "time_in_force": None if request.time_in_force is None else request.time_in_force.value,
            "trailing_amount": request.trailing_amount, "trailing_percent": request.trailing_percent,
            "limit_offset": request.limit_offset,
            "requested_at": request.requested_at, "source": request.source, "source_topic": source_topic,
            "source_partition": source_partition, "source_offset": source_offset,
        }
        async with self._pool.connection() as conn:
            inserted = await fetch_one(conn, _INSERT, params)
            if inserted is not None:
                return _modification(inserted), True
            known = await fetch_one(conn, _SELECT, (request.modify_id,))
        assert known is not None  # the insert found it
        return _modification(known), False

    async def get(self, modify_id: str) -> Modification | None:
        async with self._pool.connection() as conn:
            record = await fetch_one(conn, _SELECT, (modify_id,))
        return None if record is None else _modification(record)

    async def unsettled(self, order_id: str) -> list[Modification]:
        """The modifications of ``order_id`` not applied or refused yet, in the order they came."""
        async with self._pool.connection() as conn:
            return [_modification(r) for r in await fetch_all(conn, _UNSETTLED_OF_ORDER, (order_id,))]

    async def unsettled_owned_by(self, client_id: int) -> list[Modification]:
        """The unsettled modifications of the orders ``client_id`` placed (and of orders not placed yet)."""
        async with self._pool.connection() as conn:
            return [_modification(r) for r in await fetch_all(conn, _UNSETTLED_OWNED_BY, (client_id,))]

    async def mark_sent(self, modify_id: str, target: WorkingTerms, attempts: int) -> bool:
        """Record that placeOrder carries ``target`` to IBKR (before it is sent), if the modification is
        still unsettled and sent ``attempts`` times so far; False otherwise (settled, or sent meanwhile)."""
        params = {"modify_id": modify_id, "attempts": attempts, **_terms_params(target)}
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_MARK_SENT, params)
            return cursor.rowcount == 1

    async def refuse(self, modification: Modification, reason: str, ib_error_code: int | None,
                     status: ModificationStatus) -> Order | None:
        """REFUSED with ``reason``, and its status record (the order as it is); None when the modification
        was settled already or its order is unknown (nothing written)."""
        async with self._pool.connection() as conn, conn.transaction():
            order = await _locked_order(conn, modification.order_id)
            if order is None:
                return None
            if not await _settle(conn, modification.modify_id, ModifyState.REFUSED, reason, ib_error_code, None):
                return None
            await add_to_outbox(conn, status(order, modification.modify_id, reason))
            return order

    async def apply(self, modification: Modification, target: WorkingTerms, reason: str,
                    status: ModificationStatus, only_from: frozenset[OrderState] | None = None) -> Order | None:
        """APPLIED: the order works with ``target`` from now (a final order: worked with it last), written
        with the status record. None (nothing written) when the modification was settled already, or the
        order is not in ``only_from``."""
        async with self._pool.connection() as conn, conn.transaction():
            order = await _locked_order(conn, modification.order_id)
            if order is None or (only_from is not None and order.state not in only_from):
                return None
            if not await _settle(conn, modification.modify_id, ModifyState.APPLIED, reason, None, target):
                return None
            params = {"order_id": order.order_id, **_terms_params(target)}
            changed = await fetch_one(conn, _SET_TERMS, params)
            assert changed is not None  # the row is locked
            modified = order_from_record(changed)
            await add_to_outbox(conn, status(modified, modification.modify_id, reason))
            return modified


async def _locked_order(conn: AsyncConnection[TupleRow], order_id: str) -> Order | None:
    record = await fetch_one(conn, _LOCK_ORDER, (order_id,))
    return None if record is None else order_from_record(record)


async def _settle(conn: AsyncConnection[TupleRow], modify_id: str, state: ModifyState, reason: str,
                  ib_error_code: int | None, target: WorkingTerms | None) -> bool:
    params: dict[str, object] = {"modify_id": modify_id, "state": state.value, "reason": reason,
                                 "ib_error_code": ib_error_code, **_terms_params(target)}
    cursor = await conn.execute(_SETTLE, params)
    return cursor.rowcount == 1
