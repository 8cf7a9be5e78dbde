"""In-memory fakes of the instrument ports (workers.ports.instruments), for service-layer unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from workers.domain.contracts import ContractDetail, ContractSpec
from workers.domain.instruments import Instrument
from workers.domain.universe import UniverseEntry, spec_hash
from workers.ports.instruments import (
    Deactivate,
    EntryCommitted,
    EntryWrites,
    EventFactory,
    InstrumentChange,
    InstrumentRow,
    InstrumentUpsert,
    InstrumentWrite,
    PassFailure,
    SyncPass,
    UniverseRow,
)
from workers.ports.outbox import OutboxMessage

T0 = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)


@dataclass
class FakeMapper:
    """The mapper as a dict; counts the reads that reach it, so a test can tell a cache hit from a miss."""

    rows: dict[str, InstrumentRow] = field(default_factory=dict)
    reads: int = 0

    def put(self, *instruments: Instrument) -> None:
        for instrument in instruments:
            self.rows[instrument.instrument_id] = InstrumentRow(instrument, created_at=T0, updated_at=T0)

    async def get(self, instrument_id: str) -> InstrumentRow | None:
        self.reads += 1
        return self.rows.get(instrument_id)

    async def get_by_con_id(self, con_id: int) -> InstrumentRow | None:
        self.reads += 1
        return next((r for r in self.rows.values() if r.instrument.con_id == con_id), None)

    async def get_many(self, instrument_ids: Sequence[str]) -> dict[str, InstrumentRow]:
        self.reads += 1
        return {i: self.rows[i] for i in instrument_ids if i in self.rows}

    async def with_prefix(self, prefix: str) -> list[InstrumentRow]:
        self.reads += 1
        return [self.rows[i] for i in sorted(self.rows) if i.startswith(prefix)]

    async def expired(self, day: str) -> list[InstrumentRow]:
        self.reads += 1
        return [r for i, r in sorted(self.rows.items())
                if r.instrument.active and (r.instrument.last_trade_date or "99999999")[:8] < day]

    async def upsert(self, instrument: Instrument) -> InstrumentUpsert:
        return self.write(instrument)

    def write(self, write: InstrumentWrite) -> InstrumentUpsert:
        """Apply one write as the PostgreSQL mapper does, and say what it did."""
        current = self.rows.get(write.instrument_id)
        if isinstance(write, Deactivate):
            if current is None:
                raise LookupError(write.instrument_id)
            if not current.instrument.active:
                return InstrumentUpsert(InstrumentChange.UNCHANGED, (), current)
            row = replace(current, instrument=replace(current.instrument, active=False))
            self.rows[write.instrument_id] = row
            return InstrumentUpsert(InstrumentChange.DEACTIVATED, ("active",), row)
        if current is None:
            self.put(write)
            return InstrumentUpsert(InstrumentChange.CREATED, (), self.rows[write.instrument_id])
        changed = write.changed_fields(current.instrument)
        if not changed:
            return InstrumentUpsert(InstrumentChange.UNCHANGED, (), current)
        row = InstrumentRow(write, created_at=current.created_at, updated_at=current.updated_at + timedelta(1))
        self.rows[write.instrument_id] = row
        return InstrumentUpsert(InstrumentChange.UPDATED, changed, row)


@dataclass
class FakeLookup:
    """IBKR's contract details as a list: asked by conId, that contract; else those of the symbol and type
    (the service layer narrows the answer by the rest of the spec, as it does IBKR's)."""

    details: list[ContractDetail] = field(default_factory=list)
    asked: list[ContractSpec] = field(default_factory=list)

    async def lookup(self, spec: ContractSpec) -> list[ContractDetail]:
        self.asked.append(spec)
        if spec.con_id:
            return [d for d in self.details if d.con_id == spec.con_id]
        return [d for d in self.details if (d.symbol, d.sec_type) == (spec.symbol, spec.sec_type)]


@dataclass
class FakeUniverseStore:
    """The universe store over a :class:`FakeMapper`; the outbox is a list of the messages written."""

    mapper: FakeMapper
    universe: list[UniverseRow] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    passes: int = 0

    def load(self, entries: Sequence[UniverseEntry]) -> None:
        self.universe = [UniverseRow(entry, spec_hash(entry), n, None, None, None, None)
                         for n, entry in enumerate(entries)]

    async def entries(self) -> list[UniverseRow]:
        return list(self.universe)

    async def pending(self, pass_id: int) -> list[UniverseRow]:
        return [r for r in self.universe if r.synced_pass != pass_id]

    async def open_pass(self, entries_total: int, max_age: timedelta) -> SyncPass:
        self.passes += 1
        return SyncPass(self.passes, T0, resumed=False)

    async def pass_counts(self, pass_id: int) -> tuple[int, int]:
        handled = [r for r in self.universe if r.synced_pass == pass_id]
        return len(handled), sum(1 for r in handled if r.last_error is not None)

    async def pass_failures(self, pass_id: int) -> list[PassFailure]:
        return [PassFailure(r.instrument_id, r.last_error) for r in self.universe
                if r.synced_pass == pass_id and r.last_error is not None]

    async def finish_pass(self, pass_id: int, *, total: int, created: int, updated: int,
                          deactivated: int) -> tuple[int, int]:
        return await self.pass_counts(pass_id)

    async def mark_failed(self, pass_id: int, instrument_id: str, fingerprint: str, error: str) -> None:
        self._mark(instrument_id, synced_pass=pass_id, last_error=error)

    async def commit_entry(self, pass_id: int | None, entry: tuple[str, str] | None,
                           writes: Sequence[InstrumentWrite], event: EventFactory) -> list[InstrumentUpsert]:
        outcomes = [self.mapper.write(w) for w in writes]
        self.outbox.extend(event(o) for o in outcomes if o.change is not InstrumentChange.UNCHANGED)
        if pass_id is not None and entry is not None:
            self._mark(entry[0], synced_pass=pass_id, synced_spec_hash=entry[1], last_error=None)
        return outcomes

    async def commit_entries(self, pass_id: int, batch: Sequence[EntryWrites],
                             event: EventFactory) -> list[EntryCommitted]:
        return [EntryCommitted(await self.commit_entry(pass_id, one.entry, one.writes, event)) for one in batch]

    def _mark(self, instrument_id: str, **changes: Any) -> None:
        self.universe = [replace(r, **changes) if r.instrument_id == instrument_id else r for r in self.universe]
