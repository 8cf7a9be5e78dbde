"""Positions: IBKR reports one after each fill; each account and contract is written at most every few
milliseconds, at its latest, with its ``positions.updated`` record."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from workers.domain.positions import Position
from workers.logs import get_logger
from workers.ports.ibkr import IbPosition
from workers.ports.orders import EventSink, InstrumentSource, PositionWriter
from workers.ports.outbox import OutboxMessage
from workers.service_layer.orders_first import OrdersFirst

log = get_logger(__name__)


class PositionBook:
    """IBKR's latest position reports not written yet, and their writing."""

    def __init__(self, *, store: PositionWriter, instruments: InstrumentSource, events: EventSink,
                 orders_first: OrdersFirst, on_published: Callable[[], None]) -> None:
        self.store = store
        self.instruments = instruments
        self.events = events
        self.orders_first = orders_first
        self.on_published = on_published
        # IBKR's latest position report (and when it came) per (account, con_id), not written yet.
        self._due: dict[tuple[str, int], tuple[IbPosition, datetime]] = {}
        self._arrived = asyncio.Event()
        self._writer_running = False

    async def note(self, reports: Sequence[IbPosition]) -> None:
        """Note IBKR's latest positions; written at once, or by :meth:`run_writer` when it runs."""
        received = datetime.now(UTC)
        for report in reports:
            self._due[(report.account, report.con_id)] = (report, received)
        if self._writer_running:
            self._arrived.set()
        else:
            await self.write()

    async def write(self) -> None:
        """Store the latest position of each account and contract noted since the last write, with their
        ``positions.updated`` records, in one statement. On failure they stay due (newer reports win)."""
        due, self._due = self._due, {}
        if not due:
            return
        positions: list[Position] = []
        events: list[OutboxMessage] = []
        try:
            for report, received in due.values():
                instrument_id = await self.instruments.instrument_id_for(report.con_id)
                positions.append(Position(account=report.account, con_id=report.con_id,
                                          instrument_id=instrument_id, quantity=report.quantity,
                                          avg_cost=report.avg_cost, currency=report.currency, as_of=received))
                events.append(self.events.position(report, instrument_id))
            await self.store.upsert_many(positions, events)
        except BaseException:
            for key, noted in due.items():
                self._due.setdefault(key, noted)
            raise
        self.on_published()

    async def run_writer(self, stop: asyncio.Event, every: float) -> None:
        """Write noted positions at most once per ``every`` seconds: a position reported again meanwhile
        (each fill moves it) is written once, at its latest. Orders first: a write waits its turn."""
        self._writer_running = True
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), 0.5)
                if not self._arrived.is_set():
                    continue
                self._arrived.clear()
                await asyncio.sleep(every)
                await self.orders_first.turn()
                try:
                    await self.write()
                except Exception as exc:  # PostgreSQL away: the positions stay due; try again
                    log.warning("positions not written; will retry", error=f"{type(exc).__name__}: {exc}")
                    self._arrived.set()
                    await asyncio.sleep(1.0)
        finally:
            self._writer_running = False
