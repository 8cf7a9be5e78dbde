"""The SQL of the order ledger, and the mapping between its rows and :class:`~workers.domain.orders.Order`.

Statements that take many rows take each row source as one JSON parameter (``rows_from``), so a batch of
any size is one round trip.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from decimal import Decimal

from workers.adapters.postgres._query import Column, column_names, rows_from
from workers.adapters.postgres.outbox import INSERT_MANY_SQL, OUTBOX_COLUMNS
from workers.domain.fills import Fill
from workers.domain.orders import (
    EXTENDED_TERMS,
    FINAL_STATES,
    Algo,
    AlgoPriority,
    NewOrder,
    Order,
    OrderState,
    OrderType,
    Side,
    TimeInForce,
)

ORDER_COLUMNS = ", ".join(column_names(Order))

SELECT_MANY = f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = ANY(%s)"
NEW_ORDER_FIELDS = (
    ("order_id", "text"), ("account", "text"), ("instrument_id", "text"), ("side", "text"),
    ("quantity", "numeric"), ("order_type", "text"), ("limit_price", "numeric"), ("stop_price", "numeric"),
    ("time_in_force", "text"), ("outside_rth", "boolean"), ("source", "text"), ("created_at", "timestamptz"),
    ("state", "text"), ("remaining_quantity", "numeric"), ("reason", "text"), ("source_topic", "text"),
    ("source_partition", "integer"), ("source_offset", "bigint"), ("ib_order_id", "integer"),
    ("expires_at", "timestamptz"), ("trailing_amount", "numeric"), ("trailing_percent", "numeric"),
    ("limit_offset", "numeric"), ("good_till", "timestamptz"), ("algo", "text"), ("algo_priority", "text"),
    ("take_profit_price", "numeric"), ("stop_loss_price", "numeric"), ("oca_group", "text"),
    ("parent_order_id", "text"),
)
# Records a batch of orders, reserves the IBKR ids of the ones to place and writes their status records,
# in one statement (one round trip before placeOrder can go, atomic without a transaction block):
# - an ACCEPTED order whose cancel request came first is recorded CANCELLED (a bracket's child too, when the
#   cancel is its parent's);
# - an ACCEPTED order given an IBKR id (i.ib_order_id, handed out by the worker) is recorded PLACING with
#   it; the mark (the highest id ever reserved for the client id) rises to the batch's highest id, and the
#   unique (ib_client_id, ib_order_id) refuses an id the ledger holds already;
# - a known order_id is left as it is (not returned);
# - the status records were encoded beforehand for the state each order was expected to get
#   (m.expected: ACCEPTED, which PLACING is published as, or REJECTED); an order that got another state
#   (CANCELLED) gets none here.
ANNOUNCED_AS: tuple[Column, ...] = (*OUTBOX_COLUMNS, ("expected", "text"))
RECORD_RESERVE_AND_ANNOUNCE = f"""
WITH input AS (
    SELECT * FROM {rows_from(NEW_ORDER_FIELDS, "i")}
), fresh AS (
    SELECT i.*, i.state = 'ACCEPTED' AND EXISTS (
        SELECT 1 FROM cancel_requests c
        WHERE c.order_id IN (i.order_id, i.parent_order_id) AND c.handled_at IS NULL
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
        source_partition, source_offset, owner_client_id, ib_client_id, ib_order_id, expires_at, parent_order_id,
        {", ".join(EXTENDED_TERMS)}
    )
    SELECT
        f.order_id, f.account, f.instrument_id, f.side, f.quantity, f.order_type, f.limit_price, f.stop_price,
        f.time_in_force, f.outside_rth, f.source, f.created_at,
        CASE WHEN p.order_id IS NOT NULL THEN 'PLACING' WHEN f.cancelled_first THEN 'CANCELLED' ELSE f.state END,
        0, CASE WHEN f.cancelled_first THEN 0 ELSE f.remaining_quantity END,
        CASE WHEN f.cancelled_first THEN %(cancelled_reason)s ELSE f.reason END,
        f.source_topic, f.source_partition, f.source_offset, %(client_id)s,
        CASE WHEN p.order_id IS NOT NULL THEN %(client_id)s END, p.ib_order_id, f.expires_at, f.parent_order_id,
        {", ".join(f"f.{name}" for name in EXTENDED_TERMS)}
    FROM fresh f LEFT JOIN to_place p ON p.order_id = f.order_id
    ORDER BY f.n
    ON CONFLICT (order_id) DO NOTHING
    RETURNING {ORDER_COLUMNS}, xmin::text AS version
), announced AS (
    INSERT INTO outbox (topic, key, payload, writer)
    SELECT m.topic, m.key, m.payload, m.writer
    FROM {rows_from(ANNOUNCED_AS, "m")}
    JOIN inserted ON inserted.order_id = m.key
        AND (CASE inserted.state WHEN 'PLACING' THEN 'ACCEPTED' ELSE inserted.state END) = m.expected
    ORDER BY m.n
)
SELECT * FROM inserted
"""
# Re-announces orders (a redelivered request) with records encoded for the row version read (m.version):
# an order changed since gets none, its change wrote a newer record. The share lock keeps a change from
# writing (and announcing) before this record; an order a change holds already is skipped, not waited for
# (that change announces the newer status, and waiting on rows in another order than it could deadlock).
REANNOUNCED_AT: tuple[Column, ...] = (*OUTBOX_COLUMNS, ("version", "text"))
REANNOUNCE_UNCHANGED = f"""
WITH unchanged AS (
    SELECT o.order_id FROM orders o
    JOIN {rows_from(REANNOUNCED_AT, "m")} ON o.order_id = m.key AND o.xmin::text = m.version
    FOR SHARE OF o SKIP LOCKED
)
INSERT INTO outbox (topic, key, payload, writer)
SELECT m.topic, m.key, m.payload, m.writer
FROM {rows_from(REANNOUNCED_AT, "m")} JOIN unchanged u ON u.order_id = m.key
ORDER BY m.n
"""
CANCELS_HANDLED_WITH_OUTBOX = f"""
WITH handled AS (
    UPDATE cancel_requests SET handled_at = now() WHERE order_id = ANY(%(cancelled)s) AND handled_at IS NULL
)
{INSERT_MANY_SQL}
"""
STATUS_FIELDS: tuple[Column, ...] = (
    ("order_id", "text"), ("state", "text"), ("filled_quantity", "numeric"), ("remaining_quantity", "numeric"),
    ("avg_fill_price", "numeric"), ("ib_perm_id", "bigint"), ("reason", "text"), ("ib_error_code", "integer"),
)
VERSIONED_STATUS_FIELDS: tuple[Column, ...] = (*STATUS_FIELDS, ("version", "text"))
ANNOUNCED_FOR: tuple[Column, ...] = (*OUTBOX_COLUMNS, ("of_order", "text"))
SELECT_MANY_VERSIONED = f"SELECT {ORDER_COLUMNS}, xmin::text AS version FROM orders WHERE order_id = ANY(%s)"
# The new states of many orders (each at most once), each written only if the row is still the version
# read, and the status records of the orders written (CTEs ``changed`` and ``announced``).
STATUS_CHANGES = f"""
changed AS (
    UPDATE orders o SET state = u.state, filled_quantity = u.filled_quantity,
        remaining_quantity = u.remaining_quantity, avg_fill_price = u.avg_fill_price, ib_perm_id = u.ib_perm_id,
        reason = u.reason, ib_error_code = u.ib_error_code, updated_at = now()
    FROM {rows_from(VERSIONED_STATUS_FIELDS, "u")}
    WHERE o.order_id = u.order_id AND o.xmin::text = u.version
    RETURNING o.order_id, o.xmin::text AS version
), announced AS (
    INSERT INTO outbox (topic, key, payload, writer)
    SELECT m.topic, m.key, m.payload, m.writer
    FROM {rows_from(ANNOUNCED_FOR, "m")}
    JOIN changed ON changed.order_id = m.of_order
    ORDER BY m.n
)"""
# In one statement; returns the orders written, with their new versions.
UPDATE_STATUS_WITH_OUTBOX = f"WITH {STATUS_CHANGES}\nSELECT order_id, version FROM changed"
# Takes ``count`` ids at once: above nextValidId, above every id ever reserved (the mark), and above every
# id in the ledger (should the mark row be lost). Returns the last id taken; the row stays locked.
RAISE_MARK = """
INSERT INTO ib_order_ids AS mark (client_id, last_order_id) VALUES (%(client_id)s, %(last_order_id)s)
ON CONFLICT (client_id) DO UPDATE
    SET last_order_id = GREATEST(mark.last_order_id, EXCLUDED.last_order_id), updated_at = now()
"""
HIGHEST_IB_ORDER_ID = """
SELECT GREATEST((SELECT last_order_id FROM ib_order_ids WHERE client_id = %(client_id)s),
                (SELECT max(ib_order_id) FROM orders WHERE ib_client_id = %(client_id)s))
"""
SET_PLACING = f"""
UPDATE orders SET state = 'PLACING', ib_client_id = %(client_id)s, ib_order_id = %(ib_order_id)s, updated_at = now()
WHERE order_id = %(order_id)s AND state = 'ACCEPTED'
RETURNING {ORDER_COLUMNS}, xmin::text AS version
"""
FILL_COLUMNS = (
    "fill_id", "order_id", "con_id", "side", "quantity", "price", "currency", "exchange", "executed_at",
    "commission", "commission_currency", "ib_order_id", "ib_perm_id", "cumulative_quantity", "avg_price",
    "corrects_fill_id",
)
FILL_FIELDS: tuple[Column, ...] = (
    ("fill_id", "text"), ("order_id", "text"), ("con_id", "bigint"), ("side", "text"), ("quantity", "numeric"),
    ("price", "numeric"), ("currency", "text"), ("exchange", "text"), ("executed_at", "timestamptz"),
    ("commission", "numeric"), ("commission_currency", "text"), ("ib_order_id", "integer"),
    ("ib_perm_id", "bigint"), ("cumulative_quantity", "numeric"), ("avg_price", "numeric"),
    ("corrects_fill_id", "text"),
)
assert tuple(name for name, _ in FILL_FIELDS) == FILL_COLUMNS
# A replayed execId inserts nothing; the new fill_ids come back.
INSERT_FILLS = (
    f"INSERT INTO fills ({', '.join(FILL_COLUMNS)}) SELECT {', '.join(FILL_COLUMNS)} "
    f"FROM {rows_from(FILL_FIELDS, 'f')} ORDER BY n ON CONFLICT (fill_id) DO NOTHING RETURNING fill_id"
)
COMMISSION_FIELDS: tuple[Column, ...] = (
    ("fill_id", "text"), ("commission", "numeric"), ("commission_currency", "text"),
)
SET_COMMISSIONS = (
    "UPDATE fills SET commission = c.commission, commission_currency = c.commission_currency "
    f"FROM {rows_from(COMMISSION_FIELDS, 'c')} WHERE fills.fill_id = c.fill_id"
)
# A batch of IBKR's reports in one statement: its new fills, the commissions of fills recorded before (a
# statement's parts do not see each other's rows: a commission of a fill inserted here goes in with it),
# and its orders' status changes with their status records. Returns ('fill', fill_id, NULL) for each new
# fill and ('order', order_id, version) for each order written.
RECORD_REPORTS = f"""
WITH new_fills AS (
    {INSERT_FILLS}
), commissions AS (
    {SET_COMMISSIONS}
), {STATUS_CHANGES}
SELECT 'fill', fill_id, NULL FROM new_fills
UNION ALL
SELECT 'order', order_id, version FROM changed
"""

_OPEN = "state <> ALL(%(final)s)"
FINAL = [str(state) for state in FINAL_STATES]
SELECT_OPEN_OWNED = (f"SELECT {ORDER_COLUMNS} FROM orders WHERE owner_client_id = %(client_id)s AND {_OPEN} "
                     "ORDER BY accepted_at, order_id")
COUNT_OPEN_OWNED = f"SELECT count(*) FROM orders WHERE owner_client_id = %(client_id)s AND {_OPEN}"
SELECT_OPEN_OWNED_WITH_PENDING_CANCEL = (
    f"SELECT {ORDER_COLUMNS} FROM orders WHERE owner_client_id = %(client_id)s AND {_OPEN} AND order_id IN "
    "(SELECT order_id FROM cancel_requests WHERE handled_at IS NULL) ORDER BY accepted_at"
)
# The remaining quantity of the working orders of some accounts and instruments, by side (the position rule).
WORKING_QUANTITIES = (
    f"SELECT account, instrument_id, side, sum(remaining_quantity) FROM orders WHERE {_OPEN} "
    "AND account = ANY(%(accounts)s) AND instrument_id = ANY(%(instruments)s) "
    "GROUP BY account, instrument_id, side"
)
# Recovery only: IBKR never received the order, so the id reserved for it was never used and the order
# goes back to ACCEPTED to be placed again under a new id (the mark keeps the old one spent).
RELEASE_UNPLACED = (
    "UPDATE orders SET state = 'ACCEPTED', ib_client_id = NULL, ib_order_id = NULL, updated_at = now() "
    "WHERE order_id = %s AND state = 'PLACING'"
)

def order_from_record(record: dict[str, object]) -> Order:
    """The :class:`Order` of a row of ``orders`` (its columns by name)."""
    values = dict(record)
    values["side"] = Side(str(values["side"]))
    values["order_type"] = OrderType(str(values["order_type"]))
    values["time_in_force"] = TimeInForce(str(values["time_in_force"]))
    values["state"] = OrderState(str(values["state"]))
    if values.get("requested_time_in_force") is not None:
        values["requested_time_in_force"] = TimeInForce(str(values["requested_time_in_force"]))
    if values.get("algo") is not None:
        values["algo"] = Algo(str(values["algo"]))
    if values.get("algo_priority") is not None:
        values["algo_priority"] = AlgoPriority(str(values["algo_priority"]))
    return Order(**values)  # type: ignore[arg-type]


def versioned_order(record: dict[str, object]) -> tuple[Order, str]:
    """An order read with its version (the record's ``version`` column, ``xmin``)."""
    values = dict(record)
    version = str(values.pop("version"))
    return order_from_record(values), version


def fill_params(fills: Sequence[Fill]) -> list[dict[str, object]]:
    """The rows of :data:`FILL_FIELDS` for ``fills``; the first of a ``fill_id`` given twice."""
    unique = {f.fill_id: f for f in reversed(fills)}
    return [{c: getattr(f, c) for c in FILL_COLUMNS} | {"side": str(f.side)}
            for f in fills if unique.get(f.fill_id) is f]


def commission_rows(commissions: Sequence[tuple[str, Decimal, str]]) -> list[dict[str, object]]:
    """The rows of :data:`COMMISSION_FIELDS`: the last commission of each fill."""
    last = {fill_id: (commission, currency) for fill_id, commission, currency in commissions}
    return [{"fill_id": fill_id, "commission": c, "commission_currency": cur} for fill_id, (c, cur) in last.items()]



def insert_params(new: NewOrder) -> dict[str, object]:
    order = new.order
    return {
        "order_id": order.order_id, "account": order.account, "instrument_id": order.instrument_id,
        "side": str(order.side), "quantity": order.quantity, "order_type": str(order.order_type),
        "limit_price": order.limit_price, "stop_price": order.stop_price,
        "time_in_force": str(order.time_in_force), "outside_rth": order.outside_rth, "source": order.source,
        "created_at": order.created_at, "state": str(new.state),
        "remaining_quantity": order.quantity if new.state is OrderState.ACCEPTED else 0,
        "reason": new.reason, "source_topic": new.source_topic, "source_partition": new.source_partition,
        "source_offset": new.source_offset, "expires_at": order.expires_at, "parent_order_id": new.parent_order_id,
        **{name: _stored(getattr(order, name)) for name in EXTENDED_TERMS},
    }


def _stored(value: object) -> object:
    # The enums are stored by their value.
    return value.value if isinstance(value, enum.Enum) else value



def update_params(order: Order) -> dict[str, object]:
    return {
        "order_id": order.order_id, "state": str(order.state), "filled_quantity": order.filled_quantity,
        "remaining_quantity": order.remaining_quantity, "avg_fill_price": order.avg_fill_price,
        "ib_perm_id": order.ib_perm_id, "reason": order.reason, "ib_error_code": order.ib_error_code,
    }
