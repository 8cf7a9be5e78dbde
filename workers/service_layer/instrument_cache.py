"""The order-consumer's in-memory view of the instrument mapper, invalidated by ``instruments.updated``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from workers.domain.instruments import Instrument
from workers.ports.instruments import InstrumentReader, InstrumentRow


class InstrumentCache:
    """Instruments by id and by conId, read through from the mapper; unknown ids are not cached."""

    def __init__(self, mapper: InstrumentReader,
                 resolver: Callable[[str], Awaitable[InstrumentRow | None]] | None = None) -> None:
        self.mapper = mapper
        # Resolves an id the table does not know yet (INSTRUMENT_RESOLVE_ON_DEMAND); None: unknown stays unknown.
        self.resolver = resolver
        self._by_id: dict[str, Instrument] = {}
        self._id_by_con_id: dict[int, str] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, instrument_id: str) -> Instrument | None:
        cached = self._by_id.get(instrument_id)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        row = await self.mapper.get(instrument_id)
        if row is None and self.resolver is not None:
            row = await self.resolver(instrument_id)
        if row is None:
            return None
        instrument = row.instrument
        self._by_id[instrument_id] = instrument
        self._id_by_con_id[instrument.con_id] = instrument_id
        return instrument

    async def instrument_id_for(self, con_id: int) -> str | None:
        known = self._id_by_con_id.get(con_id)
        if known is not None:
            return known
        row = await self.mapper.get_by_con_id(con_id)
        if row is None:
            return None
        self._id_by_con_id[con_id] = row.instrument.instrument_id
        return row.instrument.instrument_id

    def invalidate(self, instrument_id: str) -> None:
        """Forget ``instrument_id`` so the next lookup reads the table again."""
        instrument = self._by_id.pop(instrument_id, None)
        if instrument is not None:
            self._id_by_con_id.pop(instrument.con_id, None)

    def clear(self) -> None:
        self._by_id.clear()
        self._id_by_con_id.clear()
