"""The ledger's batch operations: many orders, status changes or fills in one transaction each.

The order-consumer handles Kafka records and IBKR reports in batches; one transaction per batch (rather
than several per order) is what lets it keep up with the client library. The rules are the ledger's:
the state machine refuses illegal transitions, IBKR order ids are never reused, and every change is
written together with its outbox record.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.rows import TupleRow, dict_row

from workers.adapters.postgres._query import Column, column_names, rows_from, rows_param
from workers.adapters.postgres.outbox import INSERT_MANY_SQL, OUTBOX_COLUMNS, outbox_params, outbox_rows
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.rows import FillFields, OrderRow, OutboxMessage
from workers.domain.orders import (
    FINAL_STATES,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
    can_transition,
)

_COLUMNS = ", ".join(column_names(OrderRow))
_FINAL = [str(state) for state in FINAL_STATES]

_SELECT_MANY = f"SELECT {_COLUMNS} FROM orders WHERE order_id = ANY(%s)"
_PENDING_CANCELS = "SELECT order_id FROM cancel_requests WHERE order_id = ANY(%s) AND handled_at IS NULL"
CANCELLED_FIRST_REASON = "CANCELLED_BEFORE_PLACED: a cancel request arrived before the order"
_NEW_ORDER_FIELDS = (
    ("order_id", "text"), ("account", "text"), ("instrument_id", "text"), ("side", "text"),
    ("quantity", "numeric"), ("order_type", "text"), ("limit_price", "numeric"), ("stop_price", "numeric"),
    ("time_in_force", "text"), ("outside_rth", "boolean"), ("source", "text"), ("created_at", "timestamptz"),
    ("state", "text"), ("remaining_quantity", "numeric"), ("reason", "text"), ("source_topic", "text"),
    ("source_partition", "integer"), ("source_offset", "bigint"), ("ib_order_id", "integer"),
)
# Records a batch of orders, reserves the IBKR ids of the ones to place and writes their status records,
# in one statement (one round trip before placeOrder can go, atomic without a transaction block):
# - an ACCEPTED order whose cancel request came first is recorded CANCELLED;
# - an ACCEPTED order given an IBKR id (i.ib_order_id, handed out by the worker) is recorded PLACING with
#   it; the mark (the highest id ever reserved for the client id) rises to the batch's highest id, and the
#   unique (ib_client_id, ib_order_id) refuses an id the ledger holds already;
# - a known order_id is left as it is (not returned);
# - the status records were encoded beforehand for the state each order was expected to get
#   (m.expected: ACCEPTED, which PLACING is published as, or REJECTED); an order that got another state
#   (CANCELLED) gets none here.
_ANNOUNCED_AS: tuple[Column, ...] = (*OUTBOX_COLUMNS, ("expected", "text"))
_RECORD_RESERVE_AND_ANNOUNCE = f"""
WITH input AS (
    SELECT * FROM {rows_from(_NEW_ORDER_FIELDS, "i")}
), fresh AS (
    SELECT i.*, i.state = 'ACCEPTED' AND EXISTS (
        SELECT 1 FROM cancel_requests c WHERE c.order_id = i.order_id AND c.handled_at IS NULL
    ) AS cancelled_first
    FROM input i
    WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.order_id = i.order_id)
), to_place AS (
    SELECT order_id, ib_order_id FROM fresh
    WHERE ib_order_id IS NOT NULL AND state = 'ACCEPTED' AND NOT cancelled_first
), mark AS (
    INSERT INTO ib_order_ids AS mark (client_id, last_order_id)
    SELECT %(client_id)s, max(ib_order_id) FROM to_place HAVING count(*) > 0
    ON CONFLICT (client_id) DO UPDATE
        SET last_order_id = GREATEST(mark.last_order_id, EXCLUDED.last_order_id), updated_at = now()
), inserted AS (
    INSERT INTO orders (
        order_id, account, instrument_id, side, quantity, order_type, limit_price, stop_price, time_in_force,
        outside_rth, source, created_at, state, filled_quantity, remaining_quantity, reason, source_topic,
        source_partition, source_offset, owner_client_id, ib_client_id, ib_order_id
    )
    SELECT
        f.order_id, f.account, f.instrument_id, f.side, f.quantity, f.order_type, f.limit_price, f.stop_price,
        f.time_in_force, f.outside_rth, f.source, f.created_at,
        CASE WHEN p.order_id IS NOT NULL THEN 'PLACING' WHEN f.cancelled_first THEN 'CANCELLED' ELSE f.state END,
        0, CASE WHEN f.cancelled_first THEN 0 ELSE f.remaining_quantity END,
        CASE WHEN f.cancelled_first THEN %(cancelled_reason)s ELSE f.reason END,
        f.source_topic, f.source_partition, f.source_offset, %(client_id)s,
        CASE WHEN p.order_id IS NOT NULL THEN %(client_id)s END, p.ib_order_id
    FROM fresh f LEFT JOIN to_place p ON p.order_id = f.order_id
    ORDER BY f.n
    ON CONFLICT (order_id) DO NOTHING
    RETURNING {_COLUMNS}, xmin::text AS version
), announced AS (
    INSERT INTO outbox (topic, key, payload, writer)
    SELECT m.topic, m.key, m.payload, m.writer
    FROM {rows_from(_ANNOUNCED_AS, "m")}
    JOIN inserted ON inserted.order_id = m.key
        AND (CASE inserted.state WHEN 'PLACING' THEN 'ACCEPTED' ELSE inserted.state END) = m.expected
    ORDER BY m.n
)
SELECT * FROM inserted
"""
_CANCELS_HANDLED_WITH_OUTBOX = f"""
WITH handled AS (
    UPDATE cancel_requests SET handled_at = now() WHERE order_id = ANY(%(cancelled)s) AND handled_at IS NULL
)
{INSERT_MANY_SQL}
"""
_STATUS_FIELDS: tuple[Column, ...] = (
    ("order_id", "text"), ("state", "text"), ("filled_quantity", "numeric"), ("remaining_quantity", "numeric"),
    ("avg_fill_price", "numeric"), ("ib_perm_id", "bigint"), ("reason", "text"), ("ib_error_code", "integer"),
)
_VERSIONED_STATUS_FIELDS: tuple[Column, ...] = (*_STATUS_FIELDS, ("version", "text"))
_ANNOUNCED_FOR: tuple[Column, ...] = (*OUTBOX_COLUMNS, ("of_order", "text"))
_SELECT_MANY_VERSIONED = f"SELECT {_COLUMNS}, xmin::text AS version FROM orders WHERE order_id = ANY(%s)"
_APPLY_ATTEMPTS = 5
# The new states of many orders (each at most once), each written only if the row is still the version
# read, and the status records of the orders written (CTEs ``changed`` and ``announced``).
_STATUS_CHANGES = f"""
changed AS (
    UPDATE orders o SET state = u.state, filled_quantity = u.filled_quantity,
        remaining_quantity = u.remaining_quantity, avg_fill_price = u.avg_fill_price, ib_perm_id = u.ib_perm_id,
        reason = u.reason, ib_error_code = u.ib_error_code, updated_at = now()
    FROM {rows_from(_VERSIONED_STATUS_FIELDS, "u")}
    WHERE o.order_id = u.order_id AND o.xmin::text = u.version
    RETURNING o.order_id, o.xmin::text AS version
), announced AS (
    INSERT INTO outbox (topic, key, payload, writer)
    SELECT m.topic, m.key, m.payload, m.writer
    FROM {rows_from(_ANNOUNCED_FOR, "m")}
    JOIN changed ON changed.order_id = m.of_order
    ORDER BY m.n
)"""
# In one statement; returns the orders written, with their new versions.
_UPDATE_STATUS_WITH_OUTBOX = f"WITH {_STATUS_CHANGES}\nSELECT order_id, version FROM changed"
# Takes ``count`` ids at once: above nextValidId, above every id ever reserved (the mark), and above every
# id in the ledger (should the mark row be lost). Returns the last id taken; the row stays locked.
_RAISE_MARK = """
INSERT INTO ib_order_ids AS mark (client_id, last_order_id) VALUES (%(client_id)s, %(last_order_id)s)
ON CONFLICT (client_id) DO UPDATE
    SET last_order_id = GREATEST(mark.last_order_id, EXCLUDED.last_order_id), updated_at = now()
"""
_HIGHEST_IB_ORDER_ID = """
SELECT GREATEST((SELECT last_order_id FROM ib_order_ids WHERE client_id = %(client_id)s),
                (SELECT max(ib_order_id) FROM orders WHERE ib_client_id = %(client_id)s))
"""
_SET_PLACING = f"""
UPDATE orders SET state = 'PLACING', ib_client_id = %(client_id)s, ib_order_id = %(ib_order_id)s, updated_at = now()
WHERE order_id = %(order_id)s AND state = 'ACCEPTED'
RETURNING {_COLUMNS}, xmin::text AS version
"""
_FILL_COLUMNS = (
    "fill_id", "order_id", "con_id", "side", "quantity", "price", "currency", "exchange", "executed_at",
    "commission", "commission_currency", "ib_order_id", "ib_perm_id", "cumulative_quantity", "avg_price",
    "corrects_fill_id",
)
_FILL_FIELDS: tuple[Column, ...] = (
    ("fill_id", "text"), ("order_id", "text"), ("con_id", "bigint"), ("side", "text"), ("quantity", "numeric"),
    ("price", "numeric"), ("currency", "text"), ("exchange", "text"), ("executed_at", "timestamptz"),
    ("commission", "numeric"), ("commission_currency", "text"), ("ib_order_id", "integer"),
    ("ib_perm_id", "bigint"), ("cumulative_quantity", "numeric"), ("avg_price", "numeric"),
    ("corrects_fill_id", "text"),
)
assert tuple(name for name, _ in _FILL_FIELDS) == _FILL_COLUMNS
# A replayed execId inserts nothing; the new fill_ids come back.
_INSERT_FILLS = (
    f"INSERT INTO fills ({', '.join(_FILL_COLUMNS)}) SELECT {', '.join(_FILL_COLUMNS)} "
    f"FROM {rows_from(_FILL_FIELDS, 'f')} ORDER BY n ON CONFLICT (fill_id) DO NOTHING RETURNING fill_id"
)
_COMMISSION_FIELDS: tuple[Column, ...] = (
    ("fill_id", "text"), ("commission", "numeric"), ("commission_currency", "text"),
)
_SET_COMMISSIONS = (
    "UPDATE fills SET commission = c.commission, commission_currency = c.commission_currency "
    f"FROM {rows_from(_COMMISSION_FIELDS, 'c')} WHERE fills.fill_id = c.fill_id"
)
# A batch of IBKR's reports in one statement: its new fills, the commissions of fills recorded before (a
# statement's parts do not see each other's rows: a commission of a fill inserted here goes in with it),
# and its orders' status changes with their status records. Returns ('fill', fill_id, NULL) for each new
# fill and ('order', order_id, version) for each order written.
_RECORD_REPORTS = f"""
WITH new_fills AS (
    {_INSERT_FILLS}
), commissions AS (
    {_SET_COMMISSIONS}
), {_STATUS_CHANGES}
SELECT 'fill', fill_id, NULL FROM new_fills
UNION ALL
SELECT 'order', order_id, version FROM changed
"""


@dataclass(frozen=True)
class NewOrder:
    """An order request to record, in the state the guards decided (ACCEPTED, REJECTED or CANCELLED)."""

    order: OrderRequested
    state: OrderState
    reason: str | None = None
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None


@dataclass(frozen=True)
class StatusChange:
    """A requested state change of one order, with the fields IBKR reported (None keeps a field)."""

    order_id: str
    state: OrderState
    filled: Decimal | None = None
    remaining: Decimal | None = None
    avg_price: Decimal | None = None
    perm_id: int | None = None
    reason: str | None = None
    error_code: int | None = None
    # Apply only when the order is in one of these states (None: wherever the state machine allows).
    only_from: frozenset[OrderState] | None = None


@dataclass(frozen=True)
class AppliedChange:
    """A change the ledger accepted: the row as written and the state it left."""

    row: OrderRow
    previous: OrderState


@dataclass(frozen=True)
class RecordedReports:
    """What :meth:`OrderBatches.record_reports` wrote: the new fills (a replayed execId is not new) and the
    status changes applied."""

    new_fill_ids: list[str]
    applied: list[AppliedChange]


StatusRecord = Callable[[OrderRow, OrderState | None], OutboxMessage]
# Ledger rows as read, each with its version (xmin), by order_id: what an optimistic write checks against.
VersionedRows = dict[str, tuple[OrderRow, str]]


def order_row(record: dict[str, object]) -> OrderRow:
    values = dict(record)
    values["side"] = Side(str(values["side"]))
    values["order_type"] = OrderType(str(values["order_type"]))
    values["time_in_force"] = TimeInForce(str(values["time_in_force"]))
    values["state"] = OrderState(str(values["state"]))
    return OrderRow(**values)  # type: ignore[arg-type]


def versioned_row(record: dict[str, object]) -> tuple[OrderRow, str]:
    """A ledger row read with its version (the record's ``version`` column, ``xmin``)."""
    values = dict(record)
    version = str(values.pop("version"))
    return order_row(values), version


async def _read_versions(conn: AsyncConnection[TupleRow], order_ids: Sequence[str]) -> VersionedRows:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(_SELECT_MANY_VERSIONED, (sorted(set(order_ids)),))
        records = await cursor.fetchall()
    return {row.order_id: (row, version) for row, version in map(versioned_row, records)}


@dataclass(frozen=True)
class _Plan:
    """One optimistic round's status changes, worked out on rows read earlier: what to write, how."""

    applied: list[AppliedChange]
    touched: dict[str, OrderRow]  # the new row of each order changed
    params: dict[str, object]  # the row sources "u" (versioned changes) and "m" (their status records)

    def outcome(self, changes: Sequence[StatusChange], written: Mapping[str, str],
                ) -> tuple[list[AppliedChange], list[StatusChange], VersionedRows]:
        """(applied, changes of orders changed meanwhile, rows written with their new versions), given the
        new version of each order the statement wrote."""
        lost = set(self.touched) - set(written)
        return ([a for a in self.applied if a.row.order_id in written],
                [c for c in changes if c.order_id in lost],
                {order_id: (self.touched[order_id], version) for order_id, version in written.items()})


async def _current(conn: AsyncConnection[TupleRow], changes: Sequence[StatusChange],
                   read: VersionedRows | None) -> VersionedRows:
    """The rows ``changes`` are about: those in ``read`` (read before, by the caller), the others read now."""
    current = dict(read or {})
    missing = [c.order_id for c in changes if c.order_id not in current]
    if missing:
        current |= await _read_versions(conn, missing)
    return current


async def _apply_once(conn: AsyncConnection[TupleRow], changes: Sequence[StatusChange], status: StatusRecord,
                      read: VersionedRows | None = None,
                      ) -> tuple[list[AppliedChange], list[StatusChange], VersionedRows]:
    """One optimistic round of :meth:`OrderBatches.apply` (see :meth:`_Plan.outcome`)."""
    plan = _plan(changes, status, await _current(conn, changes, read))
    if not plan.applied:
        return [], [], {}
    async with conn.cursor() as cursor:
        await cursor.execute(_UPDATE_STATUS_WITH_OUTBOX, plan.params)
        written = {str(r[0]): str(r[1]) for r in await cursor.fetchall()}
    return plan.outcome(changes, written)


def _plan(changes: Sequence[StatusChange], status: StatusRecord, current: VersionedRows) -> _Plan:
    """The legal ones of ``changes``, applied in order to the ``current`` rows, with their status records."""
    versions = {order_id: version for order_id, (_, version) in current.items()}
    rows = {order_id: row for order_id, (row, _) in current.items()}
    applied: list[AppliedChange] = []
    touched: dict[str, OrderRow] = {}
    for change in changes:
        row = rows.get(change.order_id)
        if row is None:
            continue
        updated = _changed(row, change)
        if updated is None:
            continue
        applied.append(AppliedChange(updated, row.state))
        rows[change.order_id] = touched[change.order_id] = updated
    params: dict[str, object] = {
        "u": rows_param([_update_params(row) | {"version": versions[row.order_id]} for row in touched.values()],
                        _VERSIONED_STATUS_FIELDS),
        "m": rows_param([message | {"of_order": a.row.order_id} for a, message in zip(
            applied, outbox_rows([status(a.row, a.previous) for a in applied]), strict=True)], _ANNOUNCED_FOR),
    }
    return _Plan(applied, touched, params)


async def _rows(conn: AsyncConnection[TupleRow], query: str, order_ids: Sequence[str]) -> dict[str, OrderRow]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (list(order_ids),))
        return {row.order_id: row for row in map(order_row, await cursor.fetchall())}


class OrderBatches:
    """Batch reads and writes of the order ledger, fills and cancel requests.

    ``remember``: how many of the rows it wrote last (with their versions) it keeps, so that
    :meth:`read_versions` of an order it just recorded or changed needs no read. A remembered row is only
    ever the base of an optimistic write: should the order have changed elsewhere since, the write finds
    another version and the change is worked out again on the row read anew. The worker's own rows are
    changed by itself only (one owner per order), and what it changes through other paths it forgets
    (:meth:`forget`), so a change that looks empty on a remembered row is empty.
    """

    def __init__(self, pool: Pool, *, remember: int = 0) -> None:
        self._pool = pool
        self._remember = remember
        self._remembered: OrderedDict[str, tuple[OrderRow, str]] = OrderedDict()

    def _note(self, rows: Iterable[tuple[OrderRow, str]]) -> None:
        if not self._remember:
            return
        for row, version in rows:
            self._remembered[row.order_id] = (row, version)
            self._remembered.move_to_end(row.order_id)
        while len(self._remembered) > self._remember:
            self._remembered.popitem(last=False)

    def forget(self, order_ids: Iterable[str]) -> None:
        """Read these orders from the ledger next time (they were changed by another path)."""
        for order_id in order_ids:
            self._remembered.pop(order_id, None)

    @property
    def remembered(self) -> int:
        """How many rows it remembers."""
        return len(self._remembered)

    def remembers(self, order_id: str) -> bool:
        return order_id in self._remembered

    async def get_many(self, order_ids: Sequence[str]) -> dict[str, OrderRow]:
        if not order_ids:
            return {}
        async with self._pool.connection() as conn:
            return await _rows(conn, _SELECT_MANY, order_ids)

    async def pending_cancels(self, order_ids: Sequence[str]) -> set[str]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_PENDING_CANCELS, (list(order_ids),))
            return {str(row[0]) for row in await cursor.fetchall()}

    async def record_new(self, orders: Sequence[NewOrder], owner_client_id: int, status: StatusRecord,
                         ib_order_ids: Mapping[str, int] | None = None) -> list[OrderRow]:
        """Insert ``orders`` (ignoring known ids) with their status records; return the rows inserted.

        An ACCEPTED order given an IBKR order id in ``ib_order_ids`` is recorded with it (state PLACING,
        published as ACCEPTED), and the client id's mark rises to it, in the same statement; an id the
        ledger holds already fails the statement. One statement, one round trip: the status records
        are encoded before it, for the state the guards gave each order, and written for the orders that got
        it. An order recorded CANCELLED (its cancel came first) gets its record in a second statement; should
        the worker stop in between, the order's redelivery re-publishes its status. The rows come back in
        ``orders`` order.
        """
        if not orders:
            return []
        ids = ib_order_ids or {}
        expected = [provisional_row(new, owner_client_id) for new in orders]
        columns: dict[str, object] = {
            "i": rows_param([_insert_params(new) | {"ib_order_id": ids.get(new.order.order_id)} for new in orders],
                            _NEW_ORDER_FIELDS),
            "m": rows_param([message | {"expected": str(row.state)} for row, message in zip(
                expected, outbox_rows([status(row, None) for row in expected]), strict=True)], _ANNOUNCED_AS),
            "client_id": owner_client_id, "cancelled_reason": CANCELLED_FIRST_REASON,
        }
        position = {new.order.order_id: n for n, new in enumerate(orders)}
        async with self._pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(_RECORD_RESERVE_AND_ANNOUNCE, columns)
                written = sorted(map(versioned_row, await cursor.fetchall()),
                                 key=lambda versioned: position[versioned[0].order_id])
            self._note(written)
            inserted = [row for row, _ in written]
            cancelled = [row for row in inserted if row.state is OrderState.CANCELLED]
            if cancelled:
                await conn.execute(_CANCELS_HANDLED_WITH_OUTBOX, {
                    "cancelled": [row.order_id for row in cancelled],
                    **outbox_params([status(row, None) for row in cancelled])})
        return inserted

    async def read_versions(self, order_ids: Sequence[str]) -> VersionedRows:
        """The rows of ``order_ids`` with their versions, for :meth:`apply` (unknown ids are left out);
        remembered ones from memory, the others read in one query (and not remembered: only rows it wrote
        are, see the class)."""
        found = {i: self._remembered[i] for i in order_ids if i in self._remembered}
        missing = [i for i in order_ids if i not in found]
        if missing:
            async with self._pool.connection() as conn:
                found |= await _read_versions(conn, missing)
        return found

    async def apply(self, changes: Sequence[StatusChange], status: StatusRecord,
                    read: VersionedRows | None = None) -> list[AppliedChange]:
        """Apply ``changes`` in order; illegal or empty ones are skipped. One status record per change.

        Optimistic: the rows are read, the changes worked out, and the new rows written with their status
        records in one statement that writes an order only if it is still the version read (``xmin``);
        an order changed meanwhile (a cancel on the order path) has its changes worked out again. Two round
        trips, no transaction block, no row lock held across them; one when the caller passes the rows
        it read already (``read``, from :meth:`read_versions`): a stale one is caught like any other.
        """
        if not changes:
            return []
        async with self._pool.connection() as conn:
            return await self._apply_rounds(conn, changes, status, read, rounds=_APPLY_ATTEMPTS)

    async def _apply_rounds(self, conn: AsyncConnection[TupleRow], changes: Sequence[StatusChange],
                            status: StatusRecord, read: VersionedRows | None, *, rounds: int) -> list[AppliedChange]:
        applied: list[AppliedChange] = []
        pending = list(changes)
        for attempt in range(rounds):
            done, pending, written = await _apply_once(conn, pending, status, read if attempt == 0 else None)
            self._settle(written, pending)
            applied.extend(done)
            if not pending:
                return applied
        raise RuntimeError(f"orders kept changing while their status was applied: "
                           f"{sorted({c.order_id for c in pending})}")

    def _settle(self, written: VersionedRows, lost: Sequence[StatusChange]) -> None:
        """After a round: remember the rows written, forget those changed meanwhile (read them next time)."""
        self._note(written.values())
        self.forget(c.order_id for c in lost)

    async def record_reports(self, fills: Sequence[FillFields], commissions: Sequence[tuple[str, Decimal, str]],
                             changes: Sequence[StatusChange], status: StatusRecord,
                             read: VersionedRows | None = None) -> RecordedReports:
        """:meth:`insert_fills`, :meth:`set_commissions` and :meth:`apply` of one batch of IBKR's reports, in
        one statement (one round trip when ``read`` holds the orders' rows); only the status changes of
        orders changed meanwhile take more rounds, as in :meth:`apply`.

        ``commissions`` are of fills recorded before: a fill's commission that came with it is in the fill.
        """
        async with self._pool.connection() as conn:
            plan = _plan(changes, status, await _current(conn, changes, read))
            params = {"f": rows_param(_fill_params(fills), _FILL_FIELDS),
                      "c": rows_param(_commission_rows(commissions), _COMMISSION_FIELDS), **plan.params}
            async with conn.cursor() as cursor:
                await cursor.execute(_RECORD_REPORTS, params)
                result = await cursor.fetchall()
            new_fills = [str(key) for kind, key, _ in result if kind == "fill"]
            applied, pending, written = plan.outcome(
                changes, {str(key): str(version) for kind, key, version in result if kind == "order"})
            self._settle(written, pending)
            if pending:
                applied += await self._apply_rounds(conn, pending, status, None, rounds=_APPLY_ATTEMPTS - 1)
        return RecordedReports(new_fills, applied)

    async def highest_ib_order_id(self, client_id: int) -> int:
        """The highest IBKR order id ever reserved for ``client_id`` (the mark, or the ledger's), or 0."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_HIGHEST_IB_ORDER_ID, {"client_id": client_id})
            record = await cursor.fetchone()
        return int(record[0]) if record is not None and record[0] is not None else 0

    async def reserve_ib_order_ids(self, ib_order_ids: Mapping[str, int],
                                   client_id: int) -> list[tuple[OrderRow, int]]:
        """Give each still-ACCEPTED order its IBKR order id (from ``ib_order_ids``) and make it PLACING.

        The ids are handed out by the worker, above every id ever reserved for ``client_id``; the mark
        rises to the highest. An id given to an order that is no longer ACCEPTED (cancelled meanwhile) is
        simply never used: IB allows gaps. Returns the orders reserved, in ``ib_order_ids`` order.
        """
        if not ib_order_ids:
            return []
        params = [{"client_id": client_id, "ib_order_id": ib_id, "order_id": order_id}
                  for order_id, ib_id in ib_order_ids.items()]
        reserved: list[tuple[OrderRow, int]] = []
        versions: list[tuple[OrderRow, str]] = []
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_RAISE_MARK, {"client_id": client_id, "last_order_id": max(ib_order_ids.values())})
            async with conn.cursor(row_factory=dict_row) as rows:
                await rows.executemany(_SET_PLACING, params, returning=True)
                while True:
                    record = await rows.fetchone()
                    if record is not None:
                        row, version = versioned_row(record)
                        assert row.ib_order_id is not None
                        reserved.append((row, row.ib_order_id))
                        versions.append((row, version))
                    if not rows.nextset():
                        break
        self._note(versions)  # committed
        return reserved

    async def insert_fills(self, fills: Sequence[FillFields]) -> list[str]:
        """Record ``fills``; return the ids that were new (a replayed execId inserts nothing)."""
        if not fills:
            return []
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_INSERT_FILLS, {"f": rows_param(_fill_params(fills), _FILL_FIELDS)})
            return [str(row[0]) for row in await cursor.fetchall()]

    async def set_commissions(self, commissions: Sequence[tuple[str, Decimal, str]]) -> None:
        """``(fill_id, commission, currency)`` for each commission report."""
        if not commissions:
            return
        async with self._pool.connection() as conn:
            await conn.execute(_SET_COMMISSIONS, {"c": rows_param(_commission_rows(commissions), _COMMISSION_FIELDS)})


def _fill_params(fills: Sequence[FillFields]) -> list[dict[str, object]]:
    """The rows of :data:`_FILL_FIELDS` for ``fills``; the first of a ``fill_id`` given twice."""
    unique = {f.fill_id: f for f in reversed(fills)}
    return [{c: getattr(f, c) for c in _FILL_COLUMNS} | {"side": str(f.side)}
            for f in fills if unique.get(f.fill_id) is f]


def _commission_rows(commissions: Sequence[tuple[str, Decimal, str]]) -> list[dict[str, object]]:
    """The rows of :data:`_COMMISSION_FIELDS`: the last commission of each fill."""
    last = {fill_id: (commission, currency) for fill_id, commission, currency in commissions}
    return [{"fill_id": fill_id, "commission": c, "commission_currency": cur} for fill_id, (c, cur) in last.items()]


def provisional_row(new: NewOrder, owner_client_id: int) -> OrderRow:
    """The row ``new`` is expected to become (before IBKR ids: those come with SUBMITTED)."""
    order = new.order
    now = datetime.now(UTC)
    return OrderRow(
        order_id=order.order_id, account=order.account, instrument_id=order.instrument_id, side=order.side,
        quantity=order.quantity, order_type=order.order_type, limit_price=order.limit_price,
        stop_price=order.stop_price, time_in_force=order.time_in_force, outside_rth=order.outside_rth,
        source=order.source, created_at=order.created_at, state=new.state, ib_client_id=None, ib_order_id=None,
        ib_perm_id=None, con_id=None, filled_quantity=Decimal(0),
        remaining_quantity=order.quantity if new.state is OrderState.ACCEPTED else Decimal(0),
        avg_fill_price=None, reason=new.reason, ib_error_code=None, source_topic=new.source_topic,
        source_partition=new.source_partition, source_offset=new.source_offset, accepted_at=now,
        updated_at=now, owner_client_id=owner_client_id,
    )


def _insert_params(new: NewOrder) -> dict[str, object]:
    order = new.order
    return {
        "order_id": order.order_id, "account": order.account, "instrument_id": order.instrument_id,
        "side": str(order.side), "quantity": order.quantity, "order_type": str(order.order_type),
        "limit_price": order.limit_price, "stop_price": order.stop_price,
        "time_in_force": str(order.time_in_force), "outside_rth": order.outside_rth, "source": order.source,
        "created_at": order.created_at, "state": str(new.state),
        "remaining_quantity": order.quantity if new.state is OrderState.ACCEPTED else 0,
        "reason": new.reason, "source_topic": new.source_topic, "source_partition": new.source_partition,
        "source_offset": new.source_offset,
    }


def _changed(row: OrderRow, change: StatusChange) -> OrderRow | None:
    """``row`` after ``change``, or None when the change is illegal or changes nothing."""
    if change.only_from is not None and row.state not in change.only_from:
        return None
    same_state = change.state is row.state
    if same_state and change.state is not OrderState.PARTIALLY_FILLED:
        return None
    if same_state and (change.filled is None or change.filled == row.filled_quantity):
        return None
    if not same_state and not can_transition(row.state, change.state):
        return None
    return replace(
        row,
        state=change.state,
        filled_quantity=change.filled if change.filled is not None else row.filled_quantity,
        remaining_quantity=change.remaining if change.remaining is not None else row.remaining_quantity,
        avg_fill_price=change.avg_price if change.avg_price is not None else row.avg_fill_price,
        ib_perm_id=change.perm_id if change.perm_id is not None else row.ib_perm_id,
        reason=change.reason if change.reason is not None else row.reason,
        ib_error_code=change.error_code if change.error_code is not None else row.ib_error_code,
        updated_at=datetime.now(UTC),
    )


def _update_params(row: OrderRow) -> dict[str, object]:
    return {
        "order_id": row.order_id, "state": str(row.state), "filled_quantity": row.filled_quantity,
        "remaining_quantity": row.remaining_quantity, "avg_fill_price": row.avg_fill_price,
        "ib_perm_id": row.ib_perm_id, "reason": row.reason, "ib_error_code": row.ib_error_code,
    }
