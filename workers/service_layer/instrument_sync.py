"""instrument-sync: passes over the universe that keep the instrument mapper equal to what IBKR lists.

For each universe entry a pass asks IBKR for contract details (through the pacing limiter), works out the
instrument rows the entry should have, and writes only what differs, with one ``instruments.updated``
outbox record per real change (CREATED, UPDATED, DEACTIVATED). Entries are committed in groups (a
:class:`GroupCommitter`: one transaction for whatever queued up while the previous one committed), each
entry all or nothing and marked synced in the same transaction as its rows. ``conId`` is the
identity of a contract: an instrument the mapper knows is asked for by conId, so a renamed symbol is an
UPDATE of the same row. What IBKR no longer knows (error 200) or what expired is deactivated, never deleted.
An unknown or ambiguous spec fails its entry with a reason; nothing is guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from workers.domain.contracts import (
    ContractDetail,
    ContractSpec,
    LookupRejected,
    LookupUnavailable,
    ResolutionError,
    UnknownContract,
    choose_one,
    distinct,
    is_expired,
)
from workers.domain.instruments import Instrument
from workers.domain.universe import SingleEntry, UniverseEntry, UniverseError
from workers.logs import get_logger
from workers.ports.instruments import (
    ContractLookup,
    Deactivate,
    EntryWrites,
    EventFactory,
    InstrumentChange,
    InstrumentMapper,
    InstrumentWrite,
    UniverseRow,
    UniverseStore,
)
from workers.service_layer.contract_resolution import differs, instrument_from_detail, utc_today
from workers.service_layer.group_commit import GroupCommitter
from workers.service_layer.sync_reads import ExistingInstruments
from workers.service_layer.sync_records import PassRun, PassSummary, SyncCounters, SyncMetrics

log = get_logger(__name__)


@dataclass(frozen=True)
class _EntrySync:
    """An entry on its way to the committer: what it writes (nothing: mark it synced only)."""

    row: UniverseRow
    writes: tuple[InstrumentWrite, ...]
    unchanged: int = 0  # instruments the entry found right as they were


class InstrumentSync:
    """Runs passes over the universe; its :attr:`counters` tell how far it got."""

    def __init__(self, *, store: UniverseStore, mapper: InstrumentMapper, lookup: ContractLookup,
                 events: EventFactory, concurrency: int = 8, today: Callable[[], date] = utc_today,
                 resume_within: timedelta = timedelta(hours=1), progress_every: float = 5.0,
                 commit_batch: int = 256, read_ahead: int = 512, stop_grace: float = 5.0,
                 on_change: Callable[[], None] | None = None, metrics: SyncMetrics | None = None,
                 on_pass_started: Callable[[], None] | None = None) -> None:
        self.store = store
        self.mapper = mapper
        self.lookup = lookup
        self.events = events
        self.concurrency = max(1, concurrency)
        self.today = today
        self.resume_within = resume_within
        self.progress_every = progress_every
        self.commit_batch = max(1, commit_batch)
        self.read_ahead = max(1, read_ahead)
        self.stop_grace = stop_grace
        self.on_change = on_change
        self.metrics = metrics
        self.on_pass_started = on_pass_started
        self.counters = SyncCounters()

    # -- a pass ---------------------------------------------------------------------------------

    async def run_pass(self, stop: asyncio.Event | None = None) -> PassSummary:
        """One pass over the universe (resuming an unfinished one); returns its summary.

        When IBKR becomes unavailable, or ``stop`` is set, the entries in flight are finished and the pass
        is left unfinished (``interrupted`` says why): the next call resumes it.
        """
        entries = await self.store.entries()
        sync_pass = await self.store.open_pass(len(entries), self.resume_within)
        pending = await self.store.pending(sync_pass.pass_id)
        _, failed_before = await self.store.pass_counts(sync_pass.pass_id)
        run = PassRun(pass_id=sync_pass.pass_id, total=len(entries), skipped=len(entries) - len(pending),
                       failed_before=failed_before)
        self._pass_started(run, sync_pass.resumed)
        if not entries:
            log.warning("the instrument universe is empty: load one with `ibkr-workers instruments load FILE`")
        queue = enumerate(pending)
        existing = ExistingInstruments(self.mapper, pending, self.read_ahead)
        committer: GroupCommitter[_EntrySync] = GroupCommitter(
            lambda batch: self._commit(run, batch), max_batch=self.commit_batch,
            max_pending=4 * self.commit_batch, name="instrument-sync-commit")
        workers = [asyncio.create_task(self._work(run, queue, existing, committer, stop),
                                       name=f"instrument-sync-{n}")
                   for n in range(min(self.concurrency, len(pending)))]
        try:
            await self._join(self._drive(workers, committer), stop)
        finally:
            existing.close()
        if run.interrupted is None and stop is not None and stop.is_set():
            run.interrupted = "stopping"
        if run.interrupted is None:
            await self._deactivate_expired(run)
            done, failed = await self.store.finish_pass(
                run.pass_id, total=run.total, created=run.created, updated=run.updated,
                deactivated=run.deactivated,
            )
        else:
            done, failed = await self.store.pass_counts(run.pass_id)
        failures = tuple(await self.store.pass_failures(run.pass_id)) if failed else ()
        summary = PassSummary(
            pass_id=run.pass_id, resumed=sync_pass.resumed, entries_total=run.total, entries_done=done,
            entries_failed=failed, entries_skipped=run.skipped, entries_unchanged=run.unchanged,
            created=run.created, updated=run.updated, deactivated=run.deactivated, lookups=run.lookups,
            seconds=time.monotonic() - run.started, failures=failures, interrupted=run.interrupted,
        )
        self._pass_finished(summary)
        return summary

    @staticmethod
    async def _drive(workers: list[asyncio.Task[None]], committer: GroupCommitter[_EntrySync]) -> None:
        """The workers to their end, then the last commits."""
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            committer.cancel()
            await committer.wait_cancelled()
            raise
        try:
            await committer.close()
        except BaseException:
            committer.cancel()
            raise

    async def _join(self, everything: Coroutine[Any, Any, None], stop: asyncio.Event | None) -> None:
        """Run ``everything``; once ``stop`` is set, give the entries in flight ``stop_grace`` seconds.

        An entry cut short rolls back as a whole and stays pending for the next run.
        """
        task = asyncio.create_task(everything, name="instrument-sync-pass")
        try:
            if stop is not None:
                stopping: asyncio.Future[Any] = asyncio.create_task(stop.wait())
                try:
                    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopping.cancel()
                if not task.done():
                    try:
                        await asyncio.wait_for(asyncio.shield(task), self.stop_grace)
                    except TimeoutError:
                        log.warning("entries still in flight after the stop grace; abandoned (they stay pending)")
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                        return
            await task
        except BaseException:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise

    async def _work(self, run: PassRun, queue: Iterator[tuple[int, UniverseRow]], existing: ExistingInstruments,
                    committer: GroupCommitter[_EntrySync], stop: asyncio.Event | None) -> None:
        # One shared iterator: each worker takes the next entry when it is free.
        for index, row in queue:
            if run.interrupted is not None or (stop is not None and stop.is_set()):
                return
            try:
                entry_sync = await self._sync_entry(run, index, row, existing)
            except LookupUnavailable as exc:
                if run.interrupted is None:
                    run.interrupted = str(exc)
                    log.warning("instrument sync interrupted; the pass will resume", pass_id=run.pass_id,
                                reason=str(exc))
                return
            if entry_sync is not None:
                await committer.submit(entry_sync)
            await self._progress(run)

    async def _sync_entry(self, run: PassRun, index: int, row: UniverseRow,
                          existing_rows: ExistingInstruments) -> _EntrySync | None:
        """What the entry must write (nothing, when the mapper has it right); None when it failed."""
        entry = row.entry
        try:
            existing = await self._existing(entry, index, existing_rows)
            writes = await self._plan(run, entry, existing, row.resolved_before)
        except (ResolutionError, LookupRejected, UniverseError) as exc:
            await self._fail(run, row, str(exc))
            return None
        current = {r.instrument_id: r for r in existing}
        if not any(differs(w, current.get(w.instrument_id)) for w in writes):
            return _EntrySync(row, (), unchanged=len(writes))
        return _EntrySync(row, tuple(writes))

    async def _commit(self, run: PassRun, batch: list[_EntrySync]) -> None:
        """Commit a group of entries in one transaction; count and log what each did."""
        results = await self.store.commit_entries(
            run.pass_id, [EntryWrites((e.row.instrument_id, e.row.spec_hash), e.writes) for e in batch],
            self.events)
        changed = False
        for entry_sync, result in zip(batch, results, strict=True):
            if result.error is not None:
                await self._fail(run, entry_sync.row, result.error)
                continue
            run.done += 1
            if not entry_sync.writes:
                run.unchanged += 1
                if self.metrics is not None:
                    for _ in range(entry_sync.unchanged):
                        self.metrics.instrument_synced(InstrumentChange.UNCHANGED.value)
            for outcome in result.outcomes:
                run.count(outcome)
                if self.metrics is not None:
                    self.metrics.instrument_synced(outcome.change.value)
                if outcome.change is not InstrumentChange.UNCHANGED:
                    changed = True
                    log.info("instrument changed", instrument_id=outcome.row.instrument.instrument_id,
                             change=outcome.change.value, changed_fields=list(outcome.changed_fields),
                             con_id=outcome.row.instrument.con_id, entry=entry_sync.row.instrument_id)
        self._count(run)
        if changed and self.on_change is not None:
            self.on_change()

    async def _fail(self, run: PassRun, row: UniverseRow, error: str) -> None:
        log.warning("instrument entry failed", entry=row.instrument_id, error=error, pass_id=run.pass_id)
        await self.store.mark_failed(run.pass_id, row.instrument_id, row.spec_hash, error)
        run.done += 1
        run.failed += 1
        self.counters.last_error = f"{row.instrument_id}: {error}"
        if self.metrics is not None:
            self.metrics.instrument_sync_failed()
        self._count(run)

    async def _existing(self, entry: UniverseEntry, index: int, prefetched: ExistingInstruments) -> list[Instrument]:
        """The mapper's instruments the entry owns now (its instrument, or its family's members)."""
        if isinstance(entry, SingleEntry):
            known = await prefetched.single(index, entry.instrument_id)
            return [known] if known is not None else []
        rows = await self.mapper.with_prefix(entry.instrument_id + ":")
        return [r.instrument for r in rows if entry.owns(r.instrument.instrument_id)]

    async def _ask(self, run: PassRun, spec: ContractSpec) -> list[ContractDetail]:
        run.lookups += 1
        return await self.lookup.lookup(spec)

    async def _ask_con_id(self, run: PassRun, known: Instrument,
                          spec: ContractSpec) -> ContractDetail | None:
        """The contract ``known`` maps to, as IBKR lists it now; None when IBKR no longer knows it."""
        answer = await self._ask(run, spec.by_con_id(known.con_id, known.exchange))
        return next((d for d in answer if d.con_id == known.con_id), None)

    # -- what an entry should write ---------------------------------------------------------------

    async def _plan(self, run: PassRun, entry: UniverseEntry, existing: list[Instrument],
                    resolved_before: bool) -> list[InstrumentWrite]:
        if isinstance(entry, SingleEntry):
            return await self._plan_single(run, entry, existing[0] if existing else None, resolved_before)
        return await self._plan_family(run, entry, existing)

    async def _plan_single(self, run: PassRun, entry: SingleEntry, current: Instrument | None,
                           resolved_before: bool) -> list[InstrumentWrite]:
        today = self.today()
        if current is not None and resolved_before:
            # Known contract: ask by conId, so a renamed symbol updates the same row.
            detail = await self._ask_con_id(run, current, entry.spec)
            if detail is None:
                return [Deactivate(current.instrument_id, "IBKR no longer knows the contract")]
        else:
            detail = choose_one(entry.spec, await self._ask(run, entry.spec))
        if detail.expired(today):
            if current is None:
                # IBKR still lists it, but there is nothing left to trade: not an error, nothing to map.
                log.warning("universe entry names an expired contract; nothing mapped",
                            entry=entry.instrument_id, last_trade_date=detail.last_trade_date)
                return []
            return [Deactivate(current.instrument_id, "expired")]
        return [instrument_from_detail(entry.instrument_id, detail, entry.spec)]

    async def _plan_family(self, run: PassRun, entry: UniverseEntry,
                           existing: list[Instrument]) -> list[InstrumentWrite]:
        assert not isinstance(entry, SingleEntry)
        today = self.today()
        answer = distinct(await self._ask(run, entry.spec))
        listed = {d.con_id: d for d in answer}
        by_con_id = {r.con_id: r for r in existing}
        writes: list[InstrumentWrite] = []
        ids: dict[str, ContractDetail] = {}
        for detail in entry.select(answer, today):
            known = by_con_id.get(detail.con_id)
            instrument_id = known.instrument_id if known is not None else entry.member_id(detail)
            if instrument_id in ids:
                raise ResolutionError(entry.spec, f"{entry.instrument_id}: {ids[instrument_id].describe()} "
                                      f"and {detail.describe()} would both be {instrument_id}")
            ids[instrument_id] = detail
            writes.append(instrument_from_detail(instrument_id, detail, entry.spec))
        for mapped in existing:
            if mapped.instrument_id in ids or not mapped.active:
                continue
            if is_expired(mapped.last_trade_date, today):
                writes.append(Deactivate(mapped.instrument_id, "expired"))
                continue
            current = listed.get(mapped.con_id)
            if current is None:
                # Not in the family's answer: ask for it by conId before deciding IBKR forgot it.
                current = await self._ask_con_id(run, mapped, entry.spec)
            if current is None:
                writes.append(Deactivate(mapped.instrument_id, "IBKR no longer knows the contract"))
            elif current.expired(today):
                writes.append(Deactivate(mapped.instrument_id, "expired"))
            else:
                # Still listed, just outside the selection (fewer months asked for): keep it current.
                writes.append(instrument_from_detail(mapped.instrument_id, current, entry.spec))
        if not writes and not answer:
            raise UnknownContract(entry.spec)
        if not writes:
            log.warning("universe entry selects no listed contract (all expired, or outside its "
                        "months/strikes/rights); nothing mapped", entry=entry.instrument_id, listed=len(answer))
        return writes

    # -- the end of a pass ------------------------------------------------------------------------

    async def _deactivate_expired(self, run: PassRun) -> None:
        """Deactivate every active instrument past its last trading day, whichever entry it came from."""
        for row in await self.mapper.expired(self.today().strftime("%Y%m%d")):
            expired = row.instrument
            outcomes = await self.store.commit_entry(None, None, [Deactivate(expired.instrument_id, "expired")],
                                                     self.events)
            for outcome in outcomes:
                run.count(outcome)
                if outcome.change is InstrumentChange.DEACTIVATED:
                    if self.metrics is not None:
                        self.metrics.instrument_synced(outcome.change.value)
                    log.info("instrument changed", instrument_id=expired.instrument_id, change="DEACTIVATED",
                             changed_fields=["active"], con_id=expired.con_id, reason="expired")
                    if self.on_change is not None:
                        self.on_change()

    # -- progress ---------------------------------------------------------------------------------

    def _pass_started(self, run: PassRun, resumed: bool) -> None:
        c = self.counters
        c.running = True
        c.entries_total = run.total
        c.entries_done = run.skipped
        c.entries_failed = run.failed_before
        c.last_pass_started_at = datetime.now(UTC)
        log.info("instrument sync pass started", pass_id=run.pass_id, resumed=resumed, entries=run.total,
                 already_done=run.skipped, concurrency=self.concurrency)
        if self.on_pass_started is not None:
            self.on_pass_started()

    def _count(self, run: PassRun) -> None:
        self.counters.entries_done = run.skipped + run.done
        self.counters.entries_failed = run.failed_before + run.failed

    async def _progress(self, run: PassRun) -> None:
        now = time.monotonic()
        if now - run.last_progress < self.progress_every:
            return
        run.last_progress = now
        elapsed = now - run.started
        rate = run.done / elapsed if elapsed > 0 else 0.0
        remaining = run.total - run.skipped - run.done
        log.info("instrument sync progress", pass_id=run.pass_id, done=run.skipped + run.done,
                 total=run.total, failed=run.failed_before + run.failed, rate_per_s=round(rate, 1),
                 eta_s=round(remaining / rate, 1) if rate > 0 else None)

    def _pass_finished(self, summary: PassSummary) -> None:
        c = self.counters
        c.running = False
        c.entries_done = summary.entries_done
        c.entries_failed = summary.entries_failed
        c.instruments_created += summary.created
        c.instruments_updated += summary.updated
        c.instruments_deactivated += summary.deactivated
        c.last_pass_seconds = summary.seconds
        c.last_pass_ok = summary.ok
        if summary.interrupted is None:
            c.passes_completed += 1
            c.last_pass_finished_at = datetime.now(UTC)
        if self.metrics is not None:
            # Completed: the whole universe was gone through (entries may have failed, counted apart).
            self.metrics.instrument_sync_pass(summary.seconds, completed=summary.interrupted is None)
        rate = (summary.entries_done - summary.entries_skipped) / summary.seconds if summary.seconds else 0.0
        log.info("instrument sync pass finished" if summary.interrupted is None
                 else "instrument sync pass interrupted",
                 pass_id=summary.pass_id, resumed=summary.resumed, entries=summary.entries_total,
                 done=summary.entries_done, failed=summary.entries_failed, skipped=summary.entries_skipped,
                 unchanged=summary.entries_unchanged, created=summary.created, updated=summary.updated,
                 deactivated=summary.deactivated, lookups=summary.lookups, seconds=round(summary.seconds, 2),
                 rate_per_s=round(rate, 1), interrupted=summary.interrupted,
                 failures=[f"{f.instrument_id}: {f.error}" for f in summary.failures[:20]])


async def run_passes(sync: InstrumentSync, stop: asyncio.Event, interval: float,
                     ensure_connected: Callable[[], Awaitable[bool]]) -> None:
    """A pass now, then one every ``interval`` seconds (start to start) until ``stop`` is set.

    ``ensure_connected`` (re)connects to IBKR before each pass and returns False once ``stop`` is set; a
    pass interrupted by a lost connection resumes as soon as it returns.
    """
    while not stop.is_set():
        if not await ensure_connected():
            return
        started = time.monotonic()
        try:
            summary = await sync.run_pass(stop)
        except Exception as exc:  # PostgreSQL away, most likely: the pass is resumable, try again
            sync.counters.running = False
            sync.counters.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("instrument sync pass failed; retrying", error=sync.counters.last_error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5.0)
            continue
        if summary.interrupted is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.monotonic() - started)))
