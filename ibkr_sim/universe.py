"""The sim's instrument universe: contract records, IB-like lookup, and runtime changes for tests."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

SEC_TYPES = frozenset({"STK", "FUT", "OPT", "CASH", "IND", "FOP", "CFD"})
_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}


@dataclass(frozen=True, slots=True, eq=False)
class SimContract:
    """One contract as the sim lists it (compared by identity: a change makes a new record)."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: str = ""
    min_tick: float = 0.01
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    long_name: str = ""
    ref_price: float = 100.0
    valid_exchanges: tuple[str, ...] = ()
    industry: str = ""
    category: str = ""
    time_zone_id: str = "US/Eastern"
    under_con_id: int = 0
    listed: bool = True

    @property
    def multiplier_value(self) -> float:
        """Contract multiplier as a number (1 when unset)."""
        try:
            return float(self.multiplier) if self.multiplier else 1.0
        except ValueError:
            return 1.0

    @property
    def exchanges(self) -> tuple[str, ...]:
        """Every exchange an order or a details request may name for this contract."""
        names = {self.exchange, *self.valid_exchanges}
        if self.primary_exchange:
            names.add(self.primary_exchange)
        return tuple(sorted(n for n in names if n))


@dataclass(frozen=True, slots=True)
class ContractQuery:
    """The contract fields of a request (reqContractDetails or placeOrder)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float | None = None
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    include_expired: bool = False

    def describe(self) -> str:
        """Short text naming the contract for error messages."""
        return self.symbol or self.local_symbol or str(self.con_id)


def _matches(inst: SimContract, q: ContractQuery) -> bool:
    if q.sec_type and q.sec_type.upper() != inst.sec_type:
        return False
    if q.symbol and q.symbol.upper() != inst.symbol.upper():
        return False
    if q.local_symbol and q.local_symbol.upper() != inst.local_symbol.upper():
        return False
    if q.trading_class and q.trading_class.upper() != inst.trading_class.upper():
        return False
    if q.currency and q.currency.upper() != inst.currency:
        return False
    if q.primary_exchange and q.primary_exchange.upper() != inst.primary_exchange:
        return False
    exchange = q.exchange.upper()
    if exchange and exchange != "SMART" and exchange not in inst.exchanges:
        return False
    if q.last_trade_date:
        expiry = q.last_trade_date.split(" ")[0]
        if not inst.last_trade_date.startswith(expiry):
            return False
    if q.strike and not math.isclose(q.strike, inst.strike, abs_tol=1e-6):
        return False
    if q.right:
        right = _RIGHTS.get(q.right.upper())
        if right is None or right != inst.right:
            return False
    if q.multiplier:
        try:
            if float(q.multiplier) != inst.multiplier_value:
                return False
        except ValueError:
            return False
    return True


class Universe:
    """Mutable set of instruments, indexed by conId and symbol."""

    def __init__(self, instruments: Iterable[SimContract] = ()) -> None:
        self._by_con_id: dict[int, SimContract] = {}
        self._by_symbol: dict[str, set[int]] = {}
        self.version = 0
        for inst in instruments:
            self.add(inst)

    def __len__(self) -> int:
        return len(self._by_con_id)

    def __iter__(self) -> Iterator[SimContract]:
        return iter(list(self._by_con_id.values()))

    def get(self, con_id: int) -> SimContract | None:
        """The instrument with this conId, listed or not."""
        return self._by_con_id.get(con_id)

    def add(self, inst: SimContract) -> None:
        """Add an instrument, or replace the one with the same conId."""
        old = self._by_con_id.get(inst.con_id)
        if old is not None:
            self._by_symbol.get(old.symbol.upper(), set()).discard(old.con_id)
        self._by_con_id[inst.con_id] = inst
        self._by_symbol.setdefault(inst.symbol.upper(), set()).add(inst.con_id)
        self.version += 1

    def update(self, con_id: int, **changes: Any) -> SimContract:
        """Change fields of an instrument (e.g. ``symbol=`` to rename it keeping its conId)."""
        inst = self._require(con_id)
        updated = replace(inst, **changes)
        self.add(updated)
        return updated

    def rename(self, con_id: int, symbol: str, local_symbol: str | None = None) -> SimContract:
        """Rename a symbol keeping the conId (a ticker change)."""
        inst = self._require(con_id)
        if local_symbol is None:
            local_symbol = symbol if inst.local_symbol == inst.symbol else inst.local_symbol
        trading_class = symbol if inst.trading_class == inst.symbol else inst.trading_class
        return self.update(con_id, symbol=symbol, local_symbol=local_symbol, trading_class=trading_class)

    def delist(self, con_id: int) -> SimContract:
        """Mark an instrument delisted: lookups and new orders no longer find it."""
        return self.update(con_id, listed=False)

    def relist(self, con_id: int) -> SimContract:
        """Undo :meth:`delist`."""
        return self.update(con_id, listed=True)

    def lookup(self, query: ContractQuery) -> list[SimContract]:
        """Every listed instrument matching ``query`` as IB's reqContractDetails would match it."""
        if query.con_id:
            inst = self._by_con_id.get(query.con_id)
            if inst is None or not inst.listed:
                return []
            exchange = query.exchange.upper()
            if exchange and exchange != "SMART" and exchange not in inst.exchanges:
                return []
            return [inst]
        if query.symbol:
            candidates: Iterable[SimContract] = (
                self._by_con_id[c] for c in sorted(self._by_symbol.get(query.symbol.upper(), ()))
            )
        elif query.local_symbol:
            candidates = self._by_con_id.values()
        else:
            return []
        return [inst for inst in candidates if inst.listed and _matches(inst, query)]

    def _require(self, con_id: int) -> SimContract:
        inst = self._by_con_id.get(con_id)
        if inst is None:
            raise KeyError(f"no instrument with conId {con_id}")
        return inst

    # --- loading -----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, text: str) -> Universe:
        """Build a universe from the JSON text of a universe file."""
        data = json.loads(text)
        items = data["instruments"] if isinstance(data, dict) else data
        return cls(instrument_from_dict(item) for item in items)

    @classmethod
    def load(cls, path: str | Path | None = None) -> Universe:
        """Load a universe file; ``None`` loads the default that ships with the package."""
        if path is None:
            text = resources.files("ibkr_sim").joinpath("data/universe.json").read_text("utf-8")
        else:
            text = Path(path).read_text("utf-8")
        return cls.from_json(text)


_JSON_NAMES = {
    "conId": "con_id",
    "secType": "sec_type",
    "primaryExchange": "primary_exchange",
    "localSymbol": "local_symbol",
    "tradingClass": "trading_class",
    "minTick": "min_tick",
    "lastTradeDateOrContractMonth": "last_trade_date",
    "longName": "long_name",
    "refPrice": "ref_price",
    "validExchanges": "valid_exchanges",
    "timeZoneId": "time_zone_id",
    "underConId": "under_con_id",
}
_FIELD_NAMES = {f.name for f in fields(SimContract)}


def instrument_from_dict(item: dict[str, Any]) -> SimContract:
    """Build a :class:`SimContract` from a universe-file record (IB's camelCase names)."""
    values: dict[str, Any] = {}
    for key, value in item.items():
        name = _JSON_NAMES.get(key, key)
        if name not in _FIELD_NAMES:
            raise ValueError(f"unknown instrument field {key!r}")
        values[name] = value
    for required in ("con_id", "symbol", "sec_type", "exchange", "currency"):
        if required not in values:
            raise ValueError(f"instrument {item!r} lacks {required}")
    if values["sec_type"] not in SEC_TYPES:
        raise ValueError(f"unsupported secType {values['sec_type']!r}")
    if "valid_exchanges" in values:
        exchanges = values["valid_exchanges"]
        values["valid_exchanges"] = tuple(
            exchanges.split(",") if isinstance(exchanges, str) else exchanges
        )
    values.setdefault("local_symbol", values["symbol"])
    values.setdefault("trading_class", values["symbol"] if values["sec_type"] == "STK" else "")
    values["con_id"] = int(values["con_id"])
    for name in ("min_tick", "strike", "ref_price"):
        if name in values:
            values[name] = float(values[name])
    if values.get("min_tick", 0.01) <= 0:
        raise ValueError(f"minTick must be positive in {item!r}")
    return SimContract(**values)


def instrument_to_dict(inst: SimContract) -> dict[str, Any]:
    """The universe-file record of an instrument (inverse of :func:`instrument_from_dict`)."""
    reverse = {v: k for k, v in _JSON_NAMES.items()}
    out: dict[str, Any] = {}
    for f in fields(SimContract):
        value = getattr(inst, f.name)
        if isinstance(value, tuple):
            value = list(value)
        out[reverse.get(f.name, f.name)] = value
    return out


__all__ = ["ContractQuery", "SimContract", "Universe", "instrument_from_dict", "instrument_to_dict"]
