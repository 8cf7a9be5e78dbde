"""In-memory implementations of the order service's ports, for its unit tests.

They keep the rules the real adapters keep where the service relies on them: an order is changed only by
:meth:`Order.after` (illegal changes are skipped), an IBKR order id is unique per client id, a cancel that
came first turns an ACCEPTED order CANCELLED when it is recorded, a replayed execId inserts nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal

from workers.domain.fills import Fill
from workers.domain.instruments import Instrument
from workers.domain.modifications import Modification, ModifyState, OrderModifyRequested, WorkingTerms
from workers.domain.orders import (
    CANCELLED_FIRST_REASON,
    AppliedChange,
    NewOrder,
    Order,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    OrderType,
    Side,
    StatusChange,
    TimeInForce,
)
from workers.domain.positions import Position
from workers.ports.ibkr import IbExecution, IbOrderStatus, IbPosition
from workers.ports.market_data import ReferencePrice
from workers.ports.orders import Commission, ModificationStatus, RecordedReports, StatusRecord, VersionedOrders
from workers.ports.outbox import OutboxMessage

ACCOUNT = "DU0000001"
AAPL = Instrument(instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK",
                  exchange="SMART", currency="USD", min_tick=Decimal("0.01"))


def an_order(n: int = 1, **changes: object) -> OrderRequested:
    order = OrderRequested(
        order_id=f"00000000-0000-4000-8000-{n:012d}", account=ACCOUNT, instrument_id=AAPL.instrument_id,
        side=Side.BUY, quantity=Decimal(10), order_type=OrderType.MARKET, limit_price=None, stop_price=None,
        time_in_force=TimeInForce.DAY, outside_rth=False, created_at=datetime(2026, 1, 5, 15, tzinfo=UTC),
    )
    return replace(order, **changes)  # type: ignore[arg-type]


class InMemoryCancelRequests:
    def __init__(self) -> None:
        self.requests: dict[str, OrderCancelRequested] = {}
        self.handled: set[str] = set()

    async def record(self, cancel: OrderCancelRequested) -> bool:
        if cancel.order_id in self.requests:
            return False
        self.requests[cancel.order_id] = cancel
        return True

    async def pending(self, order_id: str) -> OrderCancelRequested | None:
        return None if order_id in self.handled else self.requests.get(order_id)

    async def mark_handled(self, order_id: str) -> bool:
        if order_id not in self.requests or order_id in self.handled:
            return False
        self.handled.add(order_id)
        return True


class InMemoryLedger:
    """The order ledger, fills and outbox in dicts; ``outbox`` holds every record written, in order."""

    def __init__(self, cancels: InMemoryCancelRequests) -> None:
        self.cancels = cancels
        self.orders: dict[str, Order] = {}
        self.versions: dict[str, int] = {}
        self.fills: dict[str, Fill] = {}
        self.outbox: list[OutboxMessage] = []
        self.marks: dict[int, int] = {}

    def _store(self, order: Order) -> None:
        self.orders[order.order_id] = order
        self.versions[order.order_id] = self.versions.get(order.order_id, 0) + 1

    async def get(self, order_id: str) -> Order | None:
        return self.orders.get(order_id)

    async def get_many(self, order_ids: Sequence[str]) -> dict[str, Order]:
        return {i: self.orders[i] for i in order_ids if i in self.orders}

    async def read_versions(self, order_ids: Sequence[str]) -> VersionedOrders:
        return {i: (self.orders[i], str(self.versions[i])) for i in order_ids if i in self.orders}

    def _ib_id_taken(self, client_id: int, ib_order_id: int) -> bool:
        return any((o.ib_client_id, o.ib_order_id) == (client_id, ib_order_id) for o in self.orders.values())

    def _raise_mark(self, client_id: int, ib_order_id: int) -> None:
        self.marks[client_id] = max(self.marks.get(client_id, 0), ib_order_id)

    async def record_new(self, orders: Sequence[NewOrder], owner_client_id: int, status: StatusRecord,
                         ib_order_ids: Mapping[str, int] | None = None) -> list[Order]:
        ids = ib_order_ids or {}
        inserted: list[Order] = []
        for new in orders:
            order_id = new.order.order_id
            if order_id in self.orders:
                continue
            order = Order.recorded(new, owner_client_id)
            if order.state is OrderState.ACCEPTED and await self.cancels.pending(order_id) is not None:
                order = replace(order, state=OrderState.CANCELLED, remaining_quantity=Decimal(0),
                                reason=CANCELLED_FIRST_REASON)
                await self.cancels.mark_handled(order_id)
            elif order.state is OrderState.ACCEPTED and order_id in ids:
                if self._ib_id_taken(owner_client_id, ids[order_id]):
                    raise ValueError(f"IBKR order id {ids[order_id]} is taken")
                order = replace(order, state=OrderState.PLACING, ib_client_id=owner_client_id,
                                ib_order_id=ids[order_id])
                self._raise_mark(owner_client_id, ids[order_id])
            self._store(order)
            self.outbox.append(status(order, None))
            inserted.append(order)
        return inserted

    async def reannounce(self, orders: VersionedOrders, status: StatusRecord) -> int:
        unchanged = [row for order_id, (row, version) in orders.items()
                     if str(self.versions.get(order_id)) == version]
        self.outbox.extend(status(row, None) for row in unchanged)
        return len(unchanged)

    async def apply(self, changes: Sequence[StatusChange], status: StatusRecord,
                    read: VersionedOrders | None = None) -> list[AppliedChange]:
        applied: list[AppliedChange] = []
        for change in changes:
            current = self.orders.get(change.order_id)
            after = current.after(change) if current is not None else None
            if current is None or after is None:
                continue
            self._store(after)
            self.outbox.append(status(after, current.state))
            applied.append(AppliedChange(after, current.state))
        return applied

    async def record_reports(self, fills: Sequence[Fill], commissions: Sequence[Commission],
                             changes: Sequence[StatusChange], status: StatusRecord,
                             read: VersionedOrders | None = None) -> RecordedReports:
        new = await self.insert_fills(fills)
        await self.set_commissions(commissions)
        return RecordedReports(new, await self.apply(changes, status, read))

    async def insert_fills(self, fills: Sequence[Fill]) -> list[str]:
        new = [fill for fill in fills if fill.fill_id not in self.fills]
        self.fills.update((fill.fill_id, fill) for fill in new)
        return [fill.fill_id for fill in new]

    async def set_commissions(self, commissions: Sequence[Commission]) -> None:
        for fill_id, commission, currency in commissions:
            if fill_id in self.fills:
                self.fills[fill_id] = replace(self.fills[fill_id], commission=commission,
                                              commission_currency=currency)

    async def highest_ib_order_id(self, client_id: int) -> int:
        in_ledger = [o.ib_order_id for o in self.orders.values()
                     if o.ib_client_id == client_id and o.ib_order_id is not None]
        return max([self.marks.get(client_id, 0), *in_ledger])

    async def reserve_ib_order_ids(self, ib_order_ids: Mapping[str, int],
                                   client_id: int) -> list[tuple[Order, int]]:
        reserved: list[tuple[Order, int]] = []
        self._raise_mark(client_id, max(ib_order_ids.values()))
        for order_id, ib_order_id in ib_order_ids.items():
            order = self.orders.get(order_id)
            if order is None or order.state is not OrderState.ACCEPTED:
                continue
            if self._ib_id_taken(client_id, ib_order_id):
                raise ValueError(f"IBKR order id {ib_order_id} is taken")
            order = replace(order, state=OrderState.PLACING, ib_client_id=client_id, ib_order_id=ib_order_id)
            self._store(order)
            reserved.append((order, ib_order_id))
        return reserved

    async def release_unplaced(self, order_id: str) -> bool:
        order = self.orders.get(order_id)
        if order is None or order.state is not OrderState.PLACING:
            return False
        self._store(replace(order, state=OrderState.ACCEPTED, ib_client_id=None, ib_order_id=None))
        return True

    async def open_orders_owned_by(self, client_id: int) -> list[Order]:
        return [o for o in self.orders.values() if o.owner_client_id == client_id and not o.is_final]

    async def open_with_pending_cancel(self, client_id: int) -> list[Order]:
        return [o for o in await self.open_orders_owned_by(client_id)
                if await self.cancels.pending(o.order_id) is not None]

    async def working_quantities(self, accounts: Sequence[str], instrument_ids: Sequence[str],
                                 ) -> dict[tuple[str, str, Side], Decimal]:
        working: dict[tuple[str, str, Side], Decimal] = {}
        for o in self.orders.values():
            if not o.is_final and o.account in accounts and o.instrument_id in instrument_ids:
                key = (o.account, o.instrument_id, o.side)
                working[key] = working.get(key, Decimal(0)) + o.remaining_quantity
        return working

    async def fill_ids_of(self, order_id: str) -> list[str]:
        return [f.fill_id for f in self.fills.values() if f.order_id == order_id]

    def statuses_of(self, order_id: str) -> list[str]:
        """The status records written for ``order_id``, in order (their payloads are the states)."""
        return [m.payload.decode() for m in self.outbox if m.topic == "orders.status" and m.key == order_id]


class InMemoryOutbox:
    def __init__(self, ledger: InMemoryLedger) -> None:
        self.ledger = ledger

    async def add_many(self, messages: Sequence[OutboxMessage]) -> None:
        self.ledger.outbox.extend(messages)


class InMemoryPositions:
    def __init__(self) -> None:
        self.positions: dict[tuple[str, int], Position] = {}

    async def upsert_many(self, positions: Sequence[Position], outbox: Sequence[OutboxMessage]) -> None:
        for position in positions:
            self.positions[(position.account, position.con_id)] = position


class KnownInstruments:
    def __init__(self, *instruments: Instrument) -> None:
        self.by_id = {i.instrument_id: i for i in instruments}

    async def get(self, instrument_id: str) -> Instrument | None:
        return self.by_id.get(instrument_id)

    async def instrument_id_for(self, con_id: int) -> str | None:
        return next((i.instrument_id for i in self.by_id.values() if i.con_id == con_id), None)


class PlainEvents:
    """Status records whose payload is the published status; rejections carry their reason."""

    def status(self, order: Order, previous: OrderState | None) -> OutboxMessage:
        return OutboxMessage("orders.status", order.order_id, str(order.state.published_status).encode())

    def rejection(self, order: OrderRequested, reason: str) -> OutboxMessage:
        return OutboxMessage("orders.status", order.order_id, f"REJECTED {reason}".encode())

    def position(self, report: IbPosition, instrument_id: str | None) -> OutboxMessage:
        return OutboxMessage("positions.updated", f"{report.account}:{report.con_id}", str(report.quantity).encode())

    def modification(self, order: Order, modify_id: str, reason: str) -> OutboxMessage:
        return OutboxMessage("orders.status", order.order_id, f"{modify_id} {reason}".encode())


class InMemoryModifications:
    """The modifications ledger in a dict (in the order they came), its outcomes written to the ledger's
    outbox with the order's new terms, as the PostgreSQL one does in one transaction."""

    def __init__(self, ledger: InMemoryLedger) -> None:
        self.ledger = ledger
        self.modifications: dict[str, Modification] = {}

    async def record(self, request: OrderModifyRequested, source_topic: str | None = None,
                     source_partition: int | None = None, source_offset: int | None = None,
                     ) -> tuple[Modification, bool]:
        known = self.modifications.get(request.modify_id)
        if known is not None:
            return known, False
        self.modifications[request.modify_id] = Modification(request, ModifyState.REQUESTED)
        return self.modifications[request.modify_id], True

    async def unsettled(self, order_id: str) -> list[Modification]:
        return [m for m in self.modifications.values() if m.order_id == order_id and not m.state.is_final]

    async def unsettled_owned_by(self, client_id: int) -> list[Modification]:
        return [m for m in self.modifications.values() if not m.state.is_final
                and (order := self.ledger.orders.get(m.order_id)) is not None and order.owner_client_id == client_id]

    async def mark_sent(self, modify_id: str, target: WorkingTerms, attempts: int) -> bool:
        known = self.modifications[modify_id]
        if known.state.is_final or known.attempts != attempts:
            return False
        self.modifications[modify_id] = replace(known, state=ModifyState.SENT, target=target, attempts=attempts + 1)
        return True

    async def refuse(self, modification: Modification, reason: str, ib_error_code: int | None,
                     status: ModificationStatus) -> Order | None:
        known = self.modifications[modification.modify_id]
        order = self.ledger.orders.get(modification.order_id)
        if known.state.is_final or order is None:
            return None
        self.modifications[modification.modify_id] = replace(known, state=ModifyState.REFUSED, reason=reason,
                                                            ib_error_code=ib_error_code)
        self.ledger.outbox.append(status(order, modification.modify_id, reason))
        return order

    async def apply(self, modification: Modification, target: WorkingTerms, reason: str,
                    status: ModificationStatus, only_from: frozenset[OrderState] | None = None) -> Order | None:
        known = self.modifications[modification.modify_id]
        order = self.ledger.orders.get(modification.order_id)
        if known.state.is_final or order is None or (only_from is not None and order.state not in only_from):
            return None
        self.modifications[modification.modify_id] = replace(known, state=ModifyState.APPLIED, target=target,
                                                            reason=reason)
        first = {} if order.modified else {
            "requested_quantity": order.quantity, "requested_limit_price": order.limit_price,
            "requested_stop_price": order.stop_price, "requested_time_in_force": order.time_in_force}
        changed = replace(order, quantity=target.quantity, limit_price=target.limit_price,  # type: ignore[arg-type]
                          stop_price=target.stop_price, time_in_force=target.time_in_force,
                          remaining_quantity=target.quantity - order.filled_quantity, **first)
        self.ledger._store(changed)
        self.ledger.outbox.append(status(changed, modification.modify_id, reason))
        return changed


@dataclass
class FakeIbkr:
    """An IBKR connection that records what is sent and answers queries from what the test put there."""

    client_id: int = 7
    next_valid_id_at_connect: int = 1
    connected: bool = True
    placed: list[tuple[str, int]] = field(default_factory=list)  # (order_id, ib_order_id)
    # (order_id, ib_order_id, parent_ib_order_id, transmit) of each placeOrder
    sent: list[tuple[str, int, int | None, bool]] = field(default_factory=list)
    # (order_id, ib_order_id, quantity, limit_price) of each modification
    modified: list[tuple[str, int, Decimal, Decimal | None]] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    global_cancels: int = 0
    at_ibkr: dict[str, IbOrderStatus] = field(default_factory=dict)
    executions_at_ibkr: list[IbExecution] = field(default_factory=list)

    async def place(self, instrument: Instrument, order: Order, ib_order_id: int, *,
                    parent_ib_order_id: int | None = None, transmit: bool = True) -> None:
        if not self.connected:
            raise ConnectionError("not connected")
        self.placed.append((order.order_id, ib_order_id))
        self.sent.append((order.order_id, ib_order_id, parent_ib_order_id, transmit))

    async def modify(self, instrument: Instrument, order: Order, ib_order_id: int, *,
                     parent_ib_order_id: int | None = None) -> None:
        if not self.connected:
            raise ConnectionError("not connected")
        self.modified.append((order.order_id, ib_order_id, order.quantity, order.limit_price))

    async def cancel(self, ib_order_id: int) -> None:
        self.cancelled.append(ib_order_id)

    async def global_cancel(self) -> None:
        self.global_cancels += 1

    async def order_statuses(self) -> dict[str, IbOrderStatus]:
        return dict(self.at_ibkr)

    async def executions(self) -> list[IbExecution]:
        return list(self.executions_at_ibkr)

    def placements_of(self, order_id: str) -> list[int]:
        return [ib_id for placed_id, ib_id in self.placed if placed_id == order_id]


def ib_status(order_id: str, ib_order_id: int, change: StatusChange | None, ib_status: str = "Submitted",
              filled: Decimal = Decimal(0), remaining: Decimal = Decimal(10)) -> IbOrderStatus:
    """IBKR's status report of ``order_id``, with the ledger change the adapter mapped it to."""
    return IbOrderStatus(order_ref=order_id, ib_order_id=ib_order_id, perm_id=9000 + ib_order_id,
                         ib_status=ib_status, filled=filled, remaining=remaining, avg_fill_price=None,
                         change=change)


def an_execution(order_id: str, ib_order_id: int, exec_id: str, quantity: Decimal = Decimal(10)) -> IbExecution:
    return IbExecution(exec_id=exec_id, order_ref=order_id, ib_order_id=ib_order_id, perm_id=9000 + ib_order_id,
                       con_id=AAPL.con_id, side="BUY", quantity=quantity, price=Decimal("187.5"),
                       cumulative_quantity=quantity, avg_price=Decimal("187.5"), account=ACCOUNT,
                       exchange="SMART", currency="USD", executed_at=datetime(2026, 1, 5, 15, 0, 1, tzinfo=UTC))


class FixedPrices:
    """IBKR's market data as the test sets it: a ReferencePrice by conId (none: no data)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.prices: dict[int, ReferencePrice] = {}
        self.asked: list[int] = []

    def set(self, con_id: int, bid: str, ask: str, last: str | None = None) -> None:
        self.prices[con_id] = ReferencePrice(con_id=con_id, bid=Decimal(bid), ask=Decimal(ask),
                                             last=Decimal(last) if last else None, close=None,
                                             received_at=self.clock(), delayed=False)

    async def reference(self, instrument: Instrument) -> ReferencePrice | None:
        self.asked.append(instrument.con_id)
        return self.prices.get(instrument.con_id)
