"""The instrument record: an internal ``instrument_id`` mapped to one IBKR contract."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Instrument:
    """One instrument of the mapper; ``con_id`` is IBKR's identity of the contract.

    ``min_tick`` is required and positive: every contract IBKR lists has one, and an order's prices are
    checked against it. ``strike`` and ``option_right`` (``C`` or ``P``) are set for options only.
    """

    instrument_id: str
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    min_tick: Decimal
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: Decimal | None = None
    last_trade_date: str | None = None
    long_name: str = ""
    active: bool = True
    strike: Decimal | None = None
    option_right: str | None = None
    # IBKR's quantity step (its contract details' size increment); None where IBKR gives none.
    size_increment: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.min_tick > 0:
            raise ValueError(f"instrument {self.instrument_id}: min_tick must be > 0, got {self.min_tick}")
        if self.size_increment is not None and not self.size_increment > 0:
            raise ValueError(f"instrument {self.instrument_id}: size_increment must be > 0, got {self.size_increment}")

    @property
    def price_multiplier(self) -> Decimal:
        """The factor from price × quantity to notional (1 when IBKR gives no multiplier)."""
        return self.multiplier if self.multiplier else Decimal(1)

    def changed_fields(self, current: Instrument) -> tuple[str, ...]:
        """The fields of :data:`INSTRUMENT_FIELDS` in which this instrument differs from ``current``."""
        return tuple(name for name in INSTRUMENT_FIELDS if getattr(current, name) != getattr(self, name))


# Every field but the key, in the order changes are reported (``changed_fields`` of instruments.updated).
INSTRUMENT_FIELDS: tuple[str, ...] = (
    "con_id",
    "symbol",
    "sec_type",
    "exchange",
    "primary_exchange",
    "currency",
    "local_symbol",
    "trading_class",
    "multiplier",
    "min_tick",
    "last_trade_date",
    "long_name",
    "active",
    "strike",
    "option_right",
    "size_increment",
)
