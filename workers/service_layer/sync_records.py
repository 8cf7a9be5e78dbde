"""The records of instrument-sync passes: the counters health reports, a running pass's tallies, and the
summary of a pass for people."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from workers.ports.instruments import InstrumentChange, InstrumentUpsert, PassFailure


class SyncMetrics(Protocol):
    """Where a sync reports what it did (:class:`workers.metrics.Metrics` is one)."""

    def instrument_synced(self, change: str) -> None: ...

    def instrument_sync_failed(self) -> None: ...

    def instrument_sync_pass(self, seconds: float, *, completed: bool = True) -> None: ...


@dataclass
class SyncCounters:
    """What a health reporter needs to know about the sync, updated as it goes."""

    entries_total: int = 0
    entries_done: int = 0
    entries_failed: int = 0
    instruments_created: int = 0
    instruments_updated: int = 0
    instruments_deactivated: int = 0
    passes_completed: int = 0
    running: bool = False
    last_pass_started_at: datetime | None = None
    last_pass_finished_at: datetime | None = None
    last_pass_seconds: float | None = None
    last_pass_ok: bool | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class PassSummary:
    """The outcome of one pass (or of the part of it this process ran, when it was resumed)."""

    pass_id: int
    resumed: bool
    entries_total: int
    entries_done: int
    entries_failed: int
    entries_skipped: int
    entries_unchanged: int
    created: int
    updated: int
    deactivated: int
    lookups: int
    seconds: float
    failures: tuple[PassFailure, ...] = ()
    interrupted: str | None = None

    @property
    def ok(self) -> bool:
        """The whole universe was handled and no entry failed."""
        return self.interrupted is None and self.entries_failed == 0

    def describe(self) -> str:
        """One line for people: what the pass did."""
        text = (f"pass {self.pass_id}: {self.entries_done}/{self.entries_total} entries, "
                f"{self.entries_failed} failed; {self.created} created, {self.updated} updated, "
                f"{self.deactivated} deactivated in {self.seconds:.1f} s")
        if self.interrupted:
            text += f"; interrupted ({self.interrupted}), resumable"
        if self.failures:
            shown = "; ".join(f"{f.instrument_id}: {f.error}" for f in self.failures[:5])
            more = f" (+{len(self.failures) - 5} more)" if len(self.failures) > 5 else ""
            text += f"; failures: {shown}{more}"
        return text


@dataclass
class PassRun:
    """The mutable state of the pass this process is running."""

    pass_id: int
    total: int
    skipped: int
    failed_before: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    unchanged: int = 0
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    lookups: int = 0
    interrupted: str | None = None
    last_progress: float = field(default_factory=time.monotonic)

    def count(self, outcome: InstrumentUpsert) -> None:
        if outcome.change is InstrumentChange.CREATED:
            self.created += 1
        elif outcome.change is InstrumentChange.UPDATED:
            self.updated += 1
        elif outcome.change is InstrumentChange.DEACTIVATED:
            self.deactivated += 1
