"""The convention for our internal instrument ids, and the IBKR contract spec each one names.

An instrument id is a security type and its identifying parts, separated by ``:``::

    STK:<symbol>:<currency>                      STK:AAPL:USD
    STK:<symbol>:<primary exchange>:<currency>   STK:SHOP:TSE:CAD
    FUT:<root>:<month>                           FUT:ES:202612        (month YYYYMM, or a YYYYMMDD date)
    FUT:<root>:<exchange>:<month>                FUT:ES:CME:202612
    OPT:<root>:<expiry>:<strike>:<right>         OPT:SPY:20261218:600:C   (expiry YYYYMMDD, right C or P)
    CASH:<base>.<quote>                          CASH:EUR.USD

Symbols are upper case (letters, digits, ``.``, ``/``, ``&``, ``-`` and inner single spaces, as in
``BRK B``); exchanges are upper-case words; currencies three letters. The strike is written in its shortest
exact decimal form (``600``, ``582.5``; never ``600.0``), so one instrument has exactly one id: the parser
refuses any other spelling rather than normalising it. :func:`format_instrument_id` is the inverse of
:func:`parse_instrument_id`.

Ids outside this convention are allowed in the universe file (the operator then gives the spec), but only
ids in it can be resolved on demand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from workers.domain.contracts import ContractSpec

SEPARATOR = ":"
_SYMBOL = re.compile(r"[A-Z0-9](?:[A-Z0-9./&-]| (?! ))*(?<! )")
_EXCHANGE = re.compile(r"[A-Z][A-Z0-9.]*")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MONTH = re.compile(r"\d{6}|\d{8}")
_EXPIRY = re.compile(r"\d{8}")
_STRIKE = re.compile(r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?")
_PAIR = re.compile(r"([A-Z]{3})\.([A-Z]{3})")

# Where a contract named only by its id is routed: stocks and options through SMART, FX on IDEALPRO.
DEFAULT_EXCHANGE = {"STK": "SMART", "OPT": "SMART", "CASH": "IDEALPRO", "FUT": ""}


class InvalidInstrumentId(ValueError):
    """The text is not an instrument id in the convention; the message says which part is wrong."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r} is not an instrument id: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class StockId:
    symbol: str
    currency: str
    primary_exchange: str = ""


@dataclass(frozen=True)
class FutureId:
    symbol: str
    month: str
    exchange: str = ""


@dataclass(frozen=True)
class OptionId:
    symbol: str
    expiry: str
    strike: Decimal
    right: str


@dataclass(frozen=True)
class CashId:
    base: str
    quote: str


InstrumentId = StockId | FutureId | OptionId | CashId


def _check(text: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise InvalidInstrumentId(text, f"bad {what} {value!r}")
    return value


def _check_date(text: str, value: str, what: str) -> str:
    try:
        if len(value) == 6:
            date(int(value[:4]), int(value[4:]), 1)
        else:
            date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        raise InvalidInstrumentId(text, f"bad {what} {value!r}") from None
    return value


def format_strike(strike: Decimal) -> str:
    """``strike`` in its shortest exact decimal form, without exponent (``600``, ``582.5``)."""
    if not strike.is_finite() or strike <= 0:
        raise ValueError(f"strike must be a positive finite number, not {strike}")
    text = format(strike.normalize(), "f")
    return text


def parse_strike(text: str, value: str) -> Decimal:
    if not _STRIKE.fullmatch(value):
        raise InvalidInstrumentId(text, f"bad strike {value!r} (write it like 600 or 582.5)")
    try:
        strike = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise InvalidInstrumentId(text, f"bad strike {value!r}") from None
    if strike <= 0:
        raise InvalidInstrumentId(text, "the strike must be positive")
    return strike


def parse_instrument_id(text: str) -> InstrumentId:
    """The parts of instrument id ``text``; raises :class:`InvalidInstrumentId`."""
    sec_type, _, rest = text.partition(SEPARATOR)
    parts = rest.split(SEPARATOR) if rest else []
    if sec_type == "STK":
        if len(parts) == 2:
            symbol, currency = parts
            primary = ""
        elif len(parts) == 3:
            symbol, primary, currency = parts
            _check(text, primary, _EXCHANGE, "primary exchange")
        else:
            raise InvalidInstrumentId(
                text, "a stock id is STK:SYMBOL:CURRENCY or STK:SYMBOL:PRIMARY:CURRENCY"
            )
        return StockId(_check(text, symbol, _SYMBOL, "symbol"),
                       _check(text, currency, _CURRENCY, "currency"), primary)
    if sec_type == "FUT":
        if len(parts) == 2:
            symbol, month = parts
            exchange = ""
        elif len(parts) == 3:
            symbol, exchange, month = parts
            _check(text, exchange, _EXCHANGE, "exchange")
        else:
            raise InvalidInstrumentId(text, "a future id is FUT:ROOT:YYYYMM or FUT:ROOT:EXCHANGE:YYYYMM")
        _check(text, month, _MONTH, "contract month")
        return FutureId(_check(text, symbol, _SYMBOL, "symbol"), _check_date(text, month, "contract month"),
                        exchange)
    if sec_type == "OPT":
        if len(parts) != 4:
            raise InvalidInstrumentId(text, "an option id is OPT:ROOT:YYYYMMDD:STRIKE:C|P")
        symbol, expiry, strike, right = parts
        _check(text, expiry, _EXPIRY, "expiry")
        if right not in ("C", "P"):
            raise InvalidInstrumentId(text, f"bad right {right!r} (C or P)")
        return OptionId(_check(text, symbol, _SYMBOL, "symbol"), _check_date(text, expiry, "expiry"),
                        parse_strike(text, strike), right)
    if sec_type == "CASH":
        match = _PAIR.fullmatch(rest)
        if match is None:
            raise InvalidInstrumentId(text, "a currency pair id is CASH:BASE.QUOTE, e.g. CASH:EUR.USD")
        return CashId(match[1], match[2])
    raise InvalidInstrumentId(text, f"unknown security type {sec_type!r} (STK, FUT, OPT or CASH)")


def format_instrument_id(parsed: InstrumentId) -> str:
    """The instrument id of ``parsed``: the inverse of :func:`parse_instrument_id`.

    Raises :class:`InvalidInstrumentId` when a part would not parse back (a lower-case symbol, ...).
    """
    if isinstance(parsed, StockId):
        middle = [parsed.primary_exchange] if parsed.primary_exchange else []
        text = SEPARATOR.join(["STK", parsed.symbol, *middle, parsed.currency])
    elif isinstance(parsed, FutureId):
        middle = [parsed.exchange] if parsed.exchange else []
        text = SEPARATOR.join(["FUT", parsed.symbol, *middle, parsed.month])
    elif isinstance(parsed, OptionId):
        text = SEPARATOR.join(["OPT", parsed.symbol, parsed.expiry, format_strike(parsed.strike),
                               parsed.right])
    else:
        text = f"CASH{SEPARATOR}{parsed.base}.{parsed.quote}"
    if parse_instrument_id(text) != parsed:
        raise InvalidInstrumentId(text, "its parts do not follow the convention")
    return text


def is_instrument_id(text: str) -> bool:
    """Whether ``text`` follows the convention."""
    try:
        parse_instrument_id(text)
    except InvalidInstrumentId:
        return False
    return True


def spec_for_id(parsed: InstrumentId) -> ContractSpec:
    """The contract spec an id names (what reqContractDetails is asked)."""
    if isinstance(parsed, StockId):
        return ContractSpec(sec_type="STK", symbol=parsed.symbol, exchange=DEFAULT_EXCHANGE["STK"],
                            primary_exchange=parsed.primary_exchange, currency=parsed.currency)
    if isinstance(parsed, FutureId):
        return ContractSpec(sec_type="FUT", symbol=parsed.symbol, exchange=parsed.exchange,
                            last_trade_date=parsed.month)
    if isinstance(parsed, OptionId):
        return ContractSpec(sec_type="OPT", symbol=parsed.symbol, exchange=DEFAULT_EXCHANGE["OPT"],
                            last_trade_date=parsed.expiry, strike=parsed.strike, right=parsed.right)
    return ContractSpec(sec_type="CASH", symbol=parsed.base, exchange=DEFAULT_EXCHANGE["CASH"],
                        currency=parsed.quote)


def spec_for_instrument_id(text: str) -> ContractSpec:
    """The contract spec instrument id ``text`` names; raises :class:`InvalidInstrumentId`."""
    return spec_for_id(parse_instrument_id(text))


def future_member_id(prefix: str, month: str) -> str:
    """The id of one contract month of a futures family whose entry id is ``prefix`` (``FUT:ES``)."""
    return f"{prefix}{SEPARATOR}{month}"


def option_member_id(prefix: str, strike: Decimal, right: str) -> str:
    """The id of one option of a chain whose entry id is ``prefix`` (``OPT:SPY:20261218``)."""
    return f"{prefix}{SEPARATOR}{format_strike(strike)}{SEPARATOR}{right}"
