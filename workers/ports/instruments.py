"""The instrument side's ports: the mapper, the universe store, IBKR's contract lookup, and what they exchange.

The PostgreSQL stores (:mod:`workers.adapters.postgres.instruments`, :mod:`workers.adapters.postgres.universe`)
and the IBKR lookup (:mod:`workers.adapters.ibkr.contract_lookup`) implement these Protocols structurally;
the service layer sees only them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from workers.domain.contracts import ContractDetail, ContractSpec
from workers.domain.instruments import Instrument
from workers.domain.universe import UniverseEntry
from workers.ports.outbox import OutboxMessage

# -- what the mapper stores and reports ---------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentRow:
    """A row of the mapper: the instrument and when it was first and last written."""

    instrument: Instrument
    created_at: datetime
    updated_at: datetime


class InstrumentChange(enum.StrEnum):
    """What an upsert or deactivation did (the first three are the contract's ``change`` values)."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DEACTIVATED = "DEACTIVATED"
    UNCHANGED = "UNCHANGED"


@dataclass(frozen=True)
class Deactivate:
    """Mark instrument ``instrument_id`` inactive (IBKR no longer knows it, or it expired)."""

    instrument_id: str
    reason: str = ""


InstrumentWrite = Instrument | Deactivate
"""One write to the mapper: an instrument as it should be, or a deactivation."""


@dataclass(frozen=True)
class InstrumentUpsert:
    """The outcome of writing one instrument: what changed, which fields, and the row as stored now."""

    change: InstrumentChange
    changed_fields: tuple[str, ...]
    row: InstrumentRow


EventFactory = Callable[[InstrumentUpsert], OutboxMessage]
"""Turns a real change of the mapper into the ``instruments.updated`` record written with it."""

# -- what the universe store keeps --------------------------------------------------------------------


@dataclass(frozen=True)
class UniverseRow:
    """One entry of the universe with its sync bookkeeping."""

    entry: UniverseEntry
    spec_hash: str
    position: int
    synced_pass: int | None
    synced_spec_hash: str | None
    last_synced_at: datetime | None
    last_error: str | None

    @property
    def instrument_id(self) -> str:
        return self.entry.instrument_id

    @property
    def resolved_before(self) -> bool:
        """Whether the entry, exactly as it is now, resolved in an earlier pass."""
        return self.synced_spec_hash == self.spec_hash


@dataclass(frozen=True)
class SyncPass:
    """A pass over the universe: started now, or resumed after a crash."""

    pass_id: int
    started_at: datetime
    resumed: bool


@dataclass(frozen=True)
class PassFailure:
    """An entry a pass could not sync, and why."""

    instrument_id: str
    error: str


@dataclass(frozen=True)
class EntryWrites:
    """What one universe entry writes; ``entry`` (instrument_id, spec_hash) is marked synced with it."""

    entry: tuple[str, str] | None
    writes: Sequence[InstrumentWrite]


@dataclass(frozen=True)
class EntryCommitted:
    """An entry's outcome in :meth:`UniverseStore.commit_entries`: its writes' outcomes, or why it failed."""

    outcomes: list[InstrumentUpsert]
    error: str | None = None


# -- the ports ----------------------------------------------------------------------------------------


class ContractLookup(Protocol):
    """IBKR's contract details for a spec; ``[]`` when IBKR knows no such contract.

    Raises ``LookupUnavailable`` when IBKR cannot be asked now and ``LookupRejected`` when it refuses the
    request (both in :mod:`workers.domain.contracts`).
    """

    async def lookup(self, spec: ContractSpec) -> list[ContractDetail]: ...


class InstrumentReader(Protocol):
    """Instruments by ``instrument_id`` and by IBKR ``con_id``, active or not: what a cache reads through."""

    async def get(self, instrument_id: str) -> InstrumentRow | None:
        """The instrument ``instrument_id``, or None."""
        ...

    async def get_by_con_id(self, con_id: int) -> InstrumentRow | None:
        """The instrument mapped to IBKR contract ``con_id``, or None."""
        ...


class InstrumentMapper(InstrumentReader, Protocol):
    """The whole mapper: reads by id, conId, prefix and expiry, and writes one instrument."""

    async def get_many(self, instrument_ids: Sequence[str]) -> dict[str, InstrumentRow]:
        """The instruments among ``instrument_ids`` that the mapper knows, by id."""
        ...

    async def with_prefix(self, prefix: str) -> list[InstrumentRow]:
        """Every instrument whose id starts with ``prefix``, by ``instrument_id``."""
        ...

    async def expired(self, day: str) -> list[InstrumentRow]:
        """Active instruments whose last trading day is before ``day`` (YYYYMMDD)."""
        ...

    async def upsert(self, instrument: Instrument) -> InstrumentUpsert:
        """Create or update ``instrument``; CREATED, UPDATED (with the changed fields) or UNCHANGED.

        Raises ``ConIdConflict`` when another instrument already holds its ``con_id``.
        """
        ...


class UniverseStore(Protocol):
    """The universe entries, the passes over them, and the transaction that writes an entry's instruments."""

    async def entries(self) -> list[UniverseRow]:
        """Every entry, in file order."""
        ...

    async def pending(self, pass_id: int) -> list[UniverseRow]:
        """The entries pass ``pass_id`` has not handled yet, in file order."""
        ...

    async def open_pass(self, entries_total: int, max_age: timedelta) -> SyncPass:
        """Resume the unfinished pass if it started less than ``max_age`` ago, else start a new one."""
        ...

    async def pass_counts(self, pass_id: int) -> tuple[int, int]:
        """(entries handled, entries failed) by pass ``pass_id`` so far, across resumptions."""
        ...

    async def pass_failures(self, pass_id: int) -> list[PassFailure]:
        """The entries pass ``pass_id`` failed, with why."""
        ...

    async def finish_pass(self, pass_id: int, *, total: int, created: int, updated: int,
                          deactivated: int) -> tuple[int, int]:
        """Close pass ``pass_id``; return its (entries handled, entries failed)."""
        ...

    async def mark_failed(self, pass_id: int, instrument_id: str, fingerprint: str, error: str) -> None:
        """Mark an entry handled by ``pass_id`` with ``error`` (the next pass tries it again)."""
        ...

    async def commit_entry(self, pass_id: int | None, entry: tuple[str, str] | None,
                           writes: Sequence[InstrumentWrite], event: EventFactory) -> list[InstrumentUpsert]:
        """Apply ``writes`` in one transaction, with one outbox record per real change, and mark ``entry``."""
        ...

    async def commit_entries(self, pass_id: int, batch: Sequence[EntryWrites],
                             event: EventFactory) -> list[EntryCommitted]:
        """Commit many entries' writes in one transaction, each all or nothing; results in batch order."""
        ...
