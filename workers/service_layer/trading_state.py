"""The trading state as a worker sees it: read from the store once a second and kept in memory.

Orders are checked against :attr:`TradingStateWatch.state`, a plain attribute: no round trip to
PostgreSQL per order. Every replica reads the one stored state, so a change made anywhere (another
replica's HTTP endpoint, ``ibkr-workers trading-state``) is followed within about a second.

Why polling and not LISTEN/NOTIFY: a notification sent while a replica's listening connection is down is
lost, so a listener needs a periodic read anyway; the read alone (one row, once a second) bounds the delay
the same way, needs no connection held outside the pool and works through a transaction-pooling proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable

from workers.domain.trading_state import TradingState, TradingStateChange, TradingStateRecord, start_state
from workers.logs import get_logger
from workers.ports.trading_state import TradingStateStore

log = get_logger(__name__)

OnChange = Callable[[TradingStateRecord, TradingState], Awaitable[None] | None]
"""Called with the new record and the state it replaced, once per change seen."""

POLL_INTERVAL = 1.0


class TradingStateWatch:
    """The deployment's trading state, cached; :meth:`run` follows the store's changes."""

    def __init__(self, store: TradingStateStore, *, every: float = POLL_INTERVAL,
                 on_change: OnChange | None = None) -> None:
        self.store = store
        self.every = every
        self.on_change = on_change
        self.record: TradingStateRecord | None = None

    @property
    def state(self) -> TradingState:
        """The state in force; HALTED until it has been read once (fail closed)."""
        return self.record.state if self.record is not None else TradingState.HALTED

    async def start(self, *, configured: TradingState | None, kill_switch: bool, instance: str) -> None:
        """Read the stored state; when the settings ask for a stricter one, record that change first.

        A restart never loosens the state: ``TRADING_STATE=ACTIVE`` does not resume a halted deployment.
        """
        stored = await self.store.current()
        wanted = start_state(stored.state, configured, kill_switch)
        if wanted is not stored.state:
            setting = "KILL_SWITCH=true" if kill_switch else f"TRADING_STATE={configured}"
            await self.change(wanted, reason=f"{setting} at the start of {instance}", changed_by=instance)
        else:
            await self.refresh()
        log.info("trading state", state=self.state.value, changed_by=self.record and self.record.changed_by,
                 reason=self.record and self.record.reason)

    async def change(self, state: TradingState, *, reason: str, changed_by: str) -> TradingStateChange:
        """Record a change in the store and follow it here at once."""
        change = await self.store.change(state, reason=reason, changed_by=changed_by)
        log.warning("trading state changed", state=change.current.state.value, previous=change.previous.value,
                    changed_by=changed_by, reason=reason, cancels_requested=change.cancels_requested)
        await self._follow(change.current)
        return change

    async def refresh(self) -> TradingStateRecord:
        """Read the store now; run the change callback when the state changed since the last read."""
        record = await self.store.current()
        await self._follow(record)
        return record

    async def _follow(self, record: TradingStateRecord) -> None:
        before = self.record
        if before is not None and record.version <= before.version:
            return  # an older read finishing after a newer one, or nothing new
        self.record = record
        if before is not None and before.state is record.state:
            return
        if before is not None:
            log.warning("trading state followed", state=record.state.value, previous=before.state.value,
                        changed_by=record.changed_by, reason=record.reason)
        if self.on_change is not None:
            result = self.on_change(record, before.state if before is not None else record.state)
            if inspect.isawaitable(result):
                await result

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the store until ``stop``; a failed read keeps the last state known and is retried."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
            if stop.is_set():
                return
            try:
                await self.refresh()
            except Exception as exc:  # PostgreSQL away: no order can be recorded either; keep the last state
                log.warning("trading state not read; keeping the last known", state=self.state.value,
                            error=f"{type(exc).__name__}: {exc}")
