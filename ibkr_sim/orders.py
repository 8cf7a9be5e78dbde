"""The sim's records of orders and executions (state kept across client reconnects)."""

from __future__ import annotations

from dataclasses import dataclass

from ibkr_sim.requests import OrderRequest
from ibkr_sim.universe import SimContract

PRE_SUBMITTED = "PreSubmitted"
SUBMITTED = "Submitted"
FILLED = "Filled"
CANCELLED = "Cancelled"
API_CANCELLED = "ApiCancelled"
INACTIVE = "Inactive"
DONE_STATES = frozenset({FILLED, CANCELLED, API_CANCELLED, INACTIVE})


@dataclass(slots=True, eq=False)
class SimOrder:
    """One order as the sim holds it: the request, its contract and its life cycle."""

    client_id: int
    order_id: int
    perm_id: int
    instrument: SimContract
    request: OrderRequest
    account: str
    side: int
    status: str = PRE_SUBMITTED
    filled: float = 0.0
    notional: float = 0.0
    last_fill_price: float = 0.0
    triggered: bool = False
    # Placed with transmit=False and not transmitted yet: known to the sim, not working.
    held: bool = False
    # A child whose parent has not filled yet: transmitted, not working.
    awaiting_parent: bool = False
    # A trailing order's current stop price (it follows the market until the order triggers), the price and
    # stop it started from, and the best price seen since.
    trail_stop: float | None = None
    trail_start: tuple[float, float] = (0.0, 0.0)
    trail_best: float = 0.0
    # GTD: when the order expires (epoch seconds).
    expires_at: float | None = None
    commission_charged: float = 0.0
    fills: int = 0
    completed_time: str = ""
    completed_status: str = ""
    # openOrder text before and after the status field; rebuilt when the order is modified.
    open_order_head: str = ""
    open_order_tail: str = ""

    @property
    def key(self) -> tuple[int, int]:
        """(clientId, orderId): how clients and the sim name an order."""
        return self.client_id, self.order_id

    @property
    def order_type(self) -> str:
        """MKT, LMT, STP or STP LMT."""
        return self.request.order_type

    @property
    def lmt_price(self) -> float | None:
        """Limit price, if any; a trailing stop limit's follows its stop at the limit price offset."""
        r = self.request
        if r.order_type == "TRAIL LIMIT" and r.lmt_price_offset is not None and self.trail_stop is not None:
            return self.trail_stop + self.side * r.lmt_price_offset
        return r.lmt_price

    @property
    def aux_price(self) -> float | None:
        """The trigger price, if any: the stop (the current trailing stop) or the touch price."""
        if self.request.order_type in ("TRAIL", "TRAIL LIMIT"):
            return self.trail_stop
        return self.request.aux_price

    @property
    def trail_stop_price(self) -> float | None:
        """The trailing stop price as openOrder reports it (the one asked for before acceptance)."""
        return self.trail_stop if self.trail_stop is not None else self.request.trail_stop_price

    @property
    def working(self) -> bool:
        """Transmitted, released by its parent and not done: the order can trade."""
        return not (self.held or self.awaiting_parent or self.done)

    @property
    def tif(self) -> str:
        """Time in force."""
        return self.request.tif

    @property
    def total_quantity(self) -> float:
        """Ordered quantity."""
        return self.request.total_quantity

    @property
    def remaining(self) -> float:
        """Quantity still to fill (0 once the order is done)."""
        if self.status in DONE_STATES:
            return 0.0
        return max(self.request.total_quantity - self.filled, 0.0)

    @property
    def avg_fill_price(self) -> float:
        """Volume-weighted average fill price (0 before the first fill)."""
        return round(self.notional / self.filled, 8) if self.filled else 0.0

    @property
    def done(self) -> bool:
        """Filled, cancelled or inactive."""
        return self.status in DONE_STATES

    @property
    def exchange(self) -> str:
        """The exchange the order was routed to (as the client named it)."""
        return self.request.contract.exchange or self.instrument.exchange


@dataclass(slots=True, eq=False)
class SimExecution:
    """One execution; a correction replaces it with a new revision (execId suffix .02, .03, …)."""

    base_id: str
    revision: int
    order: SimOrder
    shares: float
    price: float
    time: str
    epoch: float
    cum_qty: float
    avg_price: float
    venue: str
    liquidity: int
    commission: float = 0.0
    realized_pnl: float | None = None
    superseded: bool = False

    @property
    def exec_id(self) -> str:
        """IB-style execution id, e.g. ``0000e0d5.6565b1a3.01.01``."""
        return f"{self.base_id}.{self.revision:02d}"

    @property
    def side(self) -> str:
        """BOT or SLD."""
        return "BOT" if self.order.side > 0 else "SLD"
