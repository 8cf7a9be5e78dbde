"""The order-consumer's side of the trading state: what a followed change does here, and the admin actions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.domain.trading_state import TradingState, TradingStateChange, TradingStateRecord
from workers.logs import get_logger
from workers.metrics import Metrics
from workers.ports.trading_state import TradingStateStore
from workers.service_layer.orders.service import OrderService
from workers.service_layer.trading_state import TradingStateWatch

log = get_logger(__name__)

STATES = tuple(state.value for state in TradingState)


def describe(record: TradingStateRecord) -> dict[str, Any]:
    """The JSON the admin endpoints answer with."""
    return {"state": record.state.value, "reason": record.reason, "changed_by": record.changed_by,
            "changed_at": record.changed_at.isoformat()}


class TradingControl:
    """Follows the deployment's trading state in one worker, and changes it for the admin endpoints."""

    def __init__(self, *, store: TradingStateStore, service: OrderService, metrics: Metrics,
                 connected: Callable[[], bool], notify: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.service = service
        self.metrics = metrics
        self.connected = connected
        self.notify = notify
        self.watch = TradingStateWatch(store, on_change=self.followed)

    @property
    def state(self) -> TradingState:
        return self.watch.state

    async def followed(self, record: TradingStateRecord, previous: TradingState) -> None:
        """A change seen (here or on another replica): metrics, a health record at once, and on HALTED this
        worker's cancels right away rather than at the next sweep."""
        self.metrics.set_trading_state(record.state.value, STATES, changed=record.state is not previous)
        self.notify()
        if record.state is not TradingState.HALTED:
            return
        try:
            # From now on this worker sends nothing; an order it sent before it saw the halt is asked too.
            added = await self.store.request_cancels(self.service.client_id,
                                                     f"{TradingState.HALTED}: {record.reason}")
            if added:
                log.warning("cancels requested for orders sent while the halt was on its way", count=added)
            if self.connected():
                await self.service.sweep_cancels()
        except Exception:  # the periodic sweep tries again
            log.exception("cancels after HALTED failed")

    # -- admin actions (see workers.adapters.http.admin) ---------------------------------------------

    async def trading_state(self) -> dict[str, Any]:
        return describe(await self.watch.refresh())

    async def set_trading_state(self, state: TradingState, *, reason: str, changed_by: str) -> dict[str, Any]:
        change: TradingStateChange = await self.watch.change(state, reason=reason, changed_by=changed_by)
        return {**describe(change.current), "previous": change.previous.value,
                "cancels_requested": change.cancels_requested}

    async def global_cancel(self, *, reason: str, changed_by: str) -> dict[str, Any]:
        await self.service.global_cancel()
        await self.store.record_global_cancel(reason=reason, changed_by=changed_by)
        log.warning("global cancel", changed_by=changed_by, reason=reason)
        return {"global_cancel": "sent", "reason": reason, "changed_by": changed_by}
