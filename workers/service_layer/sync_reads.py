"""The mapper's instruments of a pass's entries, read ahead a chunk at a time."""

from __future__ import annotations

import asyncio

from workers.domain.instruments import Instrument
from workers.domain.universe import SingleEntry
from workers.ports.instruments import InstrumentMapper, InstrumentRow, UniverseRow


class ExistingInstruments:
    """The mapper's instruments of the pass's single entries, read a chunk of entries at a time, one ahead."""

    def __init__(self, mapper: InstrumentMapper, pending: list[UniverseRow], chunk: int) -> None:
        self._mapper = mapper
        self._chunk = chunk
        self._ids = [r.instrument_id if isinstance(r.entry, SingleEntry) else None for r in pending]
        self._chunks: dict[int, asyncio.Task[dict[str, InstrumentRow]]] = {}

    async def single(self, index: int, instrument_id: str) -> Instrument | None:
        """The mapper's instrument of the single entry at ``index`` of the pending entries, or None."""
        number = index // self._chunk
        if index % self._chunk == 0:
            self._load(number + 1)
            stale = self._chunks.pop(number - 2, None)
            if stale is not None:
                stale.cancel()
        rows = await self._load(number)
        row = rows.get(instrument_id)
        return row.instrument if row is not None else None

    def close(self) -> None:
        for task in self._chunks.values():
            task.cancel()
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: a read ahead that failed is not an unhandled error
        self._chunks.clear()

    def _load(self, number: int) -> asyncio.Task[dict[str, InstrumentRow]]:
        task = self._chunks.get(number)
        if task is None:
            ids = [i for i in self._ids[number * self._chunk:(number + 1) * self._chunk] if i is not None]
            task = asyncio.create_task(self._mapper.get_many(ids))
            self._chunks[number] = task
        return task
