"""Contract details over the TWS connection, as our own :class:`ContractDetail` values.

ib_insync ends a failed reqContractDetails with an empty list whatever the error; the error itself only
reaches ``errorEvent``, together with the request's contract object. :class:`IbkrContractLookup` keeps the
error of each of its requests that way, so "IBKR does not know this contract" (error 200) is told apart
from a refused request (e.g. 321, a malformed request).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
from typing import Any

from ib_insync import Contract, ContractDetails

from workers.adapters.ibkr.reports import to_decimal
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.domain.contracts import ContractDetail, ContractSpec, LookupRejected, LookupUnavailable
from workers.ports.ibkr import IbError

NO_SECURITY_DEFINITION = 200
_RIGHTS = {"C": "C", "CALL": "C", "P": "P", "PUT": "P"}
_WITH_STRIKE = frozenset({"OPT", "FOP", "WAR", "IOPT"})


def contract_for_spec(spec: ContractSpec) -> Contract:
    """The ib_insync contract to ask reqContractDetails about ``spec``."""
    return Contract(
        secType=spec.sec_type,
        conId=spec.con_id,
        symbol=spec.symbol,
        lastTradeDateOrContractMonth=spec.last_trade_date,
        strike=float(spec.strike) if spec.strike is not None else 0.0,
        right=spec.right,
        multiplier=format(spec.multiplier.normalize(), "f") if spec.multiplier is not None else "",
        exchange=spec.exchange,
        primaryExchange=spec.primary_exchange,
        currency=spec.currency,
        localSymbol=spec.local_symbol,
        tradingClass=spec.trading_class,
    )


def _positive_decimal(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    return value if value.is_finite() and value > 0 else None


def detail_from(details: ContractDetails) -> ContractDetail:
    """Our view of one ib_insync ``ContractDetails``."""
    # ib_insync always fills it in a contractDetails answer; an empty one has conId 0 and matches nothing.
    contract = details.contract if details.contract is not None else Contract()
    sec_type = contract.secType
    strike = to_decimal(contract.strike) if sec_type in _WITH_STRIKE and contract.strike else None
    return ContractDetail(
        con_id=int(contract.conId),
        symbol=contract.symbol,
        sec_type=sec_type,
        exchange=contract.exchange,
        currency=contract.currency,
        min_tick=to_decimal(details.minTick or 0.0),
        primary_exchange=contract.primaryExchange or "",
        local_symbol=contract.localSymbol or "",
        trading_class=contract.tradingClass or "",
        multiplier=_positive_decimal(contract.multiplier) if contract.multiplier else None,
        last_trade_date=contract.lastTradeDateOrContractMonth or None,
        contract_month=details.contractMonth or "",
        strike=strike,
        right=_RIGHTS.get((contract.right or "").upper()),
        long_name=details.longName or "",
        size_increment=_size_increment(details.sizeIncrement),
    )


# IB's "no value" for a double field.
_UNSET_DOUBLE = 1.7976931348623157e308


def _size_increment(value: float) -> Decimal | None:
    """IBKR's size increment, when the server version carries one (0 or IB's unset double otherwise)."""
    if not value or value >= _UNSET_DOUBLE:
        return None
    return _positive_decimal(repr(float(value)))


class IbkrContractLookup:
    """The instrument-sync's port to IBKR: ``lookup(spec)`` → the contracts IBKR lists for it.

    Every request goes through the gateway's pacing limiter. Raises :class:`LookupUnavailable` when not
    connected or when IBKR does not answer within ``timeout`` seconds, and :class:`LookupRejected` for a
    request IBKR refused; a contract IBKR does not know is an empty list.
    """

    def __init__(self, gateway: TwsConnection, *, timeout: float = 15.0) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self.requests = 0
        self._errors: dict[int, tuple[int, str]] = {}
        gateway.ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        if contract is not None:
            if len(self._errors) > 10_000:  # errors that arrived after their request timed out
                self._errors.clear()
            self._errors[id(contract)] = (code, message)

    async def lookup(self, spec: ContractSpec) -> list[ContractDetail]:
        if not self.gateway.connected:
            raise LookupUnavailable("not connected to IBKR")
        contract = contract_for_spec(spec)
        self.requests += 1
        try:
            answer = await asyncio.wait_for(self.gateway.contract_details(contract), self.timeout)
        except TimeoutError:
            raise LookupUnavailable(
                f"{spec.describe()}: no answer from IBKR within {self.timeout:g} s"
            ) from None
        except ConnectionError as exc:
            raise LookupUnavailable(f"{spec.describe()}: connection lost ({exc or 'disconnected'})") from None
        finally:
            error = self._errors.pop(id(contract), None)
        if not answer and error is not None:
            code, message = error
            if code != NO_SECURITY_DEFINITION and not IbError(-1, code, message).informational:
                raise LookupRejected(spec, code, message)
        return [detail_from(d) for d in answer]
