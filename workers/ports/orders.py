"""What the order service needs of its stores, as Protocols, and the values they exchange.

The PostgreSQL adapters (``workers.adapters.postgres``) implement them; the unit tests of the service layer
implement them in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from workers.domain.fills import Fill
from workers.domain.instruments import Instrument
from workers.domain.modifications import Modification, OrderModifyRequested, WorkingTerms
from workers.domain.orders import (
    AppliedChange,
    NewOrder,
    Order,
    OrderCancelRequested,
    OrderRequested,
    OrderState,
    Side,
    StatusChange,
)
from workers.domain.positions import Position
from workers.ports.ibkr import IbPosition
from workers.ports.outbox import OutboxMessage

StatusRecord = Callable[[Order, OrderState | None], OutboxMessage]
"""Encodes the ``orders.status`` record of an order's new state (and the state it left, if any)."""

ModificationStatus = Callable[[Order, str, str], OutboxMessage]
"""Encodes the ``orders.status`` record of a modification's outcome: the order (with the terms it works
with), the ``modify_id`` and the reason (applied: what changed; refused: why)."""

VersionedOrders = dict[str, tuple[Order, str]]
"""Orders as read, each with its version, by ``order_id``: what an optimistic write checks against."""

Commission = tuple[str, Decimal, str]
"""``(fill_id, commission, currency)``: IBKR's commission report of one execution."""


@dataclass(frozen=True)
class RecordedReports:
    """What :meth:`OrderRepository.record_reports` wrote: the new fills (a replayed execId is not new) and
    the status changes applied."""

    new_fill_ids: list[str]
    applied: list[AppliedChange]


class OrderRepository(Protocol):
    """The order ledger: every order is recorded here before it reaches IBKR, with the rules of
    :class:`~workers.domain.orders.Order` (a change is written only if the order is still the version it
    was worked out on) and each change written with its status record."""

    async def get(self, order_id: str) -> Order | None: ...
    async def get_many(self, order_ids: Sequence[str]) -> dict[str, Order]: ...
    async def read_versions(self, order_ids: Sequence[str]) -> VersionedOrders: ...

    async def record_new(self, orders: Sequence[NewOrder], owner_client_id: int, status: StatusRecord,
                         ib_order_ids: Mapping[str, int] | None = None) -> list[Order]:
        """Insert ``orders`` (known ids are left as they are) with their status records; ACCEPTED ones
        given an IBKR id are recorded PLACING with it; an order whose cancel came first is CANCELLED.
        Returns the orders inserted."""

    async def reannounce(self, orders: VersionedOrders, status: StatusRecord) -> int:
        """Write the status record of each order still at the version read (a redelivered request's
        order); one changed since gets none. Returns how many were written."""

    async def apply(self, changes: Sequence[StatusChange], status: StatusRecord,
                    read: VersionedOrders | None = None) -> list[AppliedChange]: ...

    async def record_reports(self, fills: Sequence[Fill], commissions: Sequence[Commission],
                             changes: Sequence[StatusChange], status: StatusRecord,
                             read: VersionedOrders | None = None) -> RecordedReports: ...

    async def insert_fills(self, fills: Sequence[Fill]) -> list[str]: ...
    async def set_commissions(self, commissions: Sequence[Commission]) -> None: ...
    async def highest_ib_order_id(self, client_id: int) -> int: ...

    async def reserve_ib_order_ids(self, ib_order_ids: Mapping[str, int],
                                   client_id: int) -> list[tuple[Order, int]]:
        """Make each still-ACCEPTED order PLACING with its IBKR id; returns those reserved."""

    async def release_unplaced(self, order_id: str) -> bool:
        """PLACING back to ACCEPTED for an order IBKR never received."""

    async def open_orders_owned_by(self, client_id: int) -> list[Order]: ...
    async def open_with_pending_cancel(self, client_id: int) -> list[Order]: ...

    async def working_quantities(self, accounts: Sequence[str], instrument_ids: Sequence[str],
                                 ) -> dict[tuple[str, str, Side], Decimal]:
        """The remaining quantity of the working orders (every replica's) by (account, instrument, side)."""


class CancelRequestStore(Protocol):
    """Cancel requests as received: one may come before its order."""

    async def record(self, cancel: OrderCancelRequested) -> bool: ...
    async def pending(self, order_id: str) -> OrderCancelRequested | None: ...
    async def mark_handled(self, order_id: str) -> bool: ...


class ModificationStore(Protocol):
    """Modifications as received, each settled (applied or refused) with its status record."""

    async def record(self, request: OrderModifyRequested, source_topic: str | None = None,
                     source_partition: int | None = None, source_offset: int | None = None,
                     ) -> tuple[Modification, bool]: ...
    async def unsettled(self, order_id: str) -> list[Modification]: ...
    async def unsettled_owned_by(self, client_id: int) -> list[Modification]: ...
    async def mark_sent(self, modify_id: str, target: WorkingTerms, attempts: int) -> bool: ...
    async def refuse(self, modification: Modification, reason: str, ib_error_code: int | None,
                     status: ModificationStatus) -> Order | None: ...
    async def apply(self, modification: Modification, target: WorkingTerms, reason: str,
                    status: ModificationStatus, only_from: frozenset[OrderState] | None = None) -> Order | None: ...


class FillHistory(Protocol):
    """The fills recorded of an order (to tell which one a corrected execution corrects)."""

    async def fill_ids_of(self, order_id: str) -> list[str]: ...


class PositionWriter(Protocol):
    """Stores positions with their ``positions.updated`` records, in one transaction."""

    async def upsert_many(self, positions: Sequence[Position], outbox: Sequence[OutboxMessage]) -> None: ...


class InstrumentSource(Protocol):
    """The instrument mapper as the order service reads it (cached)."""

    async def get(self, instrument_id: str) -> Instrument | None: ...
    async def instrument_id_for(self, con_id: int) -> str | None: ...


class EventSink(Protocol):
    """Encodes the Kafka records the service writes to the outbox."""

    def status(self, order: Order, previous: OrderState | None) -> OutboxMessage: ...
    def rejection(self, order: OrderRequested, reason: str) -> OutboxMessage: ...
    def modification(self, order: Order, modify_id: str, reason: str) -> OutboxMessage: ...
    def position(self, report: IbPosition, instrument_id: str | None) -> OutboxMessage: ...


class OrderMetrics(Protocol):
    """The counters and timings the order service reports (Prometheus in the worker)."""

    def order_stage(self, stage: str, seconds: float) -> None: ...
    def order_rejected(self, reason: str) -> None: ...
    def order_cancelled(self) -> None: ...
    def order_transition(self, previous: str, current: str) -> None: ...
    def order_placed(self, latency: float | None = None) -> None: ...


class NoMetrics:
    """Counts nothing: for tools and tests that run the service without a metrics registry."""

    def order_stage(self, stage: str, seconds: float) -> None:
        pass

    def order_rejected(self, reason: str) -> None:
        pass

    def order_cancelled(self) -> None:
        pass

    def order_transition(self, previous: str, current: str) -> None:
        pass

    def order_placed(self, latency: float | None = None) -> None:
        pass

