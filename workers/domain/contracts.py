"""What we ask IBKR about a contract (:class:`ContractSpec`), what it answers (:class:`ContractDetail`),
and how an answer with several contracts is narrowed down by the spec — never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal


@dataclass(frozen=True)
class ContractSpec:
    """The contract fields of a reqContractDetails request; empty fields match anything."""

    sec_type: str
    symbol: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    multiplier: Decimal | None = None
    # YYYYMM (a contract month) or YYYYMMDD (an expiry).
    last_trade_date: str = ""
    strike: Decimal | None = None
    right: str = ""
    con_id: int = 0

    def by_con_id(self, con_id: int, exchange: str | None = None) -> ContractSpec:
        """A request for exactly contract ``con_id`` (routed like this spec unless ``exchange`` is given)."""
        return ContractSpec(sec_type="", con_id=con_id,
                            exchange=self.exchange if exchange is None else exchange)

    def describe(self) -> str:
        """Short text naming the request in logs and error messages."""
        if self.con_id:
            return f"conId {self.con_id}"
        parts = [self.sec_type, self.symbol, self.last_trade_date,
                 format(self.strike.normalize(), "f") if self.strike is not None else "", self.right,
                 self.exchange, self.primary_exchange, self.currency, self.trading_class]
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class ContractDetail:
    """One contract as IBKR describes it in a contractDetails answer."""

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
    # As IBKR gives it (YYYYMMDD, sometimes with a time); None for what does not expire.
    last_trade_date: str | None = None
    contract_month: str = ""
    strike: Decimal | None = None
    right: str | None = None
    long_name: str = ""
    # The quantity step IBKR states for the contract (server version 164 and later), else None.
    size_increment: Decimal | None = None

    @property
    def month(self) -> str:
        """The contract month (YYYYMM) of a derivative; empty when it has none."""
        if self.contract_month:
            return self.contract_month[:6]
        return (self.last_trade_date or "")[:6]

    def expired(self, today: date) -> bool:
        """Whether its last trading day is before ``today`` (a contract trades on its last day)."""
        return is_expired(self.last_trade_date, today)

    def describe(self) -> str:
        parts = [f"conId {self.con_id}", self.sec_type, self.symbol, self.local_symbol,
                 self.primary_exchange and f"primary {self.primary_exchange}", self.currency,
                 self.trading_class and f"class {self.trading_class}"]
        return " ".join(p for p in parts if p)


def is_expired(last_trade_date: str | None, today: date) -> bool:
    """Whether a contract whose last trading day is ``last_trade_date`` no longer trades on ``today``.

    A bare contract month (YYYYMM) counts as expired only once that month is over.
    """
    if not last_trade_date:
        return False
    digits = last_trade_date.split(" ")[0].split("-")[0]
    if len(digits) >= 8 and digits[:8].isdigit():
        return digits[:8] < today.strftime("%Y%m%d")
    if len(digits) == 6 and digits.isdigit():
        return digits < today.strftime("%Y%m")
    return False


class ResolutionError(Exception):
    """IBKR's answer does not name exactly one contract for a spec."""

    def __init__(self, spec: ContractSpec, message: str) -> None:
        super().__init__(message)
        self.spec = spec


class UnknownContract(ResolutionError):
    """IBKR knows no contract for the spec (error 200, or no answer left after narrowing by the spec)."""

    def __init__(self, spec: ContractSpec,
                 reason: str = "IBKR has no security definition (error 200)") -> None:
        super().__init__(spec, f"{spec.describe()}: {reason}")


class AmbiguousContract(ResolutionError):
    """IBKR answers several contracts and the spec does not say which one is meant."""

    def __init__(self, spec: ContractSpec, candidates: list[ContractDetail]) -> None:
        listed = "; ".join(c.describe() for c in candidates)
        super().__init__(
            spec,
            f"{spec.describe()}: ambiguous, {len(candidates)} contracts match ({listed}); "
            "pin it with primaryExchange, currency or tradingClass",
        )
        self.candidates = candidates


def _same(wanted: str, actual: str) -> bool:
    return not wanted or wanted.upper() == actual.upper()


def matches(spec: ContractSpec, detail: ContractDetail) -> bool:
    """Whether ``detail`` agrees with every field the spec sets that tells contracts apart.

    IBKR already filters by these, but checking again means a server that ignores a field (or a looser
    answer) can never slip a different contract in.
    """
    if spec.con_id:
        return spec.con_id == detail.con_id
    if spec.multiplier is not None and detail.multiplier is not None and spec.multiplier != detail.multiplier:
        return False
    if spec.strike is not None and detail.strike is not None and spec.strike != detail.strike:
        return False
    if spec.right and (detail.right or "") != spec.right:
        return False
    if spec.last_trade_date and not (detail.last_trade_date or "").startswith(spec.last_trade_date) \
            and detail.month != spec.last_trade_date:
        return False
    return (_same(spec.sec_type, detail.sec_type) and _same(spec.symbol, detail.symbol)
            and _same(spec.primary_exchange, detail.primary_exchange)
            and _same(spec.currency, detail.currency)
            and _same(spec.trading_class, detail.trading_class)
            and _same(spec.local_symbol, detail.local_symbol))


def distinct(details: list[ContractDetail]) -> list[ContractDetail]:
    """``details`` without repeats of a conId (IBKR lists a contract once per exchange asked)."""
    seen: set[int] = set()
    unique: list[ContractDetail] = []
    for detail in details:
        if detail.con_id not in seen:
            seen.add(detail.con_id)
            unique.append(detail)
    return unique


def narrow(spec: ContractSpec, details: list[ContractDetail]) -> list[ContractDetail]:
    """The distinct contracts of ``details`` that agree with ``spec``."""
    return [d for d in distinct(details) if matches(spec, d)]


def choose_one(spec: ContractSpec, details: list[ContractDetail]) -> ContractDetail:
    """The one contract of IBKR's answer that ``spec`` names.

    Raises :class:`UnknownContract` when there is none and :class:`AmbiguousContract` when there are
    several: an ambiguous answer is reported, never resolved by picking one.
    """
    if not details:
        raise UnknownContract(spec)
    candidates = narrow(spec, details)
    if not candidates:
        answered = "; ".join(d.describe() for d in distinct(details))
        raise UnknownContract(spec, f"no contract IBKR answered agrees with the spec ({answered})")
    if len(candidates) > 1:
        raise AmbiguousContract(spec, candidates)
    return candidates[0]


class LookupUnavailable(Exception):
    """IBKR cannot be asked now (not connected, no answer in time): the pass stops and resumes later."""


class LookupRejected(Exception):
    """IBKR refused a contract-details request with an error other than "no security definition"."""

    def __init__(self, spec: ContractSpec, code: int, message: str) -> None:
        super().__init__(f"{spec.describe()}: IBKR error {code}: {message}")
        self.spec = spec
        self.code = code
