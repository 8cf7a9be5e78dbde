"""The instrument universe: the entries instrument-sync keeps in the mapper, and the universe file format.

A universe file (YAML or JSON) is a list of entries, or a mapping with the list under ``instruments``.
Each entry has an ``instrument_id`` and a contract spec; field names are IBKR's (``secType``,
``primaryExchange``, ``tradingClass``, ``lastTradeDateOrContractMonth``, ...) or their snake-case forms.

Three kinds of entries:

* **single** — one contract. When the id follows the id convention (:mod:`workers.domain.instrument_ids`)
  the spec comes from the id and fields may only add to it (``STK:AAPL:USD`` alone is a complete entry);
  any other id needs ``secType`` and ``symbol``.
* **future months** — ``months: N``: the next N contract months of a futures root that have not
  expired, rolling forward as months expire and new ones list. The id is the family prefix
  ``FUT:<root>`` or ``FUT:<root>:<exchange>``; each month becomes ``<prefix>:<YYYYMM>``.
* **option chain** — ``strikes: {min: .., max: ..}`` and/or ``rights: [C, P]`` for one expiry. The id is
  the prefix ``OPT:<root>:<YYYYMMDD>``; each option becomes ``<prefix>:<strike>:<right>``.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from workers.domain.contracts import ContractDetail, ContractSpec, narrow
from workers.domain.instrument_ids import (
    DEFAULT_EXCHANGE,
    SEPARATOR,
    InvalidInstrumentId,
    format_strike,
    future_member_id,
    option_member_id,
    parse_instrument_id,
    spec_for_id,
)
from workers.domain.text import INSTRUMENT_ID_MAX, text_problem

_MONTH_SUFFIX = re.compile(r"\d{6}|\d{8}")
_OPTION_SUFFIX = re.compile(r"(?:0|[1-9]\d*)(?:\.\d*[1-9])?:[CP]")
_FUTURE_PREFIX = re.compile(r"FUT:([^:]+)(?::([^:]+))?")
_OPTION_PREFIX = re.compile(r"OPT:([^:]+):(\d{8})")

_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
# The longest text field of an entry (symbols, exchanges, local symbols are far shorter).
UNIVERSE_TEXT_MAX = 128

# File field name (either spelling) -> ContractSpec field.
_SPEC_FIELDS: dict[str, str] = {
    "secType": "sec_type", "sec_type": "sec_type",
    "symbol": "symbol",
    "exchange": "exchange",
    "primaryExchange": "primary_exchange", "primary_exchange": "primary_exchange",
    "currency": "currency",
    "localSymbol": "local_symbol", "local_symbol": "local_symbol",
    "tradingClass": "trading_class", "trading_class": "trading_class",
    "multiplier": "multiplier",
    "lastTradeDateOrContractMonth": "last_trade_date", "last_trade_date": "last_trade_date",
    "expiry": "last_trade_date", "month": "last_trade_date",
    "strike": "strike",
    "right": "right",
    "conId": "con_id", "con_id": "con_id",
}
_ENTRY_FIELDS = {"instrument_id", "id", "months", "next_months", "strikes", "strike_min", "strike_max",
                 "rights", "comment", "note"}
_UPPER = ("sec_type", "symbol", "exchange", "primary_exchange", "currency", "trading_class")


class UniverseError(ValueError):
    """A universe file or entry is not valid; the message names the entry and the field."""


class EntryKind(enum.StrEnum):
    SINGLE = "single"
    FUTURE_MONTHS = "future_months"
    OPTION_CHAIN = "option_chain"


@dataclass(frozen=True)
class SingleEntry:
    """One contract, mapped to ``instrument_id``."""

    instrument_id: str
    spec: ContractSpec
    kind: EntryKind = EntryKind.SINGLE

    def owns(self, instrument_id: str) -> bool:
        return instrument_id == self.instrument_id

    def select(self, details: list[ContractDetail], today: dt.date) -> list[ContractDetail]:
        return narrow(self.spec, details)


@dataclass(frozen=True)
class FutureMonthsEntry:
    """The next ``months`` unexpired contract months of a futures root; ``instrument_id`` is the prefix."""

    instrument_id: str
    spec: ContractSpec
    months: int
    kind: EntryKind = EntryKind.FUTURE_MONTHS

    def owns(self, instrument_id: str) -> bool:
        prefix, _, suffix = instrument_id.rpartition(SEPARATOR)
        return prefix == self.instrument_id and bool(_MONTH_SUFFIX.fullmatch(suffix))

    def member_id(self, detail: ContractDetail) -> str:
        return future_member_id(self.instrument_id, detail.month)

    def select(self, details: list[ContractDetail], today: dt.date) -> list[ContractDetail]:
        """The first ``months`` months that still trade, earliest first."""
        live = [d for d in narrow(self.spec, details) if not d.expired(today)]
        live.sort(key=lambda d: ((d.last_trade_date or d.month), d.con_id))
        return live[: self.months]


@dataclass(frozen=True)
class OptionChainEntry:
    """The options of one expiry within a strike range; ``instrument_id`` is the prefix."""

    instrument_id: str
    spec: ContractSpec
    strike_min: Decimal | None = None
    strike_max: Decimal | None = None
    rights: tuple[str, ...] = ("C", "P")
    kind: EntryKind = EntryKind.OPTION_CHAIN

    def owns(self, instrument_id: str) -> bool:
        head, _, suffix = instrument_id.partition(self.instrument_id + SEPARATOR)
        return head == "" and bool(suffix) and bool(_OPTION_SUFFIX.fullmatch(suffix))

    def member_id(self, detail: ContractDetail) -> str:
        if detail.strike is None or detail.right is None:
            raise UniverseError(f"{self.instrument_id}: {detail.describe()} has no strike or right")
        return option_member_id(self.instrument_id, detail.strike, detail.right)

    def select(self, details: list[ContractDetail], today: dt.date) -> list[ContractDetail]:
        chosen = []
        for detail in narrow(self.spec, details):
            if detail.expired(today) or detail.strike is None or detail.right not in self.rights:
                continue
            if self.strike_min is not None and detail.strike < self.strike_min:
                continue
            if self.strike_max is not None and detail.strike > self.strike_max:
                continue
            chosen.append(detail)
        chosen.sort(key=lambda d: (d.strike or Decimal(0), d.right or "", d.con_id))
        return chosen


UniverseEntry = SingleEntry | FutureMonthsEntry | OptionChainEntry


# -- reading entries -------------------------------------------------------------------------------


def _shown(value: object) -> str:
    """``value`` as an error message quotes it: its repr, cut short (a message never repeats a huge value)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def _text(entry_id: str, name: str, value: object) -> str:
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise UniverseError(f"entry {entry_id}: {name} must be text, not {_shown(value)}")
    problem = text_problem(name, str(value), UNIVERSE_TEXT_MAX)
    if problem is not None:
        raise UniverseError(f"entry {entry_id}: {problem.text}")
    return str(value).strip()


def _decimal(entry_id: str, name: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise UniverseError(f"entry {entry_id}: {name} must be a number, not {_shown(value)}")
    if isinstance(value, str) and len(value) > UNIVERSE_TEXT_MAX:
        raise UniverseError(f"entry {entry_id}: {name} must be a number, not {_shown(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise UniverseError(f"entry {entry_id}: {name} must be a number, not {_shown(value)}") from None
    if not number.is_finite() or number <= 0:
        raise UniverseError(f"entry {entry_id}: {name} must be positive, not {_shown(value)}")
    return number


def _spec_values(entry_id: str, item: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in item.items():
        name = _SPEC_FIELDS.get(key)
        if name is None:
            if key not in _ENTRY_FIELDS:
                raise UniverseError(f"entry {entry_id}: unknown field {_shown(key)}")
            continue
        if raw is None or raw == "":
            continue
        if name in values:
            raise UniverseError(f"entry {entry_id}: {key!r} is given twice (under two spellings)")
        if name in ("multiplier", "strike"):
            values[name] = _decimal(entry_id, key, raw)
        elif name == "con_id":
            if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
                raise UniverseError(f"entry {entry_id}: conId must be a positive integer")
            values[name] = raw
        elif name == "right":
            right = _RIGHTS.get(_text(entry_id, key, raw).upper())
            if right is None:
                raise UniverseError(f"entry {entry_id}: right must be C or P, not {_shown(raw)}")
            values[name] = right
        else:
            text = _text(entry_id, key, raw)
            values[name] = text.upper() if name in _UPPER else text
    return values


def _merge(entry_id: str, derived: ContractSpec, given: dict[str, Any], locked: set[str]) -> ContractSpec:
    """``derived`` (from the id) completed by ``given``; a field the id sets may not be contradicted."""
    for name in locked & given.keys():
        if given[name] != getattr(derived, name):
            raise UniverseError(
                f"entry {entry_id}: {name} {given[name]!r} contradicts the id ({getattr(derived, name)!r})"
            )
    return replace(derived, **given)


def _locked(spec: ContractSpec, defaults: ContractSpec) -> set[str]:
    """The fields of ``spec`` that its id sets (those that differ from what any id of its kind gets)."""
    return {f.name for f in fields(ContractSpec) if getattr(spec, f.name) != getattr(defaults, f.name)}


def _single(entry_id: str, given: dict[str, Any]) -> SingleEntry:
    try:
        derived: ContractSpec | None = spec_for_id(parse_instrument_id(entry_id))
    except InvalidInstrumentId:
        derived = None
    if derived is not None:
        defaults = ContractSpec(sec_type="", exchange=DEFAULT_EXCHANGE.get(derived.sec_type, ""))
        return SingleEntry(entry_id, _merge(entry_id, derived, given, _locked(derived, defaults)))
    if not given.get("sec_type") or not (given.get("symbol") or given.get("local_symbol")
                                         or given.get("con_id")):
        raise UniverseError(
            f"entry {entry_id}: the id does not follow the id convention, so secType and symbol are needed"
        )
    given.setdefault("exchange", DEFAULT_EXCHANGE.get(given["sec_type"], ""))
    return SingleEntry(entry_id, ContractSpec(**given))


def _future_months(entry_id: str, given: dict[str, Any], months: object) -> FutureMonthsEntry:
    match = _FUTURE_PREFIX.fullmatch(entry_id)
    if match is None:
        raise UniverseError(
            f"entry {entry_id}: a futures family's id is FUT:<root> or FUT:<root>:<exchange> (e.g. FUT:ES)"
        )
    if isinstance(months, bool) or not isinstance(months, int) or not 1 <= months <= 60:
        raise UniverseError(f"entry {entry_id}: months must be a whole number from 1 to 60")
    if given.get("last_trade_date"):
        raise UniverseError(f"entry {entry_id}: a futures family has months, not a contract month")
    derived = ContractSpec(sec_type="FUT", symbol=match[1], exchange=match[2] or "")
    spec = _merge(entry_id, derived, given, _locked(derived, ContractSpec(sec_type="")))
    probe = future_member_id(entry_id, "202601")
    _check_member(entry_id, probe)
    return FutureMonthsEntry(entry_id, spec, months)


def _option_chain(entry_id: str, given: dict[str, Any], item: Mapping[str, Any]) -> OptionChainEntry:
    match = _OPTION_PREFIX.fullmatch(entry_id)
    if match is None:
        raise UniverseError(f"entry {entry_id}: an option chain's id is OPT:<root>:<YYYYMMDD>")
    if "strike" in given or "right" in given:
        raise UniverseError(f"entry {entry_id}: a chain has strikes/rights, not one strike or right")
    derived = ContractSpec(sec_type="OPT", symbol=match[1], exchange=DEFAULT_EXCHANGE["OPT"],
                           last_trade_date=match[2])
    spec = _merge(entry_id, derived, given,
                  _locked(derived, ContractSpec(sec_type="", exchange=DEFAULT_EXCHANGE["OPT"])))
    strikes = item.get("strikes") or {}
    if not isinstance(strikes, Mapping):
        raise UniverseError(f"entry {entry_id}: strikes must be a mapping with min and/or max")
    low = strikes.get("min", item.get("strike_min"))
    high = strikes.get("max", item.get("strike_max"))
    strike_min = _decimal(entry_id, "strikes.min", low) if low is not None else None
    strike_max = _decimal(entry_id, "strikes.max", high) if high is not None else None
    if strike_min is not None and strike_max is not None and strike_min > strike_max:
        raise UniverseError(f"entry {entry_id}: strikes.min is above strikes.max")
    raw_rights = item.get("rights", ["C", "P"])
    if isinstance(raw_rights, str):
        raw_rights = [raw_rights]
    if not isinstance(raw_rights, list) or not raw_rights:
        raise UniverseError(f"entry {entry_id}: rights must be a list of C and/or P")
    rights: set[str] = set()
    for raw in raw_rights:
        right = _RIGHTS.get(str(raw).strip().upper())
        if right is None:
            raise UniverseError(f"entry {entry_id}: right must be C or P, not {_shown(raw)}")
        rights.add(right)
    _check_member(entry_id, option_member_id(entry_id, Decimal(1), "C"))
    return OptionChainEntry(entry_id, spec, strike_min, strike_max, tuple(sorted(rights)))


def _check_member(entry_id: str, member: str) -> None:
    try:
        parse_instrument_id(member)
    except InvalidInstrumentId as exc:
        raise UniverseError(f"entry {entry_id}: its members' ids would not be valid ({exc.reason})") from None


def entry_from_item(item: object, position: int | None = None) -> UniverseEntry:
    """One universe entry from a file item (a mapping); raises :class:`UniverseError`."""
    where = f"#{position + 1}" if position is not None else "?"
    if not isinstance(item, Mapping):
        raise UniverseError(f"entry {where}: must be a mapping with an instrument_id, not {_shown(item)}")
    raw_id = item.get("instrument_id", item.get("id"))
    if "instrument_id" in item and "id" in item:
        raise UniverseError(f"entry {where}: give instrument_id or id, not both")
    if not isinstance(raw_id, str) or not raw_id.strip():
        raise UniverseError(f"entry {where}: instrument_id is missing")
    problem = text_problem("instrument_id", raw_id, INSTRUMENT_ID_MAX)
    if problem is not None:
        raise UniverseError(f"entry {where}: {problem.text}")
    entry_id = raw_id.strip()
    given = _spec_values(entry_id, item)
    months = item.get("months", item.get("next_months"))
    is_chain = any(k in item for k in ("strikes", "strike_min", "strike_max", "rights"))
    if months is not None:
        if is_chain:
            raise UniverseError(f"entry {entry_id}: months (futures) and strikes/rights (options) conflict")
        if given.get("sec_type", "FUT") != "FUT":
            raise UniverseError(f"entry {entry_id}: months is for futures (secType FUT)")
        return _future_months(entry_id, given, months)
    if is_chain:
        if given.get("sec_type", "OPT") != "OPT":
            raise UniverseError(f"entry {entry_id}: strikes and rights are for options (secType OPT)")
        return _option_chain(entry_id, given, item)
    return _single(entry_id, given)


def entries_from_document(document: object) -> list[UniverseEntry]:
    """Every entry of a parsed universe file; raises :class:`UniverseError` on the first bad one."""
    items = document.get("instruments") if isinstance(document, Mapping) else document
    if not isinstance(items, list):
        raise UniverseError(
            "a universe file is a list of entries, or a mapping with the list under 'instruments'"
        )
    entries = [entry_from_item(item, position) for position, item in enumerate(items)]
    seen: set[str] = set()
    for entry in entries:
        if entry.instrument_id in seen:
            raise UniverseError(f"entry {entry.instrument_id}: listed twice")
        seen.add(entry.instrument_id)
    return entries


# -- storing entries -------------------------------------------------------------------------------


def spec_to_dict(spec: ContractSpec) -> dict[str, Any]:
    """The non-empty fields of ``spec``, JSON-ready (decimals as text)."""
    out: dict[str, Any] = {}
    for f in fields(ContractSpec):
        value = getattr(spec, f.name)
        if value in ("", None, 0):
            continue
        out[f.name] = format(value.normalize(), "f") if isinstance(value, Decimal) else value
    return out


def spec_from_dict(data: Mapping[str, Any]) -> ContractSpec:
    values = dict(data)
    for name in ("multiplier", "strike"):
        if values.get(name) is not None:
            values[name] = Decimal(values[name])
    return ContractSpec(**values)


def entry_to_dict(entry: UniverseEntry) -> dict[str, Any]:
    """``entry`` as stored in ``instrument_universe.spec`` (JSON); the inverse of :func:`entry_from_dict`."""
    data: dict[str, Any] = {"kind": entry.kind.value, "spec": spec_to_dict(entry.spec)}
    if isinstance(entry, FutureMonthsEntry):
        data["months"] = entry.months
    elif isinstance(entry, OptionChainEntry):
        data["strike_min"] = format_strike(entry.strike_min) if entry.strike_min is not None else None
        data["strike_max"] = format_strike(entry.strike_max) if entry.strike_max is not None else None
        data["rights"] = list(entry.rights)
    return data


def entry_from_dict(instrument_id: str, data: Mapping[str, Any]) -> UniverseEntry:
    spec = spec_from_dict(data["spec"])
    kind = EntryKind(data["kind"])
    if kind is EntryKind.FUTURE_MONTHS:
        return FutureMonthsEntry(instrument_id, spec, int(data["months"]))
    if kind is EntryKind.OPTION_CHAIN:
        low, high = data.get("strike_min"), data.get("strike_max")
        return OptionChainEntry(instrument_id, spec, Decimal(low) if low is not None else None,
                                Decimal(high) if high is not None else None, tuple(data["rights"]))
    return SingleEntry(instrument_id, spec)


def spec_hash(entry: UniverseEntry) -> str:
    """A fingerprint of what the entry asks for: it changes exactly when the operator changes the entry."""
    canonical = json.dumps([entry.instrument_id, entry_to_dict(entry)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
