"""The order ledger (table ``orders``): every order is recorded here before it reaches IBKR.

One repository for orders, built for batches: the order-consumer handles Kafka records and IBKR's reports
in batches, and one statement per batch (rather than several per order) is what lets it keep up with the
client library. The rules are the domain's (:meth:`~workers.domain.orders.Order.after`): a change is
worked out on the order as read and written only if the stored order is still that version (``xmin``),
IBKR order ids are never reused, and every change is written together with its status record.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from psycopg import AsyncConnection
from psycopg.rows import TupleRow, dict_row

from workers.adapters.postgres._query import rows_param
from workers.adapters.postgres.order_statements import (
    ANNOUNCED_AS,
    ANNOUNCED_FOR,
    CANCELS_HANDLED_WITH_OUTBOX,
    COMMISSION_FIELDS,
    COUNT_OPEN_OWNED,
    FILL_FIELDS,
    FINAL,
    HIGHEST_IB_ORDER_ID,
    INSERT_FILLS,
    NEW_ORDER_FIELDS,
    RAISE_MARK,
    REANNOUNCE_UNCHANGED,
    REANNOUNCED_AT,
    RECORD_REPORTS,
    RECORD_RESERVE_AND_ANNOUNCE,
    RELEASE_UNPLACED,
    SELECT_MANY,
    SELECT_MANY_VERSIONED,
    SELECT_OPEN_OWNED,
    SELECT_OPEN_OWNED_WITH_PENDING_CANCEL,
    SET_COMMISSIONS,
    SET_PLACING,
    UPDATE_STATUS_WITH_OUTBOX,
    VERSIONED_STATUS_FIELDS,
    WORKING_QUANTITIES,
    commission_rows,
    fill_params,
    insert_params,
    order_from_record,
    update_params,
    versioned_order,
)
from workers.adapters.postgres.outbox import outbox_params, outbox_rows
from workers.adapters.postgres.pool import Pool
from workers.domain.fills import Fill
from workers.domain.orders import (
    CANCELLED_FIRST_REASON,
    AppliedChange,
    NewOrder,
    Order,
    OrderState,
    Side,
    StatusChange,
)
from workers.ports.orders import Commission, RecordedReports, StatusRecord, VersionedOrders

# Rounds of an optimistic status write before giving up (an order changing under it every time).
_APPLY_ATTEMPTS = 5


async def _read_versions(conn: AsyncConnection[TupleRow], order_ids: Sequence[str]) -> VersionedOrders:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(SELECT_MANY_VERSIONED, (sorted(set(order_ids)),))
        records = await cursor.fetchall()
    return {row.order_id: (row, version) for row, version in map(versioned_order, records)}


@dataclass(frozen=True)
class _Plan:
    """One optimistic round's status changes, worked out on rows read earlier: what to write, how."""

    applied: list[AppliedChange]
    touched: dict[str, Order]  # the new row of each order changed
    params: dict[str, object]  # the row sources "u" (versioned changes) and "m" (their status records)

    def outcome(self, changes: Sequence[StatusChange], written: Mapping[str, str],
                ) -> tuple[list[AppliedChange], list[StatusChange], VersionedOrders]:
        """(applied, changes of orders changed meanwhile, rows written with their new versions), given the
        new version of each order the statement wrote."""
        lost = set(self.touched) - set(written)
        return ([a for a in self.applied if a.order.order_id in written],
                [c for c in changes if c.order_id in lost],
                {order_id: (self.touched[order_id], version) for order_id, version in written.items()})


async def _current(conn: AsyncConnection[TupleRow], changes: Sequence[StatusChange],
                   read: VersionedOrders | None) -> VersionedOrders:
    """The rows ``changes`` are about: those in ``read`` (read before, by the caller), the others read now."""
    current = dict(read or {})
    missing = [c.order_id for c in changes if c.order_id not in current]
    if missing:
        current |= await _read_versions(conn, missing)
    return current


async def _apply_once(conn: AsyncConnection[TupleRow], changes: Sequence[StatusChange], status: StatusRecord,
                      read: VersionedOrders | None = None,
                      ) -> tuple[list[AppliedChange], list[StatusChange], VersionedOrders]:
    """One optimistic round of :meth:`OrderLedger.apply` (see :meth:`_Plan.outcome`)."""
    plan = _plan(changes, status, await _current(conn, changes, read))
    if not plan.applied:
        return [], [], {}
    async with conn.cursor() as cursor:
        await cursor.execute(UPDATE_STATUS_WITH_OUTBOX, plan.params)
        written = {str(r[0]): str(r[1]) for r in await cursor.fetchall()}
    return plan.outcome(changes, written)


def _plan(changes: Sequence[StatusChange], status: StatusRecord, current: VersionedOrders) -> _Plan:
    """The legal ones of ``changes``, applied in order to the ``current`` rows, with their status records."""
    versions = {order_id: version for order_id, (_, version) in current.items()}
    rows = {order_id: row for order_id, (row, _) in current.items()}
    applied: list[AppliedChange] = []
    touched: dict[str, Order] = {}
    for change in changes:
        row = rows.get(change.order_id)
        if row is None:
            continue
        updated = row.after(change)
        if updated is None:
            continue
        applied.append(AppliedChange(updated, row.state))
        rows[change.order_id] = touched[change.order_id] = updated
    params: dict[str, object] = {
        "u": rows_param([update_params(row) | {"version": versions[row.order_id]} for row in touched.values()],
                        VERSIONED_STATUS_FIELDS),
        "m": rows_param([message | {"of_order": a.order.order_id} for a, message in zip(
            applied, outbox_rows([status(a.order, a.previous) for a in applied]), strict=True)], ANNOUNCED_FOR),
    }
    return _Plan(applied, touched, params)


async def _rows(conn: AsyncConnection[TupleRow], query: str, order_ids: Sequence[str]) -> dict[str, Order]:
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (list(order_ids),))
        return {row.order_id: row for row in map(order_from_record, await cursor.fetchall())}



class OrderLedger:
    """Orders, their IBKR ids and fills, read and written in batches.

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
        self._remembered: OrderedDict[str, tuple[Order, str]] = OrderedDict()

    def _note(self, rows: Iterable[tuple[Order, str]]) -> None:
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

    async def get(self, order_id: str) -> Order | None:
        """The order ``order_id``, or None when the ledger has never seen it."""
        return (await self.get_many([order_id])).get(order_id)

    async def get_many(self, order_ids: Sequence[str]) -> dict[str, Order]:
        if not order_ids:
            return {}
        async with self._pool.connection() as conn:
            return await _rows(conn, SELECT_MANY, order_ids)

    async def record_new(self, orders: Sequence[NewOrder], owner_client_id: int, status: StatusRecord,
                         ib_order_ids: Mapping[str, int] | None = None) -> list[Order]:
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
        expected = [Order.recorded(new, owner_client_id) for new in orders]
        columns: dict[str, object] = {
            "i": rows_param([insert_params(new) | {"ib_order_id": ids.get(new.order.order_id)} for new in orders],
                            NEW_ORDER_FIELDS),
            "m": rows_param([message | {"expected": str(row.state)} for row, message in zip(
                expected, outbox_rows([status(row, None) for row in expected]), strict=True)], ANNOUNCED_AS),
            "client_id": owner_client_id, "cancelled_reason": CANCELLED_FIRST_REASON,
        }
        position = {new.order.order_id: n for n, new in enumerate(orders)}
        async with self._pool.connection() as conn:
            async with conn.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(RECORD_RESERVE_AND_ANNOUNCE, columns)
                written = sorted(map(versioned_order, await cursor.fetchall()),
                                 key=lambda versioned: position[versioned[0].order_id])
            self._note(written)
            inserted = [row for row, _ in written]
            cancelled = [row for row in inserted if row.state is OrderState.CANCELLED]
            if cancelled:
                await conn.execute(CANCELS_HANDLED_WITH_OUTBOX, {
                    "cancelled": [row.order_id for row in cancelled],
                    **outbox_params([status(row, None) for row in cancelled])})
        return inserted

    async def read_versions(self, order_ids: Sequence[str]) -> VersionedOrders:
        """The rows of ``order_ids`` with their versions, for :meth:`apply` (unknown ids are left out);
        remembered ones from memory, the others read in one query (and not remembered: only rows it wrote
        are, see the class)."""
        found = {i: self._remembered[i] for i in order_ids if i in self._remembered}
        missing = [i for i in order_ids if i not in found]
        if missing:
            async with self._pool.connection() as conn:
                found |= await _read_versions(conn, missing)
        return found

    async def reannounce(self, orders: VersionedOrders, status: StatusRecord) -> int:
        """Write the status record of each order still at the version read; return how many were written.

        An order changed since it was read gets none: the change wrote its own, newer record, which a
        record of the older state must not follow.
        """
        if not orders:
            return 0
        messages = outbox_rows([status(row, None) for row, _ in orders.values()])
        params = {"m": rows_param([message | {"version": version} for message, (_, version) in zip(
            messages, orders.values(), strict=True)], REANNOUNCED_AT)}
        async with self._pool.connection() as conn:
            cursor = await conn.execute(REANNOUNCE_UNCHANGED, params)
            return cursor.rowcount

    async def apply(self, changes: Sequence[StatusChange], status: StatusRecord,
                    read: VersionedOrders | None = None) -> list[AppliedChange]:
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
                            status: StatusRecord, read: VersionedOrders | None, *, rounds: int) -> list[AppliedChange]:
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

    def _settle(self, written: VersionedOrders, lost: Sequence[StatusChange]) -> None:
        """After a round: remember the rows written, forget those changed meanwhile (read them next time)."""
        self._note(written.values())
        self.forget(c.order_id for c in lost)

    async def record_reports(self, fills: Sequence[Fill], commissions: Sequence[Commission],
                             changes: Sequence[StatusChange], status: StatusRecord,
                             read: VersionedOrders | None = None) -> RecordedReports:
        """:meth:`insert_fills`, :meth:`set_commissions` and :meth:`apply` of one batch of IBKR's reports, in
        one statement (one round trip when ``read`` holds the orders' rows); only the status changes of
        orders changed meanwhile take more rounds, as in :meth:`apply`.

        ``commissions`` are of fills recorded before: a fill's commission that came with it is in the fill.
        """
        async with self._pool.connection() as conn:
            plan = _plan(changes, status, await _current(conn, changes, read))
            params = {"f": rows_param(fill_params(fills), FILL_FIELDS),
                      "c": rows_param(commission_rows(commissions), COMMISSION_FIELDS), **plan.params}
            async with conn.cursor() as cursor:
                await cursor.execute(RECORD_REPORTS, params)
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
            cursor = await conn.execute(HIGHEST_IB_ORDER_ID, {"client_id": client_id})
            record = await cursor.fetchone()
        return int(record[0]) if record is not None and record[0] is not None else 0

    async def reserve_ib_order_ids(self, ib_order_ids: Mapping[str, int],
                                   client_id: int) -> list[tuple[Order, int]]:
        """Give each still-ACCEPTED order its IBKR order id (from ``ib_order_ids``) and make it PLACING.

        The ids are handed out by the worker, above every id ever reserved for ``client_id``; the mark
        rises to the highest. An id given to an order that is no longer ACCEPTED (cancelled meanwhile) is
        simply never used: IB allows gaps. Returns the orders reserved, in ``ib_order_ids`` order.
        """
        if not ib_order_ids:
            return []
        params = [{"client_id": client_id, "ib_order_id": ib_id, "order_id": order_id}
                  for order_id, ib_id in ib_order_ids.items()]
        reserved: list[tuple[Order, int]] = []
        versions: list[tuple[Order, str]] = []
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(RAISE_MARK, {"client_id": client_id, "last_order_id": max(ib_order_ids.values())})
            async with conn.cursor(row_factory=dict_row) as rows:
                await rows.executemany(SET_PLACING, params, returning=True)
                while True:
                    record = await rows.fetchone()
                    if record is not None:
                        row, version = versioned_order(record)
                        assert row.ib_order_id is not None
                        reserved.append((row, row.ib_order_id))
                        versions.append((row, version))
                    if not rows.nextset():
                        break
        self._note(versions)  # committed
        return reserved

    async def insert_fills(self, fills: Sequence[Fill]) -> list[str]:
        """Record ``fills``; return the ids that were new (a replayed execId inserts nothing)."""
        if not fills:
            return []
        async with self._pool.connection() as conn:
            cursor = await conn.execute(INSERT_FILLS, {"f": rows_param(fill_params(fills), FILL_FIELDS)})
            return [str(row[0]) for row in await cursor.fetchall()]

    async def set_commissions(self, commissions: Sequence[Commission]) -> None:
        """``(fill_id, commission, currency)`` for each commission report."""
        if not commissions:
            return
        async with self._pool.connection() as conn:
            await conn.execute(SET_COMMISSIONS, {"c": rows_param(commission_rows(commissions), COMMISSION_FIELDS)})

    async def release_unplaced(self, order_id: str) -> bool:
        """PLACING back to ACCEPTED for an order reconciliation proved IBKR never received (and forget it)."""
        self.forget([order_id])
        async with self._pool.connection() as conn:
            cursor = await conn.execute(RELEASE_UNPLACED, (order_id,))
            return cursor.rowcount == 1

    async def open_orders_owned_by(self, client_id: int) -> list[Order]:
        """The orders not in a final state that the worker with ``client_id`` accepted, oldest first."""
        return await self._open(SELECT_OPEN_OWNED, client_id)

    async def open_with_pending_cancel(self, client_id: int) -> list[Order]:
        """Open orders of ``client_id`` with a cancel request nobody has acted on yet, oldest first."""
        return await self._open(SELECT_OPEN_OWNED_WITH_PENDING_CANCEL, client_id)

    async def working_quantities(self, accounts: Sequence[str], instrument_ids: Sequence[str],
                                 ) -> dict[tuple[str, str, Side], Decimal]:
        """The remaining quantity of the working orders (every replica's) by (account, instrument, side)."""
        if not accounts or not instrument_ids:
            return {}
        async with self._pool.connection() as conn:
            cursor = await conn.execute(WORKING_QUANTITIES, {"final": FINAL, "accounts": sorted(set(accounts)),
                                                             "instruments": sorted(set(instrument_ids))})
            return {(str(a), str(i), Side(str(side))): Decimal(q) for a, i, side, q in await cursor.fetchall()}

    async def count_open_owned_by(self, client_id: int) -> int:
        """How many orders of ``client_id`` are not in a final state (the worker's orders in flight)."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(COUNT_OPEN_OWNED, {"client_id": client_id, "final": FINAL})
            record = await cursor.fetchone()
        return int(record[0]) if record else 0

    async def _open(self, query: str, client_id: int) -> list[Order]:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
            await cursor.execute(query, {"client_id": client_id, "final": FINAL})
            return [order_from_record(record) for record in await cursor.fetchall()]
