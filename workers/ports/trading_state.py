"""What the trading state needs of its store: the state in force, its changes, and their history."""

from __future__ import annotations

from typing import Protocol

from workers.domain.trading_state import TradingState, TradingStateChange, TradingStateRecord


class TradingStateStore(Protocol):
    """The deployment's one trading state, kept where every replica (and the command line) reads it."""

    async def current(self) -> TradingStateRecord:
        """The state in force (ACTIVE, set by the migration, until someone changes it)."""
        ...

    async def change(self, state: TradingState, *, reason: str, changed_by: str) -> TradingStateChange:
        """Set ``state`` and record who, when and why, in one transaction.

        Setting HALTED also records a cancel request for every open order of the deployment, so the
        worker that owns each order cancels it (none are asked at IBKR for a global cancel).
        """
        ...

    async def request_cancels(self, owner_client_id: int, reason: str) -> int:
        """A cancel request for every open order ``owner_client_id`` owns that has none; how many were added.

        A worker calls it when it follows HALTED: an order it sent between the halt and the moment it saw
        the halt (up to a second) was not open yet when the halt asked for the cancels.
        """
        ...

    async def history(self, limit: int = 20) -> list[TradingStateRecord]:
        """The latest ``limit`` recorded changes, newest first."""
        ...

    async def record_global_cancel(self, *, reason: str, changed_by: str) -> None:
        """Record that a global cancel was sent to IBKR (the state is not changed)."""
        ...
