"""The demo's sample orders: every order type, both sides, each kind of instrument, a few invalid ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from workers.adapters.postgres.instruments import InstrumentMapper
from workers.domain.instruments import Instrument

# role -> instrument id; families (a future's months, an option chain) -> the prefix of their members.
STOCKS_AND_FX = {"AAPL": "STK:AAPL:USD", "MSFT": "STK:MSFT:USD", "NVDA": "STK:NVDA:USD",
                 "AMZN": "STK:AMZN:USD", "EURUSD": "CASH:EUR.USD"}
FAMILIES = {"ES": "FUT:ES:", "SPY_OPT": "OPT:SPY:"}
UNKNOWN_INSTRUMENT = "STK:NOPE:USD"


@dataclass(frozen=True)
class Template:
    """A kind of sample order; prices are factors of the instrument's price at the time it is sent."""

    label: str
    role: str
    side: str
    quantity: str
    order_type: str = "MARKET"
    limit: float | None = None
    stop: float | None = None
    tif: str = "DAY"
    outside_rth: bool = False
    invalid: str | None = None  # "account", "instrument" or "tick": the worker must reject it
    # Once the order works at IBKR, it is modified: a new limit (a factor of the price), a new quantity.
    modify_limit: float | None = None
    modify_quantity: str | None = None
    # Version-4 terms: a trailing percent, a bracket's take-profit and stop-loss (factors of the price), a
    # one-cancels-all group (the samples with the same name share it), GTD in so many seconds, an algo.
    trailing_percent: str | None = None
    take_profit: float | None = None
    stop_loss: float | None = None
    oca: str | None = None
    good_for_seconds: int | None = None
    algo: str | None = None


T = Template
TEMPLATES = (
    T("market buy", "AAPL", "BUY", "10"),
    T("marketable limit buy", "MSFT", "BUY", "5", "LIMIT", limit=1.005, tif="GTC"),
    T("resting limit sell", "NVDA", "SELL", "8", "LIMIT", limit=1.03, tif="GTC"),
    T("triggered stop buy", "AMZN", "BUY", "4", "STOP", stop=0.99),
    T("triggered stop-limit sell", "AAPL", "SELL", "6", "STOP_LIMIT", stop=1.01, limit=0.99),
    T("future market buy", "ES", "BUY", "1"),
    T("option marketable limit buy", "SPY_OPT", "BUY", "2", "LIMIT", limit=1.05),
    T("fx market sell, outside RTH", "EURUSD", "SELL", "20000", outside_rth=True),
    T("IOC limit, not marketable", "MSFT", "BUY", "3", "LIMIT", limit=0.97, tif="IOC"),
    T("INVALID: unknown account", "AAPL", "BUY", "1", invalid="account"),
    T("FOK market sell", "NVDA", "SELL", "7", tif="FOK"),
    T("resting future limit buy", "ES", "BUY", "1", "LIMIT", limit=0.97, tif="GTC"),
    T("resting stop sell", "AMZN", "SELL", "5", "STOP", stop=0.95, tif="GTC"),
    T("INVALID: unknown instrument", "AAPL", "BUY", "1", invalid="instrument"),
    T("fx marketable limit sell, IOC", "EURUSD", "SELL", "25000", "LIMIT", limit=0.995, tif="IOC"),
    T("limit buy at the open (OPG)", "AAPL", "BUY", "3", "LIMIT", limit=1.01, tif="OPG"),
    T("INVALID: off-tick limit", "AAPL", "BUY", "1", "LIMIT", limit=0.95, invalid="tick"),
    T("option market buy", "SPY_OPT", "BUY", "1"),
    T("resting stop-limit buy", "MSFT", "BUY", "2", "STOP_LIMIT", stop=1.04, limit=1.05, tif="GTC"),
    T("market sell", "AAPL", "SELL", "10"),
    T("resting limit buy, modified to a marketable limit", "AAPL", "BUY", "5", "LIMIT", limit=0.97, tif="GTC",
      modify_limit=1.01),
    T("resting limit sell, modified to a bigger size", "NVDA", "SELL", "4", "LIMIT", limit=1.03, tif="GTC",
      modify_quantity="6"),
    T("bracket: market buy, take-profit and stop-loss", "MSFT", "BUY", "3", take_profit=0.995, stop_loss=0.95),
    T("OCO pair: resting buy", "AMZN", "BUY", "2", "LIMIT", limit=0.96, tif="GTC", oca="demo-oco"),
    T("OCO pair: marketable buy (cancels its pair)", "AMZN", "BUY", "2", "LIMIT", limit=1.01, oca="demo-oco"),
    T("trailing stop sell (2 %)", "AAPL", "SELL", "3", "TRAILING_STOP", trailing_percent="2", tif="GTC"),
    T("trailing stop-limit buy", "NVDA", "BUY", "2", "TRAILING_STOP_LIMIT", trailing_percent="3", tif="GTC"),
    T("market-if-touched buy", "MSFT", "BUY", "2", "MARKET_IF_TOUCHED", stop=0.98),
    T("limit-if-touched sell", "AAPL", "SELL", "2", "LIMIT_IF_TOUCHED", stop=1.02, limit=1.015),
    T("market on close buy", "AMZN", "BUY", "1", "MARKET_ON_CLOSE"),
    T("limit on close sell", "NVDA", "SELL", "1", "LIMIT_ON_CLOSE", limit=0.99),
    T("GTD resting limit buy (expires in 20 s)", "AAPL", "BUY", "2", "LIMIT", limit=0.95, tif="GTD",
      good_for_seconds=20),
    T("Adaptive market buy (stocks)", "MSFT", "BUY", "4", algo="ADAPTIVE"),
)


@dataclass(frozen=True)
class Sample:
    """One sample order: what it shows, the arguments of ``OrderClient.submit``, whether it is valid."""

    label: str
    fields: dict[str, Any]
    valid: bool
    # The terms to change once the order works (arguments of ``OrderClient.modify``), if any.
    modify: dict[str, Any] | None = None


def on_tick(price: float, factor: float, tick: Decimal) -> Decimal:
    """``price * factor`` on the tick grid, rounded away from ``price`` (so the factor's intent holds)."""
    steps = (Decimal(str(price)) * Decimal(str(factor)) / tick).to_integral_value(
        ROUND_CEILING if factor >= 1 else ROUND_FLOOR)
    return (steps * tick).normalize()


async def pick_instruments(mapper: InstrumentMapper) -> dict[str, Instrument]:
    """The instruments the samples use: fixed ids, the nearest future month, the nearest call."""
    picked: dict[str, Instrument] = {}
    for role, instrument_id in STOCKS_AND_FX.items():
        row = await mapper.get(instrument_id)
        if row is not None and row.instrument.active:
            picked[role] = row.instrument
    for role, prefix in FAMILIES.items():
        active = [r.instrument for r in await mapper.with_prefix(prefix) if r.instrument.active]
        if active:
            picked[role] = min(active, key=lambda i: (i.last_trade_date or "", i.option_right not in (None, "C"),
                                                      i.strike or 0, i.instrument_id))
    return picked


def sample_orders(count: int, instruments: dict[str, Instrument],
                  price: Callable[[Instrument], float | None], account: str,
                  accounts: set[str]) -> list[Sample]:
    """``count`` samples cycling through :data:`TEMPLATES` (skipping those whose instrument is missing)."""
    usable = [t for t in TEMPLATES if t.role in instruments]
    stranger = next(a for a in ("DU0009999", "DU0009998", "DU0009997") if a not in accounts)
    samples: list[Sample] = []
    for index in range(count):
        template = usable[index % len(usable)]
        instrument = instruments[template.role]
        priced = bool(template.limit or template.stop or template.take_profit or template.stop_loss
                      or template.order_type == "TRAILING_STOP_LIMIT")
        current = price(instrument) if priced else None
        order_type, label, tif = template.order_type, template.label, template.tif
        if priced and current is None:
            order_type, label = "MARKET", f"{label} (no price known: market)"
            tif = "DAY" if tif == "GTD" else tif  # its good_till is measured from the price's time: none
        fields: dict[str, Any] = {
            "account": stranger if template.invalid == "account" else account,
            "instrument_id": UNKNOWN_INSTRUMENT if template.invalid == "instrument" else instrument.instrument_id,
            "side": template.side, "quantity": Decimal(template.quantity), "order_type": order_type,
            "tif": tif, "outside_rth": template.outside_rth,
        }
        if current is not None and order_type != "MARKET":
            if template.limit:
                fields["limit_price"] = on_tick(current, template.limit, instrument.min_tick)
            if template.stop:
                fields["stop_price"] = on_tick(current, template.stop, instrument.min_tick)
            if template.invalid == "tick":
                fields["limit_price"] += instrument.min_tick / 10
        if not priced or current is not None:
            _add_version_4_terms(fields, template, instrument, current)
        modify: dict[str, Any] = {}
        if template.modify_quantity is not None:
            modify["quantity"] = Decimal(template.modify_quantity)
        if template.modify_limit is not None and "limit_price" in fields and current is not None:
            modify["limit_price"] = on_tick(current, template.modify_limit, instrument.min_tick)
        samples.append(Sample(label, fields, template.invalid is None, modify or None))
    return samples


def _add_version_4_terms(fields: dict[str, Any], template: Template, instrument: Instrument,
                         current: float | None) -> None:
    """The template's trailing, bracket, OCA, GTD and algo terms in ``fields`` (submit's arguments); the
    ones measured from the price only when ``current`` is known."""
    if template.trailing_percent is not None:
        fields["trailing_percent"] = Decimal(template.trailing_percent)
    if current is not None:
        if template.order_type == "TRAILING_STOP_LIMIT":
            fields["limit_offset"] = on_tick(current, 1.005, instrument.min_tick) - on_tick(
                current, 1.0, instrument.min_tick)
        if template.take_profit is not None:
            fields["take_profit_price"] = on_tick(current, template.take_profit, instrument.min_tick)
        if template.stop_loss is not None:
            fields["stop_loss_price"] = on_tick(current, template.stop_loss, instrument.min_tick)
    if template.oca is not None:
        fields["oca_group"] = template.oca
    if template.good_for_seconds is not None:
        fields["good_till"] = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=template.good_for_seconds)
    if template.algo is not None:
        fields["algo"] = template.algo
