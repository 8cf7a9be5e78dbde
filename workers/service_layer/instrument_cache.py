"""The order-consumer's in-memory view of the instrument mapper, invalidated by ``instruments.updated``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.rows import InstrumentRow
from workers.domain.instruments import Instrument


def instrument_from_row(row: InstrumentRow) -> Instrument:
    return Instrument(
        instrument_id=row.instrument_id,
        con_id=row.con_id,
        symbol=row.symbol,
        sec_type=row.sec_type,
        exchange=row.exchange,
        currency=row.currency,
        primary_exchange=row.primary_exchange,
        local_symbol=row.local_symbol,
        trading_class=row.trading_class,
        multiplier=row.multiplier,
        min_tick=row.min_tick,
        last_trade_date=row.last_trade_date,
        long_name=row.long_name,
        active=row.active,
        strike=row.strike,
        right=row.option_right,
    )


class InstrumentCache:
    """Instruments by id and by conId, read through from PostgreSQL; unknown ids are not cached."""

    def __init__(self, mapper: InstrumentMapper,
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
        instrument = instrument_from_row(row)
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
        self._id_by_con_id[con_id] = row.instrument_id
        return row.instrument_id

    def invalidate(self, instrument_id: str) -> None:
        """Forget ``instrument_id`` so the next lookup reads the table again."""
        instrument = self._by_id.pop(instrument_id, None)
        if instrument is not None:
            self._id_by_con_id.pop(instrument.con_id, None)

    def clear(self) -> None:
        self._by_id.clear()
        self._id_by_con_id.clear()
