"""Settings of one sim gateway, built once (from the command line or by a test)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ibkr_sim.portfolio import DEFAULT_COMMISSIONS, CommissionRate

DEFAULT_ACCOUNTS = ("DU0000001",)
# Paper-style made-up account codes only: two capital letters then digits (DU…, DF…).
_ACCOUNT_CODE = re.compile(r"^[A-Z]{1,3}\d{1,9}$")


class SimConfigError(ValueError):
    """A sim setting is invalid; the message says which."""


@dataclass(slots=True)
class SimConfig:
    """How the sim behaves; the defaults suit tests (no background price moves, immediate fills)."""

    accounts: tuple[str, ...] = DEFAULT_ACCOUNTS
    server_version: int = 157
    seed: int = 0
    pacing: bool = True
    max_messages_per_second: int = 50
    # Disconnect a client after this many pacing violations (None: only answer error 100).
    pacing_disconnect_after: int | None = None
    # A client id that may see, modify and cancel every client's orders (IB's "master API client ID").
    master_client_id: int | None = None
    # Fill at most this quantity per matching pass (None: everything that can fill, at once).
    clip_size: float | None = None
    # Seconds between the clips of a partially filled order.
    clip_interval: float = 0.0
    # Seconds between random-walk steps of every instrument (None: prices move only when told to).
    tick_interval: float | None = None
    volatility: float = 0.0005
    # Account values changed by fills are pushed to subscribers (changes only) this long after a fill;
    # portfolio and position updates go out with the fill itself.
    account_update_interval: float = 0.1
    initial_cash: float = 1_000_000.0
    commissions: dict[str, CommissionRate] = field(default_factory=lambda: dict(DEFAULT_COMMISSIONS))
    time_zone: str = "UTC"
    first_order_id: int = 1
    farm_status_on_connect: bool = True
    # Inside regular trading hours: orders without outsideRth wait (PreSubmitted) while this is False.
    regular_trading_hours: bool = True
    perm_id_base: int | None = None
    # Streaming market-data lines of the account, every connection together (IB's default: 100).
    market_data_lines: int = 100
    # Whether the account has live market-data subscriptions; without (like a new paper account), live
    # requests get error 354 and delayed ones delayed data. ``unsubscribed_con_ids`` lacks them per contract.
    market_data_subscribed: bool = True
    unsubscribed_con_ids: frozenset[int] = frozenset()
    exec_id_prefix: str | None = None

    def validate(self) -> SimConfig:
        """Check the settings; raise :class:`SimConfigError` naming the first bad one."""
        if not self.accounts:
            raise SimConfigError("accounts: at least one account is required")
        for account in self.accounts:
            if not _ACCOUNT_CODE.match(account):
                raise SimConfigError(f"accounts: {account!r} is not an account code like DU0000001")
        if self.server_version < 100:
            raise SimConfigError("server_version: must be at least 100")
        if self.max_messages_per_second <= 0:
            raise SimConfigError("max_messages_per_second: must be positive")
        if self.clip_size is not None and self.clip_size <= 0:
            raise SimConfigError("clip_size: must be positive")
        if self.tick_interval is not None and self.tick_interval <= 0:
            raise SimConfigError("tick_interval: must be positive")
        if self.market_data_lines < 0:
            raise SimConfigError("market_data_lines: must not be negative")
        return self

    def has_market_data(self, con_id: int) -> bool:
        """Whether the account has a live market-data subscription for the contract."""
        return self.market_data_subscribed and con_id not in self.unsubscribed_con_ids


def parse_accounts(text: str) -> tuple[str, ...]:
    """Split a comma-separated account list (``DU0000001,DU0000002``)."""
    return tuple(a.strip() for a in text.split(",") if a.strip())
