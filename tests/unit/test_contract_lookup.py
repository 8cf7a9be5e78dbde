"""How the contract lookup tells "IBKR does not know it" from a refused request or an unreachable IBKR."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ib_insync import Contract, ContractDetails

from workers.adapters.ibkr.contract_lookup import IbkrContractLookup
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.domain.contracts import ContractSpec, LookupRejected, LookupUnavailable

AAPL = ContractSpec(sec_type="STK", symbol="AAPL", exchange="SMART", currency="USD")


class ScriptedGateway(TwsConnection):
    """A gateway that answers reqContractDetails as told, raising IB errors the way ib_insync does."""

    def __init__(self, *, error: int | None = None, answer: list[ContractDetails] | None = None,
                 hang: bool = False, drop: bool = False, connected: bool = True) -> None:
        super().__init__("127.0.0.1", 1, 1, limiter=PacingLimiter(1000.0))
        self.error, self.answer, self.hang, self.drop, self.up = error, answer or [], hang, drop, connected

    @property
    def connected(self) -> bool:
        return self.up

    async def contract_details(self, contract: Contract) -> list[ContractDetails]:
        if self.hang:
            await asyncio.sleep(10)
        if self.drop:
            raise ConnectionError("Socket disconnect")
        if self.error is not None:
            # ib_insync ends the request with an empty list and reports the error with the contract.
            self.ib.errorEvent.emit(7, self.error, f"error {self.error}", contract)
        return self.answer


async def lookup_with(**script: Any) -> list[Any]:
    return await IbkrContractLookup(ScriptedGateway(**script), timeout=0.05).lookup(AAPL)


async def test_no_security_definition_is_an_empty_answer() -> None:
    assert await lookup_with(error=200) == []


async def test_a_notice_during_the_request_is_not_a_failure() -> None:
    assert await lookup_with(error=2104) == []


async def test_a_refused_request_is_an_error_with_its_code() -> None:
    with pytest.raises(LookupRejected, match="IBKR error 321") as caught:
        await lookup_with(error=321)
    assert caught.value.code == 321


async def test_an_answer_is_translated() -> None:
    details = ContractDetails(contract=Contract(secType="STK", conId=265598, symbol="AAPL", exchange="SMART",
                                                currency="USD", primaryExchange="NASDAQ"), minTick=0.01)
    (detail,) = await lookup_with(answer=[details])
    assert (detail.con_id, detail.primary_exchange) == (265598, "NASDAQ")


@pytest.mark.parametrize("script", [{"hang": True}, {"drop": True}, {"connected": False}])
async def test_an_unreachable_ibkr_makes_the_lookup_unavailable(script: dict[str, Any]) -> None:
    with pytest.raises(LookupUnavailable):
        await lookup_with(**script)
