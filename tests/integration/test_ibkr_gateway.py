"""The IBKR adapter against the sim over its TCP socket: queries never wait forever."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from workers.adapters.ibkr.gateway import IbkrGateway
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.sim import SimConfig, SimGateway

pytestmark = pytest.mark.integration


@pytest.fixture
async def sim() -> AsyncIterator[SimGateway]:
    gateway = SimGateway(SimConfig(pacing=False))
    await gateway.start("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        await gateway.stop()


async def test_queries_ibkr_does_not_answer_give_up_after_the_request_timeout(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = IbkrGateway(host, port, 21, limiter=PacingLimiter(1000.0), connect_timeout=5, request_timeout=0.3)
    await gateway.connect()
    try:
        assert await gateway.order_statuses() == {}  # answered while the sim answers
        sim.freeze()  # IBKR takes the requests and answers none (as when it drops them over its limit)
        for query in (gateway.order_statuses, gateway.executions, gateway.positions):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await query()
            assert time.monotonic() - started < 2.0
        sim.unfreeze()
    finally:
        await gateway.close()
