"""The trading state: one for the whole deployment, what it lets through, and a record of each change.

* ``ACTIVE``: orders pass to the other guards.
* ``REDUCING``: only an order that brings a position closer to zero passes (``TRADING_REDUCING``).
* ``HALTED``: no new order passes (``TRADING_HALTED``); entering it asks every open order of the
  deployment to be cancelled by the worker that owns it. It never implies a global cancel at IBKR.

``KILL_SWITCH=true`` is kept as another way to say "start HALTED".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.domain.guards import RejectReason


class TradingState(enum.StrEnum):
    """What the deployment may trade, from the loosest to the strictest."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"

    @property
    def strictness(self) -> int:
        """0 for ACTIVE, 1 for REDUCING, 2 for HALTED: a restart may make the state stricter, never looser."""
        return _ORDER.index(self)

    def stricter(self, other: TradingState) -> TradingState:
        """The stricter of the two states."""
        return self if self.strictness >= other.strictness else other


_ORDER = (TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED)

_DETAIL = {
    TradingState.REDUCING: "trading is REDUCING: only orders that reduce an existing position are accepted",
    TradingState.HALTED: "trading is HALTED: no new orders are accepted",
}


def admits(state: TradingState, reduces_position: bool) -> RejectReason | None:
    """Why ``state`` refuses an order, or None when it lets it through.

    ``reduces_position``: the order's side is opposite to the account's current position in the instrument
    and its quantity does not exceed that position (it cannot flip it). When that is not known, pass False:
    REDUCING then refuses, failing closed.
    """
    # Imported here: the guards module imports this one to call this function.
    from workers.domain.guards import RejectReason

    if state is TradingState.HALTED:
        return RejectReason.TRADING_HALTED
    if state is TradingState.REDUCING and not reduces_position:
        return RejectReason.TRADING_REDUCING
    return None


def refusal_detail(state: TradingState) -> str:
    """The sentence a person reads after the reason code when ``state`` refuses an order."""
    return _DETAIL.get(state, f"trading is {state}")


def start_state(stored: TradingState, configured: TradingState | None, kill_switch: bool) -> TradingState:
    """The state a worker starts in: the stored one, made stricter (never looser) by the settings."""
    wanted = configured or TradingState.ACTIVE
    if kill_switch:
        wanted = TradingState.HALTED
    return stored.stricter(wanted)


@dataclass(frozen=True)
class TradingStateRecord:
    """The trading state in force, and who set it, when and why."""

    state: TradingState
    reason: str
    changed_by: str
    changed_at: datetime
    version: int = 0


@dataclass(frozen=True)
class TradingStateChange:
    """One recorded change: the new record, the state it left, and how many cancels it asked for."""

    current: TradingStateRecord
    previous: TradingState
    cancels_requested: int = 0

    @property
    def halts(self) -> bool:
        """The change entered HALTED (from another state)."""
        return self.current.state is TradingState.HALTED and self.previous is not TradingState.HALTED
